"""lotlens_common."""
