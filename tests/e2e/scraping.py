"""Reading a running service's /metrics as Prometheus does."""

from __future__ import annotations

import httpx2
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> str:
    """The text exposition at `url`/metrics (asserted to answer 200)."""
    answer = httpx2.get(f"{url}/metrics", timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.text


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The labels and value of every sample of that name in an exposition."""
    return [(s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]

