"""The data card: what each selection changed relative to the pool."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from heredity.strategies.base import Row, value


def quartiles(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and quartiles of the values, NaN left out (all None when nothing is left)."""
    arr = np.array(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if not arr.size:
        return {"mean": None, "q25": None, "median": None, "q75": None}
    # Linear interpolation between order statistics: numpy's and pandas' default, so the card
    # agrees with what a user computes from the Parquet file.
    q25, median, q75 = np.quantile(arr, [0.25, 0.5, 0.75])
    return {"mean": float(arr.mean()), "q25": float(q25), "median": float(median), "q75": float(q75)}


def data_card(pool: Sequence[Row], selections: Mapping[str, Sequence[Row]], metrics: Iterable[str]) -> dict[str, Any]:
    """What each selection changed relative to the pool.

    Per metric: pool vs selection mean and quartiles and the mean's shift in % of the pool
    mean; per selection: prompts dropped by filters, each teacher's share of the winners and
    the share of winners cut at the token cap (finish_reason "length"). Missing metric values
    are left out of the statistics; shares of an empty selection are None.
    """
    prompts = {r["prompt_id"] for r in pool}
    teachers = sorted({str(r["teacher"]) for r in pool})
    card: dict[str, Any] = {"pool_size": len(pool), "prompts": len(prompts), "metrics": {}}
    for metric in metrics:
        pool_stats = quartiles([value(r, metric) for r in pool])
        entry: dict[str, Any] = {"pool": pool_stats}
        base = pool_stats["mean"]
        for arm, rows in selections.items():
            stats: dict[str, Any] = quartiles([value(r, metric) for r in rows])
            stats["shift_pct"] = (100.0 * (stats["mean"] - base) / abs(base)
                                  if base and stats["mean"] is not None else None)
            entry[arm] = stats
        card["metrics"][metric] = entry

    def share(rows: Sequence[Row], hit: Callable[[Row], bool]) -> float | None:
        return sum(map(hit, rows)) / len(rows) if rows else None

    card["teacher_share"] = {
        arm: {t: share(rows, lambda r, t=t: str(r["teacher"]) == t) for t in teachers}
        for arm, rows in selections.items()
    }
    card["truncated_share"] = {arm: share(rows, lambda r: r["finish_reason"] == "length")
                               for arm, rows in selections.items()}
    card["dropped_prompts"] = {arm: len(prompts - {r["prompt_id"] for r in rows})
                               for arm, rows in selections.items()}
    return card
