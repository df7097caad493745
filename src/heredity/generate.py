"""Generate stage: k sampled candidates per train prompt from each teacher.

The transformers backend samples with the Gumbel-max trick and one random generator per
sequence, seeded from the candidate's own key. A candidate's text therefore does not depend
on which other sequences share its batch, so a resumed or extended run (more prompts,
larger k, another teacher) reproduces exactly the candidates an uninterrupted run makes.
Finished batches are written as Parquet shards straight away: a killed run loses at most
the batch in flight.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from heredity.config import RunConfig, SamplingConfig, TeacherConfig
from heredity.models import chat_messages, load_model, load_tokenizer, model_identity
from heredity.prompts import Prompt
from heredity.rundir import Stage, read_table, stable_hash, write_table


@dataclass(frozen=True)
class Request:
    """One sequence to decode."""

    messages: list[dict[str, str]]
    seed: int


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (end-of-turn token) or "length" (hit max_new_tokens)
    prompt_tokens: int
    completion_tokens: int


class _GumbelSampler:
    """Logits processor: temperature, nucleus filter, then Gumbel noise from per-row generators.

    Greedy decoding over the noised scores draws exactly from the filtered softmax.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
            cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            drop_sorted = cum - sorted_scores.softmax(dim=-1) >= self.top_p  # always keeps the top token
            drop = drop_sorted.scatter(1, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp_(1e-20, 1.0 - 1e-7)))
        return scores + gumbel.to(scores.device)


def eos_ids(model, tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return sorted(i for i in ids if i is not None)


def generate_batch(model, tokenizer, requests: Sequence[Request], sampling: SamplingConfig) -> list[Completion]:
    """Decode one batch (left-padded) and return one completion per request."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    texts = [
        tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in requests
    ]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    stop_ids = eos_ids(model, tokenizer)
    gen_config = GenerationConfig(
        do_sample=False,
        max_new_tokens=sampling.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_ids,
    )
    processors = LogitsProcessorList()
    if sampling.temperature > 0:
        processors.append(_GumbelSampler([r.seed for r in requests], sampling.temperature, sampling.top_p))
    with torch.inference_mode():
        out = model.generate(**enc, generation_config=gen_config, logits_processor=processors)
    new_tokens = out[:, enc["input_ids"].shape[1]:].tolist()
    prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
    completions = []
    stop = set(stop_ids)
    for ids, n_prompt in zip(new_tokens, prompt_lengths):
        end = next((i for i, t in enumerate(ids) if t in stop), None)
        body = ids if end is None else ids[:end]
        completions.append(
            Completion(
                text=tokenizer.decode(body, skip_special_tokens=True).strip(),
                finish_reason="length" if end is None else "stop",
                prompt_tokens=int(n_prompt),
                completion_tokens=len(body),
            )
        )
    return completions


def batched(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def length_sorted(requests: Sequence[Any], key: Callable[[Any], int]) -> list[Any]:
    """Group similar prompt lengths together so batches carry little padding."""
    return sorted(requests, key=key)


# ---------------------------------------------------------------------------- the stage


def teacher_fingerprint(teacher: TeacherConfig, system_prompt: str | None) -> dict[str, Any]:
    """Everything about a teacher that changes its samples (batch size does not)."""
    return {
        "model": model_identity(teacher.model),
        "backend": teacher.backend,
        "sampling": teacher.sampling.model_dump(),
        "system_prompt": system_prompt,
    }


def candidate_key(fingerprint: dict[str, Any], prompt: str, sample_index: int) -> str:
    return stable_hash({"teacher": fingerprint, "prompt": prompt, "sample": sample_index}, length=24)


def candidate_seed(key: str) -> int:
    return int(key[:15], 16)


def run_generate(cfg: RunConfig, run_dir: Path, train_prompts: list[Prompt], progress=None) -> Stage:
    wanted: list[dict[str, Any]] = []
    for teacher in cfg.teachers:
        fingerprint = teacher_fingerprint(teacher, cfg.system_prompt)
        for prompt in train_prompts:
            for sample_index in range(cfg.k):
                key = candidate_key(fingerprint, prompt.text, sample_index)
                wanted.append({
                    "candidate_key": key, "prompt_id": prompt.id, "prompt": prompt.text,
                    "teacher": teacher.label, "sample_index": sample_index,
                })
    stage = Stage(run_dir, "generate", {"candidates": stable_hash([w["candidate_key"] for w in wanted])})
    if stage.reuse():
        return stage
    stage.start()
    shard_dir = stage.dir / "shards"
    done: dict[str, dict[str, Any]] = {}
    for shard in sorted(shard_dir.glob("*.parquet")):
        for row in read_table(shard):
            done.setdefault(row["candidate_key"], row)
    todo = [w for w in wanted if w["candidate_key"] not in done]
    generated = 0
    for teacher in cfg.teachers:
        mine = [w for w in todo if w["teacher"] == teacher.label]
        if not mine:
            continue
        generated += _generate_for_teacher(cfg, teacher, mine, shard_dir, done, progress)
    rows = []
    for w in wanted:
        row = dict(done[w["candidate_key"]])
        row.update(prompt_id=w["prompt_id"], teacher=w["teacher"])
        rows.append(row)
    write_table(stage.dir / "candidates.parquet", rows)
    stage.finish(
        {"candidates": "candidates.parquet"},
        counts={"candidates": len(rows), "generated_now": generated, "reused": len(rows) - generated},
    )
    return stage


def _generate_for_teacher(cfg, teacher, todo, shard_dir, done, progress) -> int:
    device = _device(cfg)
    tokenizer = load_tokenizer(teacher.model)
    model = load_model(teacher.model, device)
    requests = [
        (w, Request(chat_messages(w["prompt"], cfg.system_prompt), candidate_seed(w["candidate_key"])))
        for w in todo
    ]
    requests = length_sorted(requests, key=lambda pair: len(pair[0]["prompt"]))
    task = progress.add_task(f"generate [{teacher.label}]", total=len(requests)) if progress else None
    tokens = 0
    started = time.perf_counter()
    for batch in batched(requests, teacher.batch_size):
        t0 = time.perf_counter()
        completions = generate_batch(model, tokenizer, [r for _, r in batch], teacher.sampling)
        latency = time.perf_counter() - t0
        rows = []
        for (w, req), c in zip(batch, completions):
            rows.append({
                **w, "text": c.text, "finish_reason": c.finish_reason,
                "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                "latency_s": latency, "seed": req.seed, "backend": teacher.backend, "model": teacher.model,
            })
            tokens += c.completion_tokens
        write_table(shard_dir / f"{teacher.label}-{uuid.uuid4().hex[:12]}.parquet", rows)
        for row in rows:
            done[row["candidate_key"]] = row
        if progress is not None:
            rate = tokens / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=len(batch), description=f"generate [{teacher.label}] {rate:.0f} tok/s")
    return len(requests)


def _device(cfg: RunConfig) -> str:
    from heredity.models import pick_device

    return pick_device(cfg.device)
