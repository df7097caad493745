"""The score cache: one float per (metric namespace, text key), in SQLite under the cache dir.

Layout: ``$HEREDITY_CACHE/scores/scores.sqlite`` (see :func:`heredity.core.models.cache_dir`)::

    namespaces(id INTEGER PRIMARY KEY, ns TEXT UNIQUE)          -- "mtld@1", "perplexity@1#3f2a..."
    scores(ns INTEGER, key BLOB, value REAL, PRIMARY KEY (ns, key))  -- WITHOUT ROWID

A namespace (:meth:`BoundMetric.namespace`) holds the metric's name and version and a hash of
its options and of whatever else is the same for every text (the reference model's identity,
a user function's source). A key is the first 16 bytes of SHA-256 over the text plus, where
the metric depends on them, the prompt and the tokenizer's identity. NaN is stored as NULL.

Writes go in one transaction per batch, so a killed process leaves either all of a batch or
none of it; SQLite's locking (WAL journal, a 60 s busy timeout) lets several processes read and
write at once without corrupting the file. A cache that cannot be opened (a read-only or
corrupt file) is reported once on stderr and skipped: scoring still works, only slower.

Disable it with ``score.cache: false`` in a config or ``HEREDITY_SCORE_CACHE=0`` in the
environment; ``HEREDITY_SCORE_CACHE=/some/file.sqlite`` puts it elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

ENV = "HEREDITY_SCORE_CACHE"
_OFF = {"0", "false", "no", "off"}
_CHUNK = 900  # bound parameters per query stay under SQLite's limit (999 in old builds)


def text_key(text: str, prompt: str | None = None, tokenizer_id: str | None = None) -> bytes:
    parts = [text] if prompt is None and tokenizer_id is None else [text, prompt, tokenizer_id]
    data = json.dumps(parts, ensure_ascii=False).encode("utf-8", "surrogatepass") if len(parts) > 1 else text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).digest()[:16]


def text_keys(texts: Sequence[str], prompts: Sequence[str] | None = None,
              tokenizer_id: str | None = None) -> list[bytes]:
    """``text_key`` of each text (with its prompt, if given); a (text, prompt) pair that repeats
    is hashed once — a resampled pool repeats its texts many times."""
    memo: dict[tuple[str, str | None], bytes] = {}
    keys = []
    for i, text in enumerate(texts):
        pair = (text, None if prompts is None else prompts[i])
        key = memo.get(pair)
        if key is None:
            key = memo[pair] = text_key(text, pair[1], tokenizer_id)
        keys.append(key)
    return keys


def default_path() -> Path | None:
    """Where the cache lives, or None when the environment turns it off."""
    raw = os.environ.get(ENV, "").strip()
    if raw.lower() in _OFF:
        return None
    if raw and raw.lower() not in {"1", "true", "yes", "on"}:
        return Path(raw).expanduser()
    from heredity.core.models import cache_dir

    return cache_dir() / "scores" / "scores.sqlite"


class ScoreCache:
    """Look up and store scores. Safe to share between processes; one connection per thread."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self._ns_ids: dict[str, int] = {}
        self.broken: str | None = None
        self.hits = 0
        self.misses = 0

    def _conn(self) -> sqlite3.Connection | None:
        if self.broken:
            return None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:
                pass  # e.g. a file system without shared memory: the default journal still works
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS namespaces (id INTEGER PRIMARY KEY, ns TEXT UNIQUE NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS scores (ns INTEGER NOT NULL, key BLOB NOT NULL, value REAL, "
                         "PRIMARY KEY (ns, key)) WITHOUT ROWID")
        except (sqlite3.Error, OSError) as exc:
            self._disable(exc)
            return None
        self._local.conn = conn
        return conn

    def _disable(self, exc: BaseException) -> None:
        self.broken = f"{type(exc).__name__}: {exc}"
        print(f"heredity: score cache {self.path} unusable ({self.broken}); scoring without it",
              file=sys.stderr)

    def _ns_id(self, conn: sqlite3.Connection, ns: str, create: bool) -> int | None:
        if ns in self._ns_ids:
            return self._ns_ids[ns]
        row = conn.execute("SELECT id FROM namespaces WHERE ns = ?", (ns,)).fetchone()
        if row is None:
            if not create:
                return None
            conn.execute("INSERT OR IGNORE INTO namespaces (ns) VALUES (?)", (ns,))
            row = conn.execute("SELECT id FROM namespaces WHERE ns = ?", (ns,)).fetchone()
        self._ns_ids[ns] = int(row[0])
        return self._ns_ids[ns]

    def get(self, ns: str, keys: Sequence[bytes]) -> dict[bytes, float]:
        """The cached values among ``keys`` (missing keys are absent from the result)."""
        conn = self._conn()
        if conn is None or not keys:
            return {}
        found: dict[bytes, float] = {}
        try:
            ns_id = self._ns_id(conn, ns, create=False)
            if ns_id is not None:
                unique = list(dict.fromkeys(keys))
                for lo in range(0, len(unique), _CHUNK):
                    chunk = unique[lo:lo + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for key, value in conn.execute(
                            f"SELECT key, value FROM scores WHERE ns = ? AND key IN ({marks})", (ns_id, *chunk)):
                        found[bytes(key)] = math.nan if value is None else float(value)
        except sqlite3.Error as exc:
            self._disable(exc)
            return {}
        self.hits += sum(1 for k in keys if k in found)
        self.misses += sum(1 for k in keys if k not in found)
        return found

    def put(self, ns: str, items: Iterable[tuple[bytes, float]]) -> None:
        """Store values in one transaction (all or nothing)."""
        conn = self._conn()
        if conn is None:
            return
        rows = [(key, None if math.isnan(v) else float(v)) for key, v in items]
        if not rows:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                ns_id = self._ns_id(conn, ns, create=True)
                conn.executemany("INSERT OR REPLACE INTO scores (ns, key, value) VALUES (?, ?, ?)",
                                 [(ns_id, k, v) for k, v in rows])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._ns_ids.pop(ns, None)  # a namespace created in the rolled-back transaction
                raise
        except sqlite3.Error as exc:
            self._disable(exc)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


_OPEN: dict[Path, ScoreCache] = {}


def open_cache(enabled: bool = True) -> ScoreCache | None:
    """The process's cache at the default path, or None when disabled (by argument or environment)."""
    if not enabled:
        return None
    path = default_path()
    if path is None:
        return None
    if path not in _OPEN:
        _OPEN[path] = ScoreCache(path)
    return _OPEN[path]
