"""When a call is sent again, and until when: `RetryPolicy`, the rules, and `Resends`, one call's
attempts counted against its retries and its deadline. No I/O: the clients ask, then sleep and send."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2

from lotlens_client.calls import Call, got_no_answer, network_error
from lotlens_client.errors import KEY_IN_PROGRESS, parse_retry_after

# An attempt shorter than this could not even be answered from the gateway's stored copy.
MIN_ATTEMPT_S = 0.1


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a call again, at most `max_retries` times and `max_wait_s` per wait:

    - a 429 after its `Retry-After`, and a 503 that has one. The gateway answers 503 with
      `Retry-After` only when it wrote nothing (PostgreSQL down, every intake slot taken by other
      large jobs, or stopping for a restart), so even a submission is safe to send again;
    - a 409 `IDEMPOTENCY_KEY_IN_PROGRESS` after its `Retry-After`: an earlier attempt with the same
      key (one a proxy gave up on) is still being carried out; the resend gets its answer;
    - a resendable call (`Call.resendable`: an Idempotency-Key, or a retry of failed lots) that got
      no answer, or a 502/504 that is not the gateway's own (a proxy's, without the API's `code`),
      after `default_wait_s` doubled at each attempt: its outcome is unknown, and the copy is
      carried out once whatever happened to the first.
    """

    max_retries: int = 3
    max_wait_s: float = 60.0
    default_wait_s: float = 1.0

    def delay(self, status: int, headers: Mapping[str, str], attempt: int, code: str | None = None,
              resendable: bool = False) -> float | None:
        """Seconds to wait before retrying attempt number `attempt` (0-based), or None to stop.

        `code` is the answer's API code (needed for a 409 and a 502/504), `resendable` the call's."""
        wait = parse_retry_after(headers.get("retry-after"))
        if status in (502, 504):
            retried, wait = resendable and code is None, None
        elif status == 503:
            retried = wait is not None
        elif status == 409:
            retried = code == KEY_IN_PROGRESS
        else:
            retried = status == 429
        if not retried or attempt >= self.max_retries:
            return None
        wait = self.backoff(attempt) if wait is None else wait
        return wait if wait <= self.max_wait_s else None

    def after_no_answer(self, call: Call[Any], exc: httpx2.RequestError, attempt: int) -> float:
        """Seconds to wait before sending a call that got no answer again; its `NetworkError`
        when it is not to be sent again."""
        if call.resendable and got_no_answer(exc) and attempt < self.max_retries:
            wait = self.backoff(attempt)
            if wait <= self.max_wait_s:
                return wait
        raise network_error(exc) from exc

    def backoff(self, attempt: int) -> float:
        """The wait before resend number `attempt` (0-based) when the answer named none."""
        return float(self.default_wait_s * 2.0 ** attempt)


class Resends:
    """One call's attempts: resends counted against `max_retries`, and all of them, pauses included,
    within the call's `deadline_s` when it has one (each attempt's timeout is cut to the time left).

    Under a deadline a 409 "in progress" is not counted: the first attempt of a description may run
    300 s behind a proxy that gave up at 60 s, and three 5 s waits did not outlast it."""

    def __init__(self, policy: RetryPolicy, call: Call[Any], clock: Callable[[], float]) -> None:
        self._policy, self._call, self._clock = policy, call, clock
        self._deadline = None if call.deadline_s is None else clock() + call.deadline_s
        self._attempt = 0

    def timeout(self, default_s: float) -> float:
        """The next attempt's timeout: a description's never below 300 s, nothing past the deadline."""
        # A synchronous description may take 300 s: its timeout is never below that.
        timeout = max(self._call.timeout_s or 0.0, default_s)
        if self._deadline is None:
            return timeout
        return max(min(timeout, self._deadline - self._clock()), MIN_ATTEMPT_S)

    def after_answer(self, status: int, headers: Mapping[str, str], code: str | None) -> float | None:
        """Seconds to wait before sending the call again after this answer, or None to keep it."""
        delay = self._policy.delay(status, headers, self._attempt, code, self._call.resendable)
        waited_out = status == 409 and code == KEY_IN_PROGRESS and self._deadline is not None
        return self._counted(delay, counted=not waited_out)

    def after_no_answer(self, exc: httpx2.RequestError) -> float:
        """Seconds to wait before sending a call that got no answer again; else its `NetworkError`."""
        delay = self._counted(self._policy.after_no_answer(self._call, exc, self._attempt))
        if delay is None:
            raise network_error(exc) from exc
        return delay

    def _counted(self, delay: float | None, counted: bool = True) -> float | None:
        if delay is None or (self._deadline is not None and self._clock() + delay >= self._deadline):
            return None
        if counted:
            self._attempt += 1
        return delay
