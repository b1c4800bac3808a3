"""Settings of the webhook dispatcher (env prefix `LOTLENS_`, like every service's settings)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from lotlens_common.settings import WEBHOOK_DISPATCHER_GROUP, ServiceSettings


class DispatcherSettings(ServiceSettings):
    """Client keys, the retry schedule and the delivery limits.

    `LOTLENS_CLIENTS='{"client_id": "shared-key"}'` signs each job's webhooks' `X-Signature` with
    its client's key; `webhook-signature` uses the client's `whsec_` secrets, read from the
    `client_webhook_secrets` table. Every other field is `LOTLENS_<FIELD NAME IN CAPITALS>`.
    """

    clients: dict[str, SecretStr] = Field(default_factory=dict)
    consumer_group: str = WEBHOOK_DISPATCHER_GROUP
    # Waits before attempts 2, 3, ...; one more attempt than intervals (the contract: 5).
    webhook_retry_intervals_s: tuple[float, ...] = (30.0, 60.0, 120.0, 240.0)
    webhook_timeout_s: float = 30.0
    # Each wait is spread by ± this fraction, so endpoints that failed together retry apart.
    webhook_jitter: float = 0.1
    # A Retry-After longer than this is cut to it: one endpoint cannot park a delivery for days.
    webhook_retry_after_cap_s: float = 3600.0
    webhook_max_payload_bytes: int = 5 * 1024 * 1024
    webhook_concurrency: int = 64
    webhook_per_host_concurrency: int = 4
    # Attempts one client may have under way on an instance (None: a quarter of the concurrency),
    # so one client's slow endpoints cannot hold every slot (see `per_client_concurrency`).
    webhook_per_client_concurrency: int | None = Field(None, ge=1)
    webhook_poll_interval_s: float = 1.0
    # A claimed attempt is taken over by another instance after the lease (see `lease_s`).
    webhook_lease_margin_s: float = 30.0
    webhook_response_body_chars: int = 2000
    # Finished deliveries (delivered or given up) are forgotten this long after their last attempt.
    # A JobCompleted replayed from further back schedules its deliveries again, under the same
    # ids: the same `webhook-id`s, which receivers deduplicate.
    webhook_queue_retention_h: float = Field(15 * 24.0, gt=0)
    # A delivery that cannot start yet (its client has no key, its job is not in the read models)
    # is given up this long after its attempts first could not start: a client removed from
    # LOTLENS_CLIENTS, or a job whose projection was dead-lettered, was handed back every 30 s for good.
    webhook_unready_give_up_h: float = Field(24.0, gt=0)
    # How long a client's webhook secrets are cached at most: a rotation reaches the next POST
    # whatever this is (each attempt's mark reads the secrets' version), an overlap's end is kept
    # to the second; it only bounds how long a change made by hand in the table goes unseen.
    webhook_secrets_cache_s: float = 10.0
    # Where /metrics is served (0: not served; the deployments set 9100).
    metrics_port: int = 0

    @field_validator("webhook_retry_intervals_s")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(interval < 0 for interval in value):
            raise ValueError("retry intervals must not be negative")
        return value

    def subscribed_topics(self) -> list[str]:
        """The finished jobs whose webhooks it schedules (KEDA scales it on its lag there)."""
        return list(self.topics.subscriptions()[WEBHOOK_DISPATCHER_GROUP])

    @property
    def lease_s(self) -> float:
        """How long a claimed attempt is reserved for the instance that claimed it.

        An attempt, its DNS lookup included, ends within one timeout (`guard.attempt_deadline`);
        the other two are slack for a busy machine (the body is built before the attempt). The
        lease is renewed as the POST starts (`post_marks`), and every third of a lease while the
        outcome waits to be recorded (`Recorder.keep_leases`): Kafka's waits are not bounded by it.
        """
        return 3 * self.webhook_timeout_s + self.webhook_lease_margin_s

    @property
    def per_client_concurrency(self) -> int:
        """Attempts one client may have under way on this instance: the setting, or a quarter of
        `webhook_concurrency` (at least 1). The per-host limit does not bound a client: its
        endpoints are on as many host names as its wildcard DNS answers for."""
        if self.webhook_per_client_concurrency is not None:
            return self.webhook_per_client_concurrency
        return max(1, self.webhook_concurrency // 4)

    def shared_key(self, client_id: str) -> str | None:
        """The client's shared key (`X-Signature`), or None for an unknown client."""
        key = self.clients.get(client_id)
        return key.get_secret_value() if key is not None else None
