"""State that survives a restart, as the real API's does: one JSON document per object on disk.

Each object (a file's metadata, a batch, the fault and counter state) is its own small file,
replaced atomically (write aside, then `os.replace`), so a `kill -9` at any moment leaves either
the old or the new version, never half of one. Without a state directory nothing is kept.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson


class StateStore:
    """Objects of a few kinds (`files`, `batches`, `control`) kept as `<root>/<kind>/<key>.json`."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    @property
    def enabled(self) -> bool:
        """True when objects are kept on disk."""
        return self.root is not None

    def _path(self, kind: str, key: str) -> Path:
        assert self.root is not None
        return self.root / kind / f"{key}.json"

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
