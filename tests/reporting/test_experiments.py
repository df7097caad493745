"""The shipped experiments: every config loads and validates, and the results page shows the
figures of every committed summary.json with the command that reproduces it."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

from heredity.core.rundir import read_json
from heredity.plan import load_config
from heredity.reporting.results import render_results, verdict

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
CONFIGS = sorted(EXPERIMENTS.glob("*/config.yaml")) + sorted((EXPERIMENTS / "paper").glob("*.yaml"))


def test_there_are_cpu_studies_and_paper_scale_configs():
    assert len(list(EXPERIMENTS.glob("*/config.yaml"))) >= 2
    assert len(list((EXPERIMENTS / "paper").glob("*.yaml"))) >= 2


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_every_experiment_config_loads_and_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # data paths in the configs are relative to the repository root
    cfg = load_config(path)
    assert cfg.select.target in cfg.score.metrics  # every metric a selection reads is scored
    study = path.parent
    if study != EXPERIMENTS / "paper":
        readme = (study / "README.md").read_text(encoding="utf-8")
        assert f"{study.name}/config.yaml" in readme, "a study README gives its command"


def test_verdict_reads_the_interval_in_the_intended_direction():
    assert verdict({"ci95": [1.0, 2.0]}, "max") == "moved"
    assert verdict({"ci95": [-2.0, -1.0]}, "min") == "moved"
    assert verdict({"ci95": [-2.0, -1.0]}, "max") == "wrong way"
    assert verdict({"ci95": [-1.0, 2.0]}, "max") == "not significant"
    assert verdict({"ci95": [None, None]}, "max") == "undefined"


def test_decoding_and_each_arms_target_are_read_from_the_summary():
    from heredity.core.arms import decoding_label, target_of

    def summary(**ev):
        return {"target": {"metric": "length", "direction": "max"},
                "config": {"eval": ev, "select": {"variants": {"lexical": {"strategy": "best", "metric": "mtld"},
                                                               "k2": {"strategy": "first_k", "k": 2}}}}}

    assert decoding_label(summary()) == "greedy answers"  # summaries from before sampling existed
    assert decoding_label(summary(temperature=0.7, top_p=0.9, repetition_penalty=1.0)) == \
        "one sampled answer each (temperature 0.7, top-p 0.9, seeded per prompt)"
    assert "repetition penalty 1.1" in decoding_label(summary(temperature=0.7, top_p=0.9, repetition_penalty=1.1))
    assert "repetition penalty 1.2" in decoding_label(summary(repetition_penalty=1.2))
    assert target_of(summary(), "active") == ("length", "max")
    assert target_of(summary(), "lexical") == ("mtld", "max")  # a variant steers its own metric
    assert target_of(summary(), "k2") == ("length", "max")  # a rule without a metric: the run's target


def test_results_page_shows_every_committed_summary(tmp_path):
    summaries = sorted(EXPERIMENTS.glob("*/summary.json"))
    if not summaries:
        pytest.skip("no study has a committed summary.json")
    page = render_results(EXPERIMENTS)
    for path in summaries:
        summary = read_json(path)
        assert f"heredity run experiments/{path.parent.name}/config.yaml" in page
        if "trajectories" in summary:  # a rounds study: its last round's active − passive cell
            last = summary["rounds"][-1]
            d = next(d for d in summary["differences"] if d["comparison"] == "vs_passive" and d["arm"] == "active"
                     and d["metric"] == summary["target"] and d["round"] == last)
            rows = [line for line in page.splitlines() if line.startswith(f"| {last} |")]
            assert any(f"[{d['ci95'][0]:.3g}" in line.split("|")[-2] for line in rows), (path, rows)
            continue
        target = summary["target"]["metric"]
        d = summary["differences"]["active_vs_passive"][target]
        lo, hi = d["ci95"]
        # a steered study's target row, or a source study's row of every metric
        row = [line for line in page.splitlines()
               if line.startswith("| active − passive |") or line.startswith("| active − passive (")]
        assert any(f"[{lo:.3g}" in line or f"[{lo:.1f}" in line for line in row), (path, row)
    # The committed page is the rendered one: rerun `heredity results` after adding a study.
    committed = ROOT / "docs" / "results.md"
    assert committed.read_text(encoding="utf-8") == page


def test_results_page_as_html_draws_every_study(tmp_path):
    from heredity.core.arms import dose_response
    from heredity.reporting.results import render_results_html

    summaries = sorted(EXPERIMENTS.glob("*/summary.json"))
    if not summaries:
        pytest.skip("no study has a committed summary.json")
    page = render_results_html(EXPERIMENTS)
    assert page.startswith("<!DOCTYPE html>") and "http://" not in page and "https://" not in page
    sections = page.split('<section id="')[1:]
    assert [s.split('"')[0] for s in sections] == [p.parent.name for p in summaries]
    for path, section in zip(summaries, sections):
        summary = read_json(path)
        assert f"heredity run experiments/{path.parent.name}/config.yaml" in section
        if "trajectories" in summary:  # a rounds study: the trajectory plot and its findings
            assert section.count("<img") == 1 and all(html.escape(f, quote=False) in section for f in summary["findings"])
            continue
        assert section.count("<img") >= 2  # the paired differences and the means, at least
        assert ("Dose-response" in section) == bool(dose_response(summary))
        assert "<h2>" not in section.split("</h2>", 1)[1]  # a study's parts sit below its title
