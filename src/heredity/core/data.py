"""Where the shared benchmark data lives, and the (summary, rows) shape of a suite's or a judge's result.

Both the profile suites and the judging library read ``../shared/data`` and return a
``SuiteResult``; it lives here, below both, so that neither imports the other for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heredity.errors import HeredityError

REPO = Path(__file__).resolve().parents[3]


def default_data_dir() -> Path:
    """``$HEREDITY_SHARED_DATA``, else ``shared/data`` beside the repository checkout."""
    env = os.environ.get("HEREDITY_SHARED_DATA")
    return Path(env) if env else (REPO / ".." / "shared" / "data").resolve()


def data_file(data_dir: Path | None, relative: str) -> Path:
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    path = root / relative
    if not path.exists():
        raise HeredityError(f"{path}: profiling data not found (pass data_dir or set HEREDITY_SHARED_DATA; 'heredity data' says where to get it)")
    return path


@dataclass
class SuiteResult:
    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
