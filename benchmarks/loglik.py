"""Speed and agreement of heredity's batched log-likelihood scorer against one-at-a-time scoring
and against lm-evaluation-harness.

Scores the four endings of ``--items`` HellaSwag validation items (the first ones of
shared/data/hellaswag) given their contexts, with the same model, four ways:

* ``batched``: ``loglik.score_groups`` as the profile suites call it (shared context run once,
  its key/value cache reused by the four endings, several items per forward pass);
* ``batched, no prefix sharing``: the same batches with every full sequence run on its own row;
* ``one at a time``: ``loglik.score_one_by_one``, one unpadded (context + ending) per forward pass,
  logits from ``model(...)`` itself, only the ending's positions projected (``logits_to_keep``);
* ``lm-evaluation-harness``: the harness's own Hugging Face model class
  (``lm_eval.models.huggingface.HFLM``, loaded from the same local model folder, same batch size)
  and its ``loglikelihood`` on the same (context, ending) requests as ``Instance`` objects. Each
  context is given with heredity's start token written in front (the harness then adds no other),
  so both see the same token ids; the benchmark checks that they do.

Each way runs ``--repeats`` times, interleaved, and its best run is reported (the machine may be
shared). Prints a table, then, as its last line, one JSON object; ``ratio_loglik_items_per_s`` is
batched / one-at-a-time items per second and ``ratio_vs_lm_eval_harness`` harness seconds /
heredity (batched) seconds (higher is better for heredity). Exits 1 if any summed log-likelihood
differs from the one-at-a-time value by more than ``--tolerance``, or from the harness's by more
than ``--harness-tolerance`` nats. ``--no-harness`` leaves the harness out (it is optional:
``pip install 'heredity[lm-eval]'``).

On a machine whose cores are oversubscribed by other processes, ``--threads 1`` is much faster
than torch's default of one thread per core (threads then wait on each other).

    python benchmarks/loglik.py [--items 60] [--batch-size 32] [--repeats 2] [--threads N] [--data DIR]
    python benchmarks/loglik.py --quick     # a smoke run: 8 items, 1 repeat
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
from heredity.core.models import load_model, resolve
from heredity.profile import scoring_tokenizer

MODEL = "embedded:smollm2-135m-instruct"
HARNESS = "lm-evaluation-harness"


def lm_eval_version() -> str:
    import lm_eval

    return lm_eval.__version__


def data_dir(arg: str | None) -> Path:
    from heredity.core.data import full_data_dir

    return full_data_dir(arg, "hellaswag/hellaswag_val.jsonl")


def harness_run(model_ref: str, tokenizer, pairs: list[tuple[str, str]], seqs, batch_size: int):
    """lm-evaluation-harness's HFLM on the same model folder, and a callable scoring ``pairs``.

    Returns ``(run, same_tokens)``: ``same_tokens`` says whether the harness encodes every request
    to exactly heredity's token ids (context part and scored part), so the figures compare the
    same work.
    """
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    source = resolve(model_ref)
    kwargs = {"gguf_file": source["gguf_file"]} if "gguf_file" in source else {}
    harness = HFLM(pretrained=source["pretrained_model_name_or_path"], device="cpu", dtype="float32",
                   batch_size=batch_size, **kwargs)
    # heredity conditions every sequence on one start token; the harness adds none to a non-empty
    # context, so it gets the same token written as text (kept whole: it is a special token)
    start = tokenizer.decode(loglik.start_ids(tokenizer))
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=(start + ctx, cont), idx=i)
                for i, (ctx, cont) in enumerate(pairs)]
    same_tokens = True
    for (ctx, cont), seq in zip(pairs, seqs):
        context_enc, continuation_enc = harness._encode_pair(start + ctx, cont)
        same_tokens &= (tuple(context_enc + continuation_enc) == seq.ids
                        and len(continuation_enc) == len(seq.ids) - seq.start)

    def run() -> list[loglik.LogLik]:
        out = harness.loglikelihood(requests, disable_tqdm=True)
        return [loglik.LogLik(float(logprob), len(s.ids) - s.start) for (logprob, _), s in zip(out, seqs)]

    harness.loglikelihood(requests[:8], disable_tqdm=True)  # warm-up, as heredity's below
    return run, same_tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--harness-tolerance", type=float, default=2e-3,
                        help="largest |difference| in nats allowed against lm-evaluation-harness")
    parser.add_argument("--no-harness", action="store_true", help="leave lm-evaluation-harness out")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 items, 1 repeat")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    if args.quick:
        args.items, args.repeats = min(args.items, 8), 1
    if args.threads:
        torch.set_num_threads(args.threads)

    path = data_dir(args.data) / "hellaswag" / "hellaswag_val.jsonl"
    if not path.is_file():
        sys.exit(f"no HellaSwag data at {path}")
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for _, line in zip(range(args.items), fh)]
    model = load_model(args.model)
    tokenizer = scoring_tokenizer(args.model)
    pairs = [(r["ctx"], " " + e) for r in rows for e in r["endings"]]
    seqs = loglik.encode_continuations(tokenizer, pairs)
    groups = [seqs[i : i + 4] for i in range(0, len(seqs), 4)]
    scored_tokens = sum(len(s.ids) - s.start for s in seqs)
    fed_tokens = sum(len(s.ids) for s in seqs)

    runs = {
        "batched": lambda: [x for g in loglik.score_groups(model, groups, args.batch_size, share_prefix=True) for x in g],
        "batched, no prefix sharing": lambda: [
            x for g in loglik.score_groups(model, groups, args.batch_size, share_prefix=False) for x in g],
        "one at a time": lambda: loglik.score_one_by_one(model, seqs),
    }
    same_tokens = None
    if not args.no_harness:
        runs[HARNESS], same_tokens = harness_run(args.model, tokenizer, pairs, seqs, args.batch_size)
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
    ours = [name for name in best if name != HARNESS]
    same_counts = all(a.n_tokens == b.n_tokens for name in ours for a, b in zip(best[name][1], reference))
    per_s = {name: len(rows) / t for name, (t, _) in best.items()}

    print(f"{len(rows)} HellaSwag items x 4 endings = {len(seqs)} sequences, {fed_tokens} tokens fed "
          f"({scored_tokens} scored); model {args.model}; {torch.get_num_threads()} torch threads; "
          f"batch {args.batch_size} sequences; best of {args.repeats}")
    print(f"{'method':<28} {'seconds':>9} {'items/s':>9} {'max |diff| vs one at a time':>28}")
    for name, (t, _) in best.items():
        print(f"{name:<28} {t:>9.2f} {per_s[name]:>9.2f} {diffs[name]:>28.2e}")
    agree = same_counts and max(diffs[name] for name in ours) <= args.tolerance
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
        "max_abs_diff": max(diffs[name] for name in ours),
        "agree": agree,
    }
    if HARNESS in best:
        # against heredity's batched scores, the ones the profile suites use
        vs_harness = max(abs(a.total - b.total) for a, b in zip(best["batched"][1], best[HARNESS][1]))
        harness_ok = bool(same_tokens) and vs_harness <= args.harness_tolerance
        print(f"lm-evaluation-harness {lm_eval_version()}: same token ids {same_tokens}, "
              f"max |batched - harness| {vs_harness:.2e} nats (tolerance {args.harness_tolerance:g})")
        figures.update({
            "lm_eval_version": lm_eval_version(),
            "items_per_s_lm_eval_harness": round(per_s[HARNESS], 3),
            "max_abs_diff_vs_lm_eval_harness": vs_harness,
            "same_tokens_as_lm_eval_harness": bool(same_tokens),
            "agree_with_lm_eval_harness": harness_ok,
            "ratio_vs_lm_eval_harness": round(best[HARNESS][0] / best["batched"][0], 3),
        })
        agree = agree and harness_ok
    print(json.dumps(figures))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
