"""Arms of different sizes still take the same number of optimiser steps (the largest arm's),
and the manifests and the report show it. Real student, CPU, LoRA, a handful of steps."""

from __future__ import annotations

import pytest
from train_helpers import (  # noqa: F401 (one_cpu_thread is an autouse fixture)
    STUDENT,
    make_select,
    one_cpu_thread,
    run_config,
    short_pairs,
    train_config,
)

from heredity.core.models import load_tokenizer
from heredity.core.rundir import Stage
from heredity.reporting.report import render_training_check, training_check
from heredity.stages.train import plan_equal_steps, run_train_arms
from heredity.training.steps import optimiser_steps, train_key

pytestmark = pytest.mark.filterwarnings("ignore:.*longer than max_length")

# 2 examples per step, one epoch: 4 rows → 2 steps, 6 rows → 3 steps.
TINY = {"method": "lora", "epochs": 1, "batch_size": 2, "learning_rate": 1e-3, "max_length": 64,
        "lora_r": 2, "lora_alpha": 4}


@pytest.fixture(scope="module")
def pairs(data_dir):
    return short_pairs(data_dir, load_tokenizer(STUDENT), 10, max_tokens=40)


def test_step_count_follows_the_trainer_rules():
    tc = train_config(epochs=2, batch_size=4, gradient_accumulation_steps=2)
    assert optimiser_steps(16, tc) == 4  # 4 batches → 2 steps per epoch
    assert optimiser_steps(17, tc) == 6  # 5 batches: the partial accumulation still steps
    assert optimiser_steps(16, tc, processes=2) == 2  # each process sees half the batches
    assert optimiser_steps(3, tc) == 2  # fewer rows than a batch: one step per epoch
    assert optimiser_steps(10, train_config(epochs=0.5, batch_size=2)) == 3
    assert optimiser_steps(0, tc) == 0


def test_equal_arms_keep_their_stage_keys(tmp_path, pairs):
    run_dir = tmp_path / "run"
    select = make_select(run_dir, {"passive": pairs[:4], "active": pairs[4:8]})
    cfg = run_config(train_config(**TINY))
    assert plan_equal_steps(cfg, run_dir, select, ["passive", "active"]) is None
    assert "max_steps" not in train_key(cfg.train)
    # An explicit max_steps already makes every arm equal: no plan, nothing tokenised.
    fixed = run_config(train_config(**TINY, max_steps=5))
    assert plan_equal_steps(fixed, run_dir / "other", select, ["passive", "active"]) is None
    assert not (run_dir / "other").exists()


def test_arms_of_different_sizes_take_the_same_steps(tmp_path, pairs):
    run_dir = tmp_path / "run"
    # The active arm lost two prompts (as a threshold filter drops them): 4 rows vs 6.
    select = make_select(run_dir, {"passive": pairs[:6], "active": pairs[6:10]})
    cfg = run_config(train_config(**TINY))
    plan = plan_equal_steps(cfg, run_dir, select, ["passive", "active"])
    assert plan == {"max_steps": 3, "arms": {"passive": 3, "active": 2}}
    trained = run_train_arms(cfg, run_dir, select, ["passive", "active"])
    results = {arm: stage.manifest()["result"] for arm, stage in trained.items()}
    for arm, result in results.items():
        assert result["steps"] == result["max_steps"] == 3, arm
        assert result["own_steps"] == plan["arms"][arm]  # the plan counted what the trainer saw
        assert result["equal_steps"]["max_steps"] == 3
        assert result["equal_steps"]["own_steps_by_arm"] == {"passive": 3, "active": 2}
    assert results["passive"]["examples"] == 6 and results["active"]["examples"] == 4
    assert results["passive"]["hyperparameters"] == results["active"]["hyperparameters"]
    assert results["active"]["hyperparameters"]["max_steps"] == 3

    check = training_check(results)
    assert check["same_hyperparameters"] and check["same_steps"] and check["equalised"]
    assert check["steps"] == {"passive": 3, "active": 3} and check["own_steps"] == {"passive": 3, "active": 2}
    text = "\n".join(render_training_check(check))
    assert "Same hyper-parameters and seed in every arm: yes" in text and "(equal)" in text

    # The plan is cached: rerunning reuses it and both trained arms.
    assert Stage(run_dir, "train/steps", {}).dir.joinpath("manifest.json").is_file()
    again = run_train_arms(cfg, run_dir, select, ["passive", "active"])
    assert all(stage.reused for stage in again.values())

    # What the small arm would have recorded without the plan: the check must notice.
    alone = {**results["active"], "steps": 2, "max_steps": 2,
             "hyperparameters": {**results["active"]["hyperparameters"], "max_steps": -1}}
    unequal = training_check({"passive": results["passive"], "active": alone})
    # max_steps is how an arm got the common count, not a shared setting: the steps themselves are compared
    assert not unequal["same_steps"] and unequal["differing_hyperparameters"] == []
    assert "NOT equal" in "\n".join(render_training_check(unequal))
