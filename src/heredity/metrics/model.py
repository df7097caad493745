"""Model-based metrics: how likely a reference model finds an answer, and what a judge model says.

``perplexity`` and ``loglik`` put the prompt through the reference model's chat template
(``system_prompt`` is the run's, ``None`` meaning the template's default), append the answer
and score only the answer's tokens with the batched scorer of ``heredity.core.loglik``:
``loglik`` is their mean log-probability per token (nats; ``reduce: sum`` for the total),
``perplexity`` is ``exp(-mean)``. The answer follows the template's generation prompt exactly
as the model would have produced it; the end-of-turn token is not scored. The reference model
is ``model`` (any model reference) or, by default, the run's student. An empty answer, or
one with no token left after ``max_length``, scores NaN.

``judge`` asks a model, through any generation backend (``transformers``, ``llamacpp`` or
``vllm`` locally, or ``openai`` for any OpenAI-compatible server), to rate each answer with a rubric that holds
``{answer}`` and usually ``{prompt}``; the reply is parsed by :func:`parse_score`. A reply
with no number from 1 to 10 scores NaN and is counted (a warning, and ``notes`` in the score
stage's manifest). Decoding is greedy by default, so scores are reproducible.

``reward`` scores the (prompt, answer) conversation, written by the reward model's own chat
template, with a sequence-classification reward model (the head's output ``label``); a model
without a trained head (a plain causal LM) is refused rather than scored with a random head.

Options (in a config: ``{name: judge, model: ..., rubric: ...}``) are part of each metric's
cache namespace; so is the identity of the reference model (its files, or its endpoint).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from heredity.config import OpenAIOptions
from heredity.errors import HeredityError
from heredity.metrics.registry import MetricContext, register


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Options that change speed only: left out of the cache namespace and stage keys.
    UNKEYED: ClassVar[frozenset[str]] = frozenset({"batch_size"})


def _model_ref(options: dict[str, Any], context: MetricContext, metric: str) -> str:
    ref = options.get("model") or context.model_ref
    if not ref:
        raise HeredityError(f"metric '{metric}' needs a reference model: set its option 'model' "
                            "(in a run it defaults to the student)")
    return ref


def _device(context: MetricContext) -> str:
    from heredity.core.models import pick_device

    return pick_device(context.device or "auto")


@lru_cache(maxsize=1)
def _load(ref: str, device: str) -> tuple[Any, Any]:
    """The reference model and its tokenizer, kept for the next call (one model at a time)."""
    from heredity.core.models import load_model, load_tokenizer

    return load_model(ref, device), load_tokenizer(ref)


# --------------------------------------------------------------------------- log-likelihood


class LoglikOptions(_Options):
    model: str | None = Field(None, description="Reference model; default: the run's student.")
    max_length: int = Field(2048, ge=16, description="Tokens of prompt + answer kept (the answer is cut).")
    batch_size: int = Field(16, ge=1, description="Sequences per forward pass (speed only).")


class MeanLoglikOptions(LoglikOptions):
    reduce: Literal["mean", "sum"] = Field("mean", description="Mean log-probability per answer token, or the sum.")


def _loglik_identity(options: dict[str, Any], context: MetricContext) -> dict[str, Any]:
    from heredity.core.models import model_identity

    return {"model": model_identity(_model_ref(options, context, "loglik")), "system_prompt": context.system_prompt}


def answer_sequences(tokenizer, prompts: Sequence[str], answers: Sequence[str], system_prompt: str | None,
                     max_length: int = 2048):
    """One :class:`TokenSequence` per (prompt, answer): the chat template's generation prompt,
    then the answer; only the answer's tokens are scored. None where nothing can be scored."""
    from heredity.core.loglik import TokenSequence
    from heredity.core.models import chat_messages

    prefixes = [tokenizer.apply_chat_template(chat_messages(p, system_prompt), tokenize=False,
                                              add_generation_prompt=True) for p in prompts]
    keep = [i for i, a in enumerate(answers) if a.strip()]
    out: list[Any] = [None] * len(answers)
    if not keep:
        return out
    ctx_ids = tokenizer([prefixes[i] for i in keep], add_special_tokens=False)["input_ids"]
    joint_ids = tokenizer([prefixes[i] + answers[i] for i in keep], add_special_tokens=False)["input_ids"]
    for i, ctx, joint in zip(keep, ctx_ids, joint_ids):
        # The answer is the joint text's tokens past the prefix's own tokens (a merge across the
        # boundary, rare after the template's newline, moves the split to where they diverge).
        split = 0
        while split < min(len(ctx), len(joint)) and ctx[split] == joint[split]:
            split += 1
        joint = joint[:max_length]
        if 1 <= split < len(joint):
            out[i] = TokenSequence(tuple(joint), split)
    return out


def answer_logliks(texts: Sequence[str], context: MetricContext, options: dict[str, Any], metric: str):
    """Per text: the LogLik of its answer tokens, or None."""
    from heredity.core.loglik import score_groups

    ref = _model_ref(options, context, metric)
    if context.prompts is None:
        raise HeredityError(f"metric '{metric}' needs the prompts the texts answer")
    model, tokenizer = _load(ref, _device(context))
    seqs = answer_sequences(tokenizer, context.prompts, texts, context.system_prompt, options["max_length"])
    todo = [i for i, s in enumerate(seqs) if s is not None]
    out: list[Any] = [None] * len(texts)
    if todo:
        scored = score_groups(model, [[seqs[i]] for i in todo], batch_size=options["batch_size"], share_prefix=False)
        for i, (ll,) in zip(todo, scored):
            out[i] = ll
    return out


@register("perplexity", loads_model=True, version="1", better="lower", needs_prompts=True, options=LoglikOptions,
          identity=_loglik_identity,
          description="Perplexity of the answer under a reference model (default: the student), prompt as chat context")
def perplexity(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [math.nan if ll is None else math.exp(-ll.mean)
            for ll in answer_logliks(texts, context, context.options, "perplexity")]


@register("loglik", loads_model=True, version="1", better="higher", needs_prompts=True, options=MeanLoglikOptions,
          identity=_loglik_identity,
          description="Mean log-probability per answer token under a reference model (default: the student)")
def loglik(texts: Sequence[str], context: MetricContext) -> list[float]:
    total = context.options.get("reduce") == "sum"
    return [math.nan if ll is None else (ll.total if total else ll.mean)
            for ll in answer_logliks(texts, context, context.options, "loglik")]


# --------------------------------------------------------------------------- LLM judge

DEFAULT_RUBRIC = (
    "Rate how well the answer below responds to the request, on a scale from 1 (useless or wrong) "
    "to 10 (excellent: helpful, correct and clear).\n\n"
    "Request:\n{prompt}\n\nAnswer:\n{answer}\n\n"
    "Reply with the rating only, a single number from 1 to 10."
)
SCALE = (1.0, 10.0)

_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9, "ten": 10}
_NUM = r"(?<![\w.])(-?\d+(?:\.\d+)?)"
_OUT_OF = re.compile(_NUM + r"\s*(?:/|out\s+of)\s*10(?![\d.]*\d)", re.I)
_SCALE_MENTION = re.compile(r"(?<![\w.])(?:1|one)\s*(?:-|–|to)\s*(?:10|ten)(?![\d])|(?:/|out\s+of)\s*10(?!\d)", re.I)
_FIRST = re.compile(_NUM + r"|\b(" + "|".join(_WORDS) + r")\b", re.I)


def parse_score(reply: str, lo: float = SCALE[0], hi: float = SCALE[1]) -> float:
    """The rating in a judge's reply, or NaN.

    1. ``N/10`` or ``N out of 10`` anywhere: that N;
    2. otherwise the first number (digits, or a word from one to ten) once mentions of the
       scale itself (``1-10``, ``1 to 10``, ``out of 10``) are removed;
    3. a number outside ``lo..hi`` (e.g. ``15``, ``0``, ``-3``), or none at all: NaN.
    """
    if not isinstance(reply, str):
        return math.nan
    m = _OUT_OF.search(reply)
    if m:
        value = float(m.group(1))
    else:
        m = _FIRST.search(_SCALE_MENTION.sub(" ", reply))
        if not m:
            return math.nan
        value = float(m.group(1)) if m.group(1) is not None else float(_WORDS[m.group(2).lower()])
    return value if lo <= value <= hi else math.nan


class JudgeOptions(_Options):
    model: str | None = Field(None, description="Judge model; default: the run's student.")
    backend: Literal["transformers", "openai", "llamacpp", "vllm"] = Field(
        "transformers", description="Any generation backend but replay; llamacpp and vllm with their defaults.")
    openai: OpenAIOptions | None = Field(None, description="Endpoint, for backend 'openai'.")
    rubric: str = Field(DEFAULT_RUBRIC, description="Prompt with {answer} and usually {prompt}.")
    system_prompt: str | None = Field(None, description="Judge's system message; None: the template's default.")
    max_new_tokens: int = Field(12, ge=1)
    temperature: float = Field(0.0, ge=0.0, description="0: greedy (reproducible).")
    seed: int = 0
    max_answer_chars: int = Field(6000, ge=100, description="Longer answers are cut before judging.")
    batch_size: int = Field(16, ge=1)

    @field_validator("rubric")
    @classmethod
    def _has_answer(cls, v: str) -> str:
        if "{answer}" not in v:
            raise ValueError("the rubric must contain {answer} (and usually {prompt})")
        return v


def _judge_identity(options: dict[str, Any], context: MetricContext) -> dict[str, Any]:
    from heredity.core.models import model_identity

    ref = _model_ref(options, context, "judge")
    if options["backend"] == "openai":
        endpoint = options.get("openai") or {}
        return {"model": ref, "endpoint": [endpoint.get("base_url"), endpoint.get("served_model")]}
    identity = {"model": model_identity(ref)}
    if options["backend"] != "transformers":  # same weights, other decoder: scores may differ
        identity["backend"] = options["backend"]
    return identity


def fill_rubric(rubric: str, prompt: str, answer: str) -> str:
    # str.replace, not str.format: answers are full of braces
    return rubric.replace("{prompt}", prompt).replace("{answer}", answer)


def judge_replies(texts: Sequence[str], context: MetricContext, options: dict[str, Any]) -> list[str]:
    from heredity.backends import Request
    from heredity.config import SamplingConfig
    from heredity.core.models import chat_messages
    from heredity.core.rundir import stable_hash

    ref = _model_ref(options, context, "judge")
    prompts = context.prompts if context.prompts is not None else [""] * len(texts)
    sampling = SamplingConfig(temperature=options["temperature"], max_new_tokens=options["max_new_tokens"],
                              seed=options["seed"])
    requests = [
        Request(chat_messages(fill_rubric(options["rubric"], p, t[: options["max_answer_chars"]]),
                              options["system_prompt"]),
                int(stable_hash([options["seed"], p, t], 15), 16))
        for p, t in zip(prompts, texts)
    ]
    size = options["batch_size"]
    replies: list[str] = []
    if options["backend"] == "transformers":
        from heredity.backends.transformers_backend import generate_batch

        model, tokenizer = _load(ref, _device(context))
        for lo in range(0, len(requests), size):
            replies += [c.text for c in generate_batch(model, tokenizer, requests[lo:lo + size], sampling)]
        return replies
    from heredity.backends import open_backend
    from heredity.config import TeacherConfig

    if options["backend"] == "openai" and not options.get("openai"):
        raise HeredityError("metric 'judge': backend 'openai' needs the option 'openai: {base_url: ...}'")
    teacher = TeacherConfig(model=ref, name="judge", backend=options["backend"], openai=options.get("openai"),
                            sampling=sampling, batch_size=size)
    backend = open_backend(teacher, _device(context))
    try:
        for lo in range(0, len(requests), size):
            replies += [c.text for c in backend.generate(requests[lo:lo + size], sampling)]
    finally:
        backend.close()
    return replies


@register("judge", loads_model=True, version="1", better="higher", needs_prompts=True, options=JudgeOptions,
          identity=_judge_identity,
          description="An LLM judge's 1-10 rating of the answer (rubric prompt, any backend; NaN if unparseable)")
def judge(texts: Sequence[str], context: MetricContext) -> list[float]:
    if not texts:
        return []
    replies = judge_replies(texts, context, context.options)
    scores = [parse_score(r) for r in replies]
    bad = sum(1 for s in scores if math.isnan(s))
    if bad:
        context.notes["judge_unparsed"] = context.notes.get("judge_unparsed", 0) + bad
        example = next(r for r, s in zip(replies, scores) if math.isnan(s))
        print(f"heredity: metric 'judge': {bad} of {len(replies)} replies had no rating from 1 to 10 "
              f"(scored NaN), e.g. {example[:80]!r}", file=sys.stderr)
    return scores


# --------------------------------------------------------------------------- reward model


class RewardOptions(_Options):
    model: str = Field(..., description="A reward model: a sequence classifier with a trained head (hub id or "
                       "local folder), e.g. Skywork/Skywork-Reward-V2-Llama-3.1-8B.")
    label: int = Field(0, ge=0, description="Which output of the head is the reward (0 for one-output models).")
    max_length: int = Field(4096, ge=16, description="Tokens of the conversation kept (the end of a long answer is cut).")
    batch_size: int = Field(8, ge=1, description="Conversations per forward pass (speed only).")


@lru_cache(maxsize=1)
def _load_reward_model(ref: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification

    from heredity.core.models import load_tokenizer, model_dtype, resolve

    # right padding: a plain forward numbers positions from the left, so left padding would
    # shift a padded row's positions and change its score
    tokenizer = load_tokenizer(ref, padding_side="right")
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            **resolve(ref), dtype=model_dtype(device), output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise HeredityError(f"metric 'reward': cannot load '{ref}' as a reward model: {str(exc).splitlines()[0]}") from None
    if info.get("missing_keys"):
        # a causal LM loads as a classifier with a random head: its "rewards" would be noise
        raise HeredityError(f"metric 'reward': '{ref}' has no trained reward head (missing "
                            f"{sorted(info['missing_keys'])[0]}); use a sequence-classification reward model")
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device).eval()
    return model, tokenizer


def _reward_identity(options: dict[str, Any], context: MetricContext) -> dict[str, Any]:
    from heredity.core.models import model_identity

    return {"model": model_identity(options["model"]), "system_prompt": context.system_prompt}


@register("reward", loads_model=True, version="1", better="higher", needs_prompts=True, options=RewardOptions,
          identity=_reward_identity,
          description="A reward model's score of the (prompt, answer) conversation (sequence-classification head)")
def reward(texts: Sequence[str], context: MetricContext) -> list[float]:
    import torch

    from heredity.core.models import chat_messages

    if not texts:
        return []
    if context.prompts is None:
        raise HeredityError("metric 'reward' needs the prompts the texts answer")
    options = context.options
    model, tokenizer = _load_reward_model(options["model"], _device(context))
    if options["label"] >= model.config.num_labels:
        raise HeredityError(f"metric 'reward': option label={options['label']} but '{options['model']}' has "
                            f"{model.config.num_labels} output(s)")
    conversations = [tokenizer.apply_chat_template(
        [*chat_messages(p, context.system_prompt), {"role": "assistant", "content": t}], tokenize=False)
        for p, t in zip(context.prompts, texts)]
    order = sorted(range(len(texts)), key=lambda i: len(conversations[i]))  # less padding per batch
    scores = [math.nan] * len(texts)
    size = options["batch_size"]
    with torch.inference_mode():
        for lo in range(0, len(order), size):
            idx = order[lo:lo + size]
            batch = tokenizer([conversations[i] for i in idx], add_special_tokens=False, padding=True,
                              truncation=True, max_length=options["max_length"], return_tensors="pt").to(model.device)
            logits = model(**batch).logits[:, options["label"]].float().tolist()
            for i, value in zip(idx, logits):
                scores[i] = value
    return scores
