"""Preference training (``select.preference``, TRL's DPOTrainer) on the real embedded student, CPU: DPO
raises the chosen-over-rejected log-ratio on held-out pairs, resumes after a real SIGKILL, is reused on
rerun, and takes the SFT arms' number of optimiser steps. Pairs are real: the 12 AlpacaEval models' answers
(the committed excerpt), the shortest answer of each instruction chosen over the longest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from train_helpers import (  # noqa: F401 (one_cpu_thread is an autouse fixture)
    STUDENT,
    kill_after_first_checkpoint,
    make_select,
    one_cpu_thread,
    run_config,
    short_pairs,
    train_config,
)

from heredity.core.loglik import score_choices
from heredity.core.models import load_model, load_tokenizer
from heredity.stages.train import preference_plan, run_train

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
# 16 pairs, 4 per step, one epoch = 4 steps, a checkpoint after each (the kill lands between two).
DPO = {"method": "lora", "epochs": 1, "batch_size": 4, "learning_rate": 2e-3, "max_length": 64, "save_steps": 1}
STEPS = 4
PREFERENCE = {"dpo": {"metric": "words", "direction": "min"}}
# Answers cut to this many characters: long enough to differ in style (a terse answer against the start of
# a long one), short enough for a CPU test.
CUT = 160


@pytest.fixture(scope="module")
def alpaca_pairs(data_dir, tmp_path_factory) -> list[dict]:
    """Pairs from the select stage on the replayed AlpacaEval pool: fewest words chosen, most rejected."""
    sys.path.insert(0, str(HERE.parent))
    from test_replay import replay_config

    from heredity.pipeline import run
    from heredity.plan import config_from_dict

    files = sorted((data_dir / "alpaca_eval").glob("*.json"))
    out = tmp_path_factory.mktemp("pairs") / "run"
    run(config_from_dict(replay_config(data_dir, files, select={"target": "words", "direction": "min",
                                                                "preference": PREFERENCE})), out, until="select")
    pairs = pq.read_table(out / "select" / "dpo.pairs.parquet").to_pylist()
    for pair in pairs:
        for side in ("chosen", "rejected"):
            pair[side][0]["content"] = pair[side][0]["content"][:CUT]
    assert len(pairs) >= 30
    return pairs


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, alpaca_pairs):
    run_dir = tmp_path_factory.mktemp("dpo")
    select = make_select(run_dir, {}, pairs={"dpo": alpaca_pairs[:16]})
    return run_train(run_config(train_config(**DPO), PREFERENCE), run_dir, select, "dpo")


def log_ratios(model_ref: str, pairs: list[dict]) -> list[float]:
    """log p(chosen | prompt) − log p(rejected | prompt) per pair, under the chat template."""
    model, tokenizer = load_model(model_ref), load_tokenizer(model_ref)
    items = [(tokenizer.apply_chat_template(p["prompt"], tokenize=False, add_generation_prompt=True),
              [p["chosen"][0]["content"], p["rejected"][0]["content"]]) for p in pairs]
    return [c.total - r.total for c, r in score_choices(model, tokenizer, items, batch_size=4)]


def test_dpo_raises_the_chosen_over_rejected_log_ratio_on_held_out_pairs(dpo_run, alpaca_pairs):
    held_out = alpaca_pairs[-10:]  # prompts the arm never trained on
    before = log_ratios(STUDENT, held_out)
    after = log_ratios(str(dpo_run.dir / "model"), held_out)
    gains = [a - b for a, b in zip(after, before)]
    assert sum(gains) / len(gains) > 1.0, gains
    assert sum(g > 0 for g in gains) >= 7, gains

    result = dpo_run.manifest()["result"]
    assert result["steps"] == STEPS and result["pairs"] == 16
    assert result["objective"] == {"kind": "preference", "loss": ["sigmoid"], "loss_weights": None, "beta": 0.1,
                                   "precompute_ref_log_probs": False}
    assert result["hyperparameters"]["preference"]["beta"] == 0.1
    assert result["hyperparameters"]["preference"]["loss_type"] == ["sigmoid"]
    # DPO's loss starts at log 2 (policy = reference) and falls
    assert result["first_loss"] == pytest.approx(0.6931, abs=1e-3) and result["last_loss"] < result["first_loss"]


def test_a_finished_dpo_arm_is_reused_and_keyed_on_its_objective(dpo_run, alpaca_pairs):
    run_dir = dpo_run.dir.parents[1]
    select = make_select(run_dir, {}, pairs={"dpo": alpaca_pairs[:16]})
    again = run_train(run_config(train_config(**DPO), PREFERENCE), run_dir, select, "dpo")
    assert again.reused and again.key == dpo_run.key
    # what the key holds: the objective and where training started, beside the shared settings
    material = dpo_run.manifest()["config"]
    assert material["objective"]["beta"] == 0.1 and material["init"] == "base"


def _start_job(tmp: Path, run_dir: Path) -> subprocess.Popen:
    job = tmp / "job.json"
    job.write_text(json.dumps({"run_dir": str(run_dir), "arm": "dpo", "train": DPO, "preference": PREFERENCE}))
    with open(tmp / "job.log", "w") as log:
        return subprocess.Popen([sys.executable, str(HERE / "train_job.py"), str(job)], stdout=log, stderr=log)


def test_dpo_resumes_after_sigkill_and_reaches_the_same_step(tmp_path, alpaca_pairs, dpo_run):
    run_dir = tmp_path / "run"
    select = make_select(run_dir, {}, pairs={"dpo": alpaca_pairs[:16]})
    checkpoints = run_dir / "train" / "dpo" / "checkpoints"
    kill_after_first_checkpoint(_start_job(tmp_path, run_dir), checkpoints, tmp_path / "job.log")
    assert not (run_dir / "train" / "dpo" / "manifest.json").exists()

    stage = run_train(run_config(train_config(**DPO), PREFERENCE), run_dir, select, "dpo")
    resumed, reference = stage.manifest()["result"], dpo_run.manifest()["result"]
    assert resumed["resumed_from_step"] is not None and resumed["resumed_from_step"] >= 1
    assert resumed["steps"] == reference["steps"] == STEPS
    assert resumed["last_loss"] == pytest.approx(reference["last_loss"], rel=1e-3)
    assert not checkpoints.exists()


def test_a_preference_arm_takes_the_sft_arms_step_count(tmp_path, data_dir, tokenizer, alpaca_pairs):
    # SFT arms of 8 examples, batch 4, 2 epochs: 4 steps each; 5 pairs alone would give 2 × 2 = 4... so 3 pairs:
    # 1 batch × 2 epochs = 2 steps of its own, raised to the SFT arms' 4
    rows = short_pairs(data_dir, tokenizer, 8)
    select = make_select(tmp_path, {"passive": rows, "active": rows[::-1]}, pairs={"dpo": alpaca_pairs[:3]})
    cfg = run_config(train_config(epochs=2, batch_size=4), PREFERENCE)
    plan = preference_plan(cfg, tmp_path, select, ["passive", "active"], "dpo")
    assert plan == {"max_steps": 4, "arms": {"passive": 4, "active": 4, "dpo": 2}}
    # as many steps as the SFT arms of its own, or max_steps for all: epochs / max_steps decide, no plan
    assert preference_plan(cfg, tmp_path, make_select(tmp_path / "b", {"passive": rows, "active": rows[::-1]},
                                                      pairs={"dpo": alpaca_pairs[:8]}),
                           ["passive", "active"], "dpo") is None
    assert preference_plan(run_config(train_config(epochs=2, batch_size=4, max_steps=7), PREFERENCE), tmp_path,
                           select, ["passive", "active"], "dpo") is None
