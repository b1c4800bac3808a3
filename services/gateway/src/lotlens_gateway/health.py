"""Is the gateway able to serve? PostgreSQL and Kafka must answer; the consumers are reported.

A missing consumer group (a stage service down) makes the answer `degraded` but not 503: the
gateway itself still accepts and serves jobs, they just wait. Kafka answers are cached for a
couple of seconds so a health-check storm does not become an admin-request storm.

An admin client that once failed is replaced: after a broker restart librdkafka's admin client
can go on failing every group description (empty error) while a new one reads them at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka.admin import AdminClient

from lotlens_common.settings import KafkaSettings

log = logging.getLogger(__name__)


class AdminLike(Protocol):
    """The two `confluent_kafka.admin.AdminClient` calls the probe uses."""

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        """Cluster metadata."""

    def describe_consumer_groups(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Futures of group descriptions."""


def admin_client(kafka: KafkaSettings) -> AdminLike:
    """An admin client with the full client config (TLS and SASL included), as every client has."""
    admin: AdminLike = AdminClient(kafka.client_config())
    return admin


@dataclass(frozen=True)
class GroupState:
    """One consumer group: its broker-side state and how many members it has."""

    state: str
    members: int

    @property
    def running(self) -> bool:
        """A group with at least one member is consuming."""
        return self.members > 0


@dataclass(frozen=True)
class KafkaHealth:
    """Whether the broker answered, and the state of every expected consumer group."""

    connected: bool
    groups: dict[str, GroupState] = field(default_factory=dict)

    @property
    def workers_running(self) -> bool:
        """Every expected group has members."""
        return self.connected and all(group.running for group in self.groups.values())


class KafkaProbe:
    """Cached broker and consumer-group checks (blocking; the gateway runs it as a `SharedCheck`)."""

    def __init__(self, new_admin: Callable[[], AdminLike], groups: Sequence[str], group_prefix: str = "",
                 cache_s: float = 2.0, timeout_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._new_admin = new_admin
        self._admin: AdminLike | None = None
        self._groups = list(groups)
        self._prefix = group_prefix
        self._cache_s = cache_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, KafkaHealth] | None = None

    def health(self) -> KafkaHealth:
        """The broker's and the consumer groups' state, at most `cache_s` old."""
        with self._lock:
            now = self._clock()
            if self._cached and now - self._cached[0] < self._cache_s:
                return self._cached[1]
            result = self._probe()
            self._cached = (self._clock(), result)
            return result

    def _probe(self) -> KafkaHealth:
        admin = self._admin = self._admin or self._new_admin()
        try:
            admin.list_topics(timeout=self._timeout_s)
        except Exception as exc:  # any failure to get metadata means "not connected"
            log.warning("kafka health check failed: %s", exc)
            self._admin = None
            return KafkaHealth(connected=False)
        groups = self._describe_groups(admin)
        if any(group.state == "unknown" for group in groups.values()):
            self._admin = None  # the next probe asks with a new client
        return KafkaHealth(connected=True, groups=groups)

    def _describe_groups(self, admin: AdminLike) -> dict[str, GroupState]:
        groups: dict[str, GroupState] = {}
        try:
            futures = admin.describe_consumer_groups(
                [self._prefix + name for name in self._groups], request_timeout=self._timeout_s)
        except Exception as exc:
            log.warning("describing consumer groups failed: %s", exc)
            return {name: GroupState("unknown", 0) for name in self._groups}
        # The descriptions were asked for together: one timeout for all of them, not one each
        # (a broker answering none made a probe of four groups take four timeouts).
        deadline = time.monotonic() + self._timeout_s
        for name in self._groups:
            try:
                description = futures[self._prefix + name].result(max(0.0, deadline - time.monotonic()))
                state = getattr(description.state, "name", str(description.state)).lower()
                groups[name] = GroupState(state, len(description.members or []))
            except Exception as exc:
                log.warning("consumer group %s: %s", name, exc)
                groups[name] = GroupState("unknown", 0)
        return groups
