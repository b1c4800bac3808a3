"""Object ids and timestamps shaped like OpenAI's.

The forms, from the examples of the OpenAI description (openai/openai-openapi @ f85dbe2, as spec/)
and, where it shows none, from OpenAI's own batch output files quoted in public repositories
(2024-11 to 2025-12):
- `file-` + 22 letters and digits (file-4wDz5b167pAf72nx1h9eiN, `createResponse`'s example);
- `batch_` + 32 hex digits (batch_69386862e3b8819099eaa58934cae79d; the description has only
  `batch_abc123`);
- `chatcmpl-` + 29 letters and digits (chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG,
  `createChatCompletion`'s example);
- `resp_`, `msg_`, `rs_` + 48 hex digits, a response's items ending in its last 16
  (`response_plan.py`); `batch_req_` + 32 hex digits, and a batch line's `request_id` 32 hex
  digits without the `req_` of the `x-request-id` header (req_ded8ab984ec4bf840f37566c1011c417).
OpenAI's hex ids start with their creation time; the stand-in's digits are random throughout.

Not `secrets`: `os.urandom` lets go of the GIL, and the batch runner's thread then waited for it on
every id while the event loop served requests (68 instead of 0.5 us an id; two ids a line made half
the stand-in's time in a 50,000-lot run). The ids need be unique, not secret.
"""

from __future__ import annotations

import random
import string
import time
from binascii import hexlify

_LETTERS_AND_DIGITS = string.ascii_letters + string.digits


def hex_runs(runs: int) -> list[bytes]:
    """`runs` random runs of 32 hex digits and one of 16, as a template's `%b` takes them: an
    answer's ids, drawn at once and cut apart by one split (sliced in Python they took an eighth
    longer; each formatted from a number of its own, twice as long)."""
    return hexlify(random.getrandbits(128 * runs + 64).to_bytes(16 * runs + 8), b" ", -16).split()


def new_id(prefix: str, hex_chars: int = 24) -> str:
    """A random id such as `batch_…`, `batch_req_…` (the prefix includes its separator), with an even
    number of hex digits."""
    # Bytes to hex took half the time of a format, for the same digits.
    return prefix + random.getrandbits(hex_chars * 4).to_bytes(hex_chars // 2).hex()


def new_token(prefix: str, chars: int) -> str:
    """A random id of letters and digits such as `file-…`, `chatcmpl-…`."""
    return prefix + "".join(random.choices(_LETTERS_AND_DIGITS, k=chars))


def unix_now() -> int:
    """Whole seconds since the epoch, as every OpenAI `*_at` field carries."""
    return int(time.time())
