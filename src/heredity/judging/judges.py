"""Judges: a model that reads a ``Query`` and returns a ``Verdict``, built from a ``JudgeConfig``.

- ``GenerationJudge`` (method ``generate``): decodes a verdict greedily through any generation
  backend (``transformers``, ``openai``, ...) and parses it (``parse_verdict``).
- ``LogprobJudge`` (method ``logprob``, the default for a local ``transformers`` judge):
  compares the next-token log-probabilities of the two verdict letters after the assistant
  turn's "("; the preference for the first answer is ``p(a) / (p(a) + p(b))``.

``judge_config`` makes a ``JudgeConfig`` from any accepted spec; ``open_judge`` opens the judge.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
from pydantic import ValidationError

from heredity.backends import BatchIncomplete, Request, open_backend
from heredity.config import JudgeConfig, SamplingConfig, TeacherConfig
from heredity.core.models import load_model, load_tokenizer, pick_device
from heredity.errors import HeredityError
from heredity.judging.verdicts import (
    PREFILL,
    Query,
    Verdict,
    judge_messages,
    parse_verdict,
)


class Judge(Protocol):
    label: str
    method: str

    def judge(self, queries: Sequence[Query]) -> list[Verdict]: ...

    def close(self) -> None: ...


def judge_config(spec: "JudgeConfig | TeacherConfig | dict | str | None" = None, **overrides: Any) -> JudgeConfig:
    """A ``JudgeConfig`` from a model reference, a ``TeacherConfig``, a dict, or a config itself."""
    try:
        if spec is None:
            cfg = JudgeConfig()
        elif isinstance(spec, JudgeConfig):
            cfg = spec
        elif isinstance(spec, TeacherConfig):
            cfg = JudgeConfig(model=spec)
        elif isinstance(spec, (str, dict)):
            cfg = JudgeConfig.model_validate(spec)
        else:
            raise HeredityError(f"judge: expected a model reference or a config, got {type(spec).__name__}")
        if overrides:
            cfg = JudgeConfig.model_validate({**cfg.model_dump(), **overrides})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise HeredityError(f"judge config: field '{loc}': {err['msg']}") from None
    return cfg


class GenerationJudge:
    """Decodes a verdict through any generation backend and parses it."""

    method = "generate"

    def __init__(self, backend: Any, cfg: JudgeConfig, label: str | None = None):
        self.backend = backend
        self.cfg = cfg
        self.label = label or cfg.model.label

    def judge(self, queries: Sequence[Query]) -> list[Verdict]:
        greedy = SamplingConfig(temperature=0.0, max_new_tokens=self.cfg.max_new_tokens)
        out: list[Verdict] = []
        size = self.cfg.model.batch_size
        for start in range(0, len(queries), size):
            chunk = queries[start:start + size]
            requests = [Request(judge_messages(q, self.cfg), 0) for q in chunk]
            try:
                completions = self.backend.generate(requests, greedy)
            except BatchIncomplete as exc:  # keep what finished; failed requests are unparseable
                completions = exc.completions
            for c in completions:
                text = "<request failed>" if c is None else c.text
                out.append(Verdict(text, None if c is None else parse_verdict(c.text)))
        return out

    def close(self) -> None:
        self.backend.close()


class LogprobJudge:
    """Compares the log-probabilities of the two verdict letters after the assistant's "(".

    One forward pass per query, over the prompt up to the first token where the encodings of
    "(a)" and "(b)" differ; only the last position's logits are computed.
    """

    method = "logprob"

    def __init__(self, model: Any, tokenizer: Any, cfg: JudgeConfig, label: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.label = label or cfg.model.label

    def _encode(self, query: Query) -> tuple[list[int], int, int]:
        context = self.tokenizer.apply_chat_template(judge_messages(query, self.cfg), tokenize=False,
                                                     add_generation_prompt=True)
        ids_a = self.tokenizer(context + PREFILL + "a)", add_special_tokens=False)["input_ids"]
        ids_b = self.tokenizer(context + PREFILL + "b)", add_special_tokens=False)["input_ids"]
        k = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y), None)
        if k is None:
            raise HeredityError(f"judge '{self.label}': its tokenizer encodes '(a)' and '(b)' alike")
        return ids_a[:k], ids_a[k], ids_b[k]

    def judge(self, queries: Sequence[Query]) -> list[Verdict]:
        import torch

        encoded = [self._encode(q) for q in queries]
        order = sorted(range(len(queries)), key=lambda i: -len(encoded[i][0]))  # little padding per batch
        result: dict[int, Verdict] = {}
        pad = self.tokenizer.pad_token_id
        size = self.cfg.model.batch_size
        device = next(self.model.parameters()).device
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            width = max(len(encoded[i][0]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):  # left padding: the last position is every row's next token
                seq = encoded[i][0]
                ids[row, width - len(seq):] = torch.tensor(seq)
                mask[row, width - len(seq):] = 1
            with torch.inference_mode():
                out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=1)
            logprobs = out.logits[:, -1, :].float().log_softmax(dim=-1).cpu()
            for row, i in enumerate(chunk):
                la, lb = float(logprobs[row, encoded[i][1]]), float(logprobs[row, encoded[i][2]])
                p_first = 1.0 / (1.0 + float(np.exp(lb - la)))
                choice = "a" if la > lb else "b" if lb > la else None
                result[i] = Verdict(f"logp(a)={la:.4f} logp(b)={lb:.4f}", choice, p_first)
        return [result[i] for i in range(len(queries))]

    def close(self) -> None:
        self.model = None


def open_judge(spec: "Judge | JudgeConfig | TeacherConfig | dict | str | None" = None) -> Judge:
    """A judge from a spec: ``logprob`` loads the model itself, ``generate`` goes through a backend."""
    if hasattr(spec, "judge") and callable(getattr(spec, "judge")):
        return spec  # already a judge
    cfg = judge_config(spec)
    teacher = cfg.model
    if teacher.backend == "replay":
        raise HeredityError(f"judge '{teacher.label}': backend 'replay' cannot judge; use transformers or openai")
    method = cfg.resolved_method()
    device = pick_device(cfg.device)
    if method == "logprob":
        if teacher.backend != "transformers":
            raise HeredityError(f"judge '{teacher.label}': method 'logprob' needs backend 'transformers'")
        return LogprobJudge(load_model(teacher.model, device), load_tokenizer(teacher.model), cfg)
    return GenerationJudge(open_backend(teacher, device), cfg)


def settings_of(judge: Any, cfg: JudgeConfig | None) -> JudgeConfig:
    """The protocol settings: ``cfg``, else the judge's own, else the defaults."""
    if cfg is not None:
        return cfg
    return getattr(judge, "cfg", None) or JudgeConfig()


def resolve_judge(judge: Any, cfg: JudgeConfig | None) -> tuple[Judge, JudgeConfig]:
    """The judge to use and the protocol settings: ``cfg`` with ``judge``'s model when both are given."""
    if isinstance(judge, (str, TeacherConfig)) and cfg is not None:
        cfg = cfg.model_copy(update={"model": judge_config(judge).model})
        return open_judge(cfg), cfg
    if isinstance(judge, (str, TeacherConfig, JudgeConfig, dict)) or judge is None:
        cfg = judge_config(judge)
        return open_judge(cfg), cfg
    return judge, settings_of(judge, cfg)
