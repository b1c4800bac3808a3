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
    """One call's attempts: resends counted against `max_retries`, and, when the call has a
    `deadline_s`, all of them and their pauses within it (each attempt's timeout cut to the time left).

    The deadline runs from the first attempt that may have started the work: a 429, or a 503 with
    `Retry-After`, proves the gateway wrote nothing, so neither it nor the wait it asks for takes any
    of the deadline (`max_retries` x `max_wait_s` bounds those). Counted from the first attempt, two
    30 s waits for a busy intake cut the description that followed to 300 s, and its answer, due at
    about 302 s and paid, became a `NetworkError`.

    Under a deadline a 409 "in progress" is not counted: the first attempt of a description may run
    300 s behind a proxy that gave up at 60 s, and three 5 s waits did not outlast it."""

    def __init__(self, policy: RetryPolicy, call: Call[Any], clock: Callable[[], float]) -> None:
        self._policy, self._call, self._clock = policy, call, clock
        self._deadline: float | None = None
        # Until then every answer proved nothing was written, and the deadline starts anew each attempt.
        self._deadline_fixed = False
        self._attempt = 0
        self._unanswered: httpx2.RequestError | None = None

    def timeout(self, default_s: float) -> float | None:
        """The next attempt's timeout: a description's never below 300 s, nothing past the deadline.

        None when no attempt fits before the deadline any more (a wait overslept it): the last
        answer is the call's; when the last attempt got none, its `NetworkError` is raised."""
        # A synchronous description may take 300 s: its timeout is never below that.
        timeout = max(self._call.timeout_s or 0.0, default_s)
        if self._call.deadline_s is None:
            return timeout
        now = self._clock()
        if not self._deadline_fixed:
            self._deadline = now + self._call.deadline_s
        left = (self._deadline or now) - now
        if left < MIN_ATTEMPT_S:
            # An attempt this short only times out, and its NetworkError would hide the last answer.
            if self._unanswered is not None:
                raise network_error(self._unanswered) from self._unanswered
            return None
        return min(timeout, left)

    def after_answer(self, status: int, headers: Mapping[str, str], code: str | None) -> float | None:
        """Seconds to wait before sending the call again after this answer, or None to keep it."""
        self._unanswered = None
        if not self._wrote_nothing(status, headers):
            self._deadline_fixed = True
        delay = self._policy.delay(status, headers, self._attempt, code, self._call.resendable)
        waited_out = status == 409 and code == KEY_IN_PROGRESS and self._call.deadline_s is not None
        return self._counted(delay, counted=not waited_out)

    def after_no_answer(self, exc: httpx2.RequestError) -> float:
        """Seconds to wait before sending a call that got no answer again; else its `NetworkError`."""
        self._unanswered, self._deadline_fixed = exc, True
        delay = self._counted(self._policy.after_no_answer(self._call, exc, self._attempt))
        if delay is None:
            raise network_error(exc) from exc
        return delay

    @staticmethod
    def _wrote_nothing(status: int, headers: Mapping[str, str]) -> bool:
        # The gateway answers these before any work (RetryPolicy): no description was started.
        return status == 429 or (status == 503 and parse_retry_after(headers.get("retry-after")) is not None)

    def _counted(self, delay: float | None, counted: bool = True) -> float | None:
        if delay is None:
            return None
        # A resend must leave room for an attempt before the deadline (a wait that took nothing of
        # it leaves the whole deadline to the next attempt).
        if (self._deadline_fixed and self._deadline is not None
                and self._clock() + delay + MIN_ATTEMPT_S > self._deadline):
            return None
        if counted:
            self._attempt += 1
        return delay
