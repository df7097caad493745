"""Where the shared data lives (profiling sets, the RealToxicityPrompts labels, AlpacaEval).

``$HEREDITY_SHARED_DATA``, else ``shared/data`` beside the repository checkout. Every reader of
those files (profile suites, the toxicity head's data, the judge, benchmarks) finds them here.
"""

from __future__ import annotations

import os
from pathlib import Path

from heredity.errors import HeredityError

REPO = Path(__file__).resolve().parents[3]


def default_data_dir() -> Path:
    """``$HEREDITY_SHARED_DATA``, else ``shared/data`` beside the repository checkout."""
    env = os.environ.get("HEREDITY_SHARED_DATA")
    return Path(env) if env else (REPO / ".." / "shared" / "data").resolve()


def data_file(data_dir: Path | None, relative: str) -> Path:
    """``relative`` under ``data_dir`` (default: the shared data folder); one-line error if missing."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    path = root / relative
    if not path.exists():
        raise HeredityError(f"{path}: profiling data not found (pass data_dir or set HEREDITY_SHARED_DATA)")
    return path
