"""What every suite shares: where the data is, sampling, bootstrap CIs and the result shape.

A suite's result is a plain dict (JSON-ready)::

    {"suite": ..., "dataset": ..., "n": items scored, "protocol": {...choices made...},
     "metrics": {name: {"value": v, "ci95": [lo, hi]}},
     "groups": {group: {"n": k, "metrics": {name: {"value": v, "ci95": [lo, hi]}}}}}

plus per-item rows for Parquet. Values that are undefined on a sample (e.g. a bias score with
no non-"unknown" answers) are ``None``.

Generation suites describe a distribution per metric (``describe``): the same ``value`` (the
mean) and ``ci95``, plus the quantiles ``p10``, ``p50`` and ``p90`` of the per-item values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heredity.core.datasets import REPO, data_file, default_data_dir  # noqa: F401  (re-exported)
from heredity.errors import HeredityError

BOOTSTRAP_SAMPLES = 1000


def sample_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    """All of ``range(n)``, or a seeded random ``limit`` of them in file order.

    Random rather than the first ``limit``: the data files are sorted by template or source,
    so a prefix would be one template repeated, not a sample.
    """
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise HeredityError(f"limit must be at least 1, got {limit}")
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _clean(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def bootstrap_ci(stat: Callable[[np.ndarray], float | None], n: int, samples: int = BOOTSTRAP_SAMPLES,
                 seed: int = 0) -> list[float | None]:
    """Percentile 95% CI of ``stat(indices)`` over item resamples (with replacement).

    ``stat`` gets an index array into the suite's items, so any statistic (a ratio, an ECE, ICAT)
    is resampled the same way as a mean. Resamples where it is undefined (None/NaN) are dropped;
    if most are, the CI is [None, None].
    """
    if n == 0:
        return [None, None]
    rng = np.random.default_rng(seed)
    # dtype=float turns an undefined (None) figure into NaN
    replicates = np.array([stat(rng.integers(0, n, size=n)) for _ in range(samples)], dtype=float)
    return percentile_ci(replicates, samples)


def percentile_ci(replicates: np.ndarray, samples: int) -> list[float | None]:
    """Percentile 95% interval of bootstrap replicates, NaN (undefined) ones dropped;
    [None, None] when fewer than half of the ``samples`` are defined."""
    defined = replicates[~np.isnan(replicates)]
    if len(defined) < samples / 2:
        return [None, None]
    return [float(np.quantile(defined, 0.025)), float(np.quantile(defined, 0.975))]


def estimate(stat: Callable[[np.ndarray], float | None], n: int, samples: int, seed: int) -> dict[str, Any]:
    """``{"value": stat(all items), "ci95": bootstrap CI}``."""
    return {"value": _clean(stat(np.arange(n))) if n else None, "ci95": bootstrap_ci(stat, n, samples, seed)}


QUANTILES = (0.1, 0.5, 0.9)


def describe(values, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, Any]:
    """Mean with a bootstrap 95% CI, plus the 10th, 50th and 90th percentiles, of per-item values.

    NaN values (a metric undefined on an item) are left out; ``n`` counts the items kept. With no
    items left every figure is ``None``.
    """
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    out = estimate(lambda i: arr[i].mean(), len(arr), samples, seed)
    qs = np.quantile(arr, QUANTILES) if len(arr) else [None] * len(QUANTILES)
    out.update({f"p{round(q * 100)}": _clean(v) for q, v in zip(QUANTILES, qs)})
    out["n"] = int(len(arr))
    return out


@dataclass
class SuiteResult:
    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


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
