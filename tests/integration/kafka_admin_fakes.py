"""Admin clients the gateway's tests hand it (`running_gateway(new_admin=...)`). The gateway builds
its admin clients in child processes (`lotlens_gateway.admin_process`), which import this module to
build them: module-level, picklable, and light to import (no test harness, no gateway)."""

from __future__ import annotations

import os
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

from confluent_kafka.admin import AdminClient


class SilentGroupsAdmin:
    """Answers cluster metadata at once but never describes a consumer group, as a broker whose
    group coordinator is slow does: each description waits for the probe's whole timeout."""

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        return SimpleNamespace(topics={})

    def describe_consumer_groups(self, names: list[str], **kwargs: Any) -> dict[str, Any]:
        return {name: Future() for name in names}


class AbortingAdmin:
    """Aborts the process at its first call, as librdkafka's assertion `eonce->refcnt > 0` did
    with an admin request pending while a broker restarted (confluentinc/librdkafka#4605)."""

    def __getattr__(self, name: str) -> Any:
        def abort(*args: Any, **kwargs: Any) -> NoReturn:
            os.abort()

        return abort


@dataclass(frozen=True)
class AbortsFirst:
    """Makes `times` aborting admin clients, then real ones with `config`; counted in marker files
    in `markers`, as each child process that builds one is a new process."""

    markers: Path
    config: dict[str, Any]
    times: int = 1

    def __call__(self) -> Any:
        for n in range(self.times):
            try:
                os.close(os.open(self.markers / f"aborting-{n}", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                continue
            return AbortingAdmin()
        return AdminClient(self.config)


class HangingAdmin:
    """Never answers: each call blocks for an hour, as a call stuck inside librdkafka would; with a
    `marker`, each call first creates that file (a test then knows the call has begun)."""

    def __init__(self, marker: Path | None = None) -> None:
        self.marker = marker

    def __getattr__(self, name: str) -> Any:
        def hang(*args: Any, **kwargs: Any) -> NoReturn:
            if self.marker is not None:
                self.marker.touch()
            time.sleep(3600)
            raise AssertionError("an hour went by")

        return hang
