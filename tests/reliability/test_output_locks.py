"""`heredity judge`, `judge-profile` and `profile` write their --out folder as a run writes its
directory: one command at a time, a second refused in one line before any model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heredity.core.rundir import RunLock

from .conftest import error_lines, invoke

MODEL = "embedded:smollm2-135m-instruct"


def answers(path: Path, text: str) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"Question {i}?", "answer": f"{text} {i}."}) + "\n"
                            for i in range(3)), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["judge", "judge-profile", "profile"])
def test_a_second_command_on_a_busy_out_folder_is_refused(command, tmp_path, data_dir, monkeypatch):
    out = tmp_path / "out"
    args = {
        "judge": ["judge", answers(tmp_path / "a.jsonl", "Yes"), answers(tmp_path / "b.jsonl", "No"),
                  "--judge", MODEL, "--device", "cpu", "--out", out],
        "judge-profile": ["judge-profile", "--judge", MODEL, "--pairs", "2", "--device", "cpu",
                          "--data-dir", data_dir, "--out", out],
        "profile": ["profile", MODEL, "--suite", "crows_pairs", "--limit", "2", "--data-dir", data_dir, "--out", out],
    }[command]

    def refuse(*a, **k):
        raise AssertionError("the command got past the lock into real work")

    # no model is loaded: should the lock let the second command through, the test fails at once
    import heredity.core.models

    monkeypatch.setattr(heredity.core.models, "load_model", refuse)
    with RunLock(out):  # another process holding the folder (flock is per open file, so this conflicts)
        code, output = invoke(*args)
    assert code == 1, output
    assert "Traceback" not in output
    lines = error_lines(output)
    assert lines[-1].startswith("error: ") and "another heredity run is using this directory" in lines[-1], output
    assert str(out) in lines[-1]
