"""What every suite shares: sampling, and the result shape.

A suite's result is a plain dict (JSON-ready)::

    {"suite": ..., "dataset": ..., "n": items scored, "protocol": {...choices made...},
     "metrics": {name: {"value": v, "ci95": [lo, hi]}},
     "groups": {group: {"n": k, "metrics": {name: {"value": v, "ci95": [lo, hi]}}}}}

plus per-item rows for Parquet. Values that are undefined on a sample (e.g. a bias score with
no non-"unknown" answers) are ``None``. The statistics (``estimate``, ``describe``,
``grouped``, ``percentile_ci``) are in :mod:`heredity.core.stats`; generation suites describe a
distribution per metric with ``describe`` (mean, CI and the quantiles p10, p50, p90).

``SuiteResult``, ``data_file`` and ``default_data_dir`` live in :mod:`heredity.core.data`
(the judging library and the toxicity metric share them).
"""

from __future__ import annotations

import numpy as np

from heredity.errors import HeredityError


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
