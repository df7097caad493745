"""Generation speed: heredity's backends against the plain way of doing the same work.

One run, one set of requests: the first ``--prompts`` bundled quickstart prompts, ``--k``
samples each (temperature 1, top_p 1, ``--max-new-tokens``), on the embedded model, CPU.

1. transformers: ``TransformersBackend.generate`` in batches of ``--batch-size`` against a
   plain batched ``model.generate(do_sample=True)`` loop over the same batches (same model
   object, left padding, top_k disabled so both sample the full softmax). The two draw
   different samples, so batches may run a different number of decoding steps; the ratio is
   therefore taken on *decoded positions per second* (rows x steps / seconds), which
   compares the cost of a step, and per *CPU* second (the process's CPU time, with one torch
   thread), which time spent descheduled by other processes on a shared machine does not
   inflate: that is the headline ratio; the wall-clock ratios are reported beside it.
   Completion tokens per second are shown too. Batches are interleaved (heredity, plain,
   plain, heredity, ...) over ``--rounds`` passes and each batch's best time is kept.
2. openai: the openai backend with ``--concurrency`` requests in flight against the same
   requests sent one at a time (a plain httpx loop), both to one local server
   (tests/backends/openai_server.py) that decodes up to ``--server-max-batch`` waiting
   requests together, as vLLM or TGI would. Completion tokens per second.

Prints a table, then, as its last line, one JSON object with the figures. ``ratio_*`` keys
are heredity / plain, higher is better for heredity.

    PYTHONPATH=src python benchmarks/generate.py [--prompts 16] [--k 4] [--max-new-tokens 48]

``--backend vllm --model MODEL`` (for a GPU machine) measures instead heredity's vllm backend
on ``MODEL`` (default: the embedded model) and the same requests, in its two modes on one
engine: ``n_per_prompt`` (each prompt's k samples as one request with ``n=k``, so the prompt
is computed once) against k separate seeded requests per prompt. Completion tokens per
second, best of ``--rounds`` interleaved runs, the prefix cache emptied before each run so
neither mode reuses prompts the other computed; ``ratio_vllm_n_equals_k_vs_separate`` is
n=k / separate. Without vLLM or a GPU it exits with a one-line message. **Unmeasured so
far**: written on a machine without a GPU or vLLM, never run.

    PYTHONPATH=src python benchmarks/generate.py --backend vllm --prompts 120 --k 8 --max-new-tokens 128
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
sys.path.insert(0, str(REPO / "tests" / "backends"))  # the local OpenAI-compatible server

from heredity.backends import Request  # noqa: E402
from heredity.backends.transformers_backend import TransformersBackend, eos_ids  # noqa: E402
from heredity.config import SamplingConfig, TeacherConfig  # noqa: E402
from heredity.core.models import chat_messages  # noqa: E402
from heredity.core.prompts import read_rows  # noqa: E402

MODEL = "embedded:smollm2-135m-instruct"


def build_requests(n_prompts: int, k: int) -> list[Request]:
    rows, _ = read_rows("bundled:quickstart")
    return [Request(chat_messages(row["prompt"], None), seed=1000 * i + j)
            for i, row in enumerate(rows[:n_prompts]) for j in range(k)]


def batches(items: list, size: int) -> list[list]:
    return [items[i: i + size] for i in range(0, len(items), size)]


# ------------------------------------------------------------------------ transformers


def steps_taken(completion_tokens: list[int], stopped: list[bool], cap: int) -> int:
    """Decoding steps a batch ran: until its last row emitted its stop token or hit the cap."""
    return min(cap, max(n + int(s) for n, s in zip(completion_tokens, stopped)))


def run_heredity(backend: TransformersBackend, batch: list[Request], sampling: SamplingConfig) -> dict:
    started, cpu = time.perf_counter(), time.process_time()
    out = backend.generate(batch, sampling)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    tokens = [c.completion_tokens for c in out]
    steps = steps_taken(tokens, [c.finish_reason == "stop" for c in out], sampling.max_new_tokens)
    return {"seconds": seconds, "cpu_seconds": cpu, "tokens": sum(tokens), "positions": len(batch) * steps}


def run_plain(model, tokenizer, batch: list[Request], sampling: SamplingConfig, seed: int) -> dict:
    """What one would write without heredity: template, pad left, model.generate(do_sample)."""
    import torch
    from transformers import GenerationConfig

    started, cpu = time.perf_counter(), time.process_time()
    texts = [tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in batch]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    stop = eos_ids(model, tokenizer)
    config = GenerationConfig(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
                              max_new_tokens=sampling.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=stop)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**enc, generation_config=config)
    rows = out[:, enc["input_ids"].shape[1]:].tolist()
    tokens, stopped = [], []
    for ids in rows:
        end = next((i for i, t in enumerate(ids) if t in stop), None)
        body = ids if end is None else ids[:end]
        tokenizer.decode(body, skip_special_tokens=True)  # part of the work, as in heredity
        tokens.append(len(body))
        stopped.append(end is not None)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    steps = steps_taken(tokens, stopped, sampling.max_new_tokens)
    return {"seconds": seconds, "cpu_seconds": cpu, "tokens": sum(tokens), "positions": len(batch) * steps}


def bench_transformers(requests: list[Request], sampling: SamplingConfig, batch_size: int, rounds: int):
    """Best wall and CPU time of each batch on each side over ``rounds`` interleaved passes.

    Other processes can only slow a run down, so a batch's fastest run is the closest to its
    cost. Both sides repeat exactly the same work each round: heredity's samples follow the
    request seeds, and the plain loop reseeds torch with the batch number.
    """
    backend = TransformersBackend(TeacherConfig(model=MODEL), "cpu")
    model, tokenizer = backend.model, backend.tokenizer
    warm = requests[: min(4, len(requests))]  # first calls pay one-off costs: not timed
    backend.generate(warm, SamplingConfig(temperature=1.0, max_new_tokens=4))
    run_plain(model, tokenizer, warm, SamplingConfig(temperature=1.0, max_new_tokens=4), 0)
    groups = batches(requests, batch_size)
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in range(rounds):
        for b, batch in enumerate(groups):
            sides = ["heredity", "plain"] if (r + b) % 2 == 0 else ["plain", "heredity"]
            for side in sides:
                if side == "heredity":
                    got = run_heredity(backend, batch, sampling)
                else:
                    got = run_plain(model, tokenizer, batch, sampling, seed=b)
                runs.setdefault((side, b), []).append(got)
    totals = {"heredity": _zero(), "plain": _zero()}
    for (side, _), got in runs.items():
        totals[side]["seconds"] += min(g["seconds"] for g in got)
        totals[side]["cpu_seconds"] += min(g["cpu_seconds"] for g in got)
        totals[side]["tokens"] += got[0]["tokens"]  # the same work every round
        totals[side]["positions"] += got[0]["positions"]
    return backend, totals


def _zero() -> dict:
    return {"seconds": 0.0, "cpu_seconds": 0.0, "tokens": 0, "positions": 0}


# ------------------------------------------------------------------------------ openai


def bench_openai(model, tokenizer, requests: list[Request], sampling: SamplingConfig,
                 concurrency: int, server_max_batch: int) -> dict:
    import httpx
    from openai_server import LocalChatServer

    from heredity.backends import open_backend

    with LocalChatServer(model, tokenizer, served_model=MODEL, max_batch=server_max_batch) as server:
        teacher = TeacherConfig(model=MODEL, backend="openai",
                                openai={"base_url": server.base_url, "concurrency": concurrency,
                                        "timeout_s": 3600.0})
        backend = open_backend(teacher, "cpu")
        backend.generate(requests[:1], SamplingConfig(temperature=1.0, max_new_tokens=4))  # warm-up
        server.reset()

        started = time.perf_counter()
        concurrent = backend.generate(requests, sampling)
        concurrent_s = time.perf_counter() - started
        batch_sizes = list(server.stats.batch_sizes)

        # the baseline a user writes without heredity: one request after another
        url = server.base_url + "/chat/completions"
        sequential = []
        started = time.perf_counter()
        with httpx.Client(timeout=3600.0) as client:
            for req in requests:
                response = client.post(url, json={
                    "model": MODEL, "messages": req.messages, "temperature": sampling.temperature,
                    "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens, "seed": req.seed, "n": 1})
                response.raise_for_status()
                body = response.json()
                sequential.append((body["choices"][0]["message"]["content"], body["usage"]["completion_tokens"]))
        sequential_s = time.perf_counter() - started
    return {
        "concurrent": {"seconds": concurrent_s, "tokens": sum(c.completion_tokens for c in concurrent)},
        "sequential": {"seconds": sequential_s, "tokens": sum(n for _, n in sequential)},
        "same_texts": sum(c.text == t for c, (t, _) in zip(concurrent, sequential)),
        "mean_server_batch": sum(batch_sizes) / max(len(batch_sizes), 1),
    }


def bench_llamacpp(requests: list[Request], sampling: SamplingConfig, threads: int) -> dict | None:
    """The llamacpp backend on the same GGUF weights and requests; None without llama-cpp-python."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("\nllamacpp: llama-cpp-python not installed, skipped")
        return None
    from heredity.backends import open_backend

    backend = open_backend(TeacherConfig(backend="llamacpp", llamacpp={"n_threads": max(threads, 1)}), "cpu")
    started = time.perf_counter()
    completions = backend.generate(requests, sampling)
    seconds = time.perf_counter() - started
    backend.close()
    return {"seconds": seconds, "tokens": sum(c.completion_tokens for c in completions)}


# -------------------------------------------------------------------------------- vllm


def vllm_missing() -> str | None:
    """Why the vllm mode cannot run here, in one line; None when it can."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install 'heredity[vllm]' on a machine with a GPU)"
    import torch

    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU and none is visible"
    return None


def bench_vllm(model: str, requests: list[Request], sampling: SamplingConfig, rounds: int,
               gpu_memory_utilization: float) -> dict:
    """n=k per prompt vs k separate seeded requests, on one engine (only their grouping differs)."""
    import torch
    import vllm

    from heredity.backends import open_backend

    teacher = TeacherConfig(model=model, backend="vllm", vllm={"gpu_memory_utilization": gpu_memory_utilization})
    backend = open_backend(teacher, "cuda")
    modes = {"n_equals_k": True, "separate": False}
    for grouped in modes.values():  # compilation, CUDA graphs, allocator: not timed
        backend.n_per_prompt = grouped
        backend.generate(requests[: min(16, len(requests))], SamplingConfig(temperature=1.0, max_new_tokens=8))
    best = {name: {"seconds": float("inf"), "tokens": 0} for name in modes}
    reset = getattr(backend.llm, "reset_prefix_cache", None)  # older vLLM releases lack it
    for r in range(rounds):
        order = list(modes) if r % 2 == 0 else list(reversed(modes))
        for name in order:
            backend.n_per_prompt = modes[name]
            if reset is not None:
                reset()  # or the second mode would find the prompts computed
            torch.cuda.synchronize()
            started = time.perf_counter()
            out = backend.generate(requests, sampling)
            seconds = time.perf_counter() - started
            if seconds < best[name]["seconds"]:
                best[name] = {"seconds": seconds, "tokens": sum(c.completion_tokens for c in out)}
    backend.close()
    return {**best, "vllm_version": vllm.__version__, "gpu": torch.cuda.get_device_name(),
            "prefix_cache_reset": reset is not None}


def main_vllm(args) -> int:
    why = vllm_missing()
    if why is not None:
        print(f"benchmarks/generate.py --backend vllm: {why}", file=sys.stderr)
        return 2
    requests = build_requests(args.prompts, args.k)
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    got = bench_vllm(args.model, requests, sampling, args.rounds, args.gpu_memory_utilization)
    rate = {name: got[name]["tokens"] / got[name]["seconds"] for name in ("n_equals_k", "separate")}
    print(f"{len(requests)} requests ({len(requests) // args.k} prompts x k={args.k}), "
          f"max_new_tokens={args.max_new_tokens}, T=1, {args.model} on {got['gpu']}, vLLM {got['vllm_version']}, "
          f"best of {args.rounds}\n")
    print(f"{'vllm backend':<32}{'seconds':>9}{'tokens':>8}{'tok/s':>10}")
    for name, label in (("n_equals_k", f"n={args.k} per prompt"), ("separate", f"{args.k} separate requests")):
        print(f"{label:<32}{got[name]['seconds']:>9.2f}{got[name]['tokens']:>8}{rate[name]:>10.1f}")
    print(json.dumps({
        "backend": "vllm", "model": args.model, "gpu": got["gpu"], "vllm_version": got["vllm_version"],
        "prefix_cache_reset": got["prefix_cache_reset"], "requests": len(requests), "k": args.k, "max_new_tokens": args.max_new_tokens, "rounds": args.rounds,
        "vllm_n_equals_k_tokens_per_s": round(rate["n_equals_k"], 2),
        "vllm_separate_tokens_per_s": round(rate["separate"], 2),
        "ratio_vllm_n_equals_k_vs_separate": round(rate["n_equals_k"] / rate["separate"], 3),
    }))
    return 0


# -------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved passes over the batches, best kept (transformers part)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--server-max-batch", type=int, default=8)
    parser.add_argument("--skip-openai", action="store_true")
    parser.add_argument("--skip-llamacpp", action="store_true", help="(measured only where llama-cpp-python is installed)")
    # One intra-op thread by default: on a shared machine, a thread waiting at a barrier for a
    # descheduled sibling makes every op several times slower (measured: 10x on 2 busy cores),
    # which would swamp the differences this benchmark is after. 0 keeps torch's default.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", choices=("transformers", "vllm"), default="transformers",
                        help="transformers: the CPU comparisons above; vllm: n=k vs separate requests on a GPU")
    parser.add_argument("--model", default=MODEL, help="the model (--backend vllm only)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="(--backend vllm only)")
    args = parser.parse_args()
    if args.backend == "vllm":
        return main_vllm(args)
    if args.model != MODEL:
        parser.error("--model is only for --backend vllm; the CPU comparisons use the embedded model")

    import torch

    from heredity.pipeline import quiet_libraries

    quiet_libraries()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    requests = build_requests(args.prompts, args.k)
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    backend, tf = bench_transformers(requests, sampling, args.batch_size, args.rounds)

    def rate(side: dict, what: str, clock: str = "seconds") -> float:
        return side[what] / side[clock]

    her, plain = tf["heredity"], tf["plain"]
    print(f"{len(requests)} requests ({args.prompts} prompts x k={args.k}), max_new_tokens={args.max_new_tokens}, "
          f"T=1, batch size {args.batch_size}, torch threads={torch.get_num_threads()}, "
          f"best of {args.rounds} per batch")
    print()
    print(f"{'transformers':<30}{'wall s':>8}{'CPU s':>8}{'tokens':>8}{'tok/s':>8}"
          f"{'positions/s':>13}{'positions/CPU s':>17}")
    for name, side in (("heredity TransformersBackend", her), ("plain model.generate", plain)):
        print(f"{name:<30}{side['seconds']:>8.2f}{side['cpu_seconds']:>8.2f}{side['tokens']:>8}"
              f"{rate(side, 'tokens'):>8.1f}{rate(side, 'positions'):>13.1f}"
              f"{rate(side, 'positions', 'cpu_seconds'):>17.1f}")
    figures = {
        "requests": len(requests),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(),
        "transformers_tokens_per_s": round(rate(her, "tokens"), 2),
        "plain_generate_tokens_per_s": round(rate(plain, "tokens"), 2),
        "transformers_positions_per_cpu_s": round(rate(her, "positions", "cpu_seconds"), 2),
        "plain_generate_positions_per_cpu_s": round(rate(plain, "positions", "cpu_seconds"), 2),
        # the headline: decoding work per CPU second, immune to time spent descheduled
        "ratio_transformers_vs_plain_generate": round(
            rate(her, "positions", "cpu_seconds") / rate(plain, "positions", "cpu_seconds"), 3),
        "ratio_transformers_vs_plain_generate_wall": round(
            rate(her, "positions") / rate(plain, "positions"), 3),
        "ratio_transformers_vs_plain_generate_tokens_wall": round(rate(her, "tokens") / rate(plain, "tokens"), 3),
    }

    if not args.skip_openai:
        oa = bench_openai(backend.model, backend.tokenizer, requests, sampling, args.concurrency,
                          args.server_max_batch)
        print()
        print(f"{'openai (local server)':<34}{'seconds':>9}{'tokens':>8}{'tok/s':>9}")
        for name, side in ((f"backend, concurrency {args.concurrency}", oa["concurrent"]),
                           ("sequential requests", oa["sequential"])):
            print(f"{name:<34}{side['seconds']:>9.2f}{side['tokens']:>8}{rate(side, 'tokens'):>9.1f}")
        print(f"server decoded {oa['mean_server_batch']:.1f} requests per batch on average; "
              f"{oa['same_texts']}/{len(requests)} texts identical in both modes")
        figures.update({
            "concurrency": args.concurrency,
            "server_max_batch": args.server_max_batch,
            "openai_concurrent_tokens_per_s": round(rate(oa["concurrent"], "tokens"), 2),
            "openai_sequential_tokens_per_s": round(rate(oa["sequential"], "tokens"), 2),
            "openai_same_texts": oa["same_texts"],
            "ratio_openai_concurrent_vs_sequential": round(
                rate(oa["concurrent"], "tokens") / rate(oa["sequential"], "tokens"), 3),
        })
    if not args.skip_llamacpp:
        lc = bench_llamacpp(requests, sampling, args.threads)
        if lc is not None:
            print()
            print(f"llamacpp backend (one request at a time, {args.threads} thread(s)): {lc['seconds']:.2f} s, "
                  f"{lc['tokens']} tokens, {rate(lc, 'tokens'):.1f} tok/s")
            figures.update({
                "llamacpp_tokens_per_s": round(rate(lc, "tokens"), 2),
                # both are heredity backends; this says which one to pick for a GGUF teacher on CPU
                "ratio_llamacpp_vs_transformers_backend": round(rate(lc, "tokens") / rate(her, "tokens"), 3),
            })
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
