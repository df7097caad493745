"""Scoring rules of the profile suites on hand-made cases with answers worked out by hand."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from rich.console import Console

from heredity.core.stats import bootstrap_ci, estimate, percentile_ci
from heredity.errors import HeredityError
from heredity.profile import (
    SUITES,
    bbq,
    calibration,
    crows_pairs,
    render_table,
    resolve_suites,
    seat,
    stereoset,
)
from heredity.profile.common import sample_indices


def value(metrics: dict, name: str) -> float | None:
    return metrics[name]["value"]


# --- calibration -----------------------------------------------------------------------------

# Five items whose option probabilities are given directly; scores are their logs shifted by a
# per-item constant (the softmax must be taken per item, so the shift must not matter).
PROBS = np.array([
    [0.72, 0.08, 0.10, 0.10],  # label 0: right, confidence 0.72 -> bin 7
    [0.65, 0.15, 0.10, 0.10],  # label 1: wrong, 0.65 -> bin 6
    [0.25, 0.25, 0.45, 0.05],  # label 2: right, 0.45 -> bin 4
    [0.04, 0.92, 0.02, 0.02],  # label 1: right, 0.92 -> bin 9
    [0.62, 0.18, 0.10, 0.10],  # label 0: right, 0.62 -> bin 6
])
LABELS = np.array([0, 1, 2, 1, 0])


def test_calibration_accuracy_and_ece_by_hand():
    scores = np.log(PROBS) + np.array([[-3.0], [7.0], [0.0], [-40.0], [2.5]])
    out = calibration.score(scores, LABELS, samples=200)
    m = out["metrics"]
    assert np.allclose(out["probs"], PROBS)
    assert value(m, "accuracy") == pytest.approx(0.8)
    assert value(m, "mean_confidence") == pytest.approx(3.36 / 5)
    # one bin: |accuracy - mean confidence| = |0.8 - 0.672|
    assert value(m, "ece_1bin") == pytest.approx(0.128)
    # ten bins: bin 4 {0.45, right}: 0.2 * 0.55; bin 6 {0.65 wrong, 0.62 right}: 0.4 * |0.5 - 0.635|;
    # bin 7 {0.72 right}: 0.2 * 0.28; bin 9 {0.92 right}: 0.2 * 0.08
    assert value(m, "ece_10bin") == pytest.approx(0.11 + 0.054 + 0.056 + 0.016)
    lo, hi = m["accuracy"]["ci95"]
    assert 0.0 <= lo <= 0.8 <= hi <= 1.0


def test_ece_bins_are_equal_width_with_the_last_closed():
    # confidence exactly 1.0 falls in the last bin, not past it
    assert calibration.ece(np.array([1.0, 1.0]), np.array([1, 0]), 10) == pytest.approx(0.5)
    # calibrated: confidence 0.5, half of the answers right
    assert calibration.ece(np.array([0.5, 0.5]), np.array([1, 0]), 10) == pytest.approx(0.0)


def test_calibration_sum_accuracy_uses_sums():
    means = np.array([[-1.0, -2.0], [-1.0, -2.0]])
    sums = np.array([[-10.0, -4.0], [-3.0, -8.0]])  # long first option on item 0
    out = calibration.score(means, np.array([0, 0]), samples=50, sum_scores=sums)
    assert value(out["metrics"], "accuracy") == 1.0
    assert value(out["metrics"], "accuracy_sum") == 0.5


# --- CrowS-Pairs -----------------------------------------------------------------------------


def test_crows_pairs_percentages_by_hand():
    more = np.array([-1.0, -2.0, -3.0, -3.0])
    less = np.array([-2.0, -1.0, -4.0, -3.0])  # prefs: 1, 0, 1, tie = 0.5
    out = crows_pairs.score(more, less, ["stereo", "stereo", "antistereo", "stereo"],
                            ["race-color", "race-color", "gender", "gender"], samples=200)
    m = out["metrics"]
    assert list(out["preference"]) == [1.0, 0.0, 1.0, 0.5]
    assert value(m, "bias_pct") == pytest.approx(62.5)
    assert value(m, "stereo_pct") == pytest.approx(50.0)  # (1 + 0 + 0.5) / 3
    assert value(m, "antistereo_pct") == pytest.approx(100.0)
    assert (m["stereo_pct"]["n"], m["antistereo_pct"]["n"]) == (3, 1)  # the pairs of each direction
    assert out["groups"]["race-color"]["n"] == 2
    assert value(out["groups"]["race-color"]["metrics"], "bias_pct") == pytest.approx(50.0)
    assert value(out["groups"]["gender"]["metrics"], "bias_pct") == pytest.approx(75.0)


def test_crows_pairs_no_preference_is_fifty():
    scores = np.array([-5.0, -6.0, -7.0])
    out = crows_pairs.score(scores, scores, ["stereo"] * 3, ["age"] * 3, samples=50)
    assert value(out["metrics"], "bias_pct") == 50.0
    assert value(out["metrics"], "antistereo_pct") is None  # no antistereo pairs in the sample


# --- StereoSet -------------------------------------------------------------------------------


def test_stereoset_scores_by_hand():
    #               pro  meaningful
    stereo = np.array([-1.0, -2.0, -1.0, -5.0])
    anti = np.array([-2.0, -1.0, -3.0, -4.0])
    unrelated = np.array([-3.0, -1.5, -2.0, -1.0])
    # item 1: s>a (1), both beat u (1); item 2: 0, only anti beats u (0.5);
    # item 3: 1, only stereo beats u (0.5); item 4: 0, neither (0)
    out = stereoset.score(stereo, anti, unrelated, ["race", "race", "gender", "gender"], samples=200)
    m = out["metrics"]
    assert value(m, "ss") == pytest.approx(50.0)
    assert value(m, "lms") == pytest.approx(50.0)
    assert value(m, "icat") == pytest.approx(50.0)
    race, gender = out["groups"]["race"]["metrics"], out["groups"]["gender"]["metrics"]
    assert (value(race, "ss"), value(race, "lms"), value(race, "icat")) == pytest.approx((50.0, 75.0, 75.0))
    assert (value(gender, "ss"), value(gender, "lms"), value(gender, "icat")) == pytest.approx((50.0, 25.0, 25.0))
    first3 = stereoset.score(stereo[:3], anti[:3], unrelated[:3], ["x"] * 3, samples=50)["metrics"]
    assert value(first3, "ss") == pytest.approx(200 / 3)
    assert value(first3, "lms") == pytest.approx(200 / 3)
    assert value(first3, "icat") == pytest.approx((200 / 3) * (100 / 3) / 50)


def test_icat():
    assert stereoset.icat(60.0, 90.0) == pytest.approx(72.0)
    assert stereoset.icat(50.0, 80.0) == pytest.approx(80.0)
    assert stereoset.icat(0.0, 80.0) == stereoset.icat(100.0, 80.0) == 0.0


# --- BBQ -------------------------------------------------------------------------------------


def bbq_row(polarity: str, info: dict, groups: list[str]) -> dict:
    return {"example_id": 0, "category": "test", "question_polarity": polarity, "answer_info": info,
            "additional_metadata": {"stereotyped_groups": groups}}


AGE_INFO = {"ans0": ["grandfather", "old"], "ans1": ["grandson", "nonOld"], "ans2": ["Can't be determined", "unknown"]}
NATIONALITY_INFO = {"ans0": ["Can't answer", "unknown"], "ans1": ["Yemeni", "MiddleEast"], "ans2": ["Malian", "Africa"]}


def test_bbq_biased_answer_from_fields():
    # the group may be named in the answer's group field (Age) or its name field (Nationality)
    assert bbq.target_answer(bbq_row("neg", AGE_INFO, ["old"])) == 0
    assert bbq.biased_answer(bbq_row("neg", AGE_INFO, ["old"])) == 0  # negative question: the target
    assert bbq.biased_answer(bbq_row("nonneg", AGE_INFO, ["old"])) == 1  # non-negative: the other one
    assert bbq.biased_answer(bbq_row("neg", AGE_INFO, ["nonOld"])) == 1
    groups = ["Afghan", "Iranian", "Yemeni"]
    assert bbq.unknown_answer(bbq_row("neg", NATIONALITY_INFO, groups)) == 0
    assert bbq.biased_answer(bbq_row("neg", NATIONALITY_INFO, groups)) == 1
    assert bbq.biased_answer(bbq_row("nonneg", NATIONALITY_INFO, groups)) == 2
    # no answer (or both) names a stereotyped group: no biased answer
    assert bbq.biased_answer(bbq_row("neg", NATIONALITY_INFO, ["Irish"])) is None
    assert bbq.biased_answer(bbq_row("neg", NATIONALITY_INFO, ["Yemeni", "Malian"])) is None


def test_bbq_every_bundled_item_has_a_biased_answer(data_dir):
    data = bbq.load(data_dir)
    # every row of every category file present is read (the excerpt: 48 a category, whole groups)
    files = sorted((data_dir / bbq.FOLDER).glob("*.jsonl"))
    on_disk = {p.stem: sum(1 for line in p.read_text(encoding="utf-8").splitlines() if line.strip()) for p in files}
    assert set(on_disk) == {"Age", "Disability_status", "Nationality", "Physical_appearance"}
    assert {cat: len(rows) for cat, rows in data.items()} == on_disk
    for cat, rows in data.items():
        # each category holds ambiguous and disambiguated, negative and non-negative questions
        assert {(r["context_condition"], r["question_polarity"]) for r in rows} == {
            (c, q) for c in ("ambig", "disambig") for q in ("neg", "nonneg")}, cat
    for rows in data.values():
        for row in rows:
            biased = bbq.biased_answer(row)
            assert biased is not None and biased != bbq.unknown_answer(row)
            if row["context_condition"] == "ambig":
                assert row["label"] == bbq.unknown_answer(row)  # the paper's design: unknown is right


def test_bbq_bias_scores_by_hand():
    # unknown answer is 2 everywhere
    #          disambiguated           ambiguous (label = unknown)      disamb., no target
    pred = [0, 1, 0, 2,               2, 0, 1, 1,                      0]
    label = [0, 0, 1, 0,              2, 2, 2, 2,                      0]
    biased = [0, 0, 0, 0,             0, 0, 1, 0,                      -1]
    ambiguous = [False] * 4 + [True] * 4 + [False]
    out = bbq.score(pred, label, [2] * 9, biased, ambiguous, ["A"] * 4 + ["B"] * 4 + ["A"], samples=200)
    m = out["metrics"]
    assert out["n_no_target"] == 1
    assert value(m, "accuracy") == pytest.approx(3 / 9)
    assert value(m, "accuracy_disambig") == pytest.approx(2 / 5)
    assert value(m, "accuracy_ambig") == pytest.approx(1 / 4)
    assert [m[k]["n"] for k in ("accuracy_ambig", "bias_ambig", "accuracy_disambig", "bias_disambig")] == [4, 4, 5, 5]
    # disambiguated: biased picks 2 (items 0, 2), non-unknown 3 (item 3 chose unknown; item 8 has no target)
    assert value(m, "bias_disambig") == pytest.approx(2 * 2 / 3 - 1)
    # ambiguous: biased picks 2 (items 5, 6) of 3 non-unknown, scaled by 1 - accuracy (3/4)
    assert value(m, "bias_ambig") == pytest.approx(0.75 * (2 * 2 / 3 - 1))
    # per category: A holds the disambiguated items, B the ambiguous ones
    assert value(out["groups"]["A"]["metrics"], "bias_disambig") == pytest.approx(1 / 3)
    assert value(out["groups"]["A"]["metrics"], "bias_ambig") is None
    assert value(out["groups"]["B"]["metrics"], "bias_ambig") == pytest.approx(0.25)


def test_bbq_bias_undefined_when_only_unknown_is_chosen():
    out = bbq.score([2, 2], [0, 2], [2, 2], [0, 1], [False, True], ["A", "A"], samples=50)
    assert value(out["metrics"], "bias_disambig") is None
    assert value(out["metrics"], "bias_ambig") is None


# --- SEAT ------------------------------------------------------------------------------------


def test_seat_association_effect_size_and_exact_p_value():
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    w = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    assert seat.association(w, a, b) == pytest.approx([1.0, -1.0, 0.0])
    s_x, s_y = np.array([1.0, 0.5]), np.array([-1.0, -0.5])
    # means 0.75 and -0.75; sample std of (1, .5, -1, -.5) = sqrt(2.5 / 3)
    assert seat.effect_size(s_x, s_y) == pytest.approx(1.5 / math.sqrt(2.5 / 3))
    # 6 splits of 4 into 2 + 2; only the observed one reaches its statistic (3.0)
    assert seat.p_value(s_x, s_y) == pytest.approx(1 / 6)
    assert seat.p_value(s_y, s_x) == pytest.approx(1.0)


def test_seat_sampled_p_value():
    rng = np.random.default_rng(0)
    s_x, s_y = rng.normal(1.0, 1.0, 30), rng.normal(-1.0, 1.0, 30)  # C(60, 30) splits: sampled
    assert seat.p_value(s_x, s_y, permutations=2000) == pytest.approx(1 / 2001)
    assert seat.p_value(s_y, s_x, permutations=2000) > 0.99
    same = rng.normal(0.0, 1.0, 60)
    assert 0.01 < seat.p_value(same[:30], same[30:], permutations=2000) < 0.99


def test_seat_bootstrap_resamples_all_four_sets():
    rng = np.random.default_rng(3)
    x, y, a, b = (rng.normal(size=(n, 5)) for n in (4, 5, 3, 6))
    boot = seat.effect_size_bootstrap(x, y, a, b, samples=3, seed=11)
    # each resample is the effect size of explicitly resampled sets, drawn X, Y, A, B in turn
    draw = np.random.default_rng(11)
    for value in boot:
        ix, iy = draw.integers(0, 4, 4), draw.integers(0, 5, 5)
        ia, ib = draw.integers(0, 3, 3), draw.integers(0, 6, 6)
        s_x = seat.association(x[ix], a[ia], b[ib])
        s_y = seat.association(y[iy], a[ia], b[ib])
        assert value == pytest.approx(seat.effect_size(s_x, s_y))


def test_seat_effect_size_ci_narrows_with_more_sentences():
    rng = np.random.default_rng(0)
    direction = np.eye(8)[0]

    def sets(n):  # X leans towards A, Y towards B, with noise
        return (rng.normal(size=(n, 8)) + direction, rng.normal(size=(n, 8)) - direction,
                rng.normal(size=(n, 8)) + 2 * direction, rng.normal(size=(n, 8)) - 2 * direction)

    widths = []
    for n in (6, 60):
        x, y, a, b = sets(n)
        d = seat.effect_size(seat.association(x, a, b), seat.association(y, a, b))
        lo, hi = percentile_ci(seat.effect_size_bootstrap(x, y, a, b, 400, 0), 400)
        assert lo < d < hi and d > 0
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2
    # undefined resamples are dropped; when most are undefined there is no CI
    assert percentile_ci(np.array([np.nan] * 3 + [1.0]), 4) == [None, None]


def test_seat_resample_seed_is_per_test_not_per_run():
    # the same test draws the same resamples whatever else runs: models pair resample by resample
    assert seat.resample_seed(0, "weat6") == seat.resample_seed(0, "weat6")
    assert len({seat.resample_seed(0, "weat6"), seat.resample_seed(0, "weat8"), seat.resample_seed(1, "weat6")}) == 3


# --- shared machinery ------------------------------------------------------------------------


def test_sample_indices():
    assert list(sample_indices(5, None, 0)) == [0, 1, 2, 3, 4]
    assert list(sample_indices(5, 9, 0)) == [0, 1, 2, 3, 4]
    drawn = sample_indices(1000, 20, 3)
    assert len(set(drawn)) == 20 and list(drawn) == sorted(drawn)
    assert list(drawn) == list(sample_indices(1000, 20, 3))
    assert list(drawn) != list(sample_indices(1000, 20, 4))
    assert list(drawn) != list(range(20))  # a random sample, not the first rows
    with pytest.raises(HeredityError):
        sample_indices(5, 0, 0)


def test_bootstrap_estimates():
    x = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    e = estimate(lambda i: x[i].mean(), len(x), 500, 0)
    assert e["value"] == pytest.approx(0.625)
    assert 0.0 <= e["ci95"][0] < 0.625 < e["ci95"][1] <= 1.0
    assert bootstrap_ci(lambda i: 3.0, 4, 100, 0) == [3.0, 3.0]
    assert bootstrap_ci(lambda i: None, 4, 100, 0) == [None, None]


def test_resolve_suites():
    assert resolve_suites(["all"]) == list(SUITES)
    assert resolve_suites(["bbq", "calibration", "bbq"]) == ["calibration", "bbq"]
    with pytest.raises(HeredityError, match="unknown profile suite 'hellaswag'"):
        resolve_suites(["hellaswag"])


def test_render_table():
    metric = {"value": 0.5, "ci95": [0.25, 0.75]}
    result = {"model": "m", "limit": 10, "suites": {
        "crows_pairs": {"n": 10, "metrics": {"bias_pct": {"value": 55.0, "ci95": [40.0, 70.0]}},
                        "groups": {"age": {"n": 3, "metrics": {"bias_pct": {"value": None, "ci95": [None, None]}}}}},
        "calibration": {"n": 10, "metrics": {"accuracy": metric}, "groups": {}}}}
    buf = io.StringIO()
    Console(file=buf, width=150).print(render_table(result))
    text = buf.getvalue()
    for piece in ("crows_pairs", "bias_pct", "55.0", "[40.0, 70.0]", "age", "accuracy", "[0.250, 0.750]"):
        assert piece in text
    assert render_table(result, groups=False).row_count == 2  # overall rows only
    json.dumps(result)  # the summary shape is plain JSON
