"""Settings of the gateway (env prefix `LOTLENS_`, like every service's settings)."""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field, SecretStr, field_validator, model_validator

from lotlens_common.images import MAX_IMAGE_BYTES
from lotlens_common.settings import (
    RESULT_STORE_GROUP,
    TRANSLATOR_GROUP,
    VISION_BATCHER_GROUP,
    WEBHOOK_DISPATCHER_GROUP,
    ServiceSettings,
    settings_config,
)
from lotlens_common.topics import MAX_MESSAGE_BYTES
from lotlens_gateway.body import BodyTimeouts
from lotlens_gateway.relay import RelaySettings
from lotlens_gateway.signed_body import BodyLimits

# The least length of a client's shared key (1.x documented the same: its example server key was
# "your-secret-hmac-key-minimum-32-characters-long"). One captured request gives a message and
# its HMAC: a short or guessable key is then found offline, and with it every signature.
MIN_KEY_CHARS = 32
# The `demo` client's key in docker-compose.yml and the local Kubernetes overlay: published in the
# repository, so anyone can sign with it. Long enough for the check above.
PUBLIC_DEMO_KEY = "demo-shared-key-local-only-not-a-secret"

# What a synchronous call does around its budget while it holds its Idempotency-Key (the rate
# limit, the checks, storing its answer): the least an idempotency lease must exceed it by.
LEASE_MARGIN_S = 30.0

# After its budget, a synchronous lot's answer is stored under its key and sent: what the
# shutdown waits past `sync_timeout_s` for a lot still being described (`longest_drain_s`).
LOT_ANSWER_S = 10.0

CONSUMER_GROUPS = (VISION_BATCHER_GROUP, TRANSLATOR_GROUP, RESULT_STORE_GROUP, WEBHOOK_DISPATCHER_GROUP)


class GatewaySettings(ServiceSettings):
    """Client keys, listen address, request limits, rate limits and the synchronous budget.

    `LOTLENS_CLIENTS='{"client_id": "shared-key"}'` is required; the keys are secrets and are
    never logged or rendered. Every other field is `LOTLENS_<FIELD NAME IN CAPITALS>`, e.g.
    `LOTLENS_GATEWAY_PORT=18000`, `LOTLENS_RATE_LIMIT_BATCH=10`.
    """

    model_config = settings_config("LOTLENS_", nested=True)

    clients: dict[str, SecretStr]
    # A client's next key during a rotation (`LOTLENS_CLIENT_NEXT_KEYS='{"client_id": "new key"}'`):
    # requests signed with either key are the client's, so the client and every replica need not
    # switch at one instant. Webhooks are still signed with its key in `clients` (docs/RUNBOOK.md).
    client_next_keys: dict[str, SecretStr] = Field(default_factory=dict)
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 18000
    # The operations listener (`/metrics`, the detailed `/health`, `/livez`, `/readyz`) on
    # `metrics_host`, as every service has it (0: not served). Never the API port: what it says
    # is for Prometheus, the kubelet and operators, not for whoever reaches the API.
    metrics_port: int = 0

    # Requests per client and mode in any span of the window (a sliding one, ratelimit.py;
    # defaults from the v2.0 document).
    rate_limit_sync: int = 100
    rate_limit_batch: int = 10
    rate_limit_polling: int = 1000
    rate_limit_window_s: int = 60
    # Jobs whose webhooks one client may have redelivered in 10 minutes (routes_webhooks.py); a
    # job itself once.
    webhook_redeliveries_per_client: int = Field(10, ge=1)

    # The contract's 50,000 lots at the largest real size (README, "Request limits"): 20 photos at
    # 104-character URLs, a 200-character note and a webhook are 2,676 bytes a lot, 134 MB in all.
    # At 64 MiB, 50,000 lots of 12 such photos were a 413.
    max_body_bytes: int = 144 * 1024 * 1024
    # Job bodies (over `max_lot_bytes`) one process takes at once, how many more it reads and keeps
    # waiting for a slot, and how long one waits before a 503 (intake_slots.py). A taken one holds
    # up to about 800 MB at the cap (50,000 lots of 23 photos: 924 MB peak, 148 MB idle), a waiting
    # one its body (at most `max_body_bytes`, twice that as its last bytes arrive): a pod's memory
    # limit wants about 150 MB plus those (deploy/k8s/base/gateway.yaml).
    intake_slots: int = 1
    intake_waiting: int = Field(default=1, ge=0)
    intake_wait_s: float = 20.0
    # Bodies from one address refused before authentication (strikes.py) in a window, after
    # which its bodies get 429 unread until the window ends; 0 turns this off.
    intake_strikes_limit: int = Field(default=5, ge=0)
    intake_strikes_window_s: float = Field(default=60.0, gt=0)
    # Connections (connections.py, body.py): a request line and headers over `max_header_bytes` are a
    # 431; a head not complete within `header_timeout_s` of its first byte, or a body whose bytes stop
    # for `body_gap_timeout_s` or that takes longer than `body_timeout_s` in all (a job body:
    # `job_body_timeout_s`), a 408. A connection idle between requests is closed after
    # `keep_alive_timeout_s` (uvicorn's `timeout_keep_alive`).
    max_header_bytes: int = 32 * 1024
    header_timeout_s: float = 10.0
    body_gap_timeout_s: float = 15.0
    # Short for a lot's body: a synchronous lot's 290 s budget runs from before its body is read.
    body_timeout_s: float = 120.0
    # A job body at the cap arrives within it at 500 KB/s (4 Mbit/s): 120 s asked 1.26 MB/s of it.
    job_body_timeout_s: float = Field(default=300.0, gt=0)
    # Longer than a front proxy keeps an idle connection to us (ingress-nginx's upstream-keepalive-timeout
    # and AWS ALB's idle timeout: 60 s): at 5 s the proxy sent requests on connections we had just
    # closed, and a POST, which it does not retry, came back to the integrator as a 502.
    keep_alive_timeout_s: int = 75
    # Answers the client takes no byte of for `send_stall_timeout_s` are cut (connections.py). Result
    # downloads and lots pages answered at once, per client (past it a 429) and per process (a 503):
    # each holds about 2 MB while its client reads (results.py), so a pod's memory limit wants room
    # for `download_slots` of them.
    send_stall_timeout_s: float = Field(default=30.0, gt=0)
    download_slots: int = 32
    download_slots_per_client: int = 4
    # A lots page takes as many of its `limit` lots as fit in this many bytes of JSON (at least one):
    # 500 lots listing 500 missing URLs of 8 KB each were gigabytes rendered for one request. A page
    # is held in memory while it is sent (about 1.5 times its bytes), in each of `download_slots`:
    # at 4 MiB, rendered whole (3.5 to 4.5 times), 32 pages were about 500 MB.
    lots_page_max_bytes: int = Field(default=1024 * 1024, ge=1)
    # A job body (bigger than `max_lot_bytes`, or of undeclared size) holds one of the intake's
    # admissions while it is read: once `job_body_min_rate_after_s` have passed, fewer bytes than
    # `job_body_min_bytes_per_s` on average since its head is a 408 (0 turns the floor off). A body
    # whose `Content-Length` it declares must keep the rate that finishes it within
    # `job_body_timeout_s`, if that is more (at 300 s, 500 KB/s for 150 MB).
    job_body_min_bytes_per_s: int = Field(default=4096, ge=0)
    job_body_min_rate_after_s: float = Field(default=5.0, ge=0)
    # Checked while the body is read, before the signature: nesting of any field, digits of an integer.
    max_json_depth: int = 32
    max_integer_digits: int = 32
    # One lot's JSON (10,000 characters of notes and 500 image URLs fit well within it).
    max_lot_bytes: int = 1024 * 1024
    max_lots: int = 50_000
    max_languages: int = 10
    max_sync_images: int = 20
    max_lot_id_chars: int = 256
    max_additional_info_chars: int = 10_000
    # One lot is one OpenAI request: at most 500 images (and 50 MB of them) per request.
    max_batch_images: int = 500
    # Resolving a webhook host at intake takes at most this long (then the URL is accepted), and
    # only a job's first this many distinct hosts are (the others: by the dispatcher, at delivery).
    webhook_dns_timeout_s: float = 2.0
    max_webhook_hosts_checked: int = Field(default=100, ge=0)
    max_image_bytes: int = MAX_IMAGE_BYTES

    # The contract answers a synchronous lot within 300 s; the budget leaves room for the rest.
    sync_timeout_s: float = 290.0
    # Synchronous lots one process describes at once, per client (past it a 429) and in all (a
    # 503), both answered at once with Retry-After (sync_slots.py). Unbounded, a burst went to
    # OpenAI whole, whose 429s then failed them all after their waits. A client within its rate
    # limit (100 a minute) whose lots take 30 s each has 50 at once: no fewer places than that.
    sync_slots: int = 100
    sync_slots_per_client: int = 50
    image_check_concurrency: int = 16
    image_check_timeout_s: float = 10.0
    # The image checks' one HTTP client has `image_check_connections`; a client's checks (its
    # synchronous lots' and `test-image-validation`'s) hold at most `image_checks_per_client` of
    # them, the rest waiting in its own line before their timeout starts (lotlens_common/shares.py).
    # Unbounded, one client's URLs on a host that never answers held every connection, and other
    # clients' working images ran out of time queueing behind them.
    image_check_connections: int = 100
    image_checks_per_client: int = 25
    max_test_image_urls: int = 100

    # A batch job's first estimate: a base plus a little per lot, never past the 24 h window.
    estimate_base_s: float = 1800.0
    estimate_per_lot_s: float = 0.05
    # The outbox relay: rows per publishing round, how long it waits for Kafka's acknowledgement
    # of a round, how long published rows are kept for the reads' overlay.
    outbox_batch_rows: int = 5000
    # One event (a lot) must fit in one Kafka message (the topics take 10 MiB) with its key and
    # headers, and a dead letter's copy with its own: bigger is a 413. Set above that, the 201
    # came for an event the relay could never publish, and every later job waited behind it.
    max_event_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=MAX_MESSAGE_BYTES - 1024 * 1024)
    outbox_publish_timeout_s: float = 10.0
    outbox_retention_s: float = 3600.0
    # A PostgreSQL that does not answer: the client gets 503 after this, not after the OS's timeout.
    database_connect_timeout_s: int = 3
    idempotency_ttl_s: int = 24 * 3600
    # An Idempotency-Key held this long by a request still unanswered is taken for one whose
    # request died: a resend of the same body takes it over (idempotency.py). Unset: the longest
    # synchronous request and a minute, so no synchronous lot is described twice; set, at least
    # `sync_timeout_s` + `LEASE_MARGIN_S` (refused at start otherwise).
    idempotency_lease_s: float | None = Field(default=None, gt=0)
    # A job's reservation is taken over sooner: a job request whose key a resend took over writes
    # nothing (its answer is stored in its outbox transaction only while the key is still its own,
    # idempotency.py), so a short lease risks no second job. With the long one, a gateway that
    # died between reserving and writing left the resends 409 for about 6 minutes, while the SDK
    # gives up after about 11 s (a 1 s pause, then three 409s 5 s apart). A live job request
    # renews its reservation while it works (key_lease.py): its lease counts from the last
    # renewal, so a slow intake keeps its key and its resends hear 409 until its 201 is stored.
    idempotency_job_lease_s: float = Field(default=10.0, gt=0)
    health_cache_s: float = 2.0
    # How old /health's model API reachability may get before it is checked again (in the background).
    openai_check_interval_s: float = 30.0
    consumer_groups: tuple[str, ...] = CONSUMER_GROUPS
    # After SIGTERM (__main__.py, shutdown.py): requests in flight get `shutdown_drain_s` (a
    # request still unanswered then is answered 503 with Retry-After), but a synchronous lot being
    # described runs on to its deadline (`longest_drain_s`); then the relay publishes what they
    # committed for at most `shutdown_relay_s`. The pod's grace period holds both and the flush.
    shutdown_drain_s: float = Field(default=30.0, gt=0)
    shutdown_relay_s: float = Field(default=10.0, gt=0)

    @field_validator("clients")
    @classmethod
    def _some_client(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        if not value:
            raise ValueError("at least one client is needed")
        if any(not client_id or not key.get_secret_value() for client_id, key in value.items()):
            raise ValueError("client ids and keys must not be empty")
        short = [client_id for client_id, key in value.items() if len(key.get_secret_value()) < MIN_KEY_CHARS]
        if short:
            raise ValueError(f"the keys of clients {', '.join(short)} are shorter than {MIN_KEY_CHARS} "
                             "characters: give each a long random key (e.g. `openssl rand -hex 32`)")
        holders: dict[str, list[str]] = {}
        for client_id, key in value.items():
            holders.setdefault(key.get_secret_value(), []).append(client_id)
        # A request is taken for the first client whose key verifies it: the others would act as it.
        shared = [", ".join(ids) for ids in holders.values() if len(ids) > 1]
        if shared:
            raise ValueError(f"clients {'; '.join(shared)} share one key: each client needs its own")
        return value

    @field_validator("rate_limit_sync", "rate_limit_batch", "rate_limit_polling", "rate_limit_window_s",
                     "max_lots", "max_languages", "max_body_bytes", "outbox_batch_rows",
                     "max_header_bytes", "keep_alive_timeout_s", "intake_slots", "download_slots",
                     "download_slots_per_client", "sync_slots", "sync_slots_per_client",
                     "image_check_connections", "image_checks_per_client")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @model_validator(mode="after")
    def _next_keys_are_their_clients_alone(self) -> GatewaySettings:
        unknown = sorted(set(self.client_next_keys) - set(self.clients))
        if unknown:
            raise ValueError("LOTLENS_CLIENT_NEXT_KEYS names clients not in LOTLENS_CLIENTS: "
                             + ", ".join(unknown))
        short = [client_id for client_id, key in self.client_next_keys.items()
                 if len(key.get_secret_value()) < MIN_KEY_CHARS]
        if short:
            raise ValueError(f"the next keys of clients {', '.join(short)} are shorter than {MIN_KEY_CHARS} "
                             "characters: give each a long random key (e.g. `openssl rand -hex 32`)")
        holders: dict[str, set[str]] = {}
        for client_id, key in self.client_keyring():
            holders.setdefault(key, set()).add(client_id)
        shared = [", ".join(sorted(ids)) for ids in holders.values() if len(ids) > 1]
        if shared:
            raise ValueError(f"clients {'; '.join(shared)} share one key (LOTLENS_CLIENT_NEXT_KEYS "
                             "counted): each client needs its own")
        return self

    @model_validator(mode="after")
    def _public_key_only_with_the_standin(self) -> GatewaySettings:
        # With the real API behind it, whoever read the repository could submit jobs, paid for by
        # the service's OpenAI account (docker-compose with OPENAI_API_KEY alone did just that).
        holders = sorted({client_id for client_id, key in self.client_keyring() if key == PUBLIC_DEMO_KEY})
        if holders and not self.openai.calls_standin():
            raise ValueError(f"clients {', '.join(holders)} have the public demo key while the model calls "
                             "go to a real model API: give each a long random key (LOTLENS_DEMO_CLIENT_KEY "
                             "in docker-compose, e.g. `openssl rand -hex 32`)")
        return self

    @model_validator(mode="after")
    def _lease_outlasts_a_synchronous_call(self) -> GatewaySettings:
        # Set under the budget, a resend took over the key of a synchronous call still running,
        # and the lot was described (paid for) twice.
        least = self.sync_timeout_s + LEASE_MARGIN_S
        if self.idempotency_lease_s is not None and self.idempotency_lease_s < least:
            raise ValueError(
                f"LOTLENS_IDEMPOTENCY_LEASE_S ({self.idempotency_lease_s:g} s) must be at least "
                f"LOTLENS_SYNC_TIMEOUT_S ({self.sync_timeout_s:g} s) + {LEASE_MARGIN_S:g} s = {least:g} s: "
                "a shorter lease lets a resend take over a synchronous call still running, and its "
                "lot is described (and paid for) twice; unset, it is LOTLENS_SYNC_TIMEOUT_S + 60 s")
        return self

    @model_validator(mode="after")
    def _idle_transactions_outlast_the_relay(self) -> GatewaySettings:
        # Ended inside its wait, a round never marked what it published: sent again every round.
        self.database.check_idle_timeout(self.outbox_publish_timeout_s,
                                         "the relay's wait for Kafka (LOTLENS_OUTBOX_PUBLISH_TIMEOUT_S)")
        return self

    def body_limits(self) -> BodyLimits:
        """What a submission's body may hold before it is authenticated."""
        return BodyLimits(max_lots=self.max_lots, max_depth=self.max_json_depth,
                          max_integer_digits=self.max_integer_digits, max_lot_bytes=self.max_lot_bytes)

    def body_timeouts(self, job_body: bool = False) -> BodyTimeouts:
        """How long a request body may pause, and take in all (a job body, bigger than one lot or
        of undeclared size: long enough for one at the cap)."""
        return BodyTimeouts(gap_s=self.body_gap_timeout_s,
                            total_s=self.job_body_timeout_s if job_body else self.body_timeout_s)

    def job_body_timeouts(self, declared: int | None = None) -> BodyTimeouts:
        """A job body's read while it holds an admission: its limits and the minimum rate, for a
        body of `declared` bytes the rate that brings it all within `job_body_timeout_s`."""
        # A 150 MB body at 5 KB/s kept over the flat floor and held its admission for the whole
        # timeout, only to be cut then: one that cannot arrive in time is cut once it falls behind.
        floor = float(self.job_body_min_bytes_per_s)
        if floor > 0 and declared is not None:
            floor = max(floor, declared / self.job_body_timeout_s)
        return replace(self.body_timeouts(job_body=True), min_bytes_per_s=floor,
                       min_rate_after_s=self.job_body_min_rate_after_s)

    def idempotency_lease(self) -> float:
        """Seconds after which an unanswered Idempotency-Key reservation may be taken over."""
        return self.idempotency_lease_s or self.sync_timeout_s + 60.0

    def longest_drain_s(self) -> float:
        """How long the shutdown waits for requests in flight: a synchronous lot being described
        until its deadline and its answer's store, any other request `shutdown_drain_s`."""
        return max(self.shutdown_drain_s, self.sync_timeout_s + LOT_ANSWER_S)

    def group_topics(self) -> dict[str, tuple[str, ...]]:
        """Each watched consumer group with the topics it subscribes to (`TopicSettings.subscriptions`;
        a group not in it: those it committed on). Its lag on a topic it never committed on is all
        of that topic's log (`group_lag.py`)."""
        subscribed = self.topics.subscriptions()
        return {group: subscribed.get(group, ()) for group in self.consumer_groups}

    def relay_settings(self) -> RelaySettings:
        """The outbox relay's settings."""
        return RelaySettings(batch_rows=self.outbox_batch_rows,
                             publish_timeout_s=self.outbox_publish_timeout_s,
                             retention_s=self.outbox_retention_s, clients=tuple(sorted(self.clients)))

    def client_keys(self) -> dict[str, str]:
        """client id → shared key, in the clear (for signature checks only)."""
        return {client_id: key.get_secret_value() for client_id, key in self.clients.items()}

    def client_keyring(self) -> list[tuple[str, str]]:
        """(client id, key) for every key that signs a client's requests: its key, then its next one."""
        return list(self.client_keys().items()) + [
            (client_id, key.get_secret_value()) for client_id, key in self.client_next_keys.items()]

    def rate_limit(self, mode: str) -> int:
        """Requests allowed per window for a mode (`sync`, `batch`, `polling`)."""
        limits = {"sync": self.rate_limit_sync, "batch": self.rate_limit_batch,
                  "polling": self.rate_limit_polling}
        return limits[mode]

