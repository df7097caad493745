"""Training checkpoints: finding them, telling complete ones from those a kill cut short, and
deciding which one (if any) a rerun of the same stage resumes from."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from heredity.core.rundir import write_text

# Written into the checkpoint folder: checkpoints are only resumed by the stage that made them.
KEY_FILE = "stage_key.txt"

# The folders the trainer writes, one per saved optimiser step.
CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def list_checkpoints(work_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint folder in ``work_dir``, complete or not, oldest first."""
    found = []
    for path in work_dir.glob("checkpoint-*"):
        match = CHECKPOINT.fullmatch(path.name)
        if match and path.is_dir():
            found.append((int(match[1]), path))
    return sorted(found)


def is_complete(checkpoint: Path) -> bool:
    """Whether the trainer finished writing ``checkpoint``."""
    # The trainer writes trainer_state.json last (after weights, optimiser, scheduler and RNG
    # states), so a checkpoint cut short by a kill lacks it or holds a truncated one.
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def prepare_checkpoints(work_dir: Path, key: str | None) -> Path | None:
    """Return the checkpoint to resume from, after discarding what cannot be trusted.

    Checkpoints are reused only when ``work_dir`` was written for the same stage key (same
    data, student and settings); anything else there is stale and is deleted. Without a key
    nothing is resumed. An incomplete checkpoint newer than the last complete one is the
    save a kill interrupted; it is deleted so the trainer rewrites it cleanly.
    """
    work_dir = Path(work_dir)
    marker = work_dir / KEY_FILE
    try:
        same_stage = key is not None and marker.read_text(encoding="utf-8").strip() == key
    except OSError:
        same_stage = False
    if not same_stage and work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if key is not None:
        write_text(marker, key)
    resume = None
    for _, path in reversed(list_checkpoints(work_dir)):
        if resume is not None:
            break
        if is_complete(path):
            resume = path
        else:
            shutil.rmtree(path)
    return resume


def newest_checkpoint(work_dir: Path) -> Path | None:
    """The newest complete checkpoint in ``work_dir`` (deletes nothing)."""
    complete = [path for _, path in list_checkpoints(Path(work_dir)) if is_complete(path)]
    return complete[-1] if complete else None


def checkpoint_step(path: str | Path) -> int | None:
    """The optimiser step a checkpoint folder was saved at (``None`` if it is not one)."""
    match = CHECKPOINT.fullmatch(Path(path).name)
    return int(match[1]) if match else None
