"""Where benchmark data lives (a local folder, or the Hugging Face hub), and the (summary, rows)
shape of a suite's or a judge's result.

Both the profile suites and the judging library read benchmark files and return a
``SuiteResult``; both live here, below both, so that neither imports the other for them.

A benchmark is found, in this order (``load_benchmark``):

1. the **shared layout**: the file a suite has always read, ``<data dir>/<folder>/<file>``
   (``hellaswag/hellaswag_val.jsonl``, ...), the layout of the project's ``../shared/data``;
2. a **local copy in hub schema**: ``<data dir>/<owner>/<name>/<config>/<split>.jsonl`` (or
   ``.parquet``, or shards ``<split>-*.parquet``), rows with the columns of the pinned hub dataset
   (``HubDataset``), as ``datasets.load_dataset(id, config, split=split, revision=revision)``
   gives them (and ``heredity data --download`` writes them);
3. the **hub** itself, through ``datasets`` (imported only then), at the pinned revision; offline
   this fails in one line that names what is missing and every place looked.

The data dir is ``--data-dir`` / ``data_dir``, else ``$HEREDITY_DATA_DIR`` (or the older
``$HEREDITY_SHARED_DATA``), else ``shared/data`` beside a source checkout, else
``~/.cache/heredity/data`` (``$XDG_CACHE_HOME``), where ``heredity data --download`` puts files.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heredity.errors import HeredityError

REPO = Path(__file__).resolve().parents[3]
ENV_VARS = ("HEREDITY_DATA_DIR", "HEREDITY_SHARED_DATA")
HUB_HOST = "huggingface.co"


def user_data_dir() -> Path:
    """Where ``heredity data --download`` writes when no folder is given."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "heredity" / "data"


def default_data_dir() -> Path:
    """``$HEREDITY_DATA_DIR`` / ``$HEREDITY_SHARED_DATA``, else ``shared/data`` beside the source
    checkout when there is one, else the user's data folder (``user_data_dir``)."""
    for name in ENV_VARS:
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    beside = (REPO / ".." / "shared" / "data").resolve()
    # an installed (non-editable) package has no checkout around it: REPO is then site-packages' parent
    return beside if beside.is_dir() else user_data_dir()


GET_FULL_DATA = ("the full benchmark files live in ../shared/data beside a development checkout; elsewhere "
                 "'heredity data' lists each file's upstream and 'heredity data --download' fetches the hub "
                 "datasets; AlpacaEval outputs come from github.com/tatsu-lab/alpaca_eval")


def full_data_dir(arg: str | Path | None, needs: str) -> Path:
    """The data folder a benchmark or experiment reads (``arg``, else ``default_data_dir``), with
    ``needs`` (a file or folder under it) present; a one-line SystemExit saying how to get it otherwise."""
    root = Path(arg).expanduser() if arg else default_data_dir()
    if not (root / needs).exists():
        raise SystemExit(f"error: {root / needs} not found: {GET_FULL_DATA}; pass --data DIR or set HEREDITY_DATA_DIR")
    return root


def missing_data_hint(path: str | Path) -> str:
    """What to add to a 'not found' error for a path into the shared data folder: how to get it."""
    return f" ({GET_FULL_DATA})" if "shared/data" in Path(path).as_posix() else ""


def data_root(data_dir: Path | str | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def data_file(data_dir: Path | None, relative: str) -> Path:
    path = data_root(data_dir) / relative
    if not path.exists():
        raise HeredityError(f"{path}: benchmark data not found (pass --data-dir or set HEREDITY_DATA_DIR; "
                            "'heredity data' says where to get it)")
    return path


@dataclass(frozen=True)
class HubDataset:
    """A dataset on the Hugging Face hub, pinned: ``load_dataset(id, config, split=split, revision=revision)``.

    ``verified`` is True only where the revision is a commit seen on the hub for this dataset; a
    branch name (``main``, ``refs/convert/parquet``) is pinned in name only and may move.
    """

    id: str
    revision: str
    split: str
    config: str | None = None
    verified: bool = False
    note: str = ""

    @property
    def folder(self) -> str:
        """The local copy's folder, relative to a data dir."""
        return f"{self.id}/{self.config or 'default'}"

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.revision}" + (f" ({self.config}/{self.split})" if self.config else f" ({self.split})")

    def local_files(self, root: Path) -> list[Path]:
        """The local copy's files under ``root`` (empty when there is none)."""
        folder = Path(root) / self.folder
        if not folder.is_dir():
            return []
        for pattern in (f"{self.split}.jsonl", f"{self.split}.parquet", f"{self.split}-*.parquet", f"{self.split}-*.jsonl"):
            found = sorted(folder.glob(pattern))
            if found:
                return found
        return []


def read_table_file(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``.jsonl`` (one JSON object a line) or ``.parquet`` file; a bad row is a one-line error."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise HeredityError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HeredityError(f"{path}, row {i}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise HeredityError(f"{path}, row {i}: expected a JSON object")
            rows.append(row)
    return rows


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub (``$HF_ENDPOINT``'s host, default huggingface.co) answers on its port; spares
    a user offline the hub client's ~25 s of retries. Behind a proxy the client is left to try."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or f"https://{HUB_HOST}")
    try:
        with socket.create_connection((url.hostname or HUB_HOST, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_rows(dataset: HubDataset) -> list[dict[str, Any]]:
    """The pinned split's rows from the hub (or ``datasets``' cache with ``HF_HUB_OFFLINE=1``)."""
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("HF_DATASETS_OFFLINE", "") not in ("", "0")
    if not offline and not hub_reachable():
        host = os.environ.get("HF_ENDPOINT") or HUB_HOST
        raise HeredityError(f"{dataset.ref}: cannot reach {host} (offline?); with HF_HUB_OFFLINE=1 a copy "
                            "in datasets' cache is used")
    try:
        import datasets
    except ImportError:
        raise HeredityError(f"{dataset.ref}: loading from the hub needs the 'datasets' package") from None
    try:
        ds = datasets.load_dataset(dataset.id, dataset.config, split=dataset.split, revision=dataset.revision)
    except Exception as exc:  # hub and builder errors come in many types
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise HeredityError(f"{dataset.ref}: cannot load from the hub: {message[:300]}") from None
    return [dict(r) for r in ds]


@dataclass
class Loaded:
    rows: list[dict[str, Any]]
    source: str  # "shared", "hub-local" or "hub"
    where: str  # the file(s) or the hub reference


def load_benchmark(data_dir: Path | str | None, what: str, *, shared: str | None,
                   read_shared: Callable[[Path], list[dict[str, Any]]] | None = None,
                   hub: HubDataset | None = None,
                   from_hub: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
                   use_hub: bool = True) -> Loaded:
    """A suite's rows in its own (shared-layout) shape, from the first place that has them (module docstring).

    ``read_shared(path)`` reads the shared-layout file; ``from_hub(rows)`` turns hub-schema rows
    into the same shape. ``use_hub=False`` stops before asking the hub (a listing, a test).
    """
    root = data_root(data_dir)
    looked = []
    if shared is not None:
        path = root / shared
        if path.exists():
            assert read_shared is not None
            return Loaded(read_shared(path), "shared", str(path))
        looked.append(f"{path} (shared layout)")
    if hub is not None:
        adapt = from_hub or (lambda rows: rows)
        files = hub.local_files(root)
        if files:
            rows = [r for f in files for r in read_table_file(f)]
            return Loaded(adapt(rows), "hub-local", ", ".join(map(str, files)))
        looked.append(f"{root / hub.folder}/{hub.split}.jsonl|.parquet (hub schema)")
        if use_hub:
            try:
                return Loaded(adapt(hub_rows(hub)), "hub", hub.ref)
            except HeredityError as exc:
                looked.append(f"the hub: {exc}")
    raise HeredityError(f"{what}: benchmark data not found; looked in " + "; ".join(looked)
                        + " ('heredity data' says how to get it)")


@dataclass
class SuiteResult:
    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
