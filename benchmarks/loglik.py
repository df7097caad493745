"""Speed and agreement of heredity's batched log-likelihood scorer against one-at-a-time scoring.

Scores the four endings of ``--items`` HellaSwag validation items (the first ones of
shared/data/hellaswag) given their contexts, with the same model, three ways:

* ``batched``: ``loglik.score_groups`` as the profile suites call it (shared context run once,
  its key/value cache reused by the four endings, several items per forward pass);
* ``batched, no prefix sharing``: the same batches with every full sequence run on its own row;
* ``one at a time``: ``loglik.score_one_by_one``, one unpadded (context + ending) per forward pass,
  logits from ``model(...)`` itself, only the ending's positions projected (``logits_to_keep``).

Each way runs ``--repeats`` times, interleaved, and its best run is reported (the machine may be
shared). Prints a table, then, as its last line, one JSON object; ``ratio_loglik_items_per_s`` is
batched / one-at-a-time items per second (higher is better for heredity). Exits 1 if any summed
log-likelihood differs from the one-at-a-time value by more than ``--tolerance``.

On a machine whose cores are oversubscribed by other processes, ``--threads 1`` is much faster
than torch's default of one thread per core (threads then wait on each other).

    python benchmarks/loglik.py [--items 60] [--batch-size 32] [--repeats 2] [--threads N] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import heredity  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(REPO / "src"))

import torch

from heredity.core import loglik
from heredity.core.models import load_model
from heredity.profile import scoring_tokenizer

MODEL = "embedded:smollm2-135m-instruct"


def data_dir(arg: str | None) -> Path:
    from heredity.core.data import default_data_dir

    return Path(arg) if arg else default_data_dir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    path = data_dir(args.data) / "hellaswag" / "hellaswag_val.jsonl"
    if not path.is_file():
        sys.exit(f"no HellaSwag data at {path}")
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for _, line in zip(range(args.items), fh)]
    model = load_model(args.model)
    tokenizer = scoring_tokenizer(args.model)
    seqs = loglik.encode_continuations(tokenizer, [(r["ctx"], " " + e) for r in rows for e in r["endings"]])
    groups = [seqs[i : i + 4] for i in range(0, len(seqs), 4)]
    scored_tokens = sum(len(s.ids) - s.start for s in seqs)
    fed_tokens = sum(len(s.ids) for s in seqs)

    runs = {
        "batched": lambda: [x for g in loglik.score_groups(model, groups, args.batch_size, share_prefix=True) for x in g],
        "batched, no prefix sharing": lambda: [
            x for g in loglik.score_groups(model, groups, args.batch_size, share_prefix=False) for x in g],
        "one at a time": lambda: loglik.score_one_by_one(model, seqs),
    }
    loglik.score_groups(model, groups[:2], args.batch_size)  # warm-up: first-call allocations, checks
    best = {name: (float("inf"), None) for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            out = fn()
            elapsed = time.perf_counter() - start
            if elapsed < best[name][0]:
                best[name] = (elapsed, out)

    reference = best["one at a time"][1]
    diffs = {name: max(abs(a.total - b.total) for a, b in zip(out, reference)) for name, (_, out) in best.items()}
    same_counts = all(a.n_tokens == b.n_tokens for _, (_, out) in best.items() for a, b in zip(out, reference))
    per_s = {name: len(rows) / t for name, (t, _) in best.items()}

    print(f"{len(rows)} HellaSwag items x 4 endings = {len(seqs)} sequences, {fed_tokens} tokens fed "
          f"({scored_tokens} scored); model {args.model}; {torch.get_num_threads()} torch threads; "
          f"batch {args.batch_size} sequences; best of {args.repeats}")
    print(f"{'method':<28} {'seconds':>9} {'items/s':>9} {'max |diff|':>11}")
    for name, (t, _) in best.items():
        print(f"{name:<28} {t:>9.2f} {per_s[name]:>9.2f} {diffs[name]:>11.2e}")
    agree = same_counts and max(diffs.values()) <= args.tolerance
    figures = {
        "items": len(rows),
        "sequences": len(seqs),
        "tokens_fed": fed_tokens,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "items_per_s_batched": round(per_s["batched"], 3),
        "items_per_s_batched_no_prefix_sharing": round(per_s["batched, no prefix sharing"], 3),
        "items_per_s_one_at_a_time": round(per_s["one at a time"], 3),
        "ratio_loglik_items_per_s": round(per_s["batched"] / per_s["one at a time"], 3),
        "ratio_prefix_sharing": round(per_s["batched"] / per_s["batched, no prefix sharing"], 3),
        "max_abs_diff": max(diffs.values()),
        "agree": agree,
    }
    print(json.dumps(figures))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
