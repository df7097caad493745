"""The train stage on the real embedded student, CPU: full and LoRA runs, resume after a
real SIGKILL, and arms that share every setting. Tiny on purpose (a few optimiser steps)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from safetensors import safe_open
from train_helpers import (  # noqa: F401 (one_cpu_thread is an autouse fixture)
    STUDENT,
    kill_after_first_checkpoint,
    make_select,
    one_cpu_thread,
    run_config,
    short_pairs,
    train_config,
)

from heredity.core.models import load_model
from heredity.core.rundir import Stage
from heredity.stages.train import run_train

pytestmark = pytest.mark.slow  # tens of seconds: scheduled first (tests/conftest.py)

HERE = Path(__file__).parent
# LoRA settings of the resume and arms tests: 4 examples, 2 per step, 2 epochs = 4 steps,
# with a checkpoint after every step so the kill lands between two of them.
LORA = {"method": "lora", "epochs": 2, "batch_size": 2, "learning_rate": 1e-3, "max_length": 96,
        "lora_r": 4, "lora_alpha": 8, "save_steps": 1, "save_total_limit": 1}
LORA_STEPS = 4


@pytest.fixture(scope="module")
def pairs(data_dir, tokenizer):
    return short_pairs(data_dir, tokenizer, 8)


def result_of(stage) -> dict:
    return stage.manifest()["result"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data_dir, pairs):
    """Full fine-tuning, 3 epochs over 4 real examples, one of them longer than max_length."""
    long_answer = max(json.loads((data_dir / "alpaca_eval" / "gpt-3.5-turbo-0613.json").read_text()),
                      key=lambda r: len(r["output"]))
    rows = pairs[:3] + [{"prompt": long_answer["instruction"], "text": long_answer["output"]}]
    run_dir = tmp_path_factory.mktemp("full")
    select = make_select(run_dir, {"passive": rows})
    tc = train_config(epochs=3, batch_size=2, learning_rate=1e-4, max_length=96)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stage = run_train(run_config(tc), run_dir, select, "passive")
    return stage, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, pairs):
    """The uninterrupted LoRA run that the killed one is compared with."""
    run_dir = tmp_path_factory.mktemp("lora")
    select = make_select(run_dir, {"passive": pairs[:4], "active": pairs[4:8]})
    return run_train(run_config(train_config(**LORA)), run_dir, select, "passive")


def test_full_loss_decreases_over_epochs(full_run):
    stage, _ = full_run
    log = pq.read_table(stage.dir / "train_log.parquet").to_pylist()
    losses = [e["loss"] for e in log if e.get("loss") is not None]
    assert len(losses) == 6  # 4 examples / 2 per step × 3 epochs
    assert sum(losses[-2:]) / 2 < 0.7 * sum(losses[:2]) / 2  # last epoch vs first epoch


def test_full_log_has_throughput_and_memory(full_run):
    stage, _ = full_run
    table = pq.read_table(stage.dir / "train_log.parquet")
    assert {"tokens_per_s", "peak_rss_mb", "peak_gpu_mb"} <= set(table.column_names)
    log = [e for e in table.to_pylist() if e.get("loss") is not None]
    result = result_of(stage)
    for entry in log:
        assert entry["learning_rate"] > 0 and entry["grad_norm"] > 0 and entry["tokens_per_s"] > 0
        # The peak so far at each step: a 135M model in float32 with AdamW state.
        assert 500 < entry["peak_rss_mb"] <= result["peak_rss_mb"] and entry["peak_gpu_mb"] is None
    peaks = [e["peak_rss_mb"] for e in log]
    assert peaks == sorted(peaks)
    assert result["tokens"] > 0 and result["tokens_per_s"] > 0
    assert result["peak_rss_mb"] > 500
    assert result["peak_gpu_mb"] is None
    png = (stage.dir / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert not (stage.dir / "checkpoints").exists()  # deleted once the manifest is written


def test_too_long_examples_are_counted_and_reported(full_run):
    stage, caught = full_run
    result = result_of(stage)
    assert result["too_long"] == 1 and result["longest_tokens"] > 96
    assert result["examples_trained"] == result["examples"] == 4  # cut, not dropped
    assert any("longer than max_length=96" in w for w in result["warnings"])
    assert any("longer than max_length=96" in w for w in caught)


def _weights(folder: Path) -> dict:
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)


def test_full_and_lora_save_plain_loadable_models(full_run, lora_run):
    base = load_model(STUDENT)
    base_q = base.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    for stage in (full_run[0], lora_run):
        folder = stage.dir / "model"
        weights = _weights(folder)
        assert not any("lora" in k for k in weights), "LoRA must be merged into the saved weights"
        assert not (folder / "adapter_config.json").exists()
        model = load_model(str(folder))  # what evaluate does
        q = model.state_dict()["model.layers.0.self_attn.q_proj.weight"]
        assert q.shape == base_q.shape and not q.equal(base_q)  # training changed the weights
    assert result_of(lora_run)["hyperparameters"]["lora"]["r"] == 4


def test_unmerged_lora_saves_the_adapter_and_evaluates_like_the_merged_model(tmp_path, pairs, lora_run):
    """merge_lora: false keeps the adapter (plus tokenizer) instead of merged weights; loading
    it applies the adapter to the base, giving the same model as lora_run's merged save."""
    from heredity.config import RunConfig
    from heredity.core.prompts import Prompt
    from heredity.stages.evaluate import answer

    run_dir = tmp_path / "run"
    select = make_select(run_dir, {"passive": pairs[:4]})  # lora_run's passive data
    stage = run_train(run_config(train_config(**LORA, merge_lora=False)), run_dir, select, "passive")
    assert stage.key != lora_run.key  # a different output, so a different stage
    folder = stage.dir / "model"
    assert result_of(stage)["saved"] == "adapter" and result_of(lora_run)["saved"] == "model"
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert not (folder / "model.safetensors").exists() and not (folder / "config.json").exists()
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == STUDENT  # heredity's name, not a cache path
    assert adapter_config["r"] == 4

    name = "model.layers.0.self_attn.q_proj.weight"
    loaded = load_model(str(folder)).state_dict()[name]
    merged = _weights(lora_run.dir / "model")[name]
    base = load_model(STUDENT).state_dict()[name]
    assert not loaded.equal(base)
    assert (loaded - merged).abs().max() < 1e-5  # same training, same model
    cfg = RunConfig(student=STUDENT, device="cpu")
    cfg.eval.max_new_tokens = 8
    answers = answer(str(folder), [Prompt(id="0", text=pairs[0]["prompt"])], cfg)
    assert answers[0]["completion_tokens"] > 0 and answers[0]["text"].strip()


def _start_job(tmp: Path, run_dir: Path, arm: str) -> subprocess.Popen:
    job = tmp / "job.json"
    job.write_text(json.dumps({"run_dir": str(run_dir), "arm": arm, "train": LORA}))
    with open(tmp / "job.log", "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, str(HERE / "train_job.py"), str(job)], stdout=log, stderr=log)


def test_resume_after_sigkill_reaches_the_same_step(tmp_path, pairs, lora_run):
    run_dir = tmp_path / "run"
    select = make_select(run_dir, {"passive": pairs[:4]})
    checkpoints = run_dir / "train" / "passive" / "checkpoints"
    kill_after_first_checkpoint(_start_job(tmp_path, run_dir, "passive"), checkpoints, tmp_path / "job.log")
    stage_dir = run_dir / "train" / "passive"
    assert not (stage_dir / "manifest.json").exists()
    killed_at = max(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    assert killed_at < LORA_STEPS

    stage = run_train(run_config(train_config(**LORA)), run_dir, select, "passive")
    resumed, reference = result_of(stage), result_of(lora_run)
    assert resumed["resumed_from_step"] is not None and resumed["resumed_from_step"] >= 1
    assert resumed["steps_this_run"] == LORA_STEPS - resumed["resumed_from_step"] < LORA_STEPS
    assert resumed["steps"] == reference["steps"] == LORA_STEPS
    # Same data order and RNG state after the resume: the last step sees the same batch.
    assert resumed["last_loss"] == pytest.approx(reference["last_loss"], rel=1e-3)
    log = pq.read_table(stage.dir / "train_log.parquet").to_pylist()
    assert [e["step"] for e in log if e.get("loss") is not None] == list(range(1, LORA_STEPS + 1))
    assert not checkpoints.exists()


def test_arms_share_settings_and_step_counts(lora_run):
    run_dir = lora_run.dir.parents[1]
    select = Stage(run_dir, "select", {})  # the finished one of lora_run: only its files are read
    active = run_train(run_config(train_config(**LORA)), run_dir, select, "active")
    passive_result, active_result = result_of(lora_run), result_of(active)
    assert active.key != lora_run.key  # different data ...
    assert active_result["hyperparameters"] == passive_result["hyperparameters"]  # ... same everything else
    for field in ("steps", "max_steps", "seed", "examples"):
        assert active_result[field] == passive_result[field]
    assert active_result["hyperparameters"]["seed"] == active_result["seed"] == 0

