"""HMACs of a `lots` array in one of its signed forms, fed lot by lot (nothing kept)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

from lotlens_common import signing


class LotsSigner:
    """HMACs of one compact form (sorted keys or as typed) of a `lots` array per client key, lot by lot."""

    def __init__(self, keys: signing.Keys, sort_keys: bool, ensure_ascii: bool = True) -> None:
        self._macs = [(client, hmac.new(key.encode(), b"[", hashlib.sha256))
                      for client, key in signing.key_pairs(keys)]
        self._first = True
        self._sort_keys = sort_keys
        self._ensure_ascii = ensure_ascii

    def add(self, lot: Any) -> None:
        form = json.dumps(lot, separators=(",", ":"), sort_keys=self._sort_keys,
                          ensure_ascii=self._ensure_ascii).encode()
        for _, mac in self._macs:
            if not self._first:
                mac.update(b",")
            mac.update(form)
        self._first = False

    def client(self, signatures: Sequence[str]) -> str | None:
        """The client whose key signed the array (with or without a final newline), or None."""
        digests: list[tuple[str, bytes]] = []
        for client, mac in self._macs:
            closed = mac.copy()
            closed.update(b"]")
            with_newline = closed.copy()
            with_newline.update(b"\n")
            digests += [(client, closed.hexdigest().encode()), (client, with_newline.hexdigest().encode())]
        for signature in signatures:
            received = signing.signature_digest(signature).encode()
            found = None
            for client, expected in digests:  # every one compared: constant time
                if hmac.compare_digest(expected, received) and found is None:
                    found = client
            if found is not None:
                return found
        return None
