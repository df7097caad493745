"""How the score and select stages scale with the pool: wall time and peak memory per size.

For each size N (default 10k, 100k and 1M candidates) a pool is built from the real
AlpacaEval answers in shared/data/alpaca_eval (12 models x 805 instructions): N / 8 prompts,
each an AlpacaEval instruction drawn at random, each with 8 candidates drawn at random from
the 12 models' answers to it (teacher = the model, sample_index = its count within the
prompt). The pool is written teacher by teacher, as the generate stage writes replayed
teachers, so a prompt's candidates lie far apart in the file. Then, in a fresh process per
size (so its peak RSS is that size's alone), the score stage (metrics ``length``, with the
student's tokenizer, and ``mtld``) and the select stage (passive: random; active: max
length) run on it with an empty score cache, exactly as ``heredity run`` would call them.

Deduplication: the texts are resampled from 9,660 unique answers, so at 1M each repeats about
100 times. The score cache makes a repeated text cost a key hash and a lookup instead of a
tokenizer call and an MTLD pass. A pool of unique texts costs more; ``unique_texts_per_s`` is
the score stage's throughput on the 9,660 unique answers (one candidate each, empty cache),
from which such a pool's scoring time can be extrapolated (select does not depend on it).

Reference: the same two stages as heredity ran them before they streamed (read the whole
Parquet file as Python rows, score, group, select, write; its code is copied below as
``inmemory_stages``), on the 10k pool in the same run, and on every size up to
``--reference-max`` (default 100k). It calls today's metric and cache code, so it shares what
was made faster there (cache keys hashed once per distinct text, the tokenizer called in
chunks): the ratios measure the stages' structure, not the metrics.

- ``ratio_seconds_vs_inmemory_at_<N>`` / ``ratio_rss_vs_inmemory_at_<N>``: reference / streaming
  on the same pool at the largest size both ran (time and peak RSS);
- ``ratio_seconds_per_candidate_vs_inmemory_10k_extrapolated_to_<N>``: (reference seconds per
  candidate at 10k) / (streaming seconds per candidate at the largest size N), i.e. the
  reference extrapolated linearly from 10k. Most of it is the score cache at work (at 10k the
  fixed cost of scoring the ~6k distinct texts dominates, and a larger pool adds repeats, not
  texts), not the streaming; read it with ``distinct_texts`` and ``unique_texts_per_s``.

    PYTHONPATH=src python benchmarks/scaling.py            # 10k, 100k, 1M (lead: quiet machine)
    PYTHONPATH=src python benchmarks/scaling.py --quick    # 10k only
    PYTHONPATH=src python benchmarks/scaling.py --sizes 10000,100000

The last printed line is one JSON object: per-size figures under ``sizes``, and
``seconds_1m`` / ``peak_rss_mb_1m`` when 1M ran. Goal: 1M in under 180 s on 2 cores with a
peak RSS under 4 GB, time growing no faster than linearly (``seconds_per_candidate`` flat or
falling with the size).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
try:
    import heredity  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(SRC))

PER_PROMPT = 8
METRICS = ["length", "mtld"]


def data_dir(arg: str | None) -> Path:
    from heredity.core.data import full_data_dir

    return full_data_dir(arg, "alpaca_eval") / "alpaca_eval"


def answers(folder: Path) -> tuple[list[str], list[str], list[list[str]]]:
    """Models, instructions and answers[model][instruction], as the replay backend strips them."""
    files = sorted(folder.glob("*.json"))
    models = [f.stem for f in files]
    loaded = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    instructions = [item["instruction"].strip() for item in loaded[0]]
    return models, instructions, [[item["output"].strip() for item in rows] for rows in loaded]


def build_pool(folder: Path, size: int, out: Path, unique: bool = False) -> int:
    """generate/candidates.parquet of ``size`` resampled candidates (or every answer once);
    returns how many distinct texts it holds."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    models, instructions, texts = answers(folder)
    if unique:  # every answer once: 805 prompts x 12 teachers
        n_prompts = len(instructions)
        prompt = np.repeat(np.arange(n_prompts), len(models))
        model = np.tile(np.arange(len(models)), n_prompts)
        instruction = prompt
    else:
        rng = np.random.default_rng(size)
        n_prompts = size // PER_PROMPT
        prompt = np.repeat(np.arange(n_prompts), PER_PROMPT)
        instruction = rng.integers(0, len(instructions), n_prompts)[prompt]
        model = rng.integers(0, len(models), len(prompt))
    # sample_index: the candidate's rank among the same teacher's candidates for the prompt
    by_group = np.lexsort((np.arange(len(prompt)), model, prompt))
    first = np.ones(len(prompt), dtype=bool)
    first[1:] = (prompt[by_group][1:] != prompt[by_group][:-1]) | (model[by_group][1:] != model[by_group][:-1])
    starts = np.maximum.accumulate(np.where(first, np.arange(len(prompt)), 0))
    sample = np.empty(len(prompt), dtype=np.int64)
    sample[by_group] = np.arange(len(prompt)) - starts
    order = np.lexsort((sample, prompt, model))  # teacher by teacher, as generate writes replays
    path = out / "generate" / "candidates.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = [texts[m][j] for m, j in zip(model[order], instruction[order])]
    # one pq.write_table, as the generate stage writes candidates.parquet: a single row group
    # of up to 1M rows, which a reader that is not careful loads whole
    pq.write_table(pa.table({
        "candidate_key": [f"c{i:010d}" for i in order],
        "prompt_id": [f"p{p:07d}" for p in prompt[order]],
        "prompt": [instructions[j] for j in instruction[order]],
        "teacher": [models[m] for m in model[order]],
        "sample_index": sample[order],
        "text": text,
        "finish_reason": ["length" if len(t) > 2500 else "stop" for t in text],
        "backend": ["replay"] * len(order),
        "model": [models[m] for m in model[order]],
    }), path)
    return len(set(text))


def config(folder: Path):
    from heredity.plan import config_from_dict

    return config_from_dict({
        # replayed teachers, so the tie order is the models' (no teacher is loaded here)
        "teachers": [{"backend": "replay", "replay": {"path": str(f)}} for f in sorted(folder.glob("*.json"))],
        "score": {"metrics": METRICS},
        "select": {"target": "length", "direction": "max"},
    })


def inmemory_stages(cfg, run_dir: Path, generate):
    """The score and select stages as heredity ran them before they streamed (commit a6efad8),
    minus their manifests' bookkeeping: whole files in, Python rows, whole files out."""
    from heredity.core.rundir import read_table, stable_hash, write_json, write_table
    from heredity.metrics.scoring import metric_context, needs_tokenizer, score_texts
    from heredity.strategies import (
        data_card,
        export_selection,
        group_by_prompt,
        parse_spec,
        select,
    )

    metrics = cfg.score.metrics
    rows = read_table(generate.dir / "candidates.parquet")
    context = metric_context(cfg, [r["prompt"] for r in rows], needs_tokenizer(metrics, cfg.score.metric_options))
    scores = score_texts([r["text"] for r in rows], metrics, context, cache=True)
    out = [{"candidate_key": r["candidate_key"], "prompt_id": r["prompt_id"], "prompt": r["prompt"],
            "teacher": r["teacher"], "sample_index": r["sample_index"], "text": r["text"],
            "finish_reason": r["finish_reason"], **{m: scores[m][i] for m in metrics}} for i, r in enumerate(rows)]
    (run_dir / "score").mkdir(parents=True, exist_ok=True)
    write_table(run_dir / "score" / "scores.parquet", out)
    del rows, out, scores
    pool = read_table(run_dir / "score" / "scores.parquet")
    groups = group_by_prompt(pool)
    order = [t.label for t in cfg.teachers]
    specs = {arm: parse_spec(spec) for arm, spec in cfg.select.specs().items()}
    selections = {arm: select(groups, spec, order) for arm, spec in specs.items()}
    for arm, chosen in selections.items():
        write_table(run_dir / "select" / f"{arm}.parquet", chosen)
        export_selection(chosen, run_dir / "select" / f"{arm}.jsonl", system_prompt=cfg.system_prompt)
        stable_hash([(r["prompt"], r["text"]) for r in chosen])
    write_json(run_dir / "select" / "card.json", data_card(pool, selections, metrics))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    from heredity.core.models import load_tokenizer
    from heredity.core.rundir import Stage
    from heredity.stages.score import run_score
    from heredity.stages.select import run_select

    folder = data_dir(args.data)
    run_dir = Path(args.child_dir)
    os.environ["HEREDITY_SCORE_CACHE"] = str(run_dir / "cache.sqlite")  # empty: nothing scored before
    cfg = config(folder)
    if "length" in METRICS:
        load_tokenizer(cfg.student)  # loaded before timing: a fixed cost, not one that scales
    before = rss_mb()
    generate = Stage(run_dir, "generate", {"candidates": args.child_dir})
    started = time.perf_counter()
    if args.child_mode == "reference":
        inmemory_stages(cfg, run_dir, generate)
        score_s = select_s = None
        computed = None
    else:
        score = run_score(cfg, run_dir, generate)
        score_s = time.perf_counter() - started
        if args.child_mode == "stream":
            run_select(cfg, run_dir, score)
            select_s = time.perf_counter() - started - score_s
        else:
            select_s = None
        manifest = json.loads((run_dir / "score" / "manifest.json").read_text())
        computed = manifest["counts"].get("cache", {}).get("computed")  # keys missing at lookup
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": round(seconds, 2), "score_s": score_s and round(score_s, 2),
                      "select_s": select_s and round(select_s, 2), "peak_rss_mb": round(peak),
                      "rss_before_mb": round(before), "cache_misses": computed}))


def measure(mode: str, pool: Path, args: argparse.Namespace, timeout: float) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=pool.parent))
    shutil.copytree(pool / "generate", run_dir / "generate")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, __file__, "--child-mode", mode, "--child-dir", str(run_dir)]
    if args.data:
        cmd += ["--data", args.data]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if result.returncode != 0:
        sys.exit(f"{mode} on {pool.name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k candidates only")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated pool sizes")
    parser.add_argument("--reference-max", type=int, default=100_000,
                        help="run the in-memory reference on sizes up to this (it always runs at 10k)")
    parser.add_argument("--data", help="folder holding alpaca_eval/ (default: the shared data)")
    parser.add_argument("--workdir", help="where pools are built (default: a temp folder, removed after)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--child-mode", help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_mode:
        child(args)
        return
    sizes = [10_000] if args.quick else sorted({int(s) for s in args.sizes.split(",")})
    folder = data_dir(args.data)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="heredity-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"sizes": {}, "per_prompt": PER_PROMPT, "metrics": METRICS, "cores": os.cpu_count(),
                     "load_avg_start": round(os.getloadavg()[0], 2)}
    try:
        unique_pool = work / "unique"
        n_unique = build_pool(folder, 0, unique_pool, unique=True)
        unique = measure("score-only", unique_pool, args, args.timeout)
        results["unique"] = {"candidates": n_unique, **unique}
        results["unique_texts_per_s"] = round(n_unique / unique["score_s"], 1)
        print(f"unique answers: {n_unique} scored in {unique['score_s']:.1f}s "
              f"({results['unique_texts_per_s']:.0f} texts/s, peak {unique['peak_rss_mb']} MB)", flush=True)
        ref_sizes = sorted({10_000, *(s for s in sizes if s <= args.reference_max)})
        for size in sorted(set(sizes) | set(ref_sizes)):
            pool = work / f"pool-{size}"
            entry: dict = {"distinct_texts": build_pool(folder, size, pool)}
            if size in sizes:
                got = measure("stream", pool, args, args.timeout)
                entry.update(got, seconds_per_candidate=got["seconds"] / size)
                print(f"{size:>9,} candidates: {got['seconds']:7.1f}s (score {got['score_s']:.1f}s, select "
                      f"{got['select_s']:.1f}s), peak RSS {got['peak_rss_mb']} MB "
                      f"(before the stages {got['rss_before_mb']} MB), {entry['distinct_texts']} distinct texts", flush=True)
            if size in ref_sizes:
                ref = measure("reference", pool, args, args.timeout)
                entry["reference_inmemory"] = ref
                print(f"{size:>9,} candidates, in-memory reference: {ref['seconds']:7.1f}s, "
                      f"peak RSS {ref['peak_rss_mb']} MB", flush=True)
            results["sizes"][str(size)] = entry
            shutil.rmtree(pool, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    largest = max(sizes)
    big = results["sizes"][str(largest)]
    ref10 = results["sizes"]["10000"]["reference_inmemory"]
    # per candidate, the reference at 10k extrapolated linearly vs streaming at the largest size
    results[f"ratio_seconds_per_candidate_vs_inmemory_10k_extrapolated_to_{largest}"] = round(
        (ref10["seconds"] / 10_000) / big["seconds_per_candidate"], 3)
    both = [s for s in sizes if "reference_inmemory" in results["sizes"][str(s)]]
    if both:  # same pool, same run: the plain comparison
        at = results["sizes"][str(max(both))]
        results[f"ratio_seconds_vs_inmemory_at_{max(both)}"] = round(at["reference_inmemory"]["seconds"] / at["seconds"], 3)
        results[f"ratio_rss_vs_inmemory_at_{max(both)}"] = round(
            at["reference_inmemory"]["peak_rss_mb"] / at["peak_rss_mb"], 3)
    if len(sizes) > 1:
        small = results["sizes"][str(min(sizes))]
        # > 1: the largest pool costs more per candidate than the smallest (worse than linear)
        results["time_growth_per_candidate"] = round(big["seconds_per_candidate"] / small["seconds_per_candidate"], 3)
    if "1000000" in results["sizes"]:
        results["seconds_1m"] = results["sizes"]["1000000"]["seconds"]
        results["peak_rss_mb_1m"] = results["sizes"]["1000000"]["peak_rss_mb"]
    results["load_avg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
