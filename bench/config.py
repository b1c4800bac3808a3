"""Bench settings: sizes per scenario (quick and full presets), paths, ports and the stack's env."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CLIENT_ID = "demo"
SERVICES = ("gateway", "vision-batcher", "translator", "result-store", "webhook-dispatcher", "openai-standin")
BENCH_DATABASE = "lotlens_bench"
TOPIC_NAMES = ("submissions", "vision", "translation", "completions", "webhooks", "dead_letter")

# The bench talks to the stack its environment describes, like the services do: the default
# local stack, or (when it restarts the stack itself) the isolated one of `StackEnv.isolation`.


def state_dir() -> Path:
    """The stack's state folder (pid files, logs, demo key)."""
    return Path(os.environ.get("LOTLENS_STATE_DIR", ROOT / ".state"))


def gateway() -> str:
    """The gateway's base URL."""
    return f"http://127.0.0.1:{os.environ.get('LOTLENS_GATEWAY_PORT', '18000')}"


def topic(name: str) -> str:
    """A pipeline topic's name (`LOTLENS_TOPIC_<NAME>`, default `lotlens.<name>`)."""
    return os.environ.get(f"LOTLENS_TOPIC_{name.upper()}", f"lotlens.{name}")


def pipeline_topics() -> tuple[str, ...]:
    """The four topics a job's events go through."""
    return tuple(topic(name) for name in ("submissions", "vision", "translation", "completions"))


def groups() -> dict[str, tuple[str, ...]]:
    """consumer group -> topics it reads (for the "is the stack idle?" check)."""
    prefix = os.environ.get("KAFKA_GROUP_PREFIX", "")
    sub, vision, translation, done = pipeline_topics()
    return {
        prefix + "lotlens-vision-batcher": (sub,),
        prefix + "lotlens-translator": (vision, sub),
        prefix + "lotlens-result-store": (sub, vision, translation, done),
        prefix + "lotlens-webhook-dispatcher": (done,),
    }


def kafka_bootstrap() -> str:
    """The broker (`scripts/infra.sh env` sets it for `make bench`)."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")


def database_url() -> str:
    """The SQLAlchemy URL of the stack's database."""
    return os.environ.get("DATABASE_URL", "postgresql+psycopg2://lotlens:lotlens@127.0.0.1:55432/lotlens")


def database_dsn(url: str | None = None) -> str:
    """A libpq DSN for psycopg2 (the URL without SQLAlchemy's driver prefix)."""
    return (url or database_url()).replace("postgresql+psycopg2://", "postgresql://", 1)


@dataclass(frozen=True)
class StackEnv:
    """What the bench's stack runs with (passed to `scripts/stack.py up`)."""

    window_s: float = 0.5
    poll_interval_s: float = 0.2
    standin_phase_s: float = 0.0
    webhook_per_host: int = 64
    # deploy/k8s runs 2 (they share one schedule in PostgreSQL); one is measured against the
    # floor's one process. On these 2 cores a second instance only competes for the same CPU.
    dispatchers: int = 1
    gateway_port: int = 18400
    standin_port: int = 18480
    images_port: int = 18490

    def isolation(self, base_database_url: str, namespace: str) -> dict[str, str]:
        """Env that gives the bench's stack its own state folder, ports, topics, consumer groups and
        (fresh) database on the shared broker and PostgreSQL, so that test stacks and other stacks
        on the same infra neither consume its events nor claim its lots (and vice versa)."""
        return {
            "LOTLENS_STATE_DIR": str(ROOT / ".state" / "bench"),
            "LOTLENS_GATEWAY_PORT": str(self.gateway_port),
            "STANDIN_PORT": str(self.standin_port),
            "LOTLENS_EXAMPLE_IMAGES_PORT": str(self.images_port),
            "KAFKA_GROUP_PREFIX": f"{namespace}.",
            **{f"LOTLENS_TOPIC_{name.upper()}": f"{namespace}.{name}" for name in TOPIC_NAMES},
            "DATABASE_URL": base_database_url.rsplit("/", 1)[0] + "/" + BENCH_DATABASE,
            # Its own stand-in, whatever the shell holds: a key or a model server there took the
            # load (and the bill) elsewhere, and the figures were no longer the stand-in's.
            "OPENAI_API_KEY": "",
            "OPENAI_BASE_URL": "",
        }

    def overrides(self) -> dict[str, str]:
        """Environment overrides: zero model latency, short batching windows, no rate limits."""
        phase = str(self.standin_phase_s)
        return {
            "STANDIN_VALIDATING_SECONDS": phase,
            "STANDIN_IN_PROGRESS_SECONDS": phase,
            "STANDIN_FINALIZING_SECONDS": phase,
            "STANDIN_LATENCY_SECONDS": "0",
            "LOTLENS_STAGE__WINDOW_S": str(self.window_s),
            "LOTLENS_STAGE__POLL_INTERVAL_S": str(self.poll_interval_s),
            # The stand-in has no enqueued-token limit: the default budget (a tier-1 organisation's)
            # would measure waiting for room, not the pipeline.
            "LOTLENS_STAGE__ENQUEUED_TOKEN_LIMIT": "0",
            # The contract's defaults (10 batch, 1000 polling requests a minute) would be the
            # bottleneck of a load test; the limiter's own SQL still runs on every request.
            "LOTLENS_RATE_LIMIT_BATCH": "1000000",
            "LOTLENS_RATE_LIMIT_POLLING": "1000000000",
            "LOTLENS_RATE_LIMIT_SYNC": "1000000",
            # So are a client's 4 downloads at once: the polling scenario's 64 connections of one
            # client measured the cap (nine answers in ten a 429), not `batch-results`.
            "LOTLENS_DOWNLOAD_SLOTS_PER_CLIENT": "64",
            "LOTLENS_DOWNLOAD_SLOTS": "64",
            # All bench webhooks go to one receiver (one host:port) from one client: lift the
            # per-host and per-client caps to the dispatcher's whole concurrency (64), so the
            # dispatcher is measured, not the caps.
            "LOTLENS_WEBHOOK_PER_HOST_CONCURRENCY": str(self.webhook_per_host),
            "LOTLENS_WEBHOOK_PER_CLIENT_CONCURRENCY": str(self.webhook_per_host),
            "LOTLENS_STACK_INSTANCES": f"webhook-dispatcher={self.dispatchers}",
            "LOTLENS_ALLOW_LOOPBACK_URLS": "true",
        }


@dataclass(frozen=True)
class Settings:
    """Every size knob; `quick()` is `make bench`, `full()` is `--full`."""

    lots: int = 5000
    runs: int = 3
    images_per_lot: int = 5
    languages: tuple[str, ...] = ("en", "de", "ru")
    # Distinct image URLs per measured job (0: every URL distinct); see bench/jobs.py.
    image_pool: int = 50
    # Lots of the one extra job whose every image URL is distinct (0: skip it).
    distinct_lots: int = 500
    pipeline_timeout_s: float = 300.0
    # Lots of one job run before the measured ones and not measured (0: none). The floor's broker and
    # PostgreSQL are warm when it runs; a first job right after a restart was not: at 643d39c its
    # Kafka took 2.9 CPU-s against 1.0 in the next run, the broker compiling its hot paths.
    warmup_lots: int = 5000
    poll_lots: int = 10
    poll_connections: int = 64
    poll_requests: int = 4000
    poll_seconds: float = 2.5
    sql_loop_seconds: float = 1.0
    hooks: int = 200
    hook_concurrency: int = 64
    image_urls: int = 1000
    image_concurrency: int = 64
    restart: bool = True
    profile: tuple[str, ...] = ()
    leave_up: bool = False
    scenarios: tuple[str, ...] = ("intake", "pipeline", "polling", "webhooks", "images", "memory", "sync",
                                  "rebuild")
    stack: StackEnv = field(default_factory=StackEnv)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return asdict(self)


QUICK = Settings()
FULL = Settings(
    distinct_lots=2000,
    lots=50_000,
    runs=3,
    pipeline_timeout_s=1500.0,
    poll_requests=20_000,
    poll_seconds=6.0,
    sql_loop_seconds=2.0,
    hooks=2000,
    image_urls=5000,
)
