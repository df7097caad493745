"""The judge-preference suite: the profiled model judges AlpacaEval answer pairs."""

import pyarrow.parquet as pq
import pytest

from heredity.profile import profile_model
from heredity.profile.judge_preference import longer_preference


def test_longer_preference_rule():
    assert longer_preference({"pref_a": 0.8, "len_a": 10, "len_b": 5}) == 0.8
    assert longer_preference({"pref_a": 0.8, "len_a": 5, "len_b": 10}) == pytest.approx(0.2)
    assert longer_preference({"pref_a": 0.8, "len_a": 5, "len_b": 5}) is None
    assert longer_preference({"pref_a": None, "len_a": 5, "len_b": 9}) is None


def test_profiled_model_judges_real_pairs(tmp_path, data_dir):
    result = profile_model("embedded:smollm2-135m-instruct", ["judge_preference"], 2, tmp_path, "cpu",
                           data_dir=data_dir, bootstrap_samples=100, threads=1)
    suite = result["suites"]["judge_preference"]
    rows = pq.read_table(tmp_path / "judge_preference.parquet").to_pylist()
    assert suite["n"] == len(rows) == 2
    assert all(r["p_first_ab"] is not None and r["p_first_ba"] is not None for r in rows)  # both orders
    longer = [100 * r["longer_preference"] for r in rows if r["longer_preference"] is not None]
    assert suite["metrics"]["longer_preferred"]["value"] == pytest.approx(sum(longer) / len(longer))
    verdicts = [r[k] for r in rows for k in ("choice_ab", "choice_ba")]
    first = suite["metrics"]["first_position_rate"]
    assert first["value"] == pytest.approx(100 * verdicts.count("a") / len(verdicts))
    assert None not in first["ci95"]  # resampled over the pairs
    names = {p.stem for p in (data_dir / "alpaca_eval").glob("*.json")}
    assert set(suite["groups"]) <= names and sum(g["n"] for g in suite["groups"].values()) == 4  # 2 models a pair


def test_run_report_pairs_judge_preferences_by_answer_pair(tmp_path):
    """summarise_profiles pairs two models' verdicts on the same answer pairs."""
    from types import SimpleNamespace

    from heredity.core.rundir import write_json, write_table
    from heredity.profile.differences import summarise_profiles

    stages = {}
    for name, prefs in (("active", [0.9, 0.8, 0.7]), ("passive", [0.5, 0.6, 0.4])):
        folder = tmp_path / name
        metric = {"value": 100 * sum(prefs) / 3, "ci95": [None, None]}
        write_json(folder / "summary.json", {"suites": {"judge_preference": {
            "n": 3, "metrics": {"longer_preferred": metric}, "groups": {}, "protocol": {}}}})
        write_table(folder / "judge_preference.parquet",
                    [{"pair_id": f"p{i}", "longer_preference": v} for i, v in enumerate(prefs)])
        stages[name] = SimpleNamespace(dir=folder)
    profile = summarise_profiles(stages, samples=200)
    diff = profile["differences"]["active_vs_passive"]["judge_preference/longer_preferred"]
    assert diff["diff"] == pytest.approx(100 * (2.4 - 1.5) / 3)
    assert profile["metrics"]["judge_preference/longer_preferred"]["active"]["value"] == pytest.approx(80)
