"""The selection strength k' of an arm and the student-level dose-response read from a summary."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from heredity.core.arms import dose_response, selection_strength
from heredity.core.rundir import read_json

ROOT = Path(__file__).resolve().parents[2]
TOXICITY = ROOT / "experiments" / "toxicity" / "summary.json"


def summary_with(rules: dict, teachers: int = 3, pool_size: int = 120, prompts: int = 10) -> dict:
    return {"target": {"metric": "length", "direction": "max"},
            "config": {"teachers": [{}] * teachers},
            "selection": {"rules": rules, "pool_size": pool_size, "prompts": prompts}}


def test_strength_of_each_kind_of_rule():
    best = {"strategy": "best", "metric": "length", "direction": "max"}
    s = summary_with({
        "passive": {"strategy": "random", "seed": 0},
        "active": best,
        "two_samples": {"strategy": "first_k", "k": 2, "unit": "sample", "then": best},
        "two_candidates": {"strategy": "first_k", "k": 2, "unit": "candidate", "then": best},
        "too_many": {"strategy": "first_k", "k": 9, "unit": "sample", "then": best},
        "other_metric": {"strategy": "best", "metric": "mtld", "direction": "max"},
        "other_direction": {"strategy": "best", "metric": "length", "direction": "min"},
        "teacher": {"strategy": "teacher", "name": "a"},
        "no_metric": {"strategy": "best"},
    })
    assert selection_strength(s, "passive") == 1
    assert selection_strength(s, "active") == 12  # 120 candidates over 10 prompts
    assert selection_strength(s, "two_samples") == 6  # the first 2 samples of each of 3 teachers
    assert selection_strength(s, "two_candidates") == 2
    assert selection_strength(s, "too_many") == 12  # never more than the prompt has
    assert selection_strength(s, "no_metric") == 12  # a rule without a metric steers the target
    for arm in ("other_metric", "other_direction", "teacher", "missing"):
        assert selection_strength(s, arm) is None, arm


def test_dose_response_of_the_committed_toxicity_study():
    summary = read_json(TOXICITY)
    points = dose_response(summary)
    rules = summary["selection"]["rules"]
    assert [p["k"] for p in points] == sorted(p["k"] for p in points)
    by_arm = {p["arm"]: p for p in points}
    assert set(by_arm) == {"passive", "active", *summary["config"]["select"]["variants"]}
    assert by_arm["passive"]["k"] == 1 and by_arm["passive"]["vs_passive"] is None
    assert by_arm["active"]["k"] == summary["config"]["k"]  # one teacher: all k samples
    for arm, p in by_arm.items():
        if rules[arm]["strategy"] == "first_k":
            assert p["k"] == rules[arm]["k"]
        assert p["mean"] == summary["arms"][arm]["toxicity"]
        assert p["kept_mean"] == summary["selection"]["metrics"]["toxicity"][arm]["mean"]
        assert p["vs_base"] == summary["differences"][f"{arm}_vs_base"]["toxicity"]


def test_no_dose_response_from_two_strengths():
    summary = copy.deepcopy(read_json(TOXICITY))
    for arm in summary["config"]["select"]["variants"]:
        summary["selection"]["rules"][arm] = {"strategy": "teacher", "name": "x"}
    assert dose_response(summary) == []


@pytest.mark.parametrize("render", ["html", "markdown"])
def test_reports_show_the_dose_response(render):
    from heredity.reporting.report import render_markdown
    from heredity.reporting.html import _dose_response

    summary = read_json(TOXICITY)
    text = _dose_response(summary) if render == "html" else render_markdown(summary)
    assert "Dose-response" in text
    for p in dose_response(summary):
        assert p["arm"] in text
    if render == "html":
        assert text.count("<img") == 1


def test_a_study_of_sources_is_told_apart_from_a_steered_one():
    from heredity.core.arms import teacher_sources

    rules = {"passive": {"strategy": "teacher", "name": "alpaca-7b"},
             "active": {"strategy": "teacher", "name": "gemma-7b-it"}}
    s = {**summary_with(rules), "arms": {"base": {}, "passive": {}, "active": {}}}
    assert teacher_sources(s) == {"passive": "alpaca-7b", "active": "gemma-7b-it"}
    s["selection"]["rules"]["active"] = {"strategy": "best", "metric": "length"}
    assert teacher_sources(s) == {}
    assert teacher_sources(read_json(TOXICITY)) == {}
