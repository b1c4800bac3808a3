"""The bench stack's own namespace on the shared infra: a fresh database, its topics and groups.

Other stacks on the same broker and PostgreSQL (a `make up` stack, e2e test stacks, other
checkouts) use the default topic, group and database names, or their own. Sharing any of them
mixes work: a stranger's consumer joins our group and takes half the partitions, a stranger's
stage loop claims our lots from the shared work tables and sends them to its own OpenAI stand-in.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid

import psycopg2
from confluent_kafka.admin import AdminClient

from bench.config import BENCH_DATABASE, TOPIC_NAMES, database_dsn, kafka_bootstrap
from tests.databases import drop_database


def new_name() -> str:
    """A fresh topic/group namespace for one bench run."""
    return f"bench-{time.strftime('%m%d%H%M')}-{uuid.uuid4().hex[:6]}"


def recreate_database(base_url: str) -> None:
    """DROP and CREATE the bench database on the project's PostgreSQL (the role may CREATEDB)."""
    conn = psycopg2.connect(database_dsn(base_url))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            drop_database(cur, BENCH_DATABASE)
            cur.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    finally:
        conn.close()


def cleanup(namespace: str) -> None:
    """Delete the run's topics and consumer groups (best effort)."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap()})
    topics = [f"{namespace}.{name}" for name in TOPIC_NAMES]
    for future in admin.delete_topics(topics).values():
        with contextlib.suppress(Exception):
            future.result(30)
    prefix = os.environ.get("KAFKA_GROUP_PREFIX", f"{namespace}.")
    groups = [
        prefix + g
        for g in (
            "lotlens-vision-batcher",
            "lotlens-translator",
            "lotlens-result-store",
            "lotlens-webhook-dispatcher",
        )
    ]
    for future in admin.delete_consumer_groups(groups).values():
        with contextlib.suppress(Exception):
            future.result(30)
