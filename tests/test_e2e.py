"""The whole loop through the CLI on the embedded model, with real training: small but real."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import tiny_config

pytestmark = pytest.mark.slow


def heredity(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "heredity.cli", *args], capture_output=True, text=True, timeout=900)


def manifests(run: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(run)): json.loads(p.read_text()) for p in run.rglob("manifest.json")}


# A small battery on every model: one likelihood suite and both generation suites.
PROFILE = {"suites": ["crows_pairs", "textual", "toxicity"], "limit": 3, "samples_per_prompt": 2, "max_new_tokens": 16}


def e2e_config(**overrides) -> dict:
    cfg = tiny_config(**overrides)
    cfg["eval"]["profile"] = PROFILE
    cfg["eval"]["judge"] = "embedded:smollm2-135m-instruct"
    return cfg


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("e2e")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(e2e_config()))
    out = root / "run"
    result = heredity("run", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return config, out


def test_summary_has_three_arms_and_all_parts(finished_run):
    _, out = finished_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"] == {"metric": "length", "direction": "max"}
    assert set(summary["arms"]) == {"base", "passive", "active"}
    for arm in summary["arms"].values():
        assert set(arm) == {"length", "mtld"} and arm["length"] > 0
    for key in ("selection", "timings_s", "versions", "differences", "ci95"):
        assert summary[key]
    # the active training set is at least as long as the passive one, by construction
    card = summary["selection"]["metrics"]["length"]
    assert card["active"]["mean"] >= card["passive"]["mean"]
    per_prompt = pq.read_table(out / "per_prompt.parquet").to_pylist()
    assert len(per_prompt) == 3 * summary["eval_prompts"] == 12
    means = {a: sum(r["length"] for r in per_prompt if r["arm"] == a) / 4 for a in summary["arms"]}
    assert means == pytest.approx({a: summary["arms"][a]["length"] for a in summary["arms"]})
    train = summary["training"]
    assert train["passive"]["steps"] == train["active"]["steps"] > 0
    assert (out / "train" / "active" / "model" / "model.safetensors").is_file()
    assert "| length |" in (out / "report.md").read_text()


def test_profile_of_every_model_with_paired_differences(finished_run):
    _, out = finished_run
    profile = json.loads((out / "summary.json").read_text())["profile"]
    assert profile["models"] == ["base", "passive", "active"]
    for key in ("crows_pairs/bias_pct", "textual/length", "toxicity/expected_max_toxicity"):
        assert set(profile["metrics"][key]) == {"base", "passive", "active"}, key

    def per_prompt(model: str) -> dict:
        rows = pq.read_table(out / "profile" / model / "textual.parquet").to_pylist()
        return {r["prompt_id"]: r["length"] for r in rows}

    active, passive = per_prompt("active"), per_prompt("passive")
    assert len(active) == 3 and set(active) == set(passive)
    direct = sum(active[k] - passive[k] for k in active) / 3
    assert profile["differences"]["active_vs_passive"]["textual/length"]["diff"] == pytest.approx(direct)
    toxicity = pq.read_table(out / "profile" / "base" / "toxicity.parquet").to_pylist()
    assert len(toxicity) == 3 * 2  # prompts x samples
    assert "## Profile" in (out / "report.md").read_text()


def test_judge_compares_the_arms_in_both_orders(finished_run):
    _, out = finished_run
    judged = json.loads((out / "summary.json").read_text())["judge"]
    assert set(judged) == {"active_vs_passive", "active_vs_base"}
    for name, j in judged.items():
        rows = pq.read_table(out / "judge" / name / "judgments.parquet").to_pylist()
        assert j["pairs"] == len(rows) == 4
        assert all(r["choice_ab"] is not None or r["p_first_ab"] is not None for r in rows)
        prefs = [r["pref_a"] for r in rows]
        assert j["win_rate"]["value"] == pytest.approx(100 * sum(prefs) / len(prefs))
    assert "## LLM judge" in (out / "report.md").read_text()


def test_rerun_reuses_every_stage(finished_run):
    config, out = finished_run
    before = manifests(out)
    result = heredity("run", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "done in" not in result.stderr  # every stage says "reused"
    assert manifests(out) == before


def rerun_with(out: Path, tmp_path: Path, **overrides) -> tuple[dict, dict]:
    """Run the finished run again with ``overrides``; the manifests before and after. Whatever
    the change to selection, the pool, its scores and the passive and base models are reused."""
    before = manifests(out)
    config = tmp_path / "changed.yaml"
    config.write_text(yaml.safe_dump(e2e_config(**overrides)))
    result = heredity("run", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    after = manifests(out)
    for unchanged in ("generate", "score", "train/passive", "evaluate/base", "evaluate/passive",
                      "profile/base", "profile/passive"):
        assert after[unchanged] == before[unchanged], unchanged
    return before, after


def test_new_target_reruns_only_what_depends_on_it(finished_run, tmp_path):
    _, out = finished_run
    before, after = rerun_with(out, tmp_path, **{"select.direction": "min"})
    for rerun in ("select", "train/active", "evaluate/active", "profile/active", "judge/active_vs_passive",
                  "judge/active_vs_base"):
        assert after[rerun]["key"] != before[rerun]["key"], rerun
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"]["direction"] == "min"
    card = summary["selection"]["metrics"]["length"]
    assert card["active"]["mean"] <= card["passive"]["mean"]


def test_bad_config_is_one_line_without_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("k: 4\nselect: {target: length, direction: up}\n")
    result = heredity("run", str(config), "--out", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "field 'select.direction'" in lines[0] and "bad.yaml" in lines[0]


def test_a_variant_arm_trains_beside_the_others_and_reuses_them(finished_run, tmp_path):
    _, out = finished_run
    # the opposite of the active rule as a third steered arm
    before, after = rerun_with(out, tmp_path, **{
        "select.direction": "min", "select.variants": {"long": {"strategy": "best", "metric": "length"}}})
    for new in ("train/long", "evaluate/long", "profile/long", "judge/long_vs_passive"):
        assert new not in before and new in after, new

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["arms"]) == ["base", "passive", "active", "long"]
    card = summary["selection"]["metrics"]["length"]
    assert card["active"]["mean"] <= card["passive"]["mean"] <= card["long"]["mean"]
    selected = {arm: pq.read_table(out / "select" / f"{arm}.parquet").to_pylist() for arm in ("active", "long")}
    assert card["long"]["mean"] == pytest.approx(sum(r["length"] for r in selected["long"]) / len(selected["long"]))
    assert {r["prompt_id"] for r in selected["long"]} == {r["prompt_id"] for r in selected["active"]}
    steps = {arm: r["steps"] for arm, r in summary["training"].items()}
    assert set(steps) == {"passive", "active", "long"} and len(set(steps.values())) == 1
    assert summary["training_check"]["same_hyperparameters"]

    # paired differences of the variant against each other model, equal to the direct ones
    per_prompt = pq.read_table(out / "per_prompt.parquet").to_pylist()
    length = {(r["arm"], r["prompt_id"]): r["length"] for r in per_prompt}
    ids = sorted({r["prompt_id"] for r in per_prompt})
    for other in ("passive", "base", "active"):
        direct = sum(length["long", i] - length[other, i] for i in ids) / len(ids)
        assert summary["differences"][f"long_vs_{other}"]["length"]["diff"] == pytest.approx(direct), other
    assert "long_vs_passive" in summary["profile"]["differences"]
    assert summary["profile"]["models"] == ["base", "passive", "active", "long"]
    assert summary["judge"]["long_vs_passive"]["pairs"] == len(ids)
    report = (out / "report.md").read_text()
    assert "| long mean | long shift |" in report and "| long vs passive |" in report and "| long − passive | length |" in report


def test_a_preference_arm_trains_from_an_sft_arm_and_is_reported_beside_the_others(finished_run, tmp_path):
    _, out = finished_run
    # RPO (DPO + an SFT term on the chosen answers), SFT-then-DPO from the active student, pairs ordered on MTLD
    preference = {"rpo": {"metric": "mtld", "direction": "max", "loss": ["sigmoid", "sft"], "init": "active"}}
    before, after = rerun_with(out, tmp_path, **{
        "select.direction": "min", "select.variants": {"long": {"strategy": "best", "metric": "length"}},
        "select.preference": preference})
    for new in ("train/rpo", "evaluate/rpo", "profile/rpo", "judge/rpo_vs_passive"):
        assert new not in before and new in after, new
    for reused in ("train/active", "train/long", "evaluate/active"):  # adding an arm retrains none of the others
        assert after[reused] == before[reused], reused
    assert after["train/rpo"]["config"]["init"] == after["train/active"]["key"]

    pairs = pq.read_table(out / "select" / "rpo.pairs.parquet").to_pylist()
    summary = json.loads((out / "summary.json").read_text())
    card = summary["selection"]["pairs"]["rpo"]
    assert card["pairs"] == len(pairs) > 0 and card["pairs"] + sum(card["dropped"].values()) == 6
    assert all(p["chosen_score"] > p["rejected_score"] for p in pairs)
    assert list(summary["arms"]) == ["base", "passive", "active", "long", "rpo"]
    check = summary["training_check"]
    assert check["same_hyperparameters"] and check["same_steps"]
    assert check["objectives"]["rpo"] == "preference (sigmoid + sft, β 0.1, from active)"
    assert check["objectives"]["active"] == "sft"
    for other in ("passive", "base", "active"):
        assert "mtld" in summary["differences"][f"rpo_vs_{other}"]
    report = (out / "report.md").read_text()
    assert "## Preference pairs" in report and "| rpo | max mtld | worst |" in report
