"""The transformers backend: a local model on CPU or GPU, batched with left padding.

Sampling uses the Gumbel-max trick with one random generator per sequence, seeded from the
candidate's own key, so a candidate's text does not depend on which other sequences share
its batch: resumed or extended runs reproduce an uninterrupted run.
"""

from __future__ import annotations

import time
from typing import Sequence

from heredity.backends.base import Completion, Request, register_backend
from heredity.config import SamplingConfig, TeacherConfig
from heredity.core.models import load_model, load_tokenizer


class _GumbelSampler:
    """Logits processor: temperature, nucleus filter, then Gumbel noise from per-row generators.

    Greedy decoding over the noised scores draws exactly from the filtered softmax.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        self.seeds = [int(s) for s in seeds]
        self.generators: list | None = None
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids, scores):
        import torch

        if self.generators is None:
            # Generators live where the scores are: on a GPU the noise is drawn there, not built
            # on the CPU and copied over at every step. (CPU and GPU streams differ, so a pool
            # sampled on a GPU differs from one sampled on a CPU, as bf16 makes it anyway.)
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
            cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            drop_sorted = cum - sorted_scores.softmax(dim=-1) >= self.top_p  # always keeps the top token
            drop = drop_sorted.scatter(1, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp_(1e-20, 1.0 - 1e-7)))
        return scores + gumbel


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
    from transformers import GenerationConfig, LogitsProcessorList, RepetitionPenaltyLogitsProcessor

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
    if sampling.repetition_penalty != 1.0:
        # On the answer's tokens only: the prompt holds the chat template's end-of-turn token, and
        # penalising it would keep answers from stopping. Before the sampler: on the raw scores.
        processors.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty,
                                                           prompt_ignore_length=enc["input_ids"].shape[1]))
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



@register_backend("transformers")
class TransformersBackend:
    def __init__(self, teacher: TeacherConfig, device: str):
        self.tokenizer = load_tokenizer(teacher.model)
        self.model = load_model(teacher.model, device)

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[Completion]:
        started = time.perf_counter()
        completions = generate_batch(self.model, self.tokenizer, requests, sampling)
        for c in completions:
            c.latency_s = time.perf_counter() - started
        return completions

    def close(self) -> None:
        self.model = None
