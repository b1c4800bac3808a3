"""Alembic's environment and the schema's revisions (`versions/`), run by `lotlens_common.migrate`."""
