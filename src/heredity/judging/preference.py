"""The judge-preference profile ("LLM See, LLM Do"): which models, and which kinds of answer,
a judge prefers over a fixed set of answer pairs; and two judges compared on the same pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from heredity.config import JudgeConfig, TeacherConfig
from heredity.core.data import SuiteResult
from heredity.core.stats import (
    estimate,
    fit_length_glm,
    length_feature,
    nanmean,
    percentile_ci,
    sigmoid,
)
from heredity.errors import HeredityError
from heredity.judging.judges import Judge
from heredity.judging.pairwise import judge_and_summarise, judging_stats, usable
from heredity.judging.verdicts import Pair


def _model_prefs(rows: list[dict[str, Any]], model: str) -> np.ndarray:
    """A model's preference on each pair it takes part in (NaN: dropped)."""
    vals = []
    for r in rows:
        if model in (r["model_a"], r["model_b"]):
            p = r["pref_a"]
            vals.append(np.nan if p is None else (p if r["model_a"] == model else 1.0 - p))
    return np.array(vals, dtype=float)


def _models(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["model_a"] for r in rows} | {r["model_b"] for r in rows})


def summarise_profile(rows: list[dict[str, Any]], cfg: JudgeConfig) -> dict[str, Any]:
    n_b, seed = cfg.bootstrap_samples, cfg.seed
    models = _models(rows)
    kept = usable(rows)
    index = {m: k for k, m in enumerate(models)}
    pref = np.array([r["pref_a"] for r in kept], dtype=float)
    ia = np.array([index[r["model_a"]] for r in kept], dtype=int)
    ib = np.array([index[r["model_b"]] for r in kept], dtype=int)
    x = length_feature([r["len_a"] for r in kept], [r["len_b"] for r in kept])

    def lc_rates(i: np.ndarray) -> np.ndarray:
        """Each model's LC win rate (percent) on the resample ``i``."""
        theta, _ = fit_length_glm(pref[i], ia[i], ib[i], len(models), x[i], cfg.lc_l2)
        rates = np.full(len(models), np.nan)
        p_ab = sigmoid(theta[ia] - theta[ib])  # on every usable pair: the model's own matchups
        for m in range(len(models)):
            own = np.concatenate([p_ab[ia == m], 1 - p_ab[ib == m]])
            rates[m] = 100 * own.mean() if len(own) else np.nan
        return rates

    phi = fit_length_glm(pref, ia, ib, len(models), x, cfg.lc_l2)[1] if len(pref) else None
    lc_point = lc_rates(np.arange(len(pref))) if len(pref) else np.full(len(models), np.nan)
    # one set of refits serves every model's LC CI (a vector statistic, so the replicates are
    # drawn here, in estimate's per-replicate pattern, rather than through estimate itself)
    rng = np.random.default_rng(seed)
    boot = np.array([lc_rates(rng.integers(0, len(pref), len(pref))) for _ in range(n_b)]) if len(pref) else None
    per_model: dict[str, Any] = {}
    for m in models:
        vals = _model_prefs(rows, m)
        vals = vals[~np.isnan(vals)]
        k = index[m]
        per_model[m] = {
            "pairs": int(len(vals)),
            "win_rate": estimate(lambda i, v=vals: 100 * v[i].mean(), len(vals), n_b, seed),
            "lc_win_rate": {"value": None if np.isnan(lc_point[k]) else float(lc_point[k]),
                            "ci95": [None, None] if boot is None else percentile_ci(boot[:, k], n_b)},
            "mean_length": nanmean(np.array([r["len_a"] if r["model_a"] == m else r["len_b"]
                                             for r in rows if m in (r["model_a"], r["model_b"])], float)),
        }
    ranking = sorted(models, key=lambda m: -(per_model[m]["win_rate"]["value"] or 0))
    return {"pairs": len(rows), "models": per_model, "ranking": ranking, "length_coef": phi,
            **judging_stats(rows, cfg)}


def preference_profile(judge: "Judge | JudgeConfig | TeacherConfig | str", pairs: Sequence[Pair],
                       cfg: JudgeConfig | None = None, out: Path | None = None,
                       log: Callable[[str], None] | None = None) -> SuiteResult:
    """Which models (and which answer lengths) a judge prefers over a fixed set of answer pairs."""
    return judge_and_summarise("preference_profile", summarise_profile, judge, pairs, cfg, out, log)


def compare_profiles(first: SuiteResult | list[dict[str, Any]], second: SuiteResult | list[dict[str, Any]],
                     samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Second judge minus first on the same pairs: per-model win rate and longer-answer preference.

    Paired bootstrap: pairs are resampled jointly for both judges. Pairs either judge dropped
    are left out of both.
    """
    rows1 = first.rows if isinstance(first, SuiteResult) else first
    rows2 = second.rows if isinstance(second, SuiteResult) else second
    by_id = {r["pair_id"]: r for r in rows2}
    shared = [(r, by_id[r["pair_id"]]) for r in rows1 if r["pair_id"] in by_id]
    shared = [(a, b) for a, b in shared if a["pref_a"] is not None and b["pref_a"] is not None]
    if not shared:
        raise HeredityError("compare_profiles: the two profiles share no judged pairs")
    for a, b in shared:
        if (a["model_a"], a["model_b"]) != (b["model_a"], b["model_b"]):
            raise HeredityError(f"compare_profiles: pair '{a['pair_id']}' differs between the profiles")
    rows = [a for a, _ in shared]
    p1 = np.array([a["pref_a"] for a, _ in shared], float)
    p2 = np.array([b["pref_a"] for _, b in shared], float)

    def paired(v1: np.ndarray, v2: np.ndarray) -> dict[str, Any]:
        d = v2 - v1
        out = estimate(lambda i: 100 * d[i].mean(), len(d), samples, seed)
        return {"first": 100 * float(v1.mean()), "second": 100 * float(v2.mean()),
                "diff": out["value"], "ci95": out["ci95"], "pairs": int(len(d))}

    models = {}
    for m in _models(rows):
        sign = np.array([1.0 if r["model_a"] == m else -1.0 if r["model_b"] == m else 0.0 for r in rows])
        own = sign != 0
        v1 = np.where(sign > 0, p1, 1 - p1)[own]
        v2 = np.where(sign > 0, p2, 1 - p2)[own]
        models[m] = paired(v1, v2)
    differ = np.array([r["len_a"] != r["len_b"] for r in rows])
    a_longer = np.array([r["len_a"] > r["len_b"] for r in rows])
    l1 = np.where(a_longer, p1, 1 - p1)[differ]
    l2 = np.where(a_longer, p2, 1 - p2)[differ]
    return {"pairs": len(shared), "models": models, "longer_preferred": paired(l1, l2),
            "note": "diff = second judge - first judge, in percentage points; paired bootstrap over pairs"}
