"""Training throughput of heredity's train stage against plain TRL on the same data and settings.

Both sides fine-tune the same student (``--student``: by default the embedded
SmolLM2-135M-Instruct; a hub id or a local folder for a bigger one) on the same real
prompt/answer pairs (gpt-3.5-turbo's AlpacaEval answers) with the same hyper-parameters:

* heredity: ``heredity.training.sft.train_student`` as the pipeline calls it (a log entry per step
  with tokens/s, too-long counting, saving the model; checkpoints at the default cadence of
  every 200 steps, so none falls inside runs this short);
* plain: a bare ``trl.SFTTrainer`` with the same SFTConfig hyper-parameters and TRL's defaults
  for everything else, then ``save_pretrained``.

Throughput is non-padding training tokens / wall time of ``trainer.train()`` on each side;
the token count is the same by construction and is checked. Every run is a fresh process,
so each side's peak memory (RSS, whole process; CUDA peak allocated on a GPU) is its own.
Runs alternate between the sides, ``--repeats`` each, and each side's best run is reported
(on a shared machine the best run is the one least disturbed by others).

Prints a table, then, as its last line, one JSON object with the figures;
``ratio_train_tokens_per_s`` is heredity / plain (target >= 0.97).

    python benchmarks/train.py [--examples 16] [--repeats 3] [--max-length 256] [--threads N] [--device cpu]
    python benchmarks/train.py --student Qwen/Qwen2.5-0.5B-Instruct --device cuda --bf16   # a GPU session

Precision is heredity's: bf16 on a GPU that supports it, fp32 otherwise; the plain side uses
the same. ``--bf16`` / ``--no-bf16`` state what is expected and stop the benchmark if the
device would train otherwise, so a recorded figure always says what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import heredity  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(REPO / "src"))

STUDENT = "embedded:smollm2-135m-instruct"


def uses_bf16(device: str) -> bool:
    """heredity's precision rule (training/sft.py, core/models.py), which both sides follow."""
    import torch

    return device.startswith("cuda") and torch.cuda.is_bf16_supported()


def data_dir(arg: str | None) -> Path:
    from heredity.core.data import default_data_dir

    return Path(arg) if arg else default_data_dir()


def load_pairs(root: Path, n: int) -> list[dict[str, str]]:
    path = root / "alpaca_eval" / "gpt-3.5-turbo-0613.json"
    if not path.is_file():
        sys.exit(f"{path} not found (use --data DIR)")
    items = json.loads(path.read_text(encoding="utf-8"))
    return [{"prompt": r["instruction"], "text": r["output"]} for r in items[:n]]


def whole_process_peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def run_heredity(job: dict) -> dict:
    from heredity.config import TrainConfig
    from heredity.training.sft import train_student

    tc = TrainConfig(**job["train"])
    with tempfile.TemporaryDirectory() as tmp:
        info = train_student(job["student"], job["rows"], tc, None, job["device"], Path(tmp) / "model",
                             Path(tmp) / "checkpoints")
    return {"tokens": info["tokens"], "train_seconds": info["train_seconds"], "steps": info["steps"],
            "peak_gpu_mb": info["peak_gpu_mb"], "train_only_peak_rss_mb": info["peak_rss_mb"]}


def run_plain(job: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from heredity.core.models import (
        resolve,  # only to find the converted embedded model's folder
    )

    t = job["train"]
    device = job["device"]
    if device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(len(os.sched_getaffinity(0)))  # heredity's thread policy, so both match
    path = resolve(job["student"])["pretrained_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    bf16 = uses_bf16(device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32).to(device)
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "completion": [{"role": "assistant", "content": r["text"]}]} for r in job["rows"]]
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(
            output_dir=tmp, num_train_epochs=t["epochs"], learning_rate=t["learning_rate"],
            lr_scheduler_type=t["lr_scheduler"], warmup_steps=t["warmup_ratio"], weight_decay=t["weight_decay"],
            per_device_train_batch_size=t["batch_size"], gradient_accumulation_steps=t["gradient_accumulation_steps"],
            max_length=t["max_length"], seed=t["seed"], data_seed=t["seed"], completion_only_loss=True,
            report_to="none", use_cpu=device == "cpu", bf16=bf16, disable_tqdm=True, dataloader_num_workers=0,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        trainer.model.save_pretrained(Path(tmp) / "model")
    # Non-padding tokens the epochs went through: what heredity's counter (TRL's num_tokens) counts.
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * t["epochs"]
    return {"tokens": int(tokens), "train_seconds": round(seconds, 2), "steps": trainer.state.global_step,
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None,
            "train_only_peak_rss_mb": None}


def worker(side: str, job_path: str) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    from heredity.pipeline import quiet_libraries

    quiet_libraries()
    job = json.loads(Path(job_path).read_text())
    figures = run_heredity(job) if side == "heredity" else run_plain(job)
    figures["peak_rss_mb"] = whole_process_peak_rss_mb()
    print(json.dumps(figures))


def spawn(side: str, job_path: Path, threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # both sides leave torch's thread count to it
    proc = subprocess.run([sys.executable, __file__, "--worker", side, str(job_path)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        sys.exit(f"{side} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--method", choices=["full", "lora"], default="full")
    parser.add_argument("--student", default=STUDENT,
                        help="model to fine-tune: embedded:NAME, a hub id or a local folder (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="expect bf16 (or fp32 with --no-bf16); default: whatever the device gives")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both sides (OMP_NUM_THREADS); default: heredity's choice")
    parser.add_argument("--data", default=None)
    parser.add_argument("--worker", nargs=2, metavar=("SIDE", "JOB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    if args.method == "lora":
        sys.exit("--method lora: the plain side is full fine-tuning only; compare full")

    from heredity.config import TrainConfig
    from heredity.core.models import pick_device, resolve
    from heredity.errors import HeredityError

    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        sys.exit(f"--device {args.device}: use cpu, cuda or cuda:N")
    try:
        device = pick_device(args.device)
        resolve(args.student)  # convert an embedded model once, outside every timed run
    except HeredityError as exc:
        sys.exit(str(exc))
    bf16 = uses_bf16(device)
    if args.bf16 is not None and args.bf16 != bf16:
        sys.exit(f"--{'' if args.bf16 else 'no-'}bf16: heredity trains in {'bf16' if bf16 else 'fp32'} on {device} "
                 f"(bf16 needs a GPU that supports it)")
    train = TrainConfig(method=args.method, epochs=args.epochs, batch_size=args.batch_size,
                        max_length=args.max_length, learning_rate=1e-5).model_dump()
    job = {"rows": load_pairs(data_dir(args.data), args.examples), "train": train, "device": device,
           "student": args.student}
    runs: dict[str, list[dict]] = {"plain": [], "heredity": []}
    with tempfile.TemporaryDirectory() as tmp:
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        for _ in range(args.repeats):
            for side in ("plain", "heredity"):
                runs[side].append(spawn(side, job_path, args.threads))

    for side, side_runs in runs.items():
        for r in side_runs:
            r["tokens_per_s"] = r["tokens"] / r["train_seconds"]
    tokens = {r["tokens"] for rs in runs.values() for r in rs}
    steps = {r["steps"] for rs in runs.values() for r in rs}
    if len(tokens) != 1 or len(steps) != 1:
        sys.exit(f"the two sides did not train on the same work: tokens {tokens}, steps {steps}")
    best = {side: max(rs, key=lambda r: r["tokens_per_s"]) for side, rs in runs.items()}

    print(f"{args.examples} examples, batch {args.batch_size}, max_length {args.max_length}, "
          f"{args.epochs:g} epoch(s) = {steps.pop()} steps, {tokens.pop()} tokens, {args.student}, {device}, "
          f"{'bf16' if bf16 else 'fp32'}, "
          f"threads {args.threads or 'default'}; "
          f"best of {args.repeats} runs per side\n")
    print(f"{'side':<10}{'tokens/s':>10}{'all runs':>22}{'train s':>9}{'peak RSS MB':>13}{'peak GPU MB':>13}")
    for side in ("plain", "heredity"):
        b = best[side]
        every = ", ".join(f"{r['tokens_per_s']:.0f}" for r in runs[side])
        gpu = "-" if b["peak_gpu_mb"] is None else f"{b['peak_gpu_mb']:.0f}"
        print(f"{side:<10}{b['tokens_per_s']:>10.1f}{every:>22}{b['train_seconds']:>9.1f}"
              f"{b['peak_rss_mb']:>13.0f}{gpu:>13}")
    ratio = best["heredity"]["tokens_per_s"] / best["plain"]["tokens_per_s"]
    median = {side: statistics.median(r["tokens_per_s"] for r in rs) for side, rs in runs.items()}
    median_ratio = median["heredity"] / median["plain"]
    print(f"\nheredity / plain tokens/s: {ratio:.3f} best vs best, {median_ratio:.3f} median vs median "
          f"(target >= 0.97)")
    figures = {
        "benchmark": "train", "student": args.student, "device": device, "bf16": bf16, "threads": args.threads,
        "examples": args.examples,
        "repeats": args.repeats,
        "batch_size": args.batch_size, "max_length": args.max_length, "epochs": args.epochs,
        "steps": best["plain"]["steps"], "tokens": best["plain"]["tokens"],
        "plain_tokens_per_s": round(best["plain"]["tokens_per_s"], 2),
        "heredity_tokens_per_s": round(best["heredity"]["tokens_per_s"], 2),
        "ratio_train_tokens_per_s": round(ratio, 4),
        "ratio_train_tokens_per_s_median": round(median_ratio, 4),
        "plain_peak_rss_mb": best["plain"]["peak_rss_mb"],
        "heredity_peak_rss_mb": best["heredity"]["peak_rss_mb"],
        "heredity_train_only_peak_rss_mb": best["heredity"]["train_only_peak_rss_mb"],
        "plain_peak_gpu_mb": best["plain"]["peak_gpu_mb"],
        "heredity_peak_gpu_mb": best["heredity"]["peak_gpu_mb"],
        "plain_tokens_per_s_runs": [round(r["tokens_per_s"], 2) for r in runs["plain"]],
        "heredity_tokens_per_s_runs": [round(r["tokens_per_s"], 2) for r in runs["heredity"]],
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
