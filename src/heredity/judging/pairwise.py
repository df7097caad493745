"""Pairwise judging: every pair in both orders, then the win rate, the length-controlled win
rate and the verdict-quality figures (see the package docstring for the protocol)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from heredity.config import JudgeConfig, TeacherConfig
from heredity.core.data import SuiteResult
from heredity.core.http import public_url
from heredity.core.rundir import Stage, read_json, write_json, write_table
from heredity.core.stats import estimate, fit_length_glm, length_feature, sigmoid
from heredity.errors import HeredityError
from heredity.judging.judges import Judge, resolve_judge, settings_of
from heredity.judging.verdicts import Pair, Query, order_preference


def judge_pairs(judge: Judge, pairs: Sequence[Pair], cfg: JudgeConfig | None = None,
                log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Judge every pair in both orders; one row per pair."""
    cfg = settings_of(judge, cfg)
    if not pairs:
        raise HeredityError("judge: no pairs to judge")
    queries = []
    for p in pairs:
        queries.append(Query(p.instruction, p.answer_a, p.answer_b))  # A shown first
        queries.append(Query(p.instruction, p.answer_b, p.answer_a))  # B shown first
    started = time.perf_counter()
    verdicts = judge.judge(queries)
    if log:
        log(f"judge '{judge.label}' ({judge.method}): {len(queries)} verdicts in {time.perf_counter() - started:.1f}s")
    rows = []
    limit = cfg.max_answer_chars
    for i, p in enumerate(pairs):
        ab, ba = verdicts[2 * i], verdicts[2 * i + 1]
        pref_ab, pref_ba = order_preference(ab, True), order_preference(ba, False)
        if cfg.unparseable == "tie":
            parts = [0.5 if x is None else x for x in (pref_ab, pref_ba)]
        else:
            parts = [x for x in (pref_ab, pref_ba) if x is not None]
        # a hard verdict per order, in terms of which answer (A or B) it names
        named_ab = None if ab.choice is None else ("A" if ab.choice == "a" else "B")
        named_ba = None if ba.choice is None else ("B" if ba.choice == "a" else "A")
        rows.append({
            "pair_id": p.pair_id, "instruction": p.instruction, "model_a": p.model_a, "model_b": p.model_b,
            "answer_a": p.answer_a, "answer_b": p.answer_b, "len_a": len(p.answer_a), "len_b": len(p.answer_b),
            "truncated_a": limit is not None and len(p.answer_a.strip()) > limit,
            "truncated_b": limit is not None and len(p.answer_b.strip()) > limit,
            "raw_ab": ab.raw, "choice_ab": ab.choice, "p_first_ab": ab.p_first, "pref_a_ab": pref_ab,
            "raw_ba": ba.raw, "choice_ba": ba.choice, "p_first_ba": ba.p_first, "pref_a_ba": pref_ba,
            "pref_a": float(np.mean(parts)) if parts else None,
            "consistent": None if named_ab is None or named_ba is None else named_ab == named_ba,
        })
    return rows


def usable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pairs with a preference (under ``unparseable: drop`` some have none)."""
    return [r for r in rows if r["pref_a"] is not None]


def judging_stats(rows: list[dict[str, Any]], cfg: JudgeConfig) -> dict[str, Any]:
    """Verdict quality: parse failures, position consistency, first-position rate, longer-answer preference."""
    n_b, seed = cfg.bootstrap_samples, cfg.seed
    choices = [r[k] for r in rows for k in ("choice_ab", "choice_ba")]
    parsed = [c for c in choices if c is not None]
    both = np.array([r["consistent"] for r in rows if r["consistent"] is not None], dtype=float)
    kept = usable(rows)
    longer = np.array([r["pref_a"] if r["len_a"] > r["len_b"] else 1.0 - r["pref_a"]
                       for r in kept if r["len_a"] != r["len_b"]], dtype=float)
    consistency = estimate(lambda i: 100 * both[i].mean(), len(both), n_b, seed)
    consistency["n"] = int(len(both))
    # per pair: verdicts naming the first-shown answer, and verdicts parsed (0-2 each); resampled
    # by pair, since a pair's two orders are not independent verdicts
    firsts = np.array([sum(r[k] == "a" for k in ("choice_ab", "choice_ba")) for r in rows], dtype=float)
    parsed_n = np.array([sum(r[k] is not None for k in ("choice_ab", "choice_ba")) for r in rows], dtype=float)
    first_rate = estimate(lambda i: 100 * firsts[i].sum() / parsed_n[i].sum() if parsed_n[i].sum() else None,
                          len(rows), n_b, seed)
    first_rate["n"] = int(parsed_n.sum())
    longer_pref = estimate(lambda i: 100 * longer[i].mean(), len(longer), n_b, seed)
    longer_pref["n"] = int(len(longer))
    return {
        "verdicts": len(choices),
        "unparseable": {"count": len(choices) - len(parsed),
                        "rate": (len(choices) - len(parsed)) / len(choices) if choices else None,
                        "policy": cfg.unparseable},
        "pairs_used": len(kept),
        "position_consistency": consistency,
        "first_position_rate": first_rate,
        "longer_preferred": longer_pref,
        "truncated_answers": int(sum(r["truncated_a"] + r["truncated_b"] for r in rows)),
    }


def protocol(judge: Judge, cfg: JudgeConfig) -> dict[str, Any]:
    """The judge and the rubric, without secrets (no key; a base URL without credentials)."""
    teacher = cfg.model
    out: dict[str, Any] = {"judge": getattr(judge, "label", teacher.label), "method": judge.method,
                           "backend": teacher.backend if hasattr(judge, "cfg") else "custom",
                           "model": teacher.model if hasattr(judge, "cfg") else None,
                           "both_orders": True, "unparseable": cfg.unparseable,
                           "max_answer_chars": cfg.max_answer_chars, "max_new_tokens": cfg.max_new_tokens,
                           "decoding": "greedy", "system_prompt": cfg.system_prompt, "template": cfg.template,
                           "length_unit": "characters", "lc_l2": cfg.lc_l2,
                           "bootstrap_samples": cfg.bootstrap_samples, "seed": cfg.seed}
    if teacher.openai is not None and hasattr(judge, "cfg"):
        out["base_url"] = public_url(teacher.openai.base_url)
    return out


def summarise_pairwise(rows: list[dict[str, Any]], cfg: JudgeConfig) -> dict[str, Any]:
    """Win rate of A over B (percent) with CI, the length-controlled win rate, verdict quality."""
    n_b, seed = cfg.bootstrap_samples, cfg.seed
    kept = usable(rows)
    pref = np.array([r["pref_a"] for r in kept], dtype=float)
    len_a = np.array([r["len_a"] for r in kept], dtype=float)
    len_b = np.array([r["len_b"] for r in kept], dtype=float)
    x = length_feature(len_a, len_b)
    zeros = np.zeros(len(pref), dtype=int)

    def lc(i: np.ndarray) -> float:
        theta, _ = fit_length_glm(pref[i], zeros[i], zeros[i] + 1, 2, x[i], cfg.lc_l2)
        return 100 * float(sigmoid(theta[0] - theta[1]))

    phi = fit_length_glm(pref, zeros, zeros + 1, 2, x, cfg.lc_l2)[1] if len(pref) else None
    return {
        "model_a": rows[0]["model_a"], "model_b": rows[0]["model_b"], "pairs": len(rows),
        "win_rate": estimate(lambda i: 100 * pref[i].mean(), len(pref), n_b, seed),
        "wins": int((pref > 0.5).sum()), "ties": int((pref == 0.5).sum()), "losses": int((pref < 0.5).sum()),
        "length_controlled": {"win_rate": estimate(lc, len(pref), n_b, seed), "length_coef": phi},
        "mean_length": {"a": float(len_a.mean()) if len(pref) else None,
                        "b": float(len_b.mean()) if len(pref) else None},
        **judging_stats(rows, cfg),
    }


def judge_and_summarise(kind: str, summarise: Callable[[list[dict[str, Any]], JudgeConfig], dict[str, Any]],
                        judge: Any, pairs: Sequence[Pair], cfg: JudgeConfig | None, out: Path | None,
                        log: Callable[[str], None] | None) -> SuiteResult:
    """Open the judge, judge the pairs, summarise them; write ``judgments.parquet`` and
    ``summary.json`` to ``out`` when given."""
    started = time.perf_counter()
    opened, cfg = resolve_judge(judge, cfg)
    try:
        rows = judge_pairs(opened, pairs, cfg, log)
    finally:
        if opened is not judge:
            opened.close()
    summary = {"kind": kind, "protocol": protocol(opened, cfg), **summarise(rows, cfg),
               "wall_s": round(time.perf_counter() - started, 2)}
    result = SuiteResult(summary, rows)
    if out is not None:
        out = Path(out)
        write_table(out / "judgments.parquet", result.rows)
        write_json(out / "summary.json", result.summary)
    return result


def pairwise(judge: "Judge | JudgeConfig | TeacherConfig | str", pairs: Sequence[Pair],
             cfg: JudgeConfig | None = None, out: Path | None = None,
             log: Callable[[str], None] | None = None) -> SuiteResult:
    """Judge A's answers against B's (each pair's ``model_a``/``model_b`` name the two sides)."""
    return judge_and_summarise("pairwise", summarise_pairwise, judge, pairs, cfg, out, log)


def summarise_run_judgments(stages: dict[str, Stage]) -> dict[str, Any]:
    """Each judge stage's headline figures (read from the ``summary.json`` ``pairwise`` wrote), for
    the run's summary and report."""
    out = {}
    for name, stage in stages.items():
        s = read_json(stage.dir / "summary.json")
        out[name] = {"judge": s["protocol"]["judge"], "method": s["protocol"]["method"], "pairs": s["pairs"],
                     "win_rate": s["win_rate"], "length_controlled_win_rate": s["length_controlled"]["win_rate"],
                     "position_consistency": s["position_consistency"], "longer_preferred": s["longer_preferred"],
                     "mean_length_chars": s["mean_length"]}
    return out
