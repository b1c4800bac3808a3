"""Is the gateway able to serve? PostgreSQL and Kafka must answer; the consumers are reported.

A missing consumer group (a stage service down) makes the answer `degraded` but not 503: the
gateway itself still accepts and serves jobs, they just wait. Kafka answers are cached for a
couple of seconds so a health-check storm does not become an admin-request storm.

An admin client that once failed is replaced: after a broker restart librdkafka's admin client
can go on failing every group description (empty error) while a new one reads them at once. The
calls run in a child process of their own (`admin_process.py`): librdkafka can kill the process
making them as a broker stops, and a probe whose child died reads as a broker that did not answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lotlens_gateway.admin_process import AdminCalls

log = logging.getLogger(__name__)


class AdminLike(Protocol):
    """The two `confluent_kafka.admin.AdminClient` calls the probe uses."""

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        """Cluster metadata."""

    def describe_consumer_groups(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Futures of group descriptions."""


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

    def __init__(self, admin: AdminCalls, groups: Sequence[str], group_prefix: str = "",
                 cache_s: float = 2.0, timeout_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._admin = admin
        self._fresh = False  # the next probe asks with a new admin client
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
        try:
            # The metadata, then the descriptions: two timeouts at most.
            result = self._admin.run(read_health, self._groups, self._prefix, self._timeout_s,
                                     timeout_s=2 * self._timeout_s, fresh=self._fresh)
        except Exception as exc:  # its admin process was lost: as a broker that did not answer
            log.warning("kafka health check failed: %r", exc)
            result = KafkaHealth(connected=False)
        self._fresh = not result.connected or any(
            group.state == "unknown" for group in result.groups.values())
        return result


def read_health(admin: AdminLike, groups: Sequence[str], prefix: str, timeout_s: float) -> KafkaHealth:
    """Whether the broker answers `admin`, and the state of each group (named without `prefix`);
    run in the admin process."""
    try:
        admin.list_topics(timeout=timeout_s)
    except Exception as exc:  # any failure to get metadata means "not connected"
        log.warning("kafka health check failed: %s", exc)
        return KafkaHealth(connected=False)
    return KafkaHealth(connected=True, groups=_describe_groups(admin, groups, prefix, timeout_s))


def _describe_groups(admin: AdminLike, names: Sequence[str], prefix: str, timeout_s: float
                     ) -> dict[str, GroupState]:
    groups: dict[str, GroupState] = {}
    try:
        futures = admin.describe_consumer_groups([prefix + name for name in names], request_timeout=timeout_s)
    except Exception as exc:
        log.warning("describing consumer groups failed: %s", exc)
        return {name: GroupState("unknown", 0) for name in names}
    # The descriptions were asked for together: one timeout for all of them, not one each
    # (a broker answering none made a probe of four groups take four timeouts).
    deadline = time.monotonic() + timeout_s
    for name in names:
        try:
            description = futures[prefix + name].result(max(0.0, deadline - time.monotonic()))
            state = getattr(description.state, "name", str(description.state)).lower()
            groups[name] = GroupState(state, len(description.members or []))
        except Exception as exc:
            log.warning("consumer group %s: %s", name, exc)
            groups[name] = GroupState("unknown", 0)
    return groups
