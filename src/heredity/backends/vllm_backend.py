"""The vllm backend: one vLLM engine per teacher on GPU (``pip install heredity[vllm]``).

With ``vllm.n_per_prompt`` (the default) the requests of one batch that share a conversation
(the k samples of a prompt) become one vLLM request with ``n`` set to their number, seeded
with the first one's seed: the prompt is computed once for all of them. Otherwise each
sample is its own request with its own seed, and vLLM's prefix cache shares the prompt.

vLLM is imported only here, when a teacher names this backend.
"""

from __future__ import annotations

import time
from typing import Sequence

from heredity.backends.base import Completion, Request, register_backend
from heredity.config import SamplingConfig, TeacherConfig
from heredity.core.models import resolve
from heredity.errors import HeredityError


def group_by_conversation(requests: Sequence[Request]) -> list[list[int]]:
    """Indices of ``requests`` grouped by identical conversation, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        key = repr([(m["role"], m["content"]) for m in request.messages])
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


@register_backend("vllm")
class VllmBackend:
    def __init__(self, teacher: TeacherConfig, device: str):
        try:
            from vllm import LLM
        except ImportError:
            raise HeredityError(f"teacher '{teacher.label}': backend 'vllm' needs vLLM "
                                "(pip install 'heredity[vllm]', on a machine with a GPU)") from None
        if device == "cpu":
            raise HeredityError(f"teacher '{teacher.label}': backend 'vllm' runs on GPU; set device: cuda or auto")
        opts = teacher.vllm
        source = resolve(teacher.model)  # hub id, local folder, or the converted embedded model
        self.n_per_prompt = opts.n_per_prompt
        model = source["pretrained_model_name_or_path"]
        if "gguf_file" in source:  # vLLM reads a GGUF file given its path
            model = f"{model}/{source['gguf_file']}"
        self.llm = LLM(model=str(model), dtype=opts.dtype,
                       tensor_parallel_size=opts.tensor_parallel_size,
                       gpu_memory_utilization=opts.gpu_memory_utilization, max_model_len=opts.max_model_len,
                       enable_prefix_caching=True)

    def _params(self, sampling: SamplingConfig, n: int, seed: int):
        from vllm import SamplingParams

        if sampling.temperature == 0:
            return SamplingParams(n=n, temperature=0.0, max_tokens=sampling.max_new_tokens)
        return SamplingParams(n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                              max_tokens=sampling.max_new_tokens, seed=seed)

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[Completion]:
        started = time.perf_counter()
        groups = group_by_conversation(requests) if self.n_per_prompt else [[i] for i in range(len(requests))]
        conversations = [requests[g[0]].messages for g in groups]
        params = [self._params(sampling, len(g), requests[g[0]].seed) for g in groups]
        outputs = self.llm.chat(conversations, sampling_params=params, use_tqdm=False)
        latency = time.perf_counter() - started
        completions: list[Completion | None] = [None] * len(requests)
        for group, output in zip(groups, outputs):
            for i, sample in zip(group, output.outputs):
                completions[i] = Completion(
                    text=sample.text.strip(), finish_reason=_finish(sample.finish_reason),
                    prompt_tokens=len(output.prompt_token_ids or []), completion_tokens=len(sample.token_ids),
                    latency_s=latency,
                )
        missing = [i for i, c in enumerate(completions) if c is None]
        if missing:
            raise HeredityError(f"vLLM returned no completion for {len(missing)} of {len(requests)} requests")
        return completions  # type: ignore[return-value]

    def close(self) -> None:
        self.llm = None
