"""heredity.core.stats: the one statistics module. Undefined values are left out and counted;
fully defined inputs give exactly the hand-computed bootstrap; the length-controlled GLM is the
penalised logistic regression scipy finds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from heredity.core.stats import (
    bootstrap_ci,
    bootstrap_mean_ci,
    describe,
    estimate,
    fit_length_glm,
    length_feature,
    mean_ci,
    nanmean,
    paired_difference,
    percentile_ci,
    sigmoid,
)

# --- identical figures to a hand-computed bootstrap ------------------------------------------

def test_mean_ci_is_the_vectorised_bootstrap_by_hand():
    x = np.random.default_rng(3).normal(5, 2, 31)
    rng = np.random.default_rng(7)
    means = x[rng.integers(0, 31, size=(400, 31))].mean(axis=1)
    by_hand = (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))
    assert bootstrap_mean_ci(x, 400, 7) == by_hand
    assert mean_ci(list(x), 400, 7) == {"value": float(x.mean()), "ci95": list(by_hand), "n": 31, "n_undefined": 0}


def test_paired_difference_is_the_joint_resample_by_hand():
    rng0 = np.random.default_rng(4)
    b = rng0.normal(10, 3, 25)
    a = b + rng0.normal(1, 0.5, 25)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 25, size=(300, 25))
    diffs = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    d = paired_difference(a, b, 300, 1)
    assert d == {"diff": float(a.mean() - b.mean()),
                 "ci95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))],
                 "p": (1 + 2 * min(int((diffs <= 0).sum()), int((diffs >= 0).sum()))) / 301,
                 "ratio": float(a.mean() / b.mean()), "n": 25, "n_undefined": 0}


def test_estimate_is_the_per_replicate_bootstrap_by_hand():
    x = np.random.default_rng(5).exponential(2, 40)
    rng = np.random.default_rng(2)
    reps = np.array([np.median(x[rng.integers(0, 40, size=40)]) for _ in range(300)])
    e = estimate(lambda i: float(np.median(x[i])), 40, 300, 2)
    assert e == {"value": float(np.median(x)),
                 "ci95": [float(np.quantile(reps, 0.025)), float(np.quantile(reps, 0.975))]}


# --- percentile CI rules -------------------------------------------------------------------

def test_percentile_ci_drops_undefined_replicates_and_needs_half_defined():
    reps = np.array([1.0, 2.0, np.nan, 3.0, 4.0, np.nan])
    assert percentile_ci(reps, 6) == [float(np.quantile([1, 2, 3, 4], 0.025)), float(np.quantile([1, 2, 3, 4], 0.975))]
    assert percentile_ci(np.array([np.nan] * 3 + [1.0]), 4) == [None, None]  # 1 of 4 defined
    assert bootstrap_ci(lambda i: 3.0, 4, 100, 0) == [3.0, 3.0]
    assert bootstrap_ci(lambda i: None, 4, 100, 0) == [None, None]
    assert bootstrap_ci(lambda i: 1.0, 0, 100, 0) == [None, None]


def test_estimate_of_an_undefined_statistic_is_none_not_nan():
    assert estimate(lambda i: float("nan"), 5, 100, 0) == {"value": None, "ci95": [None, None]}
    assert estimate(lambda i: 1.0, 0, 100, 0) == {"value": None, "ci95": [None, None]}


# --- undefined values: excluded and counted --------------------------------------------------

def test_undefined_values_are_left_out_and_counted():
    clean = np.array([1.0, 2.0, 4.0, 7.0])
    with_holes = [1.0, None, 2.0, float("nan"), 4.0, 7.0]
    m = mean_ci(with_holes, 200, 0)
    assert m["value"] == pytest.approx(3.5) and m["n"] == 4 and m["n_undefined"] == 2
    assert m["ci95"] == list(bootstrap_mean_ci(clean, 200, 0))  # the same figures as without the holes
    assert bootstrap_mean_ci(np.array(with_holes, dtype=float), 200, 0) == bootstrap_mean_ci(clean, 200, 0)
    assert nanmean(with_holes) == pytest.approx(3.5)
    d = describe(with_holes, 200, 0)
    assert d["n"] == 4 and d["n_undefined"] == 2 and d["value"] == pytest.approx(3.5)


def test_nothing_defined_gives_none_never_zero_or_nan():
    m = mean_ci([None, float("nan")], 200, 0)
    assert m == {"value": None, "ci95": [None, None], "n": 0, "n_undefined": 2}
    assert nanmean([]) is None
    d = describe([float("nan")], 100, 0)
    assert d["value"] is None and d["p50"] is None and d["n"] == 0 and d["n_undefined"] == 1


def test_paired_difference_leaves_out_pairs_with_an_undefined_side():
    a = np.array([3.0, np.nan, 5.0, 6.0, 2.0])
    b = np.array([1.0, 1.0, np.nan, 2.0, 1.0])
    d = paired_difference(a, b, 300, 1)
    full = paired_difference(np.array([3.0, 6.0, 2.0]), np.array([1.0, 2.0, 1.0]), 300, 1)
    assert d == {**full, "n_undefined": 2} and d["n"] == 3
    assert paired_difference(np.array([np.nan]), np.array([1.0]), 100, 0) == {
        "diff": None, "ci95": [None, None], "p": None, "ratio": None, "n": 0, "n_undefined": 1}


# --- the length-controlled GLM against scipy.optimize ----------------------------------------

def _scipy_fit(pref, ia, ib, n_models, x, l2):
    n = len(pref)
    X = np.zeros((n, n_models + 1))
    X[np.arange(n), ia] += 1.0
    X[np.arange(n), ib] -= 1.0
    X[:, -1] = x

    def loss(beta):  # soft-target cross-entropy + l2/2 |beta|^2, as fit_length_glm's gradient says
        z = X @ beta
        return float(np.sum(np.logaddexp(0, z) - pref * z) + 0.5 * l2 * beta @ beta)

    def grad(beta):
        return X.T @ (sigmoid(X @ beta) - pref) + l2 * beta

    res = minimize(loss, np.zeros(n_models + 1), jac=grad, method="BFGS", options={"gtol": 1e-10, "maxiter": 1000})
    return res.x[:-1], res.x[-1]


@pytest.mark.parametrize("n_models,l2", [(2, 0.1), (4, 0.1), (3, 1.0)])
def test_length_glm_matches_scipy(n_models, l2):
    rng = np.random.default_rng(n_models)
    n = 120
    ia = rng.integers(0, n_models, n)
    ib = (ia + rng.integers(1, n_models, n)) % n_models  # a different model
    len_a, len_b = rng.integers(50, 900, n), rng.integers(50, 900, n)
    x = length_feature(len_a, len_b)
    skill = rng.normal(0, 1, n_models)
    pref = sigmoid(skill[ia] - skill[ib] + 0.8 * x + rng.normal(0, 0.3, n))  # soft targets
    theta, phi = fit_length_glm(pref, ia, ib, n_models, x, l2)
    theta_sp, phi_sp = _scipy_fit(pref, ia, ib, n_models, x, l2)
    np.testing.assert_allclose(theta, theta_sp, atol=1e-5)
    assert phi == pytest.approx(phi_sp, abs=1e-5)


def test_length_glm_stays_finite_under_perfect_separation():
    x = np.array([-1.0, -0.5, 0.5, 1.0])
    pref = np.array([0.0, 0.0, 1.0, 1.0])  # always the longer answer
    zeros = np.zeros(4, dtype=int)
    theta, phi = fit_length_glm(pref, zeros, zeros + 1, 2, x, 0.1)
    theta_sp, phi_sp = _scipy_fit(pref, zeros, zeros + 1, 2, x, 0.1)
    assert np.isfinite(phi) and phi > 0 and phi == pytest.approx(phi_sp, abs=1e-5)


def test_length_feature_scales_by_the_sd_of_the_differences():
    delta = np.array([10.0, -10.0, 30.0])
    assert np.allclose(length_feature(delta, np.zeros(3)), np.tanh(delta / delta.std()))
    assert np.allclose(length_feature([5.0, 5.0], [1.0, 1.0]), np.tanh([4.0, 4.0]))  # sd 0: unscaled


# --- seeds, p-values, multiple comparisons ----------------------------------------------------

def test_seeded_ci_equals_the_prompt_only_ci_when_seeds_agree_and_widens_when_they_disagree():
    from heredity.core.stats import seeded_paired_difference

    rng = np.random.default_rng(11)
    base = rng.normal(0.5, 0.2, 80)
    student = base - 0.1 + rng.normal(0, 0.1, 80)
    agree = seeded_paired_difference(np.stack([student] * 3), base, 2000, 1)
    prompts_only = paired_difference(student, base, 2000, 1)
    assert agree["diff"] == pytest.approx(prompts_only["diff"])
    assert agree["ci95"] == pytest.approx(prompts_only["ci95"])
    assert agree["ci95_prompts"] == pytest.approx(prompts_only["ci95"])
    # three training seeds that shift the student: the same pooled mean, a wider interval
    shifts = np.array([-0.08, 0.0, 0.08])[:, None]
    disagree = seeded_paired_difference(student + shifts, base, 2000, 1)
    assert disagree["diff"] == pytest.approx(agree["diff"])
    assert disagree["ci95_prompts"] == pytest.approx(agree["ci95"])
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(disagree["ci95"]) > 1.5 * width(agree["ci95"])
    assert disagree["per_seed"] == pytest.approx([agree["diff"] - 0.08, agree["diff"], agree["diff"] + 0.08])


def test_seeded_difference_leaves_out_and_counts_undefined_pairs():
    from heredity.core.stats import seeded_paired_difference

    a = np.array([[1.0, 2.0, np.nan], [1.0, np.nan, np.nan]])
    b = np.array([0.0, 0.0, 0.0])
    d = seeded_paired_difference(a, b, 200, 0)
    assert d["n_undefined"] == 3 and d["n"] == 2  # the third prompt is undefined under every seed
    assert d["diff"] == pytest.approx((1 + 2 + 1) / 3) and d["per_seed"] == [1.5, 1.0]


def test_bh_qvalues_equal_scipy():
    from scipy.stats import false_discovery_control

    from heredity.core.stats import bh_qvalues

    p = np.random.default_rng(5).uniform(size=40) ** 3
    assert bh_qvalues(p) == pytest.approx(list(false_discovery_control(p, method="bh")))
    with_gaps = [0.01, None, 0.04, float("nan"), 0.03]
    q = bh_qvalues(with_gaps)
    assert q[1] is None and q[3] is None
    assert [q[0], q[2], q[4]] == pytest.approx(list(false_discovery_control([0.01, 0.04, 0.03], method="bh")))


def test_bootstrap_and_ci_p_values_agree_with_the_interval():
    from scipy.stats import norm

    from heredity.core.stats import p_from_ci

    rng = np.random.default_rng(2)
    a, b = rng.normal(0.3, 1, 200), rng.normal(0, 1, 200)
    d = paired_difference(a, b, 4000, 0)
    lo, hi = d["ci95"]
    assert (d["p"] < 0.05) == (lo > 0 or hi < 0)
    # the normal-approximation p of a symmetric interval: z = diff / ((hi - lo) / 3.92)
    assert p_from_ci(1.0, [0.0, 2.0]) == pytest.approx(2 * norm.sf(1.959963984540054))
    assert p_from_ci(d["diff"], d["ci95"]) == pytest.approx(d["p"], abs=0.02)
    assert p_from_ci(None, [None, None]) is None
    same = paired_difference(a, a, 500, 0)
    assert same["p"] == 1.0
