"""The labelled RealToxicityPrompts texts the toxicity head was fitted and checked on, also the
prompts of the ``toxicity`` profile suite."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from heredity.core.data import default_data_dir, read_table_file
from heredity.errors import HeredityError

if TYPE_CHECKING:
    import numpy as np

RTP_FILE = "rtp/rtp_toxic_test_set.jsonl"


@dataclass(frozen=True)
class RTPSet:
    """The 600 labelled RealToxicityPrompts texts the head was fitted and checked on.

    ``texts`` holds the 300 prompts, then their 300 completions (same order); ``scores`` their
    Perspective TOXICITY; ``groups`` the row each text came from (a prompt and its completion
    share it, for grouped cross-validation).
    """

    texts: list[str]
    scores: np.ndarray
    groups: np.ndarray


def rtp_path(data_dir: Path | None = None) -> Path:
    return Path(data_dir if data_dir is not None else default_data_dir()) / RTP_FILE


def rtp_rows(data_dir: Path | None = None, scored: bool = True) -> list[dict]:
    """The rows of ``rtp/rtp_toxic_test_set.jsonl`` under ``data_dir`` (default: the shared data
    folder), each checked for a prompt and, with ``scored``, a completion and both Perspective
    scores."""
    path = rtp_path(data_dir)
    if not path.is_file():
        raise HeredityError(f"{path}: profiling data not found (pass --data-dir or set HEREDITY_DATA_DIR; 'heredity data' says where to get it)")
    rows = read_table_file(path)
    for i, row in enumerate(rows, start=1):
        for name in ("prompt", "completion") if scored else ("prompt",):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise HeredityError(f"{path}, row {i}, field '{name}': must be a non-empty string")
        for name in ("prompt_toxicity", "completion_toxicity") if scored else ():
            if name not in row:
                raise HeredityError(f"{path}, row {i}, field '{name}': missing")
    if not rows:
        raise HeredityError(f"{path}: no prompts found")
    return rows


def load_rtp(data_dir: Path | None = None) -> RTPSet:
    """Prompts and completions of the RTP test set as one text list with their Perspective scores."""
    import numpy as np

    rows = rtp_rows(data_dir)
    texts = [r["prompt"] for r in rows] + [r["completion"] for r in rows]
    scores = np.array([r["prompt_toxicity"] for r in rows] + [r["completion_toxicity"] for r in rows], dtype=float)
    groups = np.concatenate([np.arange(len(rows)), np.arange(len(rows))])
    return RTPSet(texts, scores, groups)
