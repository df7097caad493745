"""Calibration on HellaSwag: accuracy and expected calibration error (ECE).

Protocol (following the paper's profiling code, which scores each ending by the *mean*
per-token log-likelihood of the ending given the context and takes a softmax over them):

* context = ``ctx`` (activity label + ": " + context), each option = ``" " + ending``;
* option score = mean per-token log-likelihood (length-normalised: endings differ in length, and
  a sum would favour the shortest one); the probabilities are the softmax over the four scores;
* prediction = argmax, confidence = its probability;
* ECE with B equal-width confidence bins ``[k/B, (k+1)/B)`` (the last bin closed):
  ``sum_b n_b/N * |accuracy_b - mean confidence_b|``; B = 1 is ``|accuracy - mean confidence|``.
  (The profiling code bins by equal mass; equal-width is the Guo et al. 2017 definition.)

``accuracy_sum`` (argmax of the summed log-likelihood) is reported alongside for comparison with
harnesses that use unnormalised scores.

ECE is an absolute gap, so sampling noise only ever adds to it: on a small sample it is biased
upward, and its bootstrap resamples more so. The percentile CI of a near-zero ECE can therefore
lie (just) above the estimate itself; read it as the spread, not as a bound on the estimate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from heredity.core import loglik
from heredity.core.data import HubDataset, SuiteResult, load_benchmark
from heredity.core.stats import estimate
from heredity.profile.common import Paired, per_item_means, sample_indices

DATA = "hellaswag/hellaswag_val.jsonl"
# The validation split, 10,042 rows. The sha is a README commit of the dataset seen on the hub;
# whether it loads with datasets>=4 (no loading scripts) is unverified here (no hub access).
HUB = HubDataset("Rowan/hellaswag", "6002345709e0801764318f06bf06ce1e7d1a1fe3", "validation", verified=False,
                 note="sha seen on the hub (README history), not loaded here")


def softmax(scores: np.ndarray) -> np.ndarray:
    z = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """Expected calibration error with ``bins`` equal-width confidence bins."""
    confidence = np.asarray(confidence, float)
    correct = np.asarray(correct, float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def score(option_scores: np.ndarray, labels: np.ndarray, *, samples: int = 1000, seed: int = 0,
          sum_scores: np.ndarray | None = None) -> dict:
    """Metrics from per-option scores (items x options, higher = more likely) and gold labels."""
    option_scores = np.asarray(option_scores, float)
    labels = np.asarray(labels, int)
    probs = softmax(option_scores)
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    correct = (pred == labels).astype(float)
    n = len(labels)
    metrics = {
        "accuracy": estimate(lambda i: correct[i].mean(), n, samples, seed),
        "ece_1bin": estimate(lambda i: ece(conf[i], correct[i], 1), n, samples, seed),
        "ece_10bin": estimate(lambda i: ece(conf[i], correct[i], 10), n, samples, seed),
        "mean_confidence": estimate(lambda i: conf[i].mean(), n, samples, seed),
    }
    if sum_scores is not None:
        correct_sum = (np.asarray(sum_scores, float).argmax(axis=1) == labels).astype(float)
        metrics["accuracy_sum"] = estimate(lambda i: correct_sum[i].mean(), n, samples, seed)
    return {"metrics": metrics, "probs": probs, "pred": pred, "confidence": conf}


def from_hub(rows: list[dict]) -> list[dict]:
    """Hub rows (``activity_label``, ``ctx``, ``endings``, ``label`` as a string) in the shared shape:
    ``ctx`` prefixed with the activity label as the profiling code's copy has it, ``label`` an int."""
    return [{"ctx": f"{r['activity_label']}: {r['ctx']}", "endings": list(r["endings"]), "label": int(r["label"])}
            for r in rows]


def _read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load(data_dir: Path | None, use_hub: bool = True) -> list[dict]:
    return load_benchmark(data_dir, "calibration (HellaSwag)", shared=DATA, read_shared=_read, hub=HUB,
                          from_hub=from_hub, use_hub=use_hub).rows


def run(model, tokenizer, *, data_dir: Path | None = None, limit: int | None = None, seed: int = 0,
        samples: int = 1000, batch_size: int = 32, progress=None) -> SuiteResult:
    rows = load(data_dir)
    idx = sample_indices(len(rows), limit, seed)
    items = [rows[i] for i in idx]
    scored = loglik.score_choices(model, tokenizer, [(r["ctx"], [" " + e for e in r["endings"]]) for r in items],
                                  batch_size=batch_size, progress=progress)
    means = np.array([[s.mean for s in opts] for opts in scored])
    sums = np.array([[s.total for s in opts] for opts in scored])
    labels = np.array([int(r["label"]) for r in items])
    result = score(means, labels, samples=samples, seed=seed, sum_scores=sums)
    per_item = [
        {"item": int(i), "label": int(labels[k]), "pred": int(result["pred"][k]),
         "correct": bool(result["pred"][k] == labels[k]), "confidence": float(result["confidence"][k]),
         "probs": result["probs"][k].tolist(), "loglik_mean": means[k].tolist(), "loglik_sum": sums[k].tolist(),
         "n_tokens": [s.n_tokens for s in scored[k]]}
        for k, i in enumerate(idx)
    ]
    summary = {
        "suite": "calibration",
        "dataset": DATA,
        "n": len(items),
        "protocol": {"option_score": "mean per-token log-likelihood of ' ' + ending given ctx",
                     "probabilities": "softmax over option scores", "ece_bins": "equal-width on max probability",
                     "ece_ci": "percentile bootstrap; ECE is biased upward, so the CI can sit above a near-zero estimate"},
        "metrics": result["metrics"],
        "groups": {},
    }
    return SuiteResult(summary, per_item)


def paired_items(rows: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> dict[str, Paired]:
    """Per item: correct, confidence, correct by summed log-likelihood; ECE (1 and 10 bins) recomputed."""
    out = per_item_means("calibration", rows, "item", {
        "accuracy": lambda r: float(r["correct"]),
        "mean_confidence": lambda r: float(r["confidence"]),
        # the same rule as score: argmax of the summed log-likelihoods
        "accuracy_sum": lambda r: float(int(np.argmax(r["loglik_sum"])) == r["label"]),
    })
    records = {r["item"]: (float(r["confidence"]), float(r["correct"])) for r in rows}
    for bins in (1, 10):
        out[f"calibration/ece_{bins}bin"] = Paired(records, lambda m, b=bins: ece(m[:, 0], m[:, 1], b))
    return out
