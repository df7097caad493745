"""Arm-vs-arm paired differences of the likelihood suites inside a run (``summarise_profiles``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from heredity.core.models import load_model, resolve
from heredity.core.rundir import write_json, write_table
from heredity.profile import profile_model
from heredity.profile.differences import summarise_profiles
from heredity.reporting.report import render_profile

pytestmark = pytest.mark.slow  # tens of seconds: scheduled first (tests/conftest.py)

MODEL = "embedded:smollm2-135m-instruct"


def fake_profile(folder, suites: dict[str, list[dict]]) -> SimpleNamespace:
    """A profile folder as profile_model writes it; the summaries' own figures are not used for pairing."""
    write_json(folder / "summary.json", {"suites": {
        name: {"n": len(rows), "metrics": {}, "groups": {}, "protocol": {}} for name, rows in suites.items()}})
    for name, rows in suites.items():
        write_table(folder / f"{name}.parquet", rows)
    return SimpleNamespace(dir=folder)


def calibration_rows(correct, confidence, sum_right, extra=()):
    return [{"item": i, "label": 0, "correct": bool(c), "confidence": p,
             "loglik_sum": [-1.0, -2.0] if s else [-2.0, -1.0]}
            for i, (c, p, s) in enumerate(zip(correct, confidence, sum_right))] + list(extra)


def crows_rows(prefs):
    directions = ["stereo", "stereo", "antistereo", "antistereo"]
    return [{"item": 10 + i, "direction": d, "prefers_more": p} for i, (d, p) in enumerate(zip(directions, prefs))]


def stereoset_rows(pro, meaningful):
    return [{"item": i, "stereotype_preferred": p, "meaningful_preferred": m} for i, (p, m) in enumerate(zip(pro, meaningful))]


# The hand-made BBQ case of test_profile_scoring: unknown is answer 2 everywhere; four disambiguated
# items and one without a target in category A, four ambiguous items in category B. Item numbers
# restart per category, as in the real files, so pairing must key on (category, item).
BBQ_LABEL = [0, 0, 1, 0, 0, 2, 2, 2, 2]
BBQ_BIASED = [0, 0, 0, 0, -1, 0, 0, 1, 0]
BBQ_WHERE = [("A", 0), ("A", 1), ("A", 2), ("A", 3), ("A", 4), ("B", 0), ("B", 1), ("B", 2), ("B", 3)]


def bbq_rows(pred):
    return [{"category": cat, "item": i, "context_condition": "ambig" if cat == "B" else "disambig",
             "pred": p, "label": lab, "unknown": 2, "biased": b, "correct": p == lab}
            for (cat, i), p, lab, b in zip(BBQ_WHERE, pred, BBQ_LABEL, BBQ_BIASED)]


SPREAD = [-0.4, 0.0, 0.3, 0.9, 1.5]  # resampled effect sizes of test t0, spread widely


def seat_rows(effects, p_values, shift=0.0, seed=7):
    """Tests t0..; t0 carries resamples ``SPREAD + shift`` drawn with ``seed``, the others none."""
    rows = [{"test": f"t{k}", "effect_size": e, "p_value": p, "effect_size_boot": None, "bootstrap_seed": None}
            for k, (e, p) in enumerate(zip(effects, p_values))]
    rows[0].update(effect_size_boot=[v + shift for v in SPREAD], bootstrap_seed=seed)
    return rows


def test_likelihood_suites_pair_by_item_with_known_differences(tmp_path):
    stages = {
        "active": fake_profile(tmp_path / "active", {
            # confidence = passive's + 0.1 on every item: a paired CI has no width at all
            "calibration": calibration_rows([1, 1, 1, 0], [0.4, 0.6, 0.8, 0.95], [1, 1, 0, 0]),
            "crows_pairs": crows_rows([1.0, 1.0, 0.5, 0.0]),
            "stereoset": stereoset_rows([1, 1, 0, 0], [1, 1, 1, 0.5]),
            "bbq": bbq_rows([0, 1, 0, 2, 0, 2, 0, 1, 1]),  # the scoring test's predictions
            "seat": seat_rows([0.5, -1.0, 0.2], [0.01, 0.02, 0.5], shift=0.4),
        }),
        "passive": fake_profile(tmp_path / "passive", {
            # item 99 exists for passive only: it must not be paired
            "calibration": calibration_rows([1, 0, 0, 0], [0.3, 0.5, 0.7, 0.85], [1, 0, 0, 0],
                                            extra=[{"item": 99, "label": 0, "correct": True, "confidence": 0.99,
                                                    "loglik_sum": [0.0, -1.0]}]),
            "crows_pairs": crows_rows([0.0, 1.0, 0.0, 0.0]),
            "stereoset": stereoset_rows([1, 1, 1, 0], [1, 0.5, 0.5, 0.5]),
            "bbq": bbq_rows([1, 1, 1, 1, 1, 0, 0, 0, 0]),
            "seat": seat_rows([0.1, 0.5, 0.4], [0.3, 0.04, 0.6]),
        }),
        "base": fake_profile(tmp_path / "base", {"bbq": bbq_rows([2] * 9),  # always "unknown"
                                                 "seat": seat_rows([0.2, 0.0, 0.0], [0.5] * 3, seed=8)}),
    }
    profile = summarise_profiles(stages, samples=300)
    d = profile["differences"]["active_vs_passive"]

    def diff(key):
        return d[key]["diff"]

    assert d["calibration/accuracy"]["n"] == 4  # passive's extra item is left out
    assert diff("calibration/accuracy") == pytest.approx(0.5)
    assert diff("calibration/accuracy_sum") == pytest.approx(0.25)
    assert diff("calibration/mean_confidence") == pytest.approx(0.1)
    assert d["calibration/mean_confidence"]["ci95"] == pytest.approx([0.1, 0.1])
    # ECE, 1 bin: |0.75 - 0.6875| - |0.25 - 0.5875|; 10 bins (one item a bin): 2.15/4 - 2.75/4
    assert diff("calibration/ece_1bin") == pytest.approx(0.0625 - 0.3375)
    assert diff("calibration/ece_10bin") == pytest.approx(0.5375 - 0.6875)

    assert diff("crows_pairs/bias_pct") == pytest.approx(100 * (2.5 - 1.0) / 4)
    assert diff("crows_pairs/stereo_pct") == pytest.approx(50.0)
    assert diff("crows_pairs/antistereo_pct") == pytest.approx(25.0)

    assert diff("stereoset/ss") == pytest.approx(50.0 - 75.0)
    assert diff("stereoset/lms") == pytest.approx(87.5 - 62.5)
    assert diff("stereoset/icat") == pytest.approx(87.5 * 50 / 50 - 62.5 * 25 / 50)

    assert diff("bbq/accuracy") == pytest.approx(3 / 9 - 1 / 9)
    assert diff("bbq/accuracy_ambig") == pytest.approx(1 / 4 - 0.0)
    assert diff("bbq/accuracy_disambig") == pytest.approx(2 / 5 - 1 / 5)
    # active: 1/3 and 0.25 (the scoring test); passive: disambiguated never biased (-1), ambiguous
    # 3 of 4 biased with accuracy 0: 2 * 3/4 - 1
    assert diff("bbq/bias_disambig") == pytest.approx(1 / 3 - (-1.0))
    assert diff("bbq/bias_ambig") == pytest.approx(0.25 - 0.5)
    lo, hi = d["bbq/bias_disambig"]["ci95"]
    assert lo is not None and lo <= hi

    assert diff("seat/mean_abs_effect_size") == pytest.approx((1.7 - 1.0) / 3)
    assert diff("seat/share_significant") == pytest.approx(1 / 3)
    # t0: the same resamples for both models, each 0.4 higher for active: the paired CI has no width
    assert diff("seat/effect_size:t0") == pytest.approx(0.4)
    assert d["seat/effect_size:t0"]["ci95"] == pytest.approx([0.4, 0.4])
    assert "seat/effect_size:t1" not in d  # no resamples recorded

    # base never answers anything but "unknown": its bias scores are undefined, and the report says so
    vs_base = profile["differences"]["active_vs_base"]
    assert vs_base["bbq/bias_ambig"]["diff"] is None and vs_base["bbq/bias_ambig"]["ci95"] == [None, None]
    assert vs_base["bbq/bias_ambig"]["note"] == "undefined for base on these items"
    assert vs_base["bbq/accuracy"]["diff"] == pytest.approx(3 / 9 - 4 / 9)
    # base's resamples were drawn with another seed: the difference stands, but without a CI
    assert vs_base["seat/effect_size:t0"]["diff"] == pytest.approx(0.3)
    assert vs_base["seat/effect_size:t0"]["ci95"] == [None, None]
    assert vs_base["seat/effect_size:t0"]["note"].startswith("not paired")
    text = "\n".join(render_profile(profile))
    assert "| active − passive | stereoset/icat | 56.2 |" in text
    assert "| active − base | bbq/bias_disambig | – (undefined for base on these items) | – | 9 |" in text


@pytest.fixture(scope="module")
def perturbed_model(tmp_path_factory):
    """A second real model: the embedded one with seeded noise on every weight, saved as a folder."""
    folder = tmp_path_factory.mktemp("perturbed")
    source = resolve(MODEL)["pretrained_model_name_or_path"]
    model = load_model(MODEL)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05 * p.std())
    model.to(torch.bfloat16).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (source_file := Path(source) / name).is_file():
            shutil.copy(source_file, folder / name)
    return str(folder)


def test_real_likelihood_suites_pair_to_the_difference_of_the_figures(tmp_path, data_dir, perturbed_model):
    """On real items, every paired difference's point value is the difference of the two profiles' figures."""
    suites = ["calibration", "crows_pairs", "stereoset", "bbq", "seat"]
    options = {"seat": {"tests": ["weat6", "weat8"], "permutations": 200}}
    stages = {}
    for name, ref in (("active", perturbed_model), ("passive", MODEL)):
        profile_model(ref, suites, limit=8, out=tmp_path / name, data_dir=data_dir, bootstrap_samples=100,
                      threads=1, options=options)
        stages[name] = SimpleNamespace(dir=tmp_path / name)
    profile = summarise_profiles(stages, samples=200)
    d = profile["differences"]["active_vs_passive"]
    expected = {f"{s}/{m}" for s in ("calibration", "crows_pairs", "stereoset", "bbq") for m in (
        {"calibration": ["accuracy", "accuracy_sum", "mean_confidence", "ece_1bin", "ece_10bin"],
         "crows_pairs": ["bias_pct"], "stereoset": ["ss", "lms", "icat"],
         "bbq": ["accuracy", "bias_ambig", "bias_disambig"]}[s])} | {"seat/mean_abs_effect_size"}
    assert expected | {"seat/effect_size:weat6", "seat/effect_size:weat8"} <= set(d)
    for test in ("weat6", "weat8"):  # both models drew the same sentence resamples: a paired CI
        assert None not in d[f"seat/effect_size:{test}"]["ci95"] and "note" not in d[f"seat/effect_size:{test}"]
    nonzero = 0
    for key, diff in d.items():
        a, b = profile["metrics"][key]["active"]["value"], profile["metrics"][key]["passive"]["value"]
        if a is None or b is None:
            assert diff["diff"] is None and "undefined" in diff["note"], key
            continue
        assert diff["diff"] == pytest.approx(a - b, abs=1e-9), key
        nonzero += diff["diff"] != 0
    assert nonzero >= 5  # the noise changed the model: the identity is not 0 == 0
    assert "| active − passive | calibration/ece_10bin |" in "\n".join(render_profile(profile))
