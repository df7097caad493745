"""Judge-preference profile: the profiled model as an LLM judge of other models' answers.

"LLM See, LLM Do" asks whether a student fine-tuned on a teacher's data also inherits the
teacher's preferences as a judge. The profiled model judges a fixed, seeded set of AlpacaEval
answer pairs (``../shared/data/alpaca_eval``: 12 models' answers to the same instructions;
``limit`` = pairs) with :mod:`heredity.judging`'s protocol: both orders, a soft verdict from the
log-probabilities of "(a)" and "(b)". Reported: how often the longer answer wins, position
consistency, the share of first-position verdicts, and per model (groups) the win rate and the
length-controlled win rate. Every profiled model sees the same pairs, so two models' verdicts
can be compared pair by pair (the run's report does this for the longer-answer preference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heredity.config import JudgeConfig
from heredity.core.data import SuiteResult
from heredity.judging import LogprobJudge, alpaca_eval_pairs, preference_profile
from heredity.profile.common import Paired


def longer_preference(row: dict[str, Any]) -> float | None:
    """This pair's preference for its longer answer (None: equal lengths or no verdict)."""
    if row["pref_a"] is None or row["len_a"] == row["len_b"]:
        return None
    return row["pref_a"] if row["len_a"] > row["len_b"] else 1.0 - row["pref_a"]


def run(model, tokenizer, *, data_dir: Path | None = None, limit: int | None = None, seed: int = 0,
        samples: int = 1000, batch_size: int = 8, progress=None) -> SuiteResult:
    cfg = JudgeConfig(bootstrap_samples=max(samples, 100), seed=seed,
                      model={"model": str(getattr(model, "name_or_path", "profiled")), "batch_size": batch_size})
    pairs = alpaca_eval_pairs(data_dir, n=limit or 100, seed=seed)
    judge = LogprobJudge(model, tokenizer, cfg, label="profiled model")
    result = preference_profile(judge, pairs, cfg)
    s = result.summary
    for row in result.rows:
        row["longer_preference"] = longer_preference(row)
    summary = {
        "suite": "judge_preference",
        "dataset": "alpaca_eval",
        "n": s["pairs"],
        "protocol": {**s["protocol"], "pairs": "seeded AlpacaEval instructions, one balanced model pair each",
                     "judge": "the profiled model"},
        "metrics": {
            "longer_preferred": {"value": s["longer_preferred"]["value"], "ci95": s["longer_preferred"]["ci95"]},
            "position_consistency": {"value": s["position_consistency"]["value"],
                                     "ci95": s["position_consistency"]["ci95"]},
            "first_position_rate": {"value": s["first_position_rate"]["value"],
                                    "ci95": s["first_position_rate"]["ci95"]},
        },
        "groups": {m: {"n": v["pairs"], "metrics": {"win_rate": v["win_rate"], "lc_win_rate": v["lc_win_rate"]}}
                   for m, v in s["models"].items()},
    }
    return SuiteResult(summary, result.rows)


def paired_items(rows: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> dict[str, Paired]:
    """Per answer pair: the preference for the longer answer, in %."""
    return {"judge_preference/longer_preferred": Paired(
        {r["pair_id"]: 100 * r["longer_preference"] for r in rows if r.get("longer_preference") is not None})}
