"""Settings read from the environment, one pydantic-settings class per concern."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lotlens_common.logs import KAFKA_LOGGER
from lotlens_common.model.settings import ModelSettings


def settings_config(env_prefix: str = "", nested: bool = False) -> SettingsConfigDict:
    """Frozen settings read from `env_prefix`* variables. A refused value is not echoed in the
    error: it may be a secret (a bad LOTLENS_CLIENTS printed 25 of a 32-character key at start)."""
    return SettingsConfigDict(env_prefix=env_prefix, frozen=True, hide_input_in_errors=True,
                              **({"env_nested_delimiter": "__"} if nested else {}))


# Each service's consumer group (its default id; `KAFKA_GROUP_PREFIX` is prepended).
VISION_BATCHER_GROUP, TRANSLATOR_GROUP = "lotlens-vision-batcher", "lotlens-translator"
RESULT_STORE_GROUP, WEBHOOK_DISPATCHER_GROUP = "lotlens-result-store", "lotlens-webhook-dispatcher"


class TopicSettings(BaseSettings):
    """Kafka topic names, partition count and retention; SREs override them per environment.

    The record topics (every one but the dead letters) are the system of record: the read models
    are rebuilt from them, so they are kept for good (`record_retention_ms` = -1, see
    docs/EVENT_LOG.md). The dead-letter topic is transient and keeps `retention_ms`.
    """

    model_config = settings_config("LOTLENS_TOPIC_")

    submissions: str = "lotlens.submissions"
    vision: str = "lotlens.vision"
    translation: str = "lotlens.translation"
    completions: str = "lotlens.completions"
    webhooks: str = "lotlens.webhooks"
    dead_letter: str = "lotlens.dead-letter"
    partitions: int = 6
    replication_factor: int = 1
    # Writes (acks=all) need this many in-sync replicas: 2 with replication 3 survives one broker.
    min_insync_replicas: int = 1
    # Of the transient dead-letter topic.
    retention_ms: int = 14 * 24 * 3600 * 1000
    # Of the record topics: -1 keeps every event for good.
    record_retention_ms: int = -1

    def record_topics(self) -> list[str]:
        """The topics whose events are the record the read models are rebuilt from."""
        return [self.submissions, self.vision, self.translation, self.completions, self.webhooks]

    def subscriptions(self) -> dict[str, tuple[str, ...]]:
        """Each service's consumer group with the topics it subscribes to, its work first (its
        group's lag there is what KEDA scales it on). The services subscribe by this table and the
        gateway reads their lag by it: a second copy in the gateway could miss a topic, unseen."""
        return {VISION_BATCHER_GROUP: (self.submissions,),
                # Its lots, and the submissions for cancellations.
                TRANSLATOR_GROUP: (self.vision, self.submissions),
                # Every record topic, its own JobCompleted included: the read models are what the
                # log says, live as in a rebuild (docs/EVENT_LOG.md).
                RESULT_STORE_GROUP: tuple(self.record_topics()),
                WEBHOOK_DISPATCHER_GROUP: (self.completions,)}

    def all_topics(self) -> list[str]:
        """Every topic the pipeline uses, dead-letter included."""
        return [*self.record_topics(), self.dead_letter]

    def retention_of(self, topic: str) -> int:
        """The retention (ms, -1 = for good) a topic is created and kept with."""
        return self.record_retention_ms if topic in self.record_topics() else self.retention_ms


class KafkaSettings(BaseSettings):
    """Where the broker is and how clients talk to it."""

    model_config = settings_config("KAFKA_")

    bootstrap_servers: str = "127.0.0.1:19092"
    # A consumer batch is applied in one database transaction; bigger batches amortise commits.
    consume_batch_size: int = 1000
    consume_batch_timeout_s: float = 0.2
    # ... and at most this many bytes of events: PostgreSQL takes at most 256 MB in one jsonb value,
    # and a batch's rows are written in one statement.
    consume_batch_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # Prepended to every consumer group id (tests isolate themselves with it).
    group_prefix: str = ""
    # How fast a dead consumer's partitions move to the survivors (broker minimum is 6 s), and how
    # long a job's status waits for a killed instance that is not restarted. Heartbeats go every
    # 3 s, so 10 s tolerates two lost ones; longer suits clusters whose pauses (GC, network) are.
    session_timeout_ms: int = 10_000
    # Static membership (the instance's stable name, e.g. its pod or `make up` name): a restarted
    # instance rejoins under it and takes its partitions back at once, without waiting out the
    # session timeout or a rebalance. A static member does not leave the group when it stops, so
    # an instance removed for good holds its partitions for one session timeout.
    group_instance_id: str | None = None
    # How often each consumer refreshes its lag metric.
    lag_interval_s: float = 5.0
    # A consumer's handler meeting its connection pool timed out (every connection busy past its
    # wait) for this long, with no database error meanwhile, stops beating `/livez`: a connection
    # leak or a handler holding two connections never recovers, and a restart frees the pool. A
    # PostgreSQL outage (errors of its own) keeps the heartbeat: a restart cures nothing there.
    pool_stuck_after_s: float = Field(default=300.0, gt=0)
    # A producer whose messages got no delivery report for this long while a broker answers is
    # replaced (librdkafka can keep a partition it saw without a leader waiting for good).
    producer_stall_s: float = 20.0
    # How long an operator command (`lotlens-admin dlq`, `projections rebuild`) waits for each
    # metadata or offsets answer before it reports in one line that Kafka did not answer.
    command_timeout_s: float = Field(default=10.0, gt=0)
    # ... and how long one reading the log (`dlq list`, `projections rebuild`) reads on without a
    # message (a broker restarting) before it says so: a restart took longer than the 10 s above.
    command_patience_s: float = Field(default=60.0, gt=0)
    # Managed clusters usually require TLS and SASL; local and test brokers use PLAINTEXT.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    def client_config(self) -> dict[str, Any]:
        """The librdkafka settings every producer, consumer and admin client shares (its log lines
        go through Python logging, as JSON)."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers,
                                  "security.protocol": self.security_protocol, "logger": KAFKA_LOGGER}
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username or ""
            config["sasl.password"] = self.sasl_password.get_secret_value() if self.sasl_password else ""
        return config


# The longest a service's transaction waits for Kafka between two statements: the result-store's
# announcement of finished jobs (`EventProducer.flush`, 30 s, its ping of the brokers, up to 2 s,
# within them; the relay's is `LOTLENS_OUTBOX_PUBLISH_TIMEOUT_S`). An idle-transaction timeout must
# leave room for it and a margin (the ping counted again: it came after the wait until the wait
# ended when asked): shorter, every announcement made while Kafka is slow was ended, try after try.
KAFKA_WAIT_IN_TRANSACTION_S, BROKER_PING_S, IDLE_MARGIN_S = 30.0, 2.0, 10.0


class DatabaseSettings(BaseSettings):
    """PostgreSQL connection for the read models and the services' own work tables."""

    model_config = settings_config()

    database_url: str = Field(
        default="postgresql+psycopg2://lotlens:lotlens@127.0.0.1:55432/lotlens",
        validation_alias="DATABASE_URL",
    )
    pool_size: int = Field(default=5, validation_alias="DATABASE_POOL_SIZE")
    # A database that vanishes without a word (a failover whose old primary's address goes dark, a
    # dropped NAT entry: no FIN, no RST) is noticed by TCP alone. Linux gave a statement sent into
    # the dark 15 minutes of retransmissions, and one waiting for its answer for ever (libpq's
    # keepalives waited the system's two hours of silence). Now a connection is given up on after
    # about 30 s: bytes unacknowledged for `tcp_user_timeout_ms`, or keepalive probes (from
    # `keepalives_idle_s` of silence, every `keepalives_interval_s`) unanswered as long; where
    # there is no user timeout (0, or not Linux), after `keepalives_count` unanswered probes.
    # A live server's kernel answers probes however long its query runs.
    keepalives_idle_s: int = Field(default=15, ge=1, validation_alias="DATABASE_KEEPALIVES_IDLE_S")
    keepalives_interval_s: int = Field(default=5, ge=1, validation_alias="DATABASE_KEEPALIVES_INTERVAL_S")
    keepalives_count: int = Field(default=3, ge=1, validation_alias="DATABASE_KEEPALIVES_COUNT")
    tcp_user_timeout_ms: int = Field(default=30_000, ge=0, validation_alias="DATABASE_TCP_USER_TIMEOUT_MS")
    # How long one statement may wait for a lock (`lock_timeout`) and run in all (`statement_timeout`),
    # by who waits on it (`make_engine`'s `limits`; 0 is no limit). There were none: a table held
    # locked (an operator's fix in an open transaction, a long migration) held every status poll and
    # submission touching it for as long as the lock, and a consumer's batch likewise, silently.
    # A request's: its client waits, and one lock would hold all of the gateway's worker threads;
    # no LotLens writer holds a lock for seconds, so past 3 s it is 503 with Retry-After. A 50,000-lot
    # job's COPY takes about a second: 30 s is no limit a healthy database meets.
    request_lock_timeout_ms: int = Field(default=3_000, ge=0,
                                         validation_alias="DATABASE_REQUEST_LOCK_TIMEOUT_MS")
    request_statement_timeout_ms: int = Field(default=30_000, ge=0,
                                              validation_alias="DATABASE_REQUEST_STATEMENT_TIMEOUT_MS")
    # A worker's (consumers, stage loops, the webhook dispatcher): no client waits, so longer; the
    # lock wait then fails as a transient error, its batch is retried (offsets kept, the loop's
    # heartbeat beating) and the log says why every time; a statement over its time is a slow
    # query, its event dead-lettered (`kafka.is_transient`). Migrations get neither: they bound their
    # own lock waits (`LockPatience`) and build indexes as long as it takes.
    worker_lock_timeout_ms: int = Field(default=10_000, ge=0,
                                        validation_alias="DATABASE_WORKER_LOCK_TIMEOUT_MS")
    worker_statement_timeout_ms: int = Field(default=300_000, ge=0,
                                             validation_alias="DATABASE_WORKER_STATEMENT_TIMEOUT_MS")
    # How long a service's session (a request's or a worker's, not `lotlens-admin`'s or a
    # migration's) may sit idle inside a transaction before PostgreSQL ends it, rolled back
    # (`idle_in_transaction_session_timeout`; 0 is no limit). A replica gone silent in the middle of
    # one (frozen, SIGSTOPped, its node or its NAT entry gone) left its session idle in transaction
    # with the job's locks for the two hours the server's keepalives wait, and every other replica
    # needing that job failed each try after its lock timeout meanwhile. The longest legitimate
    # idle gap: the result-store's announcement waits for Kafka inside its transaction (30 s, and a
    # 2 s ping), the relay's round for `LOTLENS_OUTBOX_PUBLISH_TIMEOUT_S` (10 s, and the ping);
    # every other transaction does database work alone between its statements (refused below
    # those and a margin at start: `check_idle_timeout`).
    idle_in_transaction_timeout_ms: int = Field(default=60_000, ge=0,
                                                validation_alias="DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS")
    # `lotlens-admin`'s lock waits, and nothing else (its statements run as long as they take; the
    # rebuild's swap waits up to its own 60 s). psycopg2 acts on Ctrl-C only once a statement returns:
    # without it a command behind a lock left open in psql waited for ever and ignored Ctrl-C.
    admin_lock_timeout_ms: int = Field(default=10_000, ge=1,
                                       validation_alias="DATABASE_ADMIN_LOCK_TIMEOUT_MS")

    def check_idle_timeout(self, wait_s: float, what: str) -> None:
        """Refuse an idle-transaction timeout that would end a transaction waiting `wait_s` (and a
        broker ping, and a margin) for Kafka between two of its statements (`what` waits so)."""
        least_s = wait_s + BROKER_PING_S + IDLE_MARGIN_S
        if 0 < self.idle_in_transaction_timeout_ms < least_s * 1000:
            raise ValueError(
                f"DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS ({self.idle_in_transaction_timeout_ms}) must be 0 "
                f"or at least {least_s * 1000:.0f}: {what} ({wait_s:g} s, a {BROKER_PING_S:g} s ping and "
                f"{IDLE_MARGIN_S:g} s of margin) happens inside a transaction, which a shorter timeout "
                "ends every time Kafka is slow")

    def dead_peer_detection(self) -> dict[str, int]:
        """The libpq connection parameters that bound how long a vanished database goes unnoticed."""
        return {"keepalives_idle": self.keepalives_idle_s, "keepalives_interval": self.keepalives_interval_s,
                "keepalives_count": self.keepalives_count, "tcp_user_timeout": self.tcp_user_timeout_ms}

    def request_limits(self) -> dict[str, int]:
        """The session limits (ms) of the gateway's connections: a client waits on each statement."""
        return {"lock_timeout": self.request_lock_timeout_ms,
                "statement_timeout": self.request_statement_timeout_ms,
                "idle_in_transaction_session_timeout": self.idle_in_transaction_timeout_ms}

    def admin_limits(self) -> dict[str, int]:
        """The session limits (ms) of `lotlens-admin`'s connections: a bounded wait for each lock."""
        return {"lock_timeout": self.admin_lock_timeout_ms}

    def worker_limits(self) -> dict[str, int]:
        """The session limits (ms) of consumers', stage loops' and the dispatcher's connections."""
        return {"lock_timeout": self.worker_lock_timeout_ms,
                "statement_timeout": self.worker_statement_timeout_ms,
                "idle_in_transaction_session_timeout": self.idle_in_transaction_timeout_ms}


# Where the OpenAI stand-in listens unless `OPENAI_STANDIN_URL` says otherwise (`make up`).
DEFAULT_STANDIN_BASE_URL = "http://127.0.0.1:18080/v1"
# Where a key's calls go without `OPENAI_BASE_URL`. Given to the SDK, never left to it: it reads
# OPENAI_BASE_URL itself, and took compose's empty one for a URL.
OPENAI_API_URL = "https://api.openai.com/v1"
# The stand-in's host name in docker-compose and the local Kubernetes overlay (its first label).
STANDIN_HOST = "openai-standin"
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


class OpenAISettings(BaseSettings):
    """How to reach the model API: with a key, OpenAI (or `base_url`); without one, the stand-in."""

    model_config = settings_config("OPENAI_")

    api_key: SecretStr | None = None
    base_url: str | None = None
    # Where the calls go without a key (and without `base_url`): docker-compose names its container.
    standin_url: str = DEFAULT_STANDIN_BASE_URL
    timeout_s: float = 120.0
    # "batch" uses the OpenAI Batch API; "direct" sends the same requests one by one, for
    # OpenAI-compatible servers without a Batch API.
    mode: str = "batch"

    @field_validator("api_key", mode="before")
    @classmethod
    def _key_as_issued(cls, value: object) -> object:
        # A key read from a file ends in a newline (`kubectl create secret --from-file`, vault
        # files), which neither the SDK nor h11 strips: every call failed as "connection failed",
        # with the whole key in that error's text, and alerts pointed at an OpenAI outage.
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value
        value = value.strip()
        if _SPACE_OR_CONTROL.search(value):
            raise ValueError("OPENAI_API_KEY holds whitespace or control characters inside it: "
                             "give the key alone, as OpenAI issued it")
        return value or None  # empty (compose's unset variable): the stand-in

    @field_validator("base_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: object) -> object:
        return (value.strip() or None) if isinstance(value, str) else value

    def secret_key(self) -> str | None:
        """The key itself, for the SDK alone."""
        return self.api_key.get_secret_value() if self.api_key is not None else None

    def model_url(self) -> str:
        """Where the model calls go: `base_url`, else OpenAI with a key, else the stand-in."""
        return self.base_url or (OPENAI_API_URL if self.api_key is not None else self.standin_url)

    def calls_standin(self) -> bool:
        """Whether the model calls stay local: to a loopback address or the stand-in's host."""
        host = (urlsplit(self.model_url()).hostname or "").rstrip(".").lower()
        if host == "localhost" or host.split(".")[0] == STANDIN_HOST:
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


class ServiceSettings(BaseSettings):
    """What every LotLens service needs: broker, database, topics, models."""

    model_config = settings_config("LOTLENS_", nested=True)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    # Outbound fetches (images, webhooks) to loopback addresses are refused unless this is on;
    # the local stack and the tests turn it on.
    allow_loopback_urls: bool = False
    # Host names are looked up on at most this many threads (`lookups.py`), and lookups of one
    # client for one purpose (its image checks, its webhook hosts at intake) on at most this many
    # of them: a domain whose DNS never answers holds its own client's share, not everyone's.
    dns_lookup_threads: int = Field(default=32, ge=1)
    dns_lookups_per_client: int = Field(default=8, ge=1)
    log_level: str = "INFO"
    # Where a service serves /metrics, /livez and /readyz (the gateway its detailed /health too) on
    # its `metrics_port` (0: not served); 0.0.0.0 in a container, so that Prometheus and the kubelet
    # reach it. Never the gateway's API port.
    metrics_host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _idle_transactions_outlast_kafka_waits(self) -> ServiceSettings:
        self.database.check_idle_timeout(KAFKA_WAIT_IN_TRANSACTION_S, "the result-store's wait for Kafka")
        return self

    def billed_share(self) -> float:
        """The share of list prices the stages' requests are billed (the Batch API's discount)."""
        return self.models.batch_discount if self.openai.mode == "batch" else 1.0
