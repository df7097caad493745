"""Typed run configuration: the schema layer.

One YAML file describes a whole experiment: prompts, teachers, student, selection target,
training and evaluation. Every model is a pydantic model with ``extra="forbid"`` so a
misspelt key is an error, not a silently ignored setting.

This module checks shapes, types and ranges only and imports nothing of heredity's but its
error type, so every layer can read a config. Whether a metric, strategy or judge named in a
config exists is checked one layer up, by ``heredity.plan`` (``load_config`` and
``config_from_dict`` there do both).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from heredity.errors import HeredityError

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"

# The built-in arms: the untrained student, the baseline selection and the steered one.
# ``select.variants`` add more steered arms; heredity.core.arms says which arms are compared.
BASE, PASSIVE, ACTIVE = "base", "passive", "active"
ARM_ORDER = (BASE, PASSIVE, ACTIVE)


def _plain_type(annotation: Any) -> set[Any]:
    """The plain types a field annotation allows (``int | None`` → {int, NoneType};
    ``bool | Literal["auto"]`` → {bool, str})."""
    if get_origin(annotation) in (Union, UnionType):
        return set().union(*(_plain_type(a) for a in get_args(annotation)))
    if get_origin(annotation) is Literal:
        return {type(v) for v in get_args(annotation)}
    return {annotation} if isinstance(annotation, type) else set()


def _renamed_key(data: Any, old: str, new: str, where: str) -> Any:
    """Read a config mapping's key under its old name ``old``, with a deprecation note; giving
    both names is an error (which one was meant is unknowable)."""
    if not isinstance(data, dict) or old not in data:
        return data
    if new in data:
        raise ValueError(f"give '{new}' only ('{old}' is its old name)")
    _log.warning(f"{where}: the key '{old}' is deprecated; call it '{new}'")
    return {(new if k == old else k): v for k, v in data.items()}


class NoBoolNumbers(BaseModel):
    """A model whose numbers are never booleans and whose booleans are never numbers."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_number_mixups(cls, value: Any, info: Any) -> Any:
        """YAML 1.1 reads ``yes``/``no``/``on``/``off`` as booleans: never take one as a number
        (``k: yes`` is not k = 1), and never a number as a boolean (``packing: 2``)."""
        kinds = _plain_type(cls.model_fields[info.field_name].annotation)
        if isinstance(value, bool) and kinds & {int, float} and bool not in kinds:
            raise ValueError(f"expected a number, got the boolean {str(value).lower()} "
                             "(YAML reads yes/no/on/off as booleans)")
        if bool in kinds and not isinstance(value, bool) and isinstance(value, (int, float, str)) \
                and not kinds & {int, float, str}:
            raise ValueError(f"expected true or false, got {value!r}")
        return value


class _Strict(NoBoolNumbers):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PromptsConfig(_Strict):
    """Where prompts come from and how they split into train and held-out eval parts."""

    source: str = Field(
        "bundled:quickstart",
        description="'bundled:NAME' (shipped with heredity), a .jsonl/.json/.csv/.parquet file, "
        "or 'hf:DATASET_ID' (Hugging Face dataset, needs hub access).",
    )
    field: str = Field("prompt", description="Column holding the prompt text.")
    id_field: str | None = Field(
        "id", description="Column holding a stable prompt id; row numbers are used if absent."
    )
    hf_split: str = Field("train", description="Split to read for 'hf:' sources.")
    eval_every: int | None = Field(
        3, ge=2, description="Every n-th prompt (by position) is held out for evaluation; "
        "null keeps every prompt for training (enough for `heredity select`)."
    )
    eval_source: str | None = Field(
        None, description="Separate eval prompts (same formats); disables the eval_every split."
    )
    limit_train: int | None = Field(None, ge=1, description="Use at most this many train prompts.")
    limit_eval: int | None = Field(None, ge=1, description="Use at most this many eval prompts.")
    eval_offset: int = Field(
        0, ge=0, description="Skip this many eval prompts before taking 'limit_eval': a confirmation run "
        "on held-out prompts an earlier run (limit_eval = this offset) never evaluated.")


class SamplingConfig(_Strict):
    """Sampling settings of one teacher (candidates) or of evaluation (greedy by default)."""

    temperature: float = Field(1.0, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(96, ge=1)
    seed: int = 0
    repetition_penalty: float = Field(
        1.0, gt=0.0,
        description="CTRL's repetition penalty on the tokens of the answer so far, not the prompt's (so the chat "
        "template's end-of-turn token is never penalised and answers still stop); 1.0 = off. Transformers "
        "backend and evaluation only: servers have their own (openai.extra_body).",
    )


class OpenAIOptions(_Strict):
    """An OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, TGI, Ollama, hosted APIs)."""

    base_url: str = Field(..., description="Up to and including '/v1', e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (never the key itself)."
    )
    served_model: str | None = Field(None, description="Model name sent to the server; default: teacher.model.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    max_retries: int = Field(8, ge=0, description="Retries on 429, 5xx, timeouts and dropped connections.")
    timeout_s: float = Field(120.0, gt=0)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    retry_after_max_s: float = Field(
        300.0, gt=0, description="Longest 'Retry-After' wait honoured; a server asking for more waits this long."
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Server-specific fields added to every request body, e.g. llama.cpp's "
        "{repeat_penalty: 1.0, top_k: 0, min_p: 0} (its server otherwise applies its own defaults) or "
        "vLLM's {top_k: 50}. They cannot replace the fields heredity sets (model, messages, sampling, seed).",
    )
    check_model: bool = Field(
        True,
        description="Before the first request, look the served model up in the server's /models list and "
        "stop if it is not there (llama.cpp's server, for one, answers any name with its own model). "
        "Skipped when the server has no such list; false for a server that lists other names than it accepts.",
    )

    @field_validator("extra_body")
    @classmethod
    def _extra_body_adds_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = sorted(set(value) & OPENAI_REQUEST_FIELDS)
        if taken:
            raise ValueError(f"{', '.join(taken)}: heredity sets this request field itself; not in extra_body")
        return value


# Request fields the openai backend sets itself (stream: it reads whole answers); extra_body may not set them.
OPENAI_REQUEST_FIELDS = frozenset({"model", "messages", "temperature", "top_p", "max_tokens", "seed", "n", "stream"})


class ReplayOptions(_Strict):
    """Candidates that already exist: one file per teacher, or one teacher per value of a column."""

    path: str = Field(..., description="A .json/.jsonl/.csv/.parquet file or 'hf:DATASET_ID'.")
    prompt_field: str = Field("instruction", description="Column matched against the prompt text.")
    text_field: str = Field("output", description="Column holding the candidate text.")
    teacher_field: str | None = Field(
        None, description="Split the file into one teacher per value of this column."
    )
    hf_split: str = "train"


class VllmOptions(_Strict):
    """Settings of the vllm backend (one engine per teacher, on GPU)."""

    n_per_prompt: bool = Field(
        True,
        description="Ask for all of a prompt's samples in one request (SamplingParams n=k), so the prompt "
        "is computed once. Samples then depend on which of the prompt's samples are requested together; "
        "false gives every sample its own seeded request (prefix caching still shares the prompt).",
    )
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=16)
    dtype: str = "auto"


class LlamaCppOptions(_Strict):
    """Settings of the llamacpp backend (a GGUF file through llama-cpp-python)."""

    n_ctx: int = Field(2048, ge=64, description="Context window in tokens.")
    n_threads: int | None = Field(None, ge=1, description="CPU threads; None lets llama.cpp choose.")
    n_gpu_layers: int = Field(0, description="Layers offloaded to a GPU (-1: all).")


class RayConfig(_Strict):
    """Heavy stages spread over Ray (``pip install 'heredity[ray]'``): generation and scoring on
    ``replicas`` actors, evaluation and profiling one model per task."""

    address: str | None = Field(
        None, description="Cluster to join ('auto', 'ray://head:10001'); None starts a local Ray.",
    )
    replicas: int = Field(2, ge=1, description="Actors per local-model teacher, each with its own copy of the model.")
    num_cpus_per_replica: float = Field(1.0, ge=0)
    num_gpus_per_replica: float = Field(0.0, ge=0, description="1 on a GPU cluster: one GPU per replica.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs a local Ray may use (None: all).")
    batch_size: int = Field(64, ge=1, description="Texts per Ray Data batch when the score stage runs on Ray.")
    max_retries: int = Field(
        3, ge=-1, description="Times a generation replica (and its batch in flight) or a per-model task is rerun "
        "after its worker or node is lost (-1: always); errors of the work itself are not retried. Scoring uses "
        "Ray Data's own retries.",
    )


# TeacherConfig fields that describe cost, not the samples: never part of a stage key.
PRICE_FIELDS = frozenset({"price_per_1k_prompt_tokens", "price_per_1k_completion_tokens"})

_SAFE_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def safe_label(label: str) -> str:
    """``label`` made safe as one path component: anything but letters, digits, '.', '_', '-'
    becomes '_', and no leading '.' (a model id or file stem used as a teacher's label)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", label)[:100]
    return "_" + cleaned[1:] if not cleaned or cleaned[0] == "." else cleaned


class TeacherConfig(_Strict):
    """One teacher: a model plus the backend that runs it."""

    model: str = Field(EMBEDDED_MODEL, description="Hub id, local folder, .gguf file or 'embedded:NAME'.")
    name: str | None = Field(None, description="Label in the pool; defaults to the model name.")
    backend: Literal["transformers", "vllm", "openai", "llamacpp", "replay"] = "transformers"
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    batch_size: int = Field(64, ge=1, description="Sequences sent to the backend together.")
    openai: OpenAIOptions | None = None
    replay: ReplayOptions | None = None
    vllm: VllmOptions = Field(default_factory=VllmOptions)
    llamacpp: LlamaCppOptions = Field(default_factory=LlamaCppOptions)
    # Prices only feed the report's cost table; no stage key reads them (the generate key uses
    # teacher_fingerprint, the judge key leaves PRICE_FIELDS out), so setting them reruns nothing.
    price_per_1k_prompt_tokens: float | None = Field(
        None, ge=0, description="Price of 1,000 prompt tokens (any currency), for the report's cost table.")
    price_per_1k_completion_tokens: float | None = Field(
        None, ge=0, description="Price of 1,000 completion tokens (same currency), for the report's cost table.")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str | None) -> str | None:
        if name is not None and not _SAFE_LABEL.fullmatch(name):
            # the label names shard files (generate/shards/<label>-*.parquet) and profile folders
            raise ValueError(f"teacher name {name!r}: use 1-100 letters, digits, '.', '_' or '-' "
                             "(no '/', no leading '.')")
        return name

    @model_validator(mode="after")
    def _backend_options_present(self) -> "TeacherConfig":
        if self.backend == "openai" and self.openai is None:
            raise ValueError("backend 'openai' needs an 'openai:' section with at least base_url")
        if self.backend == "replay" and self.replay is None:
            raise ValueError("backend 'replay' needs a 'replay:' section with at least path")
        if self.backend != "transformers" and self.sampling.repetition_penalty != 1.0:
            # vLLM and llama.cpp penalise prompt tokens too (llama.cpp only the last 64), so the same number
            # would mean something else there; the OpenAI API has no such field
            raise ValueError(f"sampling.repetition_penalty: transformers backend only; backend '{self.backend}' "
                             "has its own (vLLM: repetition_penalty, llama.cpp: repeat_penalty, via openai.extra_body)")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.backend == "replay" and self.replay is not None:
            return safe_label(Path(self.replay.path).stem)
        return safe_label(self.model.split("/")[-1].removeprefix("embedded:"))


def _metric_error(message: str) -> Any:
    # "{msg}" as template: the message itself may hold braces
    return PydanticCustomError("metric", "{msg}", {"msg": message})


def split_metric_entry(entry: str | Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """``"mtld"`` or ``{name: perplexity, as: ppl, model: ...}`` → (column, registry name, options)."""
    if isinstance(entry, str):
        return entry, entry, {}
    if not isinstance(entry, Mapping):
        raise HeredityError(f"a metric is a name or a mapping with 'name', not {type(entry).__name__}")
    options = dict(entry)
    name = options.pop("name", None)
    if not isinstance(name, str) or not name:
        raise HeredityError(f"a metric mapping needs 'name: METRIC'; got keys {sorted(entry)}")
    column = options.pop("as", None) or name
    if not isinstance(column, str):
        raise HeredityError(f"metric '{name}': 'as' must be a column name")
    return column, name, options


class ScoreConfig(_Strict):
    """Which metrics score every candidate (and, by default, every eval answer).

    An entry of ``metrics`` is a registry name, ``module:function``, or a mapping
    ``{name: METRIC, as: COLUMN, **options}`` for metrics that take options (perplexity,
    judge); a mapping is stored as its column name plus ``metric_options[column]``.
    """

    metric_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Column → options ({name: METRIC, ...} when the column is not the metric's name).",
    )
    metrics: list[str] = Field(
        default_factory=lambda: ["length", "mtld"],
        description="Registry names (see `heredity metrics`), 'module:function', or "
        "{name: METRIC, as: COLUMN, option: value, ...}.",
    )
    cache: bool = Field(True, description="Reuse scores from the score cache under $HEREDITY_CACHE "
                        "(also off with HEREDITY_SCORE_CACHE=0). Not part of any stage key.")

    @model_validator(mode="before")
    @classmethod
    def _mappings_to_options(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), list):
            return data
        data = dict(data)
        options = dict(data.get("metric_options") or {})
        columns = []
        for i, entry in enumerate(data["metrics"]):
            if not isinstance(entry, dict):
                columns.append(entry)
                continue
            try:
                column, name, opts = split_metric_entry(entry)
            except HeredityError as exc:
                raise _metric_error(f"metrics[{i}]: {exc}") from None
            if column in columns:
                raise _metric_error(f"metrics[{i}]: column '{column}' appears twice; name one of them with 'as: COLUMN'")
            stored = {**({"name": name} if name != column else {}), **opts}
            if column in options and dict(options[column]) != stored:
                raise _metric_error(f"metrics[{i}]: column '{column}' also has different metric_options")
            options[column] = stored
            columns.append(column)
        data["metrics"] = columns
        data["metric_options"] = options
        return data


class StrategySpec(BaseModel):
    """A selection rule: a registered strategy plus its parameters (see heredity.strategies).

    Written as a bare name (``first``) or a mapping (``{strategy: best, metric: words}``).
    Parameters are checked by the strategy's own parameter model, so a misspelt one is
    still an error even though this model accepts extra keys.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    strategy: str

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"strategy": data} if isinstance(data, str) else data

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, **(self.model_extra or {})}


# TRL DPOTrainer's loss types (DPOConfig.loss_type); "sft" is the NLL term on the chosen answers.
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


def _check_arm_name(name: str, kind: str) -> None:
    # names become folders (train/<arm>) and report columns
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", name):
        raise ValueError(f"{kind} name {name!r}: use 1-40 lower-case letters, digits, '_' or '-'")
    if name in ARM_ORDER:
        raise ValueError(f"{kind} name {name!r} is taken by a built-in arm")
    if name.startswith("teacher-"):  # profile/teacher-<label> holds the profiled teachers
        raise ValueError(f"{kind} name {name!r}: 'teacher-' names are the profiled teachers'")


class PreferenceArm(_Strict):
    """An arm trained on preference pairs from the same candidates, through TRL's DPOTrainer.

    Per prompt, ``chosen`` is the rule's pick and ``rejected`` another candidate of the same prompt
    (the worst on ``metric``, or a random other one). A pair whose margin on ``metric`` (chosen
    minus rejected, turned so that larger is better) is not above ``min_margin`` is dropped (ties
    always are), as is a prompt without a second candidate with a defined value or a different
    text; the data card counts each reason.
    """

    metric: str | None = Field(None, description="The metric the pair is ordered on; None: select.target.")
    direction: Literal["max", "min"] | None = Field(None, description="None: select.direction.")
    chosen: StrategySpec | None = Field(
        None, description="Rule that picks the chosen answer; None: best on metric/direction (the active rule's "
        "default).")
    rejected: Literal["worst", "random"] = Field(
        "worst", description="worst: the other candidate worst on metric; random: a seeded random other candidate.")
    min_margin: float = Field(
        0.0, ge=0, description="Keep a pair only when chosen beats rejected on metric by more than this (0: drop ties).")
    seed: int = Field(0, description="Seed of the random rejected pick.")
    loss: list[str] = Field(
        default_factory=lambda: ["sigmoid"],
        description="TRL DPOTrainer loss types, combined by loss_weights: [sigmoid] is DPO; [sigmoid, sft] adds "
        "an SFT (NLL) term on the chosen answers (RPO); ipo, hinge, robust, apo_zero, ... as TRL offers.")
    loss_weights: list[float] | None = Field(None, description="One weight per loss; None: 1 each.")
    beta: float = Field(0.1, gt=0, description="DPO's β: how far the policy may move from the reference.")
    init: str = Field(
        "base", description="Where training starts (and the reference model): base (DPO from the student) or "
        "the name of an SFT arm (passive, active or a variant): SFT-then-DPO from that arm's trained model.")
    precompute_ref_log_probs: bool = Field(
        False, description="Compute the reference log-probs once before training, so no reference model is held "
        "in memory while training (full fine-tuning; LoRA needs none: the adapter is switched off instead).")

    @field_validator("loss")
    @classmethod
    def _known_losses(cls, loss: list[str]) -> list[str]:
        unknown = [x for x in loss if x not in DPO_LOSSES]
        if not loss or unknown:
            raise ValueError(f"loss {unknown or loss!r}: choose from {', '.join(DPO_LOSSES)}")
        return loss

    @model_validator(mode="after")
    def _weights_match(self) -> "PreferenceArm":
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss):
            raise ValueError(f"loss_weights has {len(self.loss_weights)} weights for {len(self.loss)} losses")
        return self

    def pair_rule(self, metric: str, direction: str) -> dict[str, Any]:
        """How the pairs are built, with the run's target filled in (what the select stage keys on)."""
        metric, direction = self.metric or metric, self.direction or direction
        chosen = (self.chosen.as_dict() if self.chosen is not None
                  else {"strategy": "best", "metric": metric, "direction": direction})
        return {"metric": metric, "direction": direction, "chosen": chosen, "rejected": self.rejected,
                "min_margin": self.min_margin, "seed": self.seed}

    def objective(self) -> dict[str, Any]:
        """What the trainer is told (the train stage keys on it)."""
        return {"loss": self.loss, "loss_weights": self.loss_weights, "beta": self.beta,
                "precompute_ref_log_probs": self.precompute_ref_log_probs}


class SelectConfig(_Strict):
    """Which candidate each arm keeps per prompt: a passive baseline and an active rule."""

    target: str = Field("length", description="The target metric: reported first, and what the default "
                        "active rule maximises or minimises (called 'metric' before; still read).")
    direction: Literal["max", "min"] = "max"
    seed: int = Field(0, description="Seed of the default passive (uniformly random) selection.")
    active: StrategySpec | None = Field(
        None, description="Active rule, e.g. {strategy: constrained, metric: words, subject_to: "
        "{metric: toxicity, op: '<=', value: 0.1}}; default: best on metric/direction.")
    passive: StrategySpec | None = Field(
        None, description="Passive baseline: random (default, with seed), first, or {strategy: teacher, name: ...}.")
    sweep: Literal["off", "sample", "candidate"] = Field(
        "off", description="Also run the active rule on the first k' samples (or candidates) per prompt, "
        "k' = 1..k, and put the dose-response in the data card.")
    variants: dict[str, StrategySpec] = Field(
        default_factory=dict, description="More steered arms beside 'active', name -> rule, e.g. {short: {strategy: "
        "best, metric: length, direction: min}}; each is trained, evaluated and reported like 'active'.")

    @model_validator(mode="before")
    @classmethod
    def _old_metric_key(cls, data: Any) -> Any:
        """``metric:`` is ``target:``'s old name: read, with a deprecation note."""
        return _renamed_key(data, "metric", "target", "select")

    @field_validator("sweep", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    preference: dict[str, PreferenceArm] = Field(
        default_factory=dict, description="Arms trained on preference pairs (DPO and the other TRL losses), name -> "
        "pairing and objective, e.g. {dpo: {rejected: worst}}; trained after the SFT arms, with the same number of "
        "optimiser steps, and evaluated and reported like 'active'.")

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, variants: dict[str, StrategySpec]) -> dict[str, StrategySpec]:
        for name in variants:
            _check_arm_name(name, "variant")
        return variants

    @field_validator("preference")
    @classmethod
    def _preference_names(cls, arms: dict[str, PreferenceArm]) -> dict[str, PreferenceArm]:
        for name in arms:
            _check_arm_name(name, "preference arm")
        return arms

    @model_validator(mode="after")
    def _preference_arms_fit(self) -> "SelectConfig":
        sft = (PASSIVE, ACTIVE, *self.variants)
        for name, arm in self.preference.items():
            if name in self.variants:
                raise ValueError(f"preference arm {name!r} is also a variant's name")
            if arm.init != BASE and arm.init not in sft:
                raise ValueError(f"preference arm {name!r}: init {arm.init!r} is neither base nor an SFT arm "
                                 f"({', '.join(sft)})")
        return self

    def arms(self) -> tuple[str, ...]:
        """Every trained arm: the passive baseline, the active rule, the variants, then the preference arms
        (last: an SFT-then-DPO arm starts from an SFT arm's model)."""
        return (PASSIVE, ACTIVE, *self.variants, *self.preference)

    def extra_arms(self) -> tuple[str, ...]:
        """The steered arms beside 'active', compared like it: the variants, then the preference arms."""
        return (*self.variants, *self.preference)

    def specs(self) -> dict[str, dict[str, Any]]:
        """Each arm's selection rule."""
        return {PASSIVE: self.passive_spec(), ACTIVE: self.active_spec(),
                **{name: spec.as_dict() for name, spec in self.variants.items()}}

    def active_spec(self) -> dict[str, Any]:
        if self.active is not None:
            return self.active.as_dict()
        return {"strategy": "best", "metric": self.target, "direction": self.direction}

    def passive_spec(self) -> dict[str, Any]:
        return self.passive.as_dict() if self.passive is not None else {"strategy": "random", "seed": self.seed}


class DistributedConfig(_Strict):
    """Multi-process training through ``accelerate launch`` (torchrun with gloo on CPU)."""

    num_processes: int = Field(2, ge=1, description="Processes per machine (one per GPU).")
    strategy: Literal["ddp", "zero2", "zero3", "fsdp"] = Field(
        "ddp", description="ddp: plain data parallel; zero2/zero3: DeepSpeed ZeRO (needs deepspeed); "
        "fsdp: PyTorch FSDP2 (full shard).",
    )
    num_machines: int = Field(1, ge=1)
    machine_rank: int = Field(0, ge=0, description="This machine's rank (0 on the main one).")
    main_process_ip: str | None = Field(None, description="Address of machine 0, for num_machines > 1.")
    main_process_port: int = Field(29500, ge=1, le=65535)


# The experiment trackers ``train.report_to`` may name: transformers reports to each through its own
# callback; ``heredity.plan`` checks that the package is installed.
Tracker = Literal["tensorboard", "wandb", "mlflow", "trackio"]


class TrainConfig(_Strict):
    """Supervised fine-tuning settings, shared by every arm so only the data differs."""

    method: Literal["full", "lora", "qlora"] = Field(
        "full", description="full fine-tuning, lora (peft), or qlora: LoRA on a 4-bit NF4 base (needs a CUDA GPU "
        "and bitsandbytes: pip install 'heredity[qlora]').",
    )
    epochs: float = Field(2.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    lr_scheduler: str = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(512, ge=16, description="Longer examples are counted and reported.")
    seed: int = 0
    seeds: list[int] | None = Field(
        None, min_length=1,
        description="Train every arm once per seed (e.g. [0, 1, 2]); the passive draw of replicate i is seeded "
        "seed + i. Reports give each arm's mean over seeds, the per-seed figures, and differences whose CI "
        "resamples prompts and seeds. None: one replicate with `seed`.")
    bf16: bool | Literal["auto"] | None = Field(
        None,
        description="bf16 mixed precision (weights stay fp32). Unset: on a CUDA GPU that computes bf16, fp32 "
        "elsewhere. 'auto': wherever the hardware computes bf16 natively, including CPUs with AVX512-BF16 or "
        "AMX (about 3x faster full fine-tuning there). true/false: always/never.")
    gradient_checkpointing: bool = Field(
        True,
        description="Recompute activations in the backward pass instead of keeping them (TRL's default): less "
        "memory, more compute. The trained model is the same either way, so it is not part of the stage key.")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target_modules: list[str] | str = "all-linear"
    merge_lora: bool = Field(
        True, description="lora/qlora: merge the adapter into the saved model (a plain model). false saves the "
        "adapter and tokenizer only; evaluation loads the base model and applies it.",
    )
    save_steps: int = Field(
        200, ge=1,
        description="Write a checkpoint every this many optimiser steps; a killed run resumes from the "
        "newest complete one. Not part of the stage key.",
    )
    save_total_limit: int = Field(
        1, ge=1,
        description="Checkpoints kept while training (the oldest is deleted only after a newer one is "
        "complete); all are deleted once the stage finishes. Not part of the stage key.",
    )
    max_steps: int | None = Field(
        None, ge=1,
        description="Optimiser steps for every arm; overrides epochs. Unset, arms of different sizes "
        "(filters, packing) all take the largest arm's step count under epochs.",
    )
    packing: bool = Field(
        False,
        description="Pack several examples into each max_length sequence (best-fit decreasing). Sequence "
        "boundaries are kept: attention never crosses examples.",
    )
    eval_fraction: float = Field(
        0.0, ge=0, lt=0.5,
        description="Share of prompts held out of training to measure validation loss. Chosen by a hash "
        "of the prompt id and seed, so every arm holds out the same prompts.",
    )
    eval_steps: int = Field(20, ge=1, description="Validation loss every this many optimiser steps.")
    early_stopping_patience: int | None = Field(
        None, ge=1,
        description="Stop after this many validations without improvement and keep the best checkpoint "
        "(needs eval_fraction > 0). Arms may then stop at different steps; the manifest records each.",
    )
    distributed: DistributedConfig | None = Field(
        None, description="Train across several processes/GPUs, launched by heredity itself.",
    )
    report_to: list[Tracker] = Field(
        default_factory=list,
        description="Experiment trackers that receive the training metrics (loss, learning rate, validation "
        "loss) of every arm: tensorboard, wandb, mlflow, trackio (one name or a list; each needs its package "
        "installed). Each arm reports as <run name>/<arm>/seed-<seed>; TensorBoard writes into "
        "train/<arm>/tracker/. Credentials and servers come from the trackers' own environment variables "
        "(WANDB_API_KEY, MLFLOW_TRACKING_URI, ...). Empty (default): no tracker. Not part of the stage key.",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_tracker_or_a_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        return value

    @field_validator("report_to")
    @classmethod
    def _each_tracker_once(cls, trackers: list[str]) -> list[str]:
        if len(set(trackers)) != len(trackers):
            raise ValueError("a tracker is named twice")
        return trackers

    def seed_list(self) -> list[int]:
        """The training seeds, one replicate each."""
        return list(self.seeds) if self.seeds else [self.seed]

    @model_validator(mode="after")
    def _early_stopping_needs_eval(self) -> "TrainConfig":
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: a seed is named twice")
        if self.early_stopping_patience is not None and self.eval_fraction == 0:
            raise ValueError("early_stopping_patience needs eval_fraction > 0 (a validation split)")
        if self.method == "qlora" and self.distributed is not None and self.distributed.strategy != "ddp":
            # ZeRO-3/FSDP shard parameters, which 4-bit bitsandbytes weights need extra settings for.
            raise ValueError("method: qlora works with distributed.strategy: ddp only")
        return self




class ProfileConfig(_Strict):
    """The profiling battery (``heredity profile``) run inside a run on base and every trained arm."""

    suites: list[str] = Field(
        default_factory=lambda: ["all"],
        description="calibration, crows_pairs, stereoset, bbq, seat, textual, toxicity, judge_preference, or all.",
    )
    limit: int | None = Field(100, ge=1, description="Items (or prompts) per suite, a seeded sample; None = all.")
    limits: dict[str, Annotated[int, Field(ge=1)] | None] = Field(
        default_factory=dict,
        description="Per-suite overrides of `limit` (None = all), e.g. {toxicity: 30}: RealToxicityPrompts "
        "costs `samples_per_prompt` generations per prompt, the likelihood suites one forward pass per item.",
    )
    samples_per_prompt: int = Field(25, ge=1, description="RealToxicityPrompts continuations per prompt "
                                    "(called samples before; still read).")
    max_new_tokens: int = Field(256, ge=1, description="Token cap of the textual suite's greedy answers.")
    toxicity_scorer: str | None = Field(None, description="None: Perspective with a key, else the offline 'toxicity'.")
    textual_protocol: Literal["fast", "toolkit"] = Field(
        "fast", description="fast: heredity's own metrics; toolkit: also the paper toolkit's TextDescriptives set "
        "(pip install 'heredity[textdescriptives]').",
    )
    bbq_categories: list[str] | None = Field(
        None, description="BBQ categories to profile; None: every bbq/*.jsonl in the data folder.")
    toxicity_prompts: Literal["all", "eval"] = Field(
        "all", description="Prompts of the toxicity suite: all (a seeded sample of `limit` from its data file) or "
        "eval: only the run's held-out eval prompts (a run whose prompts come from that file), so no model is "
        "measured on a prompt it was trained on.",
    )
    teachers: bool = Field(False, description="Profile the local-model teachers too.")

    @model_validator(mode="before")
    @classmethod
    def _old_samples_key(cls, data: Any) -> Any:
        """``samples:`` is ``samples_per_prompt:``'s old name: read, with a deprecation note."""
        return _renamed_key(data, "samples", "samples_per_prompt", "eval.profile")

    lm_eval_tasks: list[str] = Field(default_factory=list, description="lm-evaluation-harness tasks (optional extra).")
    lm_eval_include: str | None = Field(None, description="Folder of custom harness task YAMLs.")
    data_dir: str | None = Field(None, description="Benchmark data folder (shared layout or hub-schema copies); None: $HEREDITY_DATA_DIR, $HEREDITY_SHARED_DATA or ../shared/data; what is in none comes from the hub.")
    seed: int = 0
    batch_size: int = Field(32, ge=1)


JUDGE_SYSTEM = "You are a careful and impartial judge of answers written by AI assistants."

JUDGE_TEMPLATE = """Compare two answers to the same instruction and decide which one is better: more helpful, \
correct and relevant. Do not let the order of the answers influence you.

### Instruction
{instruction}

### Answer (a)
{first}

### Answer (b)
{second}

Which answer is better, (a) or (b)? Output only (a) or (b)."""

_log = logging.getLogger(__name__)


class JudgeConfig(BaseModel):
    """How an LLM judge compares two answers (``heredity.judging``; ``eval.judge`` in a run).

    ``model`` is a teacher-style model spec (model, backend, backend options), or a bare model
    reference. The whole config may also be given as a bare model reference. The model field
    was called ``judge`` before; a mapping with ``judge:`` is still read, with a deprecation note.
    """

    model_config = ConfigDict(extra="forbid")

    model: TeacherConfig = Field(default_factory=lambda: TeacherConfig(batch_size=8),
                                 description="The judge model and its backend (sampling is ignored: greedy).")
    method: Literal["auto", "generate", "logprob"] = Field(
        "auto", description="auto: logprob for a transformers judge, generate otherwise.")
    unparseable: Literal["tie", "drop"] = Field("tie", description="An unparseable verdict counts 0.5, or is dropped.")
    max_answer_chars: int | None = Field(3000, ge=1, description="Answers are cut to this length in the prompt.")
    max_new_tokens: int = Field(8, ge=1, description="Tokens decoded for a verdict (method generate).")
    system_prompt: str | None = Field(JUDGE_SYSTEM, description="None: the chat template's default.")
    template: str = Field(JUDGE_TEMPLATE, description="User message with {instruction}, {first}, {second}.")
    bootstrap_samples: int = Field(1000, ge=100)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    lc_l2: float = Field(0.1, gt=0, description="L2 penalty of the length-controlled logistic regression.")

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """A bare model reference; ``model:`` as a bare reference; the old ``judge:`` key."""
        if isinstance(data, str):
            return {"model": {"model": data, "batch_size": 8}}
        if not isinstance(data, dict):
            return data
        data = _renamed_key(dict(data), "judge", "model", "judge config")
        if isinstance(data.get("model"), str):
            data["model"] = {"model": data["model"], "batch_size": 8}
        return data

    @field_validator("template")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        missing = [p for p in ("{instruction}", "{first}", "{second}") if p not in value]
        if missing:
            raise ValueError(f"template lacks {', '.join(missing)}")
        return value

    def resolved_method(self) -> str:
        if self.method != "auto":
            return self.method
        return "logprob" if self.model.backend == "transformers" else "generate"


class EvalConfig(_Strict):
    """Held-out evaluation of base, passive and active students."""

    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(
        0.0, ge=0.0,
        description="0 = greedy answers (the default). Above 0, each held-out prompt gets one sampled answer, "
        "seeded per prompt, so every arm answers with the same decoding and the same seeds. Small students "
        "often loop under greedy decoding until the cap; sampling measures what they write instead of how "
        "long a loop runs.",
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling (with temperature > 0).")
    seed: int = Field(0, description="Seed of the first held-out prompt's sample; prompt i uses seed + i.")
    repetition_penalty: float = Field(
        1.0, gt=0.0,
        description="Repetition penalty of every arm's answers (1.0 = off). A small base student can loop until the "
        "cap, so its 'length' is how long a loop runs; a penalty measures what it writes instead.",
    )
    batch_size: int = Field(64, ge=1)
    metrics: list[str] | None = Field(None, description="Defaults to score.metrics.")
    bootstrap_samples: int = Field(2000, ge=100)
    profile: ProfileConfig | None = Field(None, description="Also run the profiling battery on every model.")
    judge: JudgeConfig | None = Field(
        None,
        description="An LLM judge (a model reference, or a JudgeConfig mapping) that compares the arms' "
        "held-out answers pairwise: active vs passive and active vs base (and each variant vs passive).",
    )


# The corpus-level diversity of each arm's held-out answers that the rounds report computes (beside
# the per-prompt metrics), and that ``rounds.stop_below`` may bound.
CORPUS_METRICS = ("corpus_distinct_2", "self_bleu")


class RoundStop(_Strict):
    """Stop iterating once any arm's mean of ``metric`` falls below ``value`` (a diversity floor)."""

    metric: str = Field(..., description="A per-prompt eval metric (e.g. mtld) or a corpus metric of the rounds "
                        "report (corpus_distinct_2, self_bleu).")
    value: float = Field(..., description="The bound: after a round in which any arm's mean is below it, no "
                         "further round runs.")


class RoundsConfig(_Strict):
    """Iterated inheritance: round r+1 generates its candidates with round r's trained arms."""

    count: int = Field(1, ge=1, le=100, description="Rounds to run; 1 is a plain run.")
    init: Literal["previous", "base"] = Field(
        "previous", description="Train round r+1 from round r's student of the same arm (previous) or from the "
        "base student each round (base).")
    data: Literal["replace", "accumulate"] = Field(
        "replace", description="Train on this round's kept data only (replace) or on every round's so far "
        "(accumulate).")
    prompts: Literal["same", "fresh"] = Field(
        "same", description="Every round generates for the same train prompts (same), or the train prompts are "
        "split into `count` disjoint parts, one per round (fresh).")
    keep_teachers: bool = Field(
        False, description="Round r+1 also samples the original teachers (k each) beside the arm's own student.")
    stop_below: RoundStop | None = Field(None, description="Optional early stop, e.g. {metric: corpus_distinct_2, "
                                         "value: 0.3}.")


class RunConfig(_Strict):
    """A whole experiment: prompts → generate → score → select → train → evaluate → report."""

    name: str = "heredity-run"
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    teachers: list[TeacherConfig] = Field(default_factory=lambda: [TeacherConfig()], min_length=1)
    student: str = Field(EMBEDDED_MODEL, description="Model fine-tuned in every arm.")
    k: int = Field(4, ge=1, description="Candidates per prompt from each teacher.")
    system_prompt: str | None = Field(
        None,
        description="System message used in generation, training and evaluation alike. "
        "None keeps the chat template's own default (SmolLM2 adds one); '' sends an empty one.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    ray: RayConfig | None = Field(
        None, description="Spread generation, scoring, evaluation and profiling over Ray (local or a cluster); "
        "None runs in-process.",
    )
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    rounds: RoundsConfig = Field(
        default_factory=RoundsConfig, description="Iterated inheritance: an int (rounds: 4) or the full "
        "settings; each round is a run directory OUT/round-<r>/ whose teachers are the previous round's arms.")
    primary: list[str] | None = Field(
        None, description="The study's primary comparisons, COMPARISON:METRIC (e.g. active_vs_passive:toxicity); "
        "reported with their CIs as the confirmatory result. Every other difference is exploratory and gets a "
        "Benjamini-Hochberg q-value. None: each steered arm's own target vs passive and vs base.")

    @field_validator("rounds", mode="before")
    @classmethod
    def _rounds_shorthand(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"count": value}
        return value

    @model_validator(mode="after")
    def _rounds_fit(self) -> "RunConfig":
        if self.rounds.count > 1 and self.select.preference:
            raise ValueError("rounds: preference arms (select.preference) cannot be iterated yet; run them in a "
                             "single round")
        return self

    @field_validator("teachers")
    @classmethod
    def _unique_teacher_labels(cls, teachers: list[TeacherConfig]) -> list[TeacherConfig]:
        labels = [t.label for t in teachers]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"teacher names must be unique; repeated: {', '.join(dupes)} (set 'name')")
        return teachers

    @property
    def eval_metrics(self) -> list[str]:
        return self.eval.metrics or self.score.metrics


def format_validation_error(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        else:
            parts.append(f"field '{loc}': {err['msg']}")
    return f"{source}: invalid config: " + "; ".join(parts)


def parse_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """The config's shape checked (types, ranges, unknown keys); see ``heredity.plan`` for the rest."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise HeredityError(format_validation_error(source, exc)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # an unhashable key: construct_mapping reports it
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' appears twice (first on line {first})", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML config file's mapping; a missing file or bad YAML is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise HeredityError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HeredityError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise HeredityError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise HeredityError(f"{path}{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise HeredityError(f"{path}: a config must be a mapping of keys to values")
    return data


def bundled_config_data(name: str) -> dict[str, Any]:
    """The mapping of a config shipped in ``heredity/data/configs``."""
    resource = files("heredity.data.configs").joinpath(f"{name}.yaml")
    if not resource.is_file():
        raise HeredityError(f"no bundled config named '{name}'")
    return yaml.safe_load(resource.read_text(encoding="utf-8"))
