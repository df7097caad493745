"""eval.profile.teachers: a run profiles its local teachers too, and says which teachers it cannot profile."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
from conftest import tiny_config
from rich.console import Console

from heredity.pipeline import run
from heredity.plan import config_from_dict
from heredity.stages.profile import skipped_teachers, teacher_models

pytestmark = pytest.mark.slow


def teachers_config(replay_file) -> dict:
    cfg = tiny_config()
    cfg["teachers"].append({"backend": "replay", "replay": {"path": str(replay_file), "prompt_field": "prompt"}})
    cfg["eval"]["profile"] = {"suites": ["crows_pairs"], "limit": 3, "teachers": True, "batch_size": 8}
    return cfg


def test_which_teachers_are_profiled():
    cfg = config_from_dict({**tiny_config(), "teachers": [
        {"model": "embedded:smollm2-135m-instruct"},
        {"model": "/models/teacher.gguf", "backend": "llamacpp", "name": "gguf"},
        {"model": "gpt-x", "backend": "openai", "openai": {"base_url": "http://localhost:1/v1"}},
        {"model": "org/big", "backend": "vllm"},
        {"backend": "replay", "replay": {"path": "recorded.jsonl"}},
    ]})
    assert teacher_models(cfg) == {"teacher-smollm2-135m-instruct": "embedded:smollm2-135m-instruct",
                                   "teacher-gguf": "/models/teacher.gguf"}
    skipped = skipped_teachers(cfg)
    assert list(skipped) == ["teacher-gpt-x", "teacher-big", "teacher-recorded"]
    assert "openai" in skipped["teacher-gpt-x"] and "vllm" in skipped["teacher-big"]
    assert "replay" in skipped["teacher-recorded"]


def test_run_profiles_the_local_teacher_and_reports_the_skipped_one(tmp_path, data_dir):
    # a replay teacher answering the bundled prompts: it adds to the pool but has no model to profile
    from heredity.core.prompts import read_rows

    prompts, _ = read_rows("bundled:quickstart", "train")
    replay = tmp_path / "recorded.jsonl"
    replay.write_text("".join(json.dumps({"prompt": r["prompt"], "output": "A short recorded answer."}) + "\n"
                              for r in prompts))
    cfg = config_from_dict(teachers_config(replay))
    out = tmp_path / "run"
    log = io.StringIO()
    summary = run(cfg, out, Console(file=log, width=200))

    profile = summary["profile"]
    assert profile["models"] == ["base", "passive", "active", "teacher-smollm2-135m-instruct"]
    assert list(profile["skipped"]) == ["teacher-recorded"] and "replay" in profile["skipped"]["teacher-recorded"]
    assert "profile/teacher-recorded skipped: backend 'replay'" in log.getvalue()
    assert "Not profiled: teacher-recorded (backend 'replay'" in (out / "report.md").read_text()
    assert not (out / "profile" / "teacher-recorded").exists()

    # the teacher is the student's own base model here: its per-pair verdicts are base's, pair by pair
    teacher = pq.read_table(out / "profile" / "teacher-smollm2-135m-instruct" / "crows_pairs.parquet").to_pylist()
    base = pq.read_table(out / "profile" / "base" / "crows_pairs.parquet").to_pylist()
    assert len(teacher) == 3
    assert [(r["item"], r["prefers_more"]) for r in teacher] == [(r["item"], r["prefers_more"]) for r in base]
    shown = profile["metrics"]["crows_pairs/bias_pct"]
    assert shown["teacher-smollm2-135m-instruct"]["value"] == pytest.approx(
        100 * sum(r["prefers_more"] for r in teacher) / 3)
    manifest = json.loads((out / "profile" / "teacher-smollm2-135m-instruct" / "manifest.json").read_text())
    assert manifest["counts"] == {"crows_pairs": 3}
