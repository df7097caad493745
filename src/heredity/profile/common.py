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

Pairing across models: a suite's ``paired_items(rows, summary)`` turns its per-item rows into
``{"suite/metric": Paired | Replicated}`` (see ``Suite.pair``); the run's report compares two
models' values on the items both have (``heredity.profile.differences``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


@dataclass
class Paired:
    """One figure's per-item values, paired across models by item id.

    ``stat`` is None for a mean of the values (scaled as the suite reports it); otherwise the
    values are tuples and ``stat`` computes the figure from their stacked array (items x fields).
    """

    values: dict[Any, Any]
    stat: Callable[[np.ndarray], float | None] | None = None


@dataclass
class Replicated:
    """One figure of one model with its bootstrap replicates, drawn by a generator seeded with ``seed``.

    Two models' replicates pair one to one when their seeds (and counts) match: the same resample
    indices were drawn for both (SEAT's per-test effect sizes).
    """

    value: float
    boot: np.ndarray
    seed: int


def per_item_means(prefix: str, rows: list[dict[str, Any]], key: str,
                   figures: dict[str, Callable[[dict[str, Any]], float | None]]) -> dict[str, Paired]:
    """Per-item mean figures ``prefix/name``: ``figures[name](row)`` is the row's value (item id
    ``row[key]``), None where the row does not count."""
    out = {}
    for name, value in figures.items():
        values = {r[key]: v for r in rows if (v := value(r)) is not None}
        out[f"{prefix}/{name}"] = Paired(values)
    return out
