"""The llamacpp backend: a GGUF teacher through llama-cpp-python (``pip install heredity[llamacpp]``).

On a small CPU this decodes a small model several times faster than transformers. It takes
one request at a time, each from a clean context (no prefix reused from an earlier request).
Each request is sampled with its own seed and with llama.cpp's extra
samplers switched off (top-k, min-p, repetition penalty), so temperature and top_p mean what
they mean for the other backends. llama-cpp-python has few prebuilt wheels and otherwise
compiles from source (minutes), so heredity never requires it.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

from heredity.backends.base import Completion, Request, register_backend
from heredity.config import SamplingConfig, TeacherConfig
from heredity.core.models import gguf_path
from heredity.errors import HeredityError


@register_backend("llamacpp")
class LlamaCppBackend:
    def __init__(self, teacher: TeacherConfig, device: str):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise HeredityError(f"teacher '{teacher.label}': backend 'llamacpp' needs llama-cpp-python "
                                "(pip install 'heredity[llamacpp]'; it may compile from source)") from None
        opts = teacher.llamacpp
        threads = opts.n_threads
        if threads is None and hasattr(os, "sched_getaffinity"):
            threads = len(os.sched_getaffinity(0))  # the CPUs this process may use, not the machine's
        self.llm = Llama(model_path=str(gguf_path(teacher.model)), n_ctx=opts.n_ctx, n_threads=threads,
                         n_gpu_layers=opts.n_gpu_layers, verbose=False)

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[Completion]:
        completions = []
        for request in requests:
            started = time.perf_counter()
            # Every request from a clean context: llama-cpp-python reuses the previous request's
            # cached prefix, and from 0.3.36 a prompt met again samples otherwise than the first
            # time (same seed, other text), so an answer would depend on what was asked before.
            self.llm.reset()
            greedy = sampling.temperature == 0
            out = self.llm.create_chat_completion(
                messages=request.messages, max_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature, top_p=1.0 if greedy else sampling.top_p,
                top_k=1 if greedy else 0, min_p=0.0, repeat_penalty=1.0, seed=request.seed % 2**31,
            )
            choice = out["choices"][0]
            usage = out.get("usage") or {}
            completions.append(Completion(
                text=(choice["message"]["content"] or "").strip(),
                finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                latency_s=time.perf_counter() - started,
            ))
        return completions

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
        self.llm = None
