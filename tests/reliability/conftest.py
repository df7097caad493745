"""Helpers of the reliability suite: a small finished run to keep unchanged, and the CLI in-process."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from heredity.cli import app
from heredity.pipeline import run
from heredity.plan import config_from_dict


@pytest.fixture(scope="session", autouse=True)
def private_score_cache(tmp_path_factory) -> None:
    """Scores cached in a file of this session, not in the user's cache."""
    old = os.environ.get("HEREDITY_SCORE_CACHE")
    os.environ["HEREDITY_SCORE_CACHE"] = str(tmp_path_factory.mktemp("cache") / "scores.sqlite")
    yield
    if old is None:
        os.environ.pop("HEREDITY_SCORE_CACHE", None)
    else:
        os.environ["HEREDITY_SCORE_CACHE"] = old


def replay_config(data_dir: Path, n_prompts: int = 12, **extra: Any) -> dict[str, Any]:
    """Two AlpacaEval models replayed on the first ``n_prompts`` instructions (of the committed
    excerpt's 50, ``tests/data/alpaca_eval``): no model needed."""
    cfg = {
        "prompts": {"source": str(data_dir / "alpaca_eval" / "gpt-3.5-turbo-0613.json"),
                    "field": "instruction", "id_field": None, "eval_every": None, "limit_train": n_prompts},
        "teachers": [{"backend": "replay", "replay": {"path": str(data_dir / "alpaca_eval" / "alpaca-7b.json")}},
                     {"backend": "replay", "replay": {"path": str(data_dir / "alpaca_eval" / "zephyr-7b-beta.json")}}],
        "k": 1,
        "score": {"metrics": ["words", "ttr"]},
        "select": {"target": "words", "direction": "max"},
    }
    cfg.update(extra)
    return cfg


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` (hidden ones too): its bytes and mode."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir: Path) -> tuple[Path, dict[str, tuple[bytes, int]]]:
    """A finished replay run (until select) and the snapshot of its bytes."""
    out = tmp_path_factory.mktemp("finished") / "run"
    run(config_from_dict(replay_config(data_dir)), out, until="select")
    assert json.loads((out / "select" / "manifest.json").read_text())["status"] == "complete"
    return out, snapshot(out)


def invoke(*args: str) -> tuple[int, str]:
    """The CLI run in-process: (exit code, stdout + stderr)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        text = "".join(traceback.format_exception(result.exception))
        return 99, f"{result.output}\nTraceback (uncaught in the CLI):\n{text}"
    return result.exit_code, result.output


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]
