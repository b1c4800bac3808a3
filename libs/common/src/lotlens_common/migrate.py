"""`python -m lotlens_common.migrate`: apply migrations and create the Kafka topics."""

from __future__ import annotations

import logging

from lotlens_common.db import make_engine, migrate
from lotlens_common.settings import ServiceSettings
from lotlens_common.topics import ensure_topics


def main() -> None:
    """Prepare PostgreSQL and Kafka for the services (idempotent)."""
    logging.basicConfig(level=logging.INFO)
    settings = ServiceSettings()
    engine = make_engine(settings.database)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    ensure_topics(settings.kafka, settings.topics)


if __name__ == "__main__":
    main()
