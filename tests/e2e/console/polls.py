"""The job page's polls on Playwright's fake clock, and the requests they send: shared by the
modules that test when the page reads (the webhooks' wait, its pause, a hidden tab)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.sync_api import Page

DELIVERIES = re.compile(r"/webhooks\?")
STATUS = re.compile(r"/api/v1/batch-status/")
WEBHOOK_WAIT_S = 30 * 60  # job.js: an ended job's webhooks are followed this long
# Installed after the fake clock: records each timer the page sets. `__nextTimer(n)` answers
# [timers set, the last one's delay] once the page has set more than `n`, or [n, null] once it
# has stopped updating ("Pause updates" hidden, or pressed) without setting one.
TIMERS = """(() => {
  const setTimer = window.setTimeout;
  const delays = [];
  const checks = new Set();
  window.setTimeout = function (handler, delay, ...rest) {
    delays.push(Number(delay) || 0);
    queueMicrotask(() => checks.forEach((check) => check()));
    return setTimer.call(this, handler, delay, ...rest);
  };
  window.__nextTimer = (seen) => new Promise((resolve) => {
    const observer = new MutationObserver(() => check());
    const check = () => {
      const pause = document.getElementById("pause-updates");
      const stopped = pause && (pause.hidden || pause.getAttribute("aria-pressed") === "true");
      if (delays.length <= seen && !stopped) return;
      checks.delete(check);
      observer.disconnect();
      resolve(delays.length > seen ? [delays.length, delays.at(-1)] : [seen, null]);
    };
    checks.add(check);
    observer.observe(document.body, { subtree: true, childList: true, attributes: true });
    check();
  });
})();"""


@dataclass
class Polls:
    """A page's polls on Playwright's fake clock (installed, paused, before the page opens)."""

    page: Page
    timers: int = 0  # the timers of the page seen so far
    pending: int | None = None  # the delay of the last one, not yet run
    elapsed_ms: int = 0

    @classmethod
    def install(cls, page: Page) -> Polls:
        """Stop the page's clock, and record the timers it sets."""
        start = datetime.now(UTC)
        page.clock.install(time=start)
        page.clock.pause_at(start + timedelta(seconds=1))
        page.add_init_script(TIMERS)
        return cls(page)

    def next_delay(self) -> int | None:
        """The delay of the page's next read, once set; None when the page has stopped updating.
        The page must be seen updating first ("Pause updates" shown): until then it has not."""
        if self.pending is None:
            self.timers, self.pending = self.page.evaluate("seen => window.__nextTimer(seen)", self.timers)
        return self.pending

    def replaced(self) -> int | None:
        """The delay of the read that replaces the pending one (the user acted)."""
        self.pending = None
        return self.next_delay()

    def run_next(self) -> int | None:
        """Let the clock run to the page's next read (its delay), or None when there is none."""
        delay, self.pending = self.next_delay(), None
        if delay is not None:
            self.elapsed_ms += delay
            self.page.clock.run_for(delay)
        return delay


def follow_until_stopped(polls: Polls, statuses: list[str]) -> None:
    """Run the page's polls until it stops updating, as long as its reads are few enough."""
    started_ms, reads = polls.elapsed_ms, len(statuses)
    while polls.run_next() is not None:
        minutes = (polls.elapsed_ms - started_ms) / 60_000
        assert minutes <= WEBHOOK_WAIT_S / 60 + 2, "the page still reads"
        # 2 s doubling to a minute: 35 reads in 30 minutes; every 2 s was 900.
        assert len(statuses) - reads <= 40, f"{len(statuses) - reads} status reads in {minutes:.1f} minutes"
    assert polls.elapsed_ms - started_ms >= WEBHOOK_WAIT_S * 1000, "the page stopped early"


def counted(page: Page, pattern: re.Pattern[str]) -> list[str]:
    """The URLs of the page's requests that `pattern` finds, as they are sent."""
    urls: list[str] = []
    page.on("request", lambda sent: urls.append(sent.url) if pattern.search(sent.url) else None)
    return urls


def pending_delivery(attempts: int) -> dict[str, Any]:
    """A delivery between retries, as `GET .../webhooks` lists it, after `attempts` attempts."""
    tried = [{"attempt": n, "attempted_at": f"2026-01-01T00:0{n}:00Z", "succeeded": False, "status_code": 503,
              "latency_ms": 12.0, "error": None} for n in range(1, attempts + 1)]
    return {"id": "pending-1", "webhook_url": "https://hooks.test/pending", "status": "pending",
            "attempt_count": attempts, "attempts": tried, "last_attempt_at": tried[-1]["attempted_at"],
            "error_message": "HTTP 503"}
