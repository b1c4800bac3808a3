"""Object ids and timestamps shaped like OpenAI's."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str, hex_chars: int = 24) -> str:
    """A random id such as `file-…`, `batch_…`, `resp_…` (the prefix includes its separator)."""
    return prefix + secrets.token_hex(hex_chars // 2)


def unix_now() -> int:
    """Whole seconds since the epoch, as every OpenAI `*_at` field carries."""
    return int(time.time())
