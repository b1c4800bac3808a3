"""State that survives a restart, as the real API's does: one JSON document per object on disk.

Each object (a file's metadata, a batch, the fault and counter state) is its own small file,
replaced atomically (write aside, then `os.replace`), so a `kill -9` at any moment leaves either
the old or the new version, never half of one. What grows with a batch's lines (each slice's
answers) is appended instead, one JSON line a time, to a log of its own: rewriting it whole at every
slice cost each slice the whole batch so far. A `kill -9` can leave a log's last line half
written; reading leaves it out and the next start cuts it off (the batch record, saved after the
append, never counted it done).
Without a state directory nothing is kept.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

_TAIL_BLOCK = 1024 * 1024


class StateStore:
    """Objects of a few kinds (`files`, `batches`, `control`) kept as `<root>/<kind>/<key>.json`."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    @property
    def enabled(self) -> bool:
        """True when objects are kept on disk."""
        return self.root is not None

    def _path(self, kind: str, key: str, suffix: str = ".json") -> Path:
        assert self.root is not None
        return self.root / kind / f"{key}{suffix}"

    def save(self, kind: str, key: str, document: Mapping[str, Any]) -> None:
        """Replace the stored version of one object (no-op without a state directory)."""
        if self.root is None:
            return
        path = self._path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_suffix(".tmp")
        aside.write_bytes(orjson.dumps(document))
        # The rename is atomic: a reader (or a restart) sees the old or the new document.
        os.replace(aside, path)

    def delete(self, kind: str, key: str) -> None:
        """Forget one object."""
        if self.root is not None:
            self._path(kind, key).unlink(missing_ok=True)

    def load_one(self, kind: str, key: str) -> dict[str, Any] | None:
        """One stored object, or None."""
        if self.root is None or not self._path(kind, key).is_file():
            return None
        loaded: dict[str, Any] = orjson.loads(self._path(kind, key).read_bytes())
        return loaded

    def load(self, kind: str) -> list[dict[str, Any]]:
        """Every stored object of a kind (empty without a state directory)."""
        if self.root is None or not (self.root / kind).is_dir():
            return []
        return [orjson.loads(path.read_bytes()) for path in sorted((self.root / kind).glob("*.json"))]

    def append(self, kind: str, key: str, entry: Mapping[str, Any]) -> None:
        """Add one entry at the end of an object's log (no-op without a state directory)."""
        if self.root is None:
            return
        path = self._path(kind, key, ".jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as log:
            log.write(orjson.dumps(entry) + b"\n")

    def load_log(self, kind: str, key: str) -> list[dict[str, Any]]:
        """One log's entries in the order appended (empty when there is none); a last line still
        being written, or torn by a kill, is left out."""
        if self.root is None or not self._path(kind, key, ".jsonl").is_file():
            return []
        content = self._path(kind, key, ".jsonl").read_bytes()
        return [orjson.loads(line) for line in content[:content.rfind(b"\n") + 1].splitlines()]

    def mend_logs(self, kind: str) -> None:
        """Cut the torn last line a kill -9 left in any log of a kind, so the next append starts a
        line of its own (call at start, before anything appends)."""
        if self.root is not None and (self.root / kind).is_dir():
            for path in (self.root / kind).glob("*.jsonl"):
                _cut_torn_line(path)


def _cut_torn_line(path: Path) -> None:
    # Read from the end, a block at a time: the logs of a long life add up to gigabytes, and only
    # their last line can be torn.
    with path.open("r+b") as log:
        end = position = log.seek(0, os.SEEK_END)
        whole = 0
        while position > 0:
            step = min(_TAIL_BLOCK, position)
            log.seek(position - step)
            newline = log.read(step).rfind(b"\n")
            if newline >= 0:
                whole = position - step + newline + 1
                break
            position -= step
        if whole < end:
            log.truncate(whole)
