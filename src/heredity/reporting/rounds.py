"""The report of an iterated run (``rounds: N``): how each arm moves from round to round.

Each round ``r`` is a complete run directory ``OUT/round-<r>/`` whose held-out answers
(``evaluate/<arm>/answers.parquet``) the loop reads and hands here as plain rows:
``answers[round][seed][arm] = [row, ...]``. Every arm of every round and seed answers the same
held-out prompts, so rows are paired by ``prompt_id`` (only the prompts answered everywhere are
used; ``prompts_dropped`` counts the others). ``base``, the untrained student, is the same in every
round and seed: it is read once (its first round, every seed's rows averaged per prompt).

**Per-prompt metrics** (``metrics``: toxicity, length, MTLD, ...): a trajectory point is the mean
over seeds and prompts with the seeded bootstrap of :func:`heredity.core.stats.seeded_paired_difference`
against zeros (``mean_ci`` when one seed); differences are ``seeded_paired_difference`` on
``(seeds, prompts)`` arrays, round ``r``'s seed ``s`` paired with round 1's seed ``s``.

**Corpus metrics** (:data:`CORPUS_METRICS`): how varied one arm's answers are as a set, the
collapse an iterated loop can cause and a per-prompt metric cannot see.

* ``corpus_distinct_2``: distinct bigrams / bigrams pooled over the arm's answers (no bigram
  spans two answers), tokenised by :func:`heredity.metrics.lexical.tokenize`;
* ``self_bleu``: the mean sentence BLEU (sacrebleu, ``tokenize="none"`` over the same tokens,
  ``effective_order``) of each answer against all the others; an answer with no token is
  undefined (left out and counted), and at most ``SELF_BLEU_MAX_TEXTS`` answers (evenly spaced,
  the same positions in every arm, round and seed) are scored.

``distinct-1`` is left out: with ``corpus_distinct_2`` and per-prompt MTLD it adds little.

*Bootstrapping a corpus statistic.* Resampling answers with replacement puts copies of one answer
in a corpus, and copies are exactly what these statistics count: a resampled corpus of 50 varied
answers has distinct-2 near 0.63, not 0.95. So each statistic is written as a ratio of per-answer
sums with the corpus fixed: answer ``i`` contributes ``u_i = Σ_{bigrams b of i} 1/count(b)`` and
``n_i`` = its bigrams (Σu/Σn is exactly the corpus distinct-2), or its self-BLEU and 1 (the mean).
The bootstrap draws prompts (shared by all seeds, so pairs stay paired) and seeds exactly as
``seeded_paired_difference`` does (same generators, same streams), and a replicate is the mean
over drawn seeds of Σu/Σn over drawn prompts; for a mean (self-BLEU) it is therefore that
function's own figure. The interval answers "which prompts were asked (and seeds trained)", with
each answer's references being its whole round's answers, not "what if the corpus had been
another": the point estimate is always the corpus statistic itself.

**Families.** ``primary``: every comparison of the target (each arm's round ``r`` vs round 1, vs
the previous round, vs base, and each arm vs passive); ``exploratory``: the same comparisons of
every other metric, corpus metrics included. BH q-values (:func:`heredity.core.stats.bh_qvalues`)
are computed within each family; ``moved`` is ``q < 0.05`` as in ``core.arms.mark_families``.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from heredity.config import BASE, CORPUS_METRICS, PASSIVE
from heredity.core.arms import ordered_arms
from heredity.core.rundir import atomic_path, write_text
from heredity.core.stats import (
    BOOTSTRAP_SAMPLES,
    as_array,
    bh_qvalues,
    bootstrap_p,
    clean,
    mean_ci,
    nanmean,
    percentile_ci,
    seeded_paired_difference,
)
from heredity.metrics.lexical import tokenize

__all__ = ["CORPUS_METRICS", "corpus_diversity", "round_means", "summarise_rounds", "write_rounds_report"]

SELF_BLEU_MAX_TEXTS = 200
ALPHA = 0.05

VS_ROUND_1, VS_PREVIOUS, VS_BASE, VS_PASSIVE = "vs_round_1", "vs_previous", "vs_base", "vs_passive"


# ----------------------------------------------------------------------------- corpus diversity


def _subsample(n: int, limit: int = SELF_BLEU_MAX_TEXTS) -> np.ndarray:
    """At most ``limit`` evenly spaced positions of ``n`` (all when n <= limit): deterministic."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def _corpus_parts(texts: list[str | None]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per answer, the numerator and denominator of each corpus statistic (see the module doc):
    distinct-2 ``(u_i, n_i)``; self-BLEU ``(BLEU_i, 1)``, NaN where undefined (no token, not in
    the subsample, or fewer than two answers scored)."""
    tokens = [tokenize(t or "") for t in texts]
    bigrams = [list(zip(tok, tok[1:])) for tok in tokens]
    counts = Counter(b for bg in bigrams for b in bg)
    u = np.array([sum(1.0 / counts[b] for b in bg) for bg in bigrams], dtype=float)
    n = np.array([len(bg) for bg in bigrams], dtype=float)

    bleu = np.full(len(texts), np.nan)
    scored = [int(i) for i in _subsample(len(texts)) if tokens[i]]
    if len(scored) >= 2:
        from sacrebleu.metrics import BLEU

        metric = BLEU(tokenize="none", effective_order=True)
        joined = {i: " ".join(tokens[i]) for i in scored}
        for i in scored:
            bleu[i] = metric.sentence_score(joined[i], [joined[j] for j in scored if j != i]).score
    return {"corpus_distinct_2": (u, n), "self_bleu": (bleu, np.where(np.isnan(bleu), np.nan, 1.0))}


def _ratio(num: np.ndarray, den: np.ndarray) -> float | None:
    keep = ~(np.isnan(num) | np.isnan(den))
    total = float(den[keep].sum())
    return float(num[keep].sum()) / total if total > 0 else None


def corpus_diversity(texts: list[str]) -> dict[str, float | None]:
    """Corpus-level diversity of one arm's answers in one round: ``corpus_distinct_2`` (distinct
    bigrams / bigrams pooled over all texts, ``heredity.metrics.lexical.tokenize``) and
    ``self_bleu`` (mean sentence BLEU, 0-100, of each text against all the others, at most
    ``SELF_BLEU_MAX_TEXTS`` texts, evenly spaced). None when undefined (no bigram; fewer than two
    texts with a token)."""
    parts = _corpus_parts(list(texts))
    return {m: clean(_ratio(*parts[m])) for m in CORPUS_METRICS}


# ----------------------------------------------------------------------------- bootstrap of a corpus ratio


def _corpus_bootstrap(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray] | None,
                      samples: int, seed: int) -> dict[str, Any]:
    """Mean over seeds of Σnum/Σden (side a, minus side b when given), with the seeded bootstrap of
    ``seeded_paired_difference`` (prompts drawn once for every seed, seeds drawn independently).
    Each side is ``(num, den)``, ``(seeds, prompts)`` arrays (a ``(prompts,)`` array is the same under
    every seed). A (seed, prompt) pair undefined on either side is left out of both (``n_undefined``)."""
    sides = [a] if b is None else [a, b]
    arrays = np.broadcast_arrays(*(np.atleast_2d(as_array(x)) for side in sides for x in side))
    undefined_mask = np.any([np.isnan(x) for x in arrays], axis=0)
    undefined = int(undefined_mask.sum())
    keep = ~np.all(undefined_mask, axis=0)
    arrays = [np.where(undefined_mask, 0.0, x)[:, keep] for x in arrays]
    n_seeds, n = arrays[0].shape

    def point(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        tot = den.sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tot > 0, num.sum(axis=-1) / np.where(tot > 0, tot, 1), np.nan)

    per_seed_sides = [point(arrays[2 * k], arrays[2 * k + 1]) for k in range(len(sides))]
    per_seed = per_seed_sides[0] - (per_seed_sides[1] if b is not None else 0.0)
    empty = {"diff": None, "ci95": [None, None], "p": None, "n": int(n), "n_undefined": undefined,
             "seeds": int(n_seeds), "per_seed": [clean(x) for x in per_seed]}
    if not n or np.all(np.isnan(per_seed)):
        return empty
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    seed_idx = np.random.default_rng([seed, n_seeds]).integers(0, n_seeds, size=(samples, n_seeds))
    reps = np.zeros((samples, n_seeds))
    for k in range(len(sides)):
        num, den = arrays[2 * k], arrays[2 * k + 1]
        sums_num = num[:, idx].sum(axis=-1)  # (seeds, samples)
        sums_den = den[:, idx].sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(sums_den > 0, sums_num / np.where(sums_den > 0, sums_den, 1), np.nan)
        drawn = ratio[seed_idx, np.arange(samples)[:, None]]  # (samples, drawn seeds)
        reps = reps + (drawn if k == 0 else -drawn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with no defined seed: NaN, dropped
        reps = np.nanmean(reps, axis=1)
    return {**empty, "diff": clean(np.nanmean(per_seed)), "ci95": percentile_ci(reps, samples),
            "p": clean(bootstrap_p(reps))}


# ----------------------------------------------------------------------------- arrays from rows


def _value(row: dict[str, Any], metric: str) -> float:
    v = row.get(metric)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _per_prompt(rows_by_seed: list[dict[str, dict[str, Any]]], ids: list[str], metric: str) -> np.ndarray:
    return np.array([[_value(rows[i], metric) for i in ids] for rows in rows_by_seed], dtype=float)


def _index(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r["prompt_id"]): r for r in rows}


def round_means(answers: dict[int, dict[str, list[dict]]], metrics: list[str]) -> dict[str, dict[str, float | None]]:
    """``answers``: seed -> arm -> rows of one round. For each arm, the mean over seeds of each
    per-prompt metric's mean (undefined values left out) and of each corpus metric (computed per
    seed); None where nothing is defined. What the loop's early stop reads."""
    arms = ordered_arms(dict.fromkeys(a for per_arm in answers.values() for a in per_arm))
    out: dict[str, dict[str, float | None]] = {}
    for arm in arms:
        seeds = [s for s in sorted(answers) if arm in answers[s]]
        figures: dict[str, float | None] = {}
        for metric in metrics:
            figures[metric] = nanmean([nanmean([_value(r, metric) for r in answers[s][arm]]) for s in seeds])
        per_seed = [corpus_diversity([r.get("text") or "" for r in answers[s][arm]]) for s in seeds]
        for metric in CORPUS_METRICS:
            figures[metric] = nanmean([c[metric] for c in per_seed])
        out[arm] = figures
    return out


# ----------------------------------------------------------------------------- the summary


def _difference(kind: str, arm: str, metric: str, rnd: int, against: str, d: dict[str, Any]) -> dict[str, Any]:
    return {"comparison": kind, "arm": arm, "metric": metric, "round": rnd, "against": against,
            **{k: (clean(v) if isinstance(v, float) else v) for k, v in d.items()}}


def _excludes_zero(d: dict[str, Any] | None) -> bool:
    lo, hi = (d or {}).get("ci95") or (None, None)
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def summarise_rounds(name: str, target: str, direction: str, metrics: list[str],
                     answers: dict[int, dict[int, dict[str, list[dict]]]],
                     stopped: dict | None = None, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """A JSON-able summary of an iterated run; ``answers``: round (1-based) -> seed -> arm -> rows.

    Keys: ``name``, ``target``, ``direction``, ``metrics`` (per-prompt, target first),
    ``corpus_metrics``, ``rounds``, ``seeds``, ``arms`` (base first), ``prompts`` (paired prompts
    used), ``prompts_dropped``, ``bootstrap_samples``, ``stopped`` (as given), ``base`` (metric -> mean, CI),
    ``trajectories`` (arm -> metric -> one point per round: ``round``, ``value``, ``ci95``,
    ``per_seed``, ``n``, ``n_undefined``), ``differences`` (a list; each names its ``comparison``
    — vs_round_1, vs_previous, vs_base or vs_passive —, ``arm``, ``metric``, ``round``,
    ``against``, and holds ``diff``, ``ci95``, ``p``, ``per_seed``, ``family``, ``q``, ``moved``),
    ``families`` (family -> how many comparisons) and ``findings`` (sentences)."""
    if direction not in ("max", "min"):
        raise ValueError(f"direction must be 'max' or 'min', got {direction!r}")
    rounds = sorted(int(r) for r in answers)
    if not rounds:
        raise ValueError("summarise_rounds needs at least one round of answers")
    metrics = [target] + [m for m in metrics if m != target]
    prompt_metrics = [m for m in metrics if m not in CORPUS_METRICS]
    all_metrics = prompt_metrics + [m for m in CORPUS_METRICS]
    seeds = sorted(set.intersection(*(set(int(s) for s in answers[r]) for r in rounds)))
    if not seeds:
        raise ValueError("no training seed is present in every round")
    arms = ordered_arms(dict.fromkeys(a for r in rounds for s in seeds for a in answers[r][s]))
    students = [a for a in arms if a != BASE]

    indexed = {r: {s: {a: _index(rows) for a, rows in answers[r][s].items()} for s in seeds} for r in rounds}
    every = [set(ix) for r in rounds for s in seeds for ix in indexed[r][s].values()]
    first = answers[rounds[0]][seeds[0]][arms[0]]
    common = set.intersection(*every)
    ids = [str(r["prompt_id"]) for r in first if str(r["prompt_id"]) in common]
    dropped = len(set.union(*every)) - len(ids)

    # (seeds, prompts) arrays per round, arm and metric; corpus metrics as (num, den) pairs.
    values: dict[tuple[int, str, str], Any] = {}
    for r in rounds:
        for arm in arms:
            if not all(arm in indexed[r][s] for s in seeds):
                continue
            by_seed = [indexed[r][s][arm] for s in seeds]
            for m in prompt_metrics:
                values[r, arm, m] = _per_prompt(by_seed, ids, m)
            parts = [_corpus_parts([rows[i].get("text") or "" for i in ids]) for rows in by_seed]
            for m in CORPUS_METRICS:
                values[r, arm, m] = (np.stack([p[m][0] for p in parts]), np.stack([p[m][1] for p in parts]))

    base_round = next((r for r in rounds if (r, BASE, all_metrics[0]) in values), None)
    base: dict[str, Any] = {}
    base_values: dict[str, Any] = {}
    for m in all_metrics:
        if base_round is None:
            break
        v = values[base_round, BASE, m]
        if m in CORPUS_METRICS:  # the untrained student: one corpus (its first seed)
            base_values[m] = (v[0][:1], v[1][:1])
            d = _corpus_bootstrap(base_values[m], None, samples, seed)
            base[m] = {"value": d["diff"], "ci95": d["ci95"], "n": d["n"], "n_undefined": d["n_undefined"]}
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a prompt undefined under every seed: NaN
                base_values[m] = np.nanmean(v, axis=0)  # the same under every seed
            base[m] = mean_ci(base_values[m], samples, seed)

    def point(r: int, arm: str, m: str) -> dict[str, Any]:
        v = values.get((r, arm, m))
        if v is None:
            return {"round": r, "value": None, "ci95": [None, None], "per_seed": [], "n": 0, "n_undefined": 0}
        if m in CORPUS_METRICS:
            d = _corpus_bootstrap(v, None, samples, seed)
            return {"round": r, "value": d["diff"], "ci95": d["ci95"], "per_seed": d["per_seed"], "n": d["n"],
                    "n_undefined": d["n_undefined"]}
        per_seed = [nanmean(row) for row in v]
        if len(seeds) == 1:
            d = mean_ci(v[0], samples, seed)
            return {"round": r, "value": d["value"], "ci95": d["ci95"], "per_seed": per_seed, "n": d["n"],
                    "n_undefined": d["n_undefined"]}
        d = seeded_paired_difference(v, np.zeros(v.shape[1]), samples, seed)
        return {"round": r, "value": d["diff"], "ci95": d["ci95"], "ci95_prompts": d["ci95_prompts"],
                "per_seed": per_seed, "n": d["n"], "n_undefined": d["n_undefined"]}

    trajectories = {arm: {m: [point(r, arm, m) for r in rounds] for m in all_metrics} for arm in students}

    def compare(a: Any, b: Any, m: str) -> dict[str, Any]:
        if m in CORPUS_METRICS:
            return _corpus_bootstrap(a, b, samples, seed)
        return seeded_paired_difference(a, b, samples, seed)

    differences: list[dict[str, Any]] = []
    for arm in students:
        for m in all_metrics:
            for k, r in enumerate(rounds):
                here = values.get((r, arm, m))
                if here is None:
                    continue
                if k > 0 and (rounds[0], arm, m) in values:
                    differences.append(_difference(VS_ROUND_1, arm, m, r, f"round {rounds[0]}",
                                                   compare(here, values[rounds[0], arm, m], m)))
                if k > 1 and (rounds[k - 1], arm, m) in values:
                    differences.append(_difference(VS_PREVIOUS, arm, m, r, f"round {rounds[k - 1]}",
                                                   compare(here, values[rounds[k - 1], arm, m], m)))
                if m in base_values:
                    differences.append(_difference(VS_BASE, arm, m, r, BASE, compare(here, base_values[m], m)))
                if arm != PASSIVE and (r, PASSIVE, m) in values:
                    differences.append(_difference(VS_PASSIVE, arm, m, r, PASSIVE,
                                                   compare(here, values[r, PASSIVE, m], m)))
    families: dict[str, list[dict[str, Any]]] = {"primary": [], "exploratory": []}
    for d in differences:
        d["family"] = "primary" if d["metric"] == target else "exploratory"
        families[d["family"]].append(d)
    for family in families.values():
        for d, q in zip(family, bh_qvalues([d.get("p") for d in family])):
            d["q"] = q
            d["moved"] = q is not None and q < ALPHA

    summary = {
        "name": name, "target": target, "direction": direction, "metrics": prompt_metrics,
        "corpus_metrics": list(CORPUS_METRICS), "rounds": rounds, "seeds": seeds, "arms": arms,
        "prompts": len(ids), "prompts_dropped": dropped, "bootstrap_samples": samples, "stopped": stopped,
        "base": base, "trajectories": trajectories, "differences": differences,
        "families": {f: len(ds) for f, ds in families.items()},
    }
    summary["findings"] = findings(summary)
    return summary


# ----------------------------------------------------------------------------- findings


def difference(summary: dict[str, Any], comparison: str, arm: str, metric: str, rnd: int) -> dict[str, Any] | None:
    """One difference of a summary, or None."""
    for d in summary.get("differences") or []:
        if (d["comparison"], d["arm"], d["metric"], d["round"]) == (comparison, arm, metric, rnd):
            return d
    return None


def _num(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:,.1f}"


def _signed(x: Any) -> str:
    return "–" if x is None else ("+" if x > 0 else "") + _num(x)


def _ci(pair: Any) -> str:
    lo, hi = pair if pair else (None, None)
    return "[–]" if lo is None or hi is None else f"[{_num(lo)}, {_num(hi)}]"


def _delta(d: dict[str, Any] | None) -> str:
    if not d or d.get("diff") is None:
        return "–"
    q = f", q={d['q']:.2g}" if d.get("q") is not None else ""
    return f"{_signed(d['diff'])} {_ci(d.get('ci95'))}{q}"


def trend(summary: dict[str, Any], arm: str) -> str:
    """The target's course for ``arm`` from round 1 to the last round: ``compounding``,
    ``saturating``, ``reversing``, ``flat``, ``mixed`` (moved in the targeted direction without
    being monotone or having levelled off), or ``single round``."""
    rounds, target = summary["rounds"], summary["target"]
    if len(rounds) < 2:
        return "single round"
    sign = 1 if summary["direction"] == "max" else -1
    first = difference(summary, VS_ROUND_1, arm, target, rounds[-1])
    last_step = difference(summary, VS_PREVIOUS, arm, target, rounds[-1]) or first
    if not first or first.get("diff") is None:
        return "flat"
    means = [p["value"] for p in summary["trajectories"][arm][target]]
    better = first["diff"] * sign > 0
    significant = (first.get("q") is not None and first["q"] < ALPHA) and _excludes_zero(first)
    if significant and not better:
        return "reversing"
    monotone = all(a is not None and b is not None and (b - a) * sign > 0 for a, b in zip(means, means[1:]))
    if significant and monotone:
        return "compounding"
    if _excludes_zero(first) and better and not _excludes_zero(last_step):
        return "saturating"
    if not _excludes_zero(first) or not significant:
        return "flat"
    return "mixed"


_TREND_WORDS = {
    "compounding": "compounds: every round moves it further {dir}, and the last round differs from round 1",
    "saturating": "saturates: the last round differs from round 1, but not from the round before",
    "reversing": "reverses: the last round moved it significantly the wrong way ({opp}) from round 1",
    "flat": "is flat: the last round does not differ from round 1 at q<0.05",
    "mixed": "moved {dir} from round 1 to the last round, but not round after round",
}


def findings(summary: dict[str, Any]) -> list[str]:
    """Plain sentences, each with its CI: per arm the target's course, then every other metric whose
    last-round vs round-1 difference survives BH (q<0.05, CI excluding 0)."""
    rounds, target = summary["rounds"], summary["target"]
    up = summary["direction"] == "max"
    out = []
    arms = [a for a in summary["arms"] if a != BASE]
    if len(rounds) < 2:
        return [f"Only round {rounds[0]} is present: no trajectory to describe."]
    last, first_round = rounds[-1], rounds[0]
    for arm in arms:
        means = " → ".join(_num(p["value"]) for p in summary["trajectories"][arm][target])
        kind = trend(summary, arm)
        words = _TREND_WORDS.get(kind, kind).format(dir="up" if up else "down", opp="down" if up else "up")
        d1 = difference(summary, VS_ROUND_1, arm, target, last)
        step = difference(summary, VS_PREVIOUS, arm, target, last)
        text = (f"{arm}: {target} (targeted {'up' if up else 'down'}) {words}. Means by round: {means}; "
                f"round {last} − round {first_round}: {_delta(d1)}")
        if step:
            text += f"; round {last} − round {rounds[-2]}: {_delta(step)}"
        out.append(text + ".")
    for arm in arms:
        for metric in summary["metrics"] + summary["corpus_metrics"]:
            if metric == target:
                continue
            d = difference(summary, VS_ROUND_1, arm, metric, last)
            if d and d.get("moved") and _excludes_zero(d):
                out.append(f"{arm}: {metric} drifted by {_signed(d['diff'])} {_ci(d['ci95'])} from round "
                           f"{first_round} to round {last} (q={d['q']:.2g}, exploratory).")
    return out


# ----------------------------------------------------------------------------- the report files


def _question(summary: dict[str, Any]) -> str:
    rounds = summary["rounds"]
    return (f"Does training students on text chosen to {summary['direction']}imise {summary['target']}, and "
            f"then generating the next round's candidates with those students, compound over rounds "
            f"({rounds[0]}–{rounds[-1]}), level off or reverse, and what else drifts on the way "
            f"(corpus diversity above all)?")


def _stopped_note(summary: dict[str, Any]) -> str | None:
    stopped = summary.get("stopped")
    if not stopped:
        return None
    return f"The loop stopped after round {stopped.get('after_round')}: {stopped.get('why')}."


def metric_table(summary: dict[str, Any], metric: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows (one per round) of a metric's table."""
    students = [a for a in summary["arms"] if a != BASE]
    extra = [a for a in students if a != PASSIVE and PASSIVE in students]
    header = ["round"] + [f"{a} mean [CI]" for a in students]
    for a in students:
        header += [f"{a} Δ vs round {summary['rounds'][0]}", f"{a} Δ vs base"]
    header += [f"{a} − passive" for a in extra]
    rows = []
    for k, r in enumerate(summary["rounds"]):
        row = [str(r)]
        for a in students:
            p = summary["trajectories"][a][metric][k]
            row.append("–" if p["value"] is None else f"{_num(p['value'])} {_ci(p['ci95'])}")
        for a in students:
            row.append(_delta(difference(summary, VS_ROUND_1, a, metric, r)) if k else "(reference)")
            row.append(_delta(difference(summary, VS_BASE, a, metric, r)))
        row += [_delta(difference(summary, VS_PASSIVE, a, metric, r)) for a in extra]
        rows.append(row)
    return header, rows


def _base_line(summary: dict[str, Any], metric: str) -> str:
    b = (summary.get("base") or {}).get(metric)
    if not b or b.get("value") is None:
        return "base (untrained): –"
    return f"base (untrained): {_num(b['value'])} {_ci(b.get('ci95'))}"


def _undefined_line(summary: dict[str, Any], metric: str) -> str | None:
    left = [f"{a} round {p['round']}: {p['n_undefined']}" for a, per in summary["trajectories"].items()
            for p in per[metric] if p.get("n_undefined")]
    return ("Undefined values left out (seed × prompt): " + ", ".join(left)) if left else None


def _metric_order(summary: dict[str, Any]) -> list[str]:
    return summary["metrics"] + [m for m in summary["corpus_metrics"] if m not in summary["metrics"]]


def render_markdown(summary: dict[str, Any]) -> str:
    def md_row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [f"# heredity rounds: {summary['name']}", "", f"**Question.** {_question(summary)}", "",
             f"Target: {summary['direction']} {summary['target']}. Rounds: "
             f"{', '.join(map(str, summary['rounds']))}. Arms: {', '.join(summary['arms'])}. "
             f"Seeds: {', '.join(map(str, summary['seeds']))}. {summary['prompts']} held-out prompts paired by "
             f"prompt_id across rounds, seeds and arms ({summary['prompts_dropped']} not answered everywhere, "
             f"left out). 95% bootstrap CIs over prompts and seeds ({summary['bootstrap_samples']} replicates); q: "
             "Benjamini–Hochberg within the primary (target) and exploratory (other metrics) families.", ""]
    note = _stopped_note(summary)
    if note:
        lines += [f"> {note}", ""]
    lines += ["## Findings", ""] + [f"- {f}" for f in summary["findings"]] + [""]
    for metric in _metric_order(summary):
        tag = " (target)" if metric == summary["target"] else " (corpus)" if metric in summary["corpus_metrics"] else ""
        header, rows = metric_table(summary, metric)
        lines += [f"## {metric}{tag}", "", _base_line(summary, metric), "", md_row(header),
                  md_row(["---"] * len(header))] + [md_row(r) for r in rows] + [""]
        undefined = _undefined_line(summary, metric)
        if undefined:
            lines += [undefined, ""]
    lines += ["![trajectories](trajectories.png)", ""]
    return "\n".join(lines)


def trajectories_figure(summary: dict[str, Any]) -> Any:
    """One panel per metric (target, side metrics, corpus metrics): each arm's mean by round with
    its 95% CI, base as a dashed line with its CI band. None when there is nothing to draw."""
    from heredity.reporting import plots

    metrics = _metric_order(summary)
    if not metrics:
        return None
    plt = plots._plt()
    rounds = summary["rounds"]
    students = [a for a in summary["arms"] if a != BASE]
    rows, cols = plots._grid(len(metrics), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    width = 0.08 * (len(students) - 1)
    for ax, metric in zip(axes.flat, metrics):
        b = (summary.get("base") or {}).get(metric) or {}
        if b.get("value") is not None:
            c = plots.colour(BASE)
            ax.axhline(b["value"], color=c, linestyle="--", linewidth=1, label="base")
            lo, hi = b.get("ci95") or (None, None)
            if lo is not None and hi is not None:
                ax.axhspan(lo, hi, color=c, alpha=0.12, linewidth=0)
        for i, arm in enumerate(students):
            pts = [p for p in summary["trajectories"][arm][metric] if p["value"] is not None]
            if not pts:
                continue
            shift = -width / 2 + (width * i / (len(students) - 1) if len(students) > 1 else 0)
            xs = [p["round"] + shift for p in pts]
            ys = [p["value"] for p in pts]
            err = [[max(0.0, y - (p["ci95"][0] if p["ci95"][0] is not None else y)) for y, p in zip(ys, pts)],
                   [max(0.0, (p["ci95"][1] if p["ci95"][1] is not None else y) - y) for y, p in zip(ys, pts)]]
            ax.errorbar(xs, ys, yerr=err, color=plots.colour(arm, students), marker="o", markersize=4,
                        linewidth=1.5, capsize=3, label=arm)
        target = metric == summary["target"]
        ax.set_title(f"{metric} (target, {summary['direction']})" if target else metric, fontsize=9,
                     fontweight="bold" if target else "normal")
        ax.set_xticks(rounds, [str(r) for r in rounds])
        ax.set_xlim(rounds[0] - 0.4, rounds[-1] + 0.4)
        ax.set_xlabel("round")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False, fontsize=9,
               bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("Held-out means by round, 95% CI (dashed: base, band: its CI)", fontsize=10, y=1.06)
    fig.tight_layout()
    return fig


def write_rounds_report(summary: dict, out: Path) -> None:
    """``OUT/report.md``, ``OUT/report.html`` and ``OUT/trajectories.png`` from a rounds summary
    (``OUT/summary.json`` is the caller's). Every file is written atomically."""
    from heredity.reporting import html, plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "report.md", render_markdown(summary))
    fig = trajectories_figure(summary)
    figure = ""
    if fig is not None:
        with atomic_path(out / "trajectories.png") as tmp:
            fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
        figure = plots.figure_html(fig, "each arm's held-out means by round with 95% CIs")
    tables = []
    for metric in _metric_order(summary):
        header, rows = metric_table(summary, metric)
        tables.append({"metric": metric, "target": metric == summary["target"],
                       "corpus": metric in summary["corpus_metrics"], "base": _base_line(summary, metric),
                       "header": header, "rows": rows, "undefined": _undefined_line(summary, metric)})
    write_text(out / "report.html", html.render_page(
        "rounds.html.j2", title=f"heredity rounds: {summary['name']}", summary=summary,
        question=_question(summary), stopped=_stopped_note(summary), findings=summary["findings"],
        tables=tables, figure=figure))
