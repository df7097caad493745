"""Every bootstrap, percentile interval and summary figure heredity reports, in one place.

**Undefined values.** One rule everywhere: a value that is NaN or None (a metric undefined on
an item, a statistic undefined on a resample) is *excluded and counted*, never read as 0.0 and
never allowed to turn a mean into NaN. Per-item summaries carry ``n`` (values used) and
``n_undefined`` (values left out); a figure with nothing defined is ``None`` (its CI
``[None, None]``). For inputs without undefined values every figure is exactly what it was
before this rule existed.

**Two resampling patterns, on purpose.** Both draw indices with ``np.random.default_rng(seed)``
and take a percentile 95% interval, but they draw differently, and each caller keeps its own
draw pattern so that published figures stay reproducible bit for bit:

* ``bootstrap_mean_ci`` / ``paired_difference`` (means, the run report and lm-eval documents):
  one vectorised ``(samples, n)`` index matrix, means along its rows. Fast, and only valid for
  a mean (or a difference of means).
* ``bootstrap_ci`` / ``estimate`` (any statistic of a sample: a ratio, an ECE, ICAT, a refitted
  GLM; the profile suites and the judge): one ``rng.integers(0, n, n)`` draw per replicate in a
  loop, the statistic called on each index array, and replicates where it is undefined dropped
  (``percentile_ci``).

The length-controlled judge model (``fit_length_glm``, ``length_feature``, ``sigmoid``) lives
here too: it is a penalised logistic regression, refitted inside ``estimate``'s bootstrap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

BOOTSTRAP_SAMPLES = 1000
QUANTILES = (0.1, 0.5, 0.9)


# ------------------------------------------------------------------------------ undefined values


def clean(x: float | None) -> float | None:
    """``x`` as a float, or None when it is None or NaN."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def as_array(values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    """A float array; None becomes NaN (undefined)."""
    return np.array([np.nan if v is None else v for v in values], dtype=float) \
        if not isinstance(values, np.ndarray) else values.astype(float, copy=False)


def defined(values: Sequence[float | None] | np.ndarray) -> tuple[np.ndarray, int]:
    """The defined values (in order) and how many were undefined (NaN/None)."""
    arr = as_array(values)
    keep = ~np.isnan(arr)
    return arr[keep], int(len(arr) - keep.sum())


def nanmean(values: Sequence[float | None] | np.ndarray) -> float | None:
    """Mean of the defined values; None when there are none."""
    arr, _ = defined(values)
    return float(arr.mean()) if len(arr) else None


# ------------------------------------------------------------------------------ means (vectorised draws)


def bootstrap_mean_ci(values: np.ndarray, samples: int, seed: int) -> tuple[float | None, float | None]:
    """Percentile 95% CI of the mean, from one ``(samples, n)`` index matrix.

    Undefined values are left out before resampling; (None, None) when none is defined.
    """
    values, _ = defined(values)
    if not len(values):
        return None, None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(samples, len(values)))
    means = values[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def mean_ci(values: Sequence[float | None] | np.ndarray, samples: int, seed: int) -> dict[str, Any]:
    """``{"value": mean, "ci95": [lo, hi], "n": defined, "n_undefined": left out}``."""
    arr, undefined = defined(values)
    return {"value": float(arr.mean()) if len(arr) else None,
            "ci95": list(bootstrap_mean_ci(arr, samples, seed)), "n": int(len(arr)), "n_undefined": undefined}


def paired_difference(a: np.ndarray, b: np.ndarray, samples: int, seed: int) -> dict[str, Any]:
    """Mean of a - b over the same prompts, its paired-bootstrap CI and p-value (``bootstrap_p``),
    and the ratio of means.

    A pair where either value is undefined is left out of both (``n_undefined`` counts such
    pairs); with no pair left every figure is None.
    """
    a, b = as_array(a), as_array(b)
    keep = ~(np.isnan(a) | np.isnan(b))
    undefined = int(len(a) - keep.sum())
    a, b = a[keep], b[keep]
    if not len(a):
        return {"diff": None, "ci95": [None, None], "p": None, "ratio": None, "n": 0, "n_undefined": undefined}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(samples, len(a)))
    diffs = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    mean_b = float(b.mean())
    return {
        "diff": float(a.mean() - mean_b),
        "ci95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))],
        "p": bootstrap_p(diffs),
        "ratio": float(a.mean() / mean_b) if mean_b else None,
        "n": int(len(a)),
        "n_undefined": undefined,
    }


def bootstrap_p(replicates: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the statistic is 0": twice the smaller share of replicates on
    either side of 0 (with the observed estimate counted once, so it is never 0), at most 1."""
    reps, _ = defined(replicates)
    if not len(reps):
        return float("nan")
    tail = min(int((reps <= 0).sum()), int((reps >= 0).sum()))
    return float(min(1.0, (1 + 2 * tail) / (len(reps) + 1)))


def seeded_paired_difference(a: np.ndarray, b: np.ndarray, samples: int, seed: int) -> dict[str, Any]:
    """Mean of a - b over prompts *and* training seeds, with a bootstrap that resamples both.

    ``a`` and ``b`` are ``(seeds, prompts)`` arrays (a ``(prompts,)`` array, e.g. the untrained
    base, is the same under every seed). Prompts are crossed with seeds (every seed's student answers
    the same prompts), so each replicate draws prompts once, shared by all seeds (the pairing holds),
    and seeds independently; its figure is the mean over the drawn seeds' drawn prompts. The prompt
    draw is ``paired_difference``'s own (same seed, same stream), so when every seed gives the same
    values the interval is exactly the prompt-only one, and it widens as the seeds disagree.
    ``ci95_prompts`` is the prompt-only interval of the per-prompt means over seeds, for comparison.
    A (seed, prompt) pair with an undefined side is left out (``n_undefined``); a prompt undefined
    under every seed is left out of the draw.
    """
    a, b = np.atleast_2d(as_array(a)), np.atleast_2d(as_array(b))
    a, b = np.broadcast_arrays(a, b)
    d = np.where(np.isnan(a) | np.isnan(b), np.nan, a - b)
    undefined = int(np.isnan(d).sum())
    keep = ~np.all(np.isnan(d), axis=0)
    d, a, b = d[:, keep], np.where(np.isnan(d), np.nan, a)[:, keep], np.where(np.isnan(d), np.nan, b)[:, keep]
    n_seeds, n = d.shape
    empty = {"diff": None, "ci95": [None, None], "ci95_prompts": [None, None], "p": None, "ratio": None,
             "n": 0, "n_undefined": undefined, "seeds": n_seeds, "per_seed": [None] * n_seeds}
    if not n:
        return empty
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    seed_idx = np.random.default_rng([seed, n_seeds]).integers(0, n_seeds, size=(samples, n_seeds))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-undefined draw: NaN, dropped below
        drawn = d[seed_idx[:, :, None], idx[:, None, :]]
        reps = np.nanmean(drawn.reshape(samples, -1), axis=1)
        per_prompt = np.nanmean(d, axis=0)
        prompt_reps = per_prompt[idx].mean(axis=1)
        mean_b = float(np.nanmean(b))
        per_seed = [clean(np.nanmean(row)) if np.any(~np.isnan(row)) else None for row in d]
    return {
        "diff": float(np.nanmean(d)),
        "ci95": [float(np.quantile(reps[~np.isnan(reps)], 0.025)), float(np.quantile(reps[~np.isnan(reps)], 0.975))],
        "ci95_prompts": [float(np.quantile(prompt_reps, 0.025)), float(np.quantile(prompt_reps, 0.975))],
        "p": bootstrap_p(reps),
        "ratio": float(np.nanmean(a) / mean_b) if mean_b else None,
        "n": int(n),
        "n_undefined": undefined,
        "seeds": int(n_seeds),
        "per_seed": per_seed,
    }


def p_from_ci(diff: float | None, ci95: Sequence[float | None] | None) -> float | None:
    """Two-sided p-value of "the difference is 0" read off a 95% CI by the normal approximation
    (standard error = CI width / 3.92). For summaries that kept a CI but no bootstrap p-value; a
    skewed bootstrap makes it approximate. None where the CI is undefined."""
    if diff is None or not ci95 or ci95[0] is None or ci95[1] is None:
        return None
    se = (ci95[1] - ci95[0]) / (2 * 1.959963984540054)
    if se <= 0:
        return 1.0 if diff == 0 else 0.0
    return float(math.erfc(abs(diff) / se / math.sqrt(2)))


def bh_qvalues(pvalues: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg q-values (the false discovery rate at which each test would be called),
    in the order given; an undefined p-value (None/NaN) is left out of the family and gets None.
    Equal to ``scipy.stats.false_discovery_control(p, method="bh")`` on the defined values."""
    p = as_array(pvalues)
    keep = np.flatnonzero(~np.isnan(p))
    out: list[float | None] = [None] * len(p)
    m = len(keep)
    if not m:
        return out
    order = keep[np.argsort(p[keep], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    q = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    for i, value in zip(order, q):
        out[int(i)] = float(value)
    return out


# ------------------------------------------------------------------------------ any statistic (per-replicate draws)


def percentile_ci(replicates: np.ndarray, samples: int) -> list[float | None]:
    """Percentile 95% interval of bootstrap replicates, NaN (undefined) ones dropped;
    [None, None] when fewer than half of the ``samples`` are defined."""
    kept, _ = defined(replicates)
    if len(kept) < samples / 2:
        return [None, None]
    return [float(np.quantile(kept, 0.025)), float(np.quantile(kept, 0.975))]


def bootstrap_ci(stat: Callable[[np.ndarray], float | None], n: int, samples: int = BOOTSTRAP_SAMPLES,
                 seed: int = 0) -> list[float | None]:
    """Percentile 95% CI of ``stat(indices)`` over item resamples (with replacement).

    ``stat`` gets an index array into the items, so any statistic (a ratio, an ECE, ICAT) is
    resampled the same way as a mean. Resamples where it is undefined (None/NaN) are dropped;
    if most are, the CI is [None, None].
    """
    if n == 0:
        return [None, None]
    rng = np.random.default_rng(seed)
    # dtype=float turns an undefined (None) figure into NaN
    replicates = np.array([stat(rng.integers(0, n, size=n)) for _ in range(samples)], dtype=float)
    return percentile_ci(replicates, samples)


def estimate(stat: Callable[[np.ndarray], float | None], n: int, samples: int, seed: int) -> dict[str, Any]:
    """``{"value": stat(all items), "ci95": bootstrap CI}``; value None when undefined."""
    return {"value": clean(stat(np.arange(n))) if n else None, "ci95": bootstrap_ci(stat, n, samples, seed)}


def describe(values, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, Any]:
    """Mean with a bootstrap 95% CI, plus the 10th, 50th and 90th percentiles, of per-item values.

    Undefined values are left out: ``n`` counts the items kept, ``n_undefined`` those left out.
    With no items left every figure is ``None``.
    """
    arr, undefined = defined(values)
    out = estimate(lambda i: arr[i].mean(), len(arr), samples, seed)
    qs = np.quantile(arr, QUANTILES) if len(arr) else [None] * len(QUANTILES)
    out.update({f"p{round(q * 100)}": clean(v) for q, v in zip(QUANTILES, qs)})
    out["n"] = int(len(arr))
    out["n_undefined"] = undefined
    return out


def grouped(stats: dict[str, Callable[[np.ndarray], float | None]], labels: list[str], samples: int,
            seed: int) -> dict[str, Any]:
    """Each statistic per group of items (``labels[i]`` is item i's group), CIs within the group."""
    out: dict[str, Any] = {}
    labels_arr = np.array(labels, dtype=object)
    for group in sorted(set(labels)):
        members = np.flatnonzero(labels_arr == group)
        out[group] = {
            "n": len(members),
            "metrics": {name: estimate(lambda idx, f=f, m=members: f(m[idx]), len(members), samples, seed)
                        for name, f in stats.items()},
        }
    return out


# ------------------------------------------------------------------------------ length-controlled win rate


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -500, 500)))


def fit_length_glm(pref: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray, n_models: int,
                   length_feature: np.ndarray, l2: float = 0.1, max_iter: int = 100) -> tuple[np.ndarray, float]:
    """Logistic regression ``logit P(A preferred) = θ[a] − θ[b] + φ·x`` with soft targets.

    Penalised (``l2``·|β|²/2) maximum likelihood by Newton's method; returns (θ, φ).
    """
    n = len(pref)
    X = np.zeros((n, n_models + 1))
    X[np.arange(n), idx_a] += 1.0
    X[np.arange(n), idx_b] -= 1.0
    X[:, -1] = length_feature
    beta = np.zeros(n_models + 1)
    for _ in range(max_iter):
        p = sigmoid(X @ beta)
        grad = X.T @ (p - pref) + l2 * beta
        hess = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(n_models + 1)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return beta[:-1], float(beta[-1])


def length_feature(len_a: np.ndarray, len_b: np.ndarray) -> np.ndarray:
    """tanh(Δlen / sd(Δlen)), AlpacaEval 2 LC's length term (sd 1 when every Δ is equal)."""
    delta = np.asarray(len_a, float) - np.asarray(len_b, float)
    sd = float(delta.std()) if len(delta) > 1 else 0.0
    return np.tanh(delta / (sd if sd > 0 else 1.0))
