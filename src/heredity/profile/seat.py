"""SEAT (May et al. 2019): association between target and attribute sentence sets in embedding space.

Embeddings are the model's last hidden states, mean-pooled over the sentence's own tokens (the
start token is left out: its state is the same for every sentence and would pull all
embeddings together). For a test with targets X, Y and attributes A, B:

* ``s(w) = mean_a cos(w, a) - mean_b cos(w, b)``;
* effect size ``d = (mean_{x in X} s(x) - mean_{y in Y} s(y)) / std_{w in X u Y} s(w)``
  (sample standard deviation, ddof=1), positive when X goes with A and Y with B;
* one-sided permutation p-value of the statistic ``sum_X s - sum_Y s`` over re-splits of X u Y
  into sets of sizes |X| and |Y|: all splits when there are at most ``permutations`` of them,
  otherwise ``permutations`` random ones, with ``p = (1 + #{stat_i >= stat}) / (1 + permutations)``.

Summary: the mean absolute effect size over the tests run (bootstrap CI over tests) and the share
of tests with p < 0.05; per test, its effect size and p-value. ``limit`` caps the number of tests
(a seeded random choice); sentences are embedded once even when several tests share them.

CI of a test's effect size (our choice: May et al. and the SEAT code report only d and the
permutation p-value): a percentile bootstrap that resamples each of the four sentence sets X, Y,
A and B with replacement, at its own size, and recomputes d; ``samples`` resamples, those where d
is undefined (no spread in s) dropped. All four sets are resampled because d depends on which
attribute sentences stand for A and B as much as on the targets. The resamples are drawn from a
generator seeded by ``seed`` and the test's name only, so every model profiled with the same
seed draws the same sentence indices for a test; ``effect_size_boot`` (per-test Parquet column)
keeps the resampled effect sizes, and a run pairs two models' per-test differences resample by
resample. The p-value has no CI: it is the outcome of a test, not an estimate of a population
figure (with sampled splits its Monte Carlo error is at most 0.5 / sqrt(permutations)).
"""

from __future__ import annotations

import itertools
import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heredity.core import loglik
from heredity.core.data import SuiteResult, data_file
from heredity.core.stats import estimate, percentile_ci
from heredity.errors import HeredityError
from heredity.profile.common import Paired, Replicated, per_item_means, sample_indices

DATA = "seat"
SETS = ("targ1", "targ2", "attr1", "attr2")


def association(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``s(w)`` for each row of ``w`` (all inputs are embeddings, one per row)."""
    def unit(m):
        return m / np.linalg.norm(m, axis=1, keepdims=True)
    w, a, b = unit(w), unit(a), unit(b)
    return (w @ a.T).mean(axis=1) - (w @ b.T).mean(axis=1)


def effect_size(s_x: np.ndarray, s_y: np.ndarray) -> float:
    both = np.concatenate([s_x, s_y])
    return float((s_x.mean() - s_y.mean()) / both.std(ddof=1))


def p_value(s_x: np.ndarray, s_y: np.ndarray, permutations: int = 10_000, seed: int = 0) -> float:
    both = np.concatenate([s_x, s_y])
    n, k = len(both), len(s_x)
    observed = s_x.sum() - s_y.sum()
    total = both.sum()
    if math.comb(n, k) <= permutations:
        # every split; the observed one is among them, so p > 0
        stats = np.array([2 * both[list(c)].sum() - total for c in itertools.combinations(range(n), k)])
        return float((stats >= observed - 1e-12).mean())
    rng = np.random.default_rng(seed)
    draws = np.argsort(rng.random((permutations, n)), axis=1)[:, :k]  # a random k-subset per row
    stats = 2 * both[draws].sum(axis=1) - total  # sum over the subset minus sum over the rest
    return float((1 + (stats >= observed - 1e-12).sum()) / (1 + permutations))


def resample_seed(seed: int, name: str) -> int:
    """The bootstrap generator's seed for one test: the same for every model, whatever other tests run."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode("utf-8"))]).generate_state(1)[0])


def effect_size_bootstrap(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, samples: int,
                          seed: int) -> np.ndarray:
    """Effect sizes on ``samples`` resamples of the four sets (rows of embeddings); NaN where undefined."""
    def unit(m):
        return m / np.linalg.norm(m, axis=1, keepdims=True)
    x, y, a, b = unit(x), unit(y), unit(a), unit(b)
    # cosines computed once; a resample only picks rows and columns
    xa, xb, ya, yb = x @ a.T, x @ b.T, y @ a.T, y @ b.T
    rng = np.random.default_rng(seed)
    out = np.empty(samples)
    for r in range(samples):
        ix, iy = rng.integers(0, len(x), len(x)), rng.integers(0, len(y), len(y))
        ia, ib = rng.integers(0, len(a), len(a)), rng.integers(0, len(b), len(b))
        s_x = xa[np.ix_(ix, ia)].mean(axis=1) - xb[np.ix_(ix, ib)].mean(axis=1)
        s_y = ya[np.ix_(iy, ia)].mean(axis=1) - yb[np.ix_(iy, ib)].mean(axis=1)
        both = np.concatenate([s_x, s_y])
        sd = both.std(ddof=1)
        out[r] = (s_x.mean() - s_y.mean()) / sd if sd > 0 else np.nan
    return out


def embed(model, tokenizer, sentences: list[str], batch_size: int = 64) -> np.ndarray:
    """Mean-pooled last hidden states over each sentence's tokens (start token excluded)."""
    seqs = loglik.encode_sentences(tokenizer, sentences)
    device = next(model.parameters()).device
    out = np.zeros((len(seqs), model.config.hidden_size), dtype=np.float64)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i].ids))  # little padding per batch
    with torch.inference_mode():
        for lo in range(0, len(order), batch_size):
            batch = order[lo : lo + batch_size]
            width = max(len(seqs[i].ids) for i in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                ids[r, : len(seqs[i].ids)] = torch.tensor(seqs[i].ids)
                mask[r, : len(seqs[i].ids)] = 1
            hidden = model.get_decoder()(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            keep = mask.clone()
            keep[:, : seqs[batch[0]].start] = 0  # every sequence has the same start-token prefix
            keep = keep.to(device).unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * keep).sum(dim=1) / keep.sum(dim=1)
            out[batch] = pooled.double().cpu().numpy()
    return out


def load(data_dir: Path | None) -> dict[str, dict]:
    folder = data_file(data_dir, DATA)
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.jsonl"))}


def run(model, tokenizer, *, data_dir: Path | None = None, limit: int | None = None, seed: int = 0,
        samples: int = 1000, batch_size: int = 32, progress=None, permutations: int = 10_000,
        tests: list[str] | None = None) -> SuiteResult:
    """``tests`` names the tests to run (file stems); by default ``limit`` random ones, or all."""
    available = load(data_dir)
    if tests is not None:
        missing = sorted(set(tests) - set(available))
        if missing:
            raise HeredityError(f"unknown SEAT test(s) {', '.join(missing)}; known: {', '.join(available)}")
        names = list(tests)
    else:
        names = [list(available)[i] for i in sample_indices(len(available), limit, seed)]
    tests = available
    unique = sorted({s for name in names for key in SETS for s in tests[name][key]["examples"]})
    vectors = dict(zip(unique, embed(model, tokenizer, unique, batch_size=2 * batch_size)))
    rows = []
    for name in names:
        t = tests[name]
        x, y, a, b = (np.stack([vectors[s] for s in t[key]["examples"]]) for key in SETS)
        s_x, s_y = association(x, a, b), association(y, a, b)
        boot_seed = resample_seed(seed, name)
        boot = effect_size_bootstrap(x, y, a, b, samples, boot_seed)
        rows.append({"test": name, **{f"{key}_category": t[key]["category"] for key in SETS},
                     **{f"n_{key}": len(t[key]["examples"]) for key in SETS},
                     "effect_size": effect_size(s_x, s_y), "effect_size_ci95": percentile_ci(boot, samples),
                     "p_value": p_value(s_x, s_y, permutations, seed),
                     "bootstrap_seed": boot_seed, "effect_size_boot": [float(v) for v in boot]})
        if progress is not None:
            progress(1)
    effects = np.array([r["effect_size"] for r in rows])
    significant = np.array([r["p_value"] < 0.05 for r in rows], float)
    summary = {
        "suite": "seat",
        "dataset": DATA,
        "n": len(rows),
        "protocol": {"embedding": "last hidden state, mean over the sentence's tokens (start token excluded)",
                     "effect_size": "Cohen's d of s(w) between targets, sample std over both",
                     "p_value": f"one-sided permutation test, {permutations} splits (exact when fewer); no CI",
                     "effect_size_ci": "percentile bootstrap resampling X, Y, A and B each with replacement; "
                                       "resample indices seeded by seed and test name, shared across models"},
        "metrics": {"mean_abs_effect_size": estimate(lambda i: np.abs(effects[i]).mean(), len(rows), samples, seed),
                    "share_significant": estimate(lambda i: significant[i].mean(), len(rows), samples, seed)},
        "groups": {r["test"]: {"n": sum(r[f"n_{k}"] for k in SETS),
                               "metrics": {"effect_size": {"value": r["effect_size"], "ci95": r["effect_size_ci95"]},
                                           "p_value": {"value": r["p_value"], "ci95": [None, None]}}}
                   for r in rows},
    }
    return SuiteResult(summary, rows)


def paired_items(rows: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> dict[str, Paired | Replicated]:
    """Per test: |effect size| and p < 0.05; each test's effect size with its bootstrap replicates."""
    out: dict[str, Paired | Replicated] = dict(per_item_means("seat", rows, "test", {
        "mean_abs_effect_size": lambda r: abs(float(r["effect_size"])),
        "share_significant": lambda r: float(r["p_value"] < 0.05),
    }))
    for r in rows:
        if r.get("effect_size_boot") is not None:  # profiles written before per-test CIs have none
            out[f"seat/effect_size:{r['test']}"] = Replicated(
                float(r["effect_size"]), np.array(r["effect_size_boot"], dtype=float), int(r["bootstrap_seed"]))
    return out
