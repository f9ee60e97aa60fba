"""An on-disk verdict cache (SQLite), so no image is judged twice by the same backend on the same checklist."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path

from PIL import Image

from .verdict import Checklist, Verdict

DEFAULT_CACHE_DIR = Path(os.environ.get("MAGIC_CACHE_DIR", Path.home() / ".cache" / "magic"))


def image_digest(image: Image.Image) -> str:
    """sha256 of the decoded RGB pixels and the size: the same picture hashes the same whatever its file format."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def cache_key(image_hash: str, checklist: Checklist, backend_id: str) -> str:
    return "|".join((image_hash, checklist.version, checklist.condition_id, checklist.digest, backend_id))


class VerdictCache:
    """Verdicts keyed by image hash + checklist version (and item text digest) + backend id; safe across threads.

    ``VerdictCache(None)`` keeps them in memory only.
    """

    def __init__(self, path: str | os.PathLike | None = DEFAULT_CACHE_DIR / "verdicts.sqlite"):
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path), check_same_thread=False,
                                   timeout=30)
        with self._lock, self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict TEXT NOT NULL)")

    def get(self, key: str) -> Verdict | None:
        with self._lock:
            row = self._db.execute("SELECT verdict FROM verdicts WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        verdict = Verdict.from_dict(json.loads(row[0]))
        verdict.cached = True
        return verdict

    def put(self, key: str, verdict: Verdict) -> None:
        values = verdict.to_dict()
        values.pop("score", None)
        values["cached"] = False
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO verdicts (key, verdict) VALUES (?, ?)", (key, json.dumps(values)))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"VerdictCache({str(self.path) if self.path else 'memory'!r})"
