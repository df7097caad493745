"""A run plan: the config read, then checked against everything it names, before any work.

``heredity.config`` checks a config's shape; this module checks what the schema cannot see on
its own — that every metric, selection rule and judge it names exists and takes the options
given — and completes it (metrics a selection reads are scored even when ``score.metrics``
leaves them out). Every loader of a run config goes through here, so a bad name is a one-line
error naming its field before the first expensive stage, not hours later.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

from heredity.config import (
    CORPUS_METRICS,
    RunConfig,
    TeacherConfig,
    bundled_config_data,
    parse_config,
    read_config_file,
)
from heredity.core.arms import comparisons
from heredity.core.data import missing_data_hint
from heredity.core.http import public_url
from heredity.core.models import EMBEDDED, adapter_base, chat_messages, gguf_path
from heredity.core.prompts import Prompt, load_prompts, read_rows, text_field
from heredity.errors import HeredityError, input_error
from heredity.metrics import resolve
from heredity.strategies import parse_spec, spec_metrics


def _metric_problem(column: str, options: dict[str, Any]) -> str | None:
    try:
        resolve(column, options)
    except HeredityError as exc:
        return str(exc)
    return None


def selection_metrics(cfg: RunConfig) -> list[str]:
    """Every metric the selection reads (the target included)."""
    pairs = [pref.pair_rule(cfg.select.target, cfg.select.direction) for pref in cfg.select.preference.values()]
    return sorted({cfg.select.target, *(m for spec in cfg.select.specs().values() for m in spec_metrics(spec)),
                   *(rule["metric"] for rule in pairs), *(m for rule in pairs for m in spec_metrics(rule["chosen"]))})


def _profile_problems(cfg: RunConfig) -> list[str]:
    """What is wrong with ``eval.profile``, found now rather than when profiling starts after training."""
    pc = cfg.eval.profile
    if pc is None:
        return []
    from heredity.profile import resolve_suites  # here: the suites import torch, `import heredity` must not

    try:
        names = resolve_suites(pc.suites)
    except HeredityError as exc:
        return [f"field 'eval.profile.suites': {exc}"]
    problems = [f"field 'eval.profile.limits.{name}': suite '{name}' is not profiled (eval.profile.suites: "
                f"{', '.join(names)})" for name in pc.limits if name not in names]
    if pc.toxicity_scorer is not None and (why := _metric_problem(pc.toxicity_scorer, {})) is not None:
        problems.append(f"field 'eval.profile.toxicity_scorer': {why}")
    return problems


def _primary_problems(cfg: RunConfig) -> list[str]:
    known = [f"{a}_vs_{b}" for a, b in comparisons(cfg.select.extra_arms())]
    problems = []
    for i, entry in enumerate(cfg.primary or []):
        comparison, _, metric = entry.partition(":")
        if comparison not in known:
            problems.append(f"field 'primary.{i}': unknown comparison '{comparison}' (known: {', '.join(known)})")
        elif metric not in cfg.eval_metrics:
            problems.append(f"field 'primary.{i}': '{metric}' is not an evaluated metric "
                            f"(write COMPARISON:METRIC; evaluated: {', '.join(cfg.eval_metrics)})")
    return problems


def check_config(cfg: RunConfig, source: str = "config") -> RunConfig:
    """``cfg`` checked against the registries and completed; the same config again is a no-op.

    Raises one HeredityError naming every problem's field, in the format of a schema error.
    """
    problems: list[str] = []
    options = cfg.score.metric_options
    for i, column in enumerate(cfg.score.metrics):
        if (why := _metric_problem(column, options)) is not None:
            problems.append(f"field 'score.metrics.{i}': {why}")
    for column in options:
        if column not in cfg.score.metrics and (why := _metric_problem(column, options)) is not None:
            problems.append(f"field 'score.metric_options.{column}': {why}")
    for i, column in enumerate(cfg.eval.metrics or []):
        if column not in cfg.score.metrics and (why := _metric_problem(column, options)) is not None:
            problems.append(f"field 'eval.metrics.{i}': {why}")
    rules = {"select.active": cfg.select.active, "select.passive": cfg.select.passive,
             **{f"select.variants.{name}": spec for name, spec in cfg.select.variants.items()},
             **{f"select.preference.{name}.chosen": pref.chosen for name, pref in cfg.select.preference.items()}}
    for field, spec in rules.items():
        if spec is not None:
            try:
                parse_spec(spec.as_dict())
            except HeredityError as exc:
                problems.append(f"field '{field}': {exc}")
    if cfg.select.preference and cfg.k * len(cfg.teachers) < 2:
        problems.append(f"field 'select.preference': a pair needs two candidates per prompt, and k={cfg.k} with "
                        f"{len(cfg.teachers)} teacher(s) gives {cfg.k * len(cfg.teachers)}")
    problems += _profile_problems(cfg)
    if not problems:
        missing = [m for m in selection_metrics(cfg) if m not in cfg.score.metrics]
        for m in missing:
            if (why := _metric_problem(m, options)) is not None:
                field = "select.target" if m == cfg.select.target else "select"
                problems.append(f"field '{field}': {why}")
        if not problems and missing:
            cfg.score.metrics = [*cfg.score.metrics, *missing]
    if not problems:
        problems += _primary_problems(cfg)
    stop = cfg.rounds.stop_below
    if stop is not None and stop.metric not in (*cfg.eval_metrics, *CORPUS_METRICS):
        problems.append(f"field 'rounds.stop_below.metric': '{stop.metric}' is neither an evaluated metric "
                        f"({', '.join(cfg.eval_metrics)}) nor a corpus metric ({', '.join(CORPUS_METRICS)})")
    if problems:
        raise HeredityError(f"{source}: invalid config: " + "; ".join(problems))
    return cfg


def config_from_dict(data: dict[str, Any], source: str = "config") -> RunConfig:
    """A checked run config from a mapping (what YAML gives)."""
    return check_config(parse_config(data, source), source)


def load_config(path: str | Path) -> RunConfig:
    """A checked run config from a YAML file."""
    return config_from_dict(read_config_file(path), str(path))


def bundled_config(name: str) -> RunConfig:
    """A checked config shipped with heredity (``quickstart``)."""
    return config_from_dict(bundled_config_data(name), f"bundled:{name}")


# ---------------------------------------------------------------------------- preflight

MIN_FREE_BYTES = 100 * 2**20  # below this a run cannot even write its pool
_WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pt", "*.pth")
_STOPS_WITHOUT_TRAINING = {"generate", "score", "select"}


def persisted_config(cfg: RunConfig) -> dict[str, Any]:
    """The config as written to ``config.json`` and ``summary.json``: endpoint URLs without
    credentials (``user:key@``, query string), everything else as given."""
    data = cfg.model_dump(mode="json")
    teachers = list(data["teachers"])
    judge = (data.get("eval") or {}).get("judge")
    if judge and judge.get("model"):
        teachers.append(judge["model"])
    for teacher in teachers:
        if teacher.get("openai") and teacher["openai"].get("base_url"):
            teacher["openai"]["base_url"] = public_url(teacher["openai"]["base_url"])
    return data


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~", ".\\")) or ref.endswith((".gguf", ".safetensors")) \
        or Path(ref).expanduser().exists()


def check_model(ref: str, field: str) -> None:
    """A model reference that can be checked offline: an embedded model's package is installed, a
    local file or folder exists and holds weights. A hub id is accepted (it needs the network)."""
    if ref.startswith("embedded:"):
        name = ref.removeprefix("embedded:")
        if name not in EMBEDDED:
            known = ", ".join(f"embedded:{k}" for k in EMBEDDED)
            raise HeredityError(f"field '{field}': unknown embedded model '{ref}'; known: {known}")
        try:
            gguf_path(ref)
        except HeredityError as exc:
            raise HeredityError(f"field '{field}': {exc}") from None
        return
    if not _looks_like_path(ref):
        return  # a hub id
    path = Path(ref).expanduser()
    if not path.exists():
        raise HeredityError(f"field '{field}': model '{ref}' not found (no such file or folder)")
    if path.is_file():
        if path.suffix != ".gguf":
            raise HeredityError(f"field '{field}': model '{ref}' is a file; give a model folder or a .gguf file")
        return
    if not (path / "config.json").is_file():
        try:
            base = adapter_base(path)
        except HeredityError as exc:
            raise HeredityError(f"field '{field}': {exc}") from None
        if base is None:
            raise HeredityError(f"field '{field}': model folder '{ref}' has no config.json "
                                "(expected save_pretrained output)")
        if not any(any(path.glob(p)) for p in _WEIGHTS):
            raise HeredityError(f"field '{field}': adapter folder '{ref}' has no adapter weights")
        check_model(base, f"{field} (the adapter's base_model_name_or_path)")
        return
    if not any(any(path.glob(p)) for p in _WEIGHTS):
        raise HeredityError(f"field '{field}': model folder '{ref}' has config.json but no weights "
                            "(*.safetensors or *.bin)")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise HeredityError(f"--out {out}: exists and is not a directory")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise HeredityError(f"--out {out}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HeredityError(f"--out {out}: {existing} is not writable")
    config = out / "config.json"
    if config.exists() and not config.is_file():
        raise HeredityError(f"--out {out}: {config} is not a file")
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise HeredityError(f"--out {out}: only {free // 2**20} MiB free on its file system")


def _check_replay(teacher: TeacherConfig, index: int, train: list[Prompt]) -> None:
    opts = teacher.replay
    if opts is None or opts.path.startswith("hf:"):
        return
    field = f"teachers.{index}.replay.path"
    if not Path(opts.path).expanduser().is_file():
        raise HeredityError(f"field '{field}': replay file '{opts.path}' not found{missing_data_hint(opts.path)}")
    rows, label = read_rows(opts.path, opts.hf_split)
    wanted = (opts.prompt_field, opts.text_field) + ((opts.teacher_field,) if opts.teacher_field else ())
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise input_error(label, i, None, "each row must be an object (a mapping of fields)")
        for name in wanted:
            if name not in row:
                raise input_error(label, i, name, f"missing (columns: {', '.join(map(str, row))})")
        text_field(row, opts.text_field, label, i)
    texts = {p.text for p in train}
    if not any(str(row[opts.prompt_field]).strip() in texts for row in rows):
        raise HeredityError(f"{label}: no row's '{opts.prompt_field}' matches any train prompt "
                            f"(field 'teachers.{index}.replay.prompt_field')")


# The modules each tracker of ``train.report_to`` needs, any one of them (transformers' TensorBoard
# callback writes with torch's writer, which needs tensorboard, or with tensorboardX), and what to install.
TRACKER_MODULES = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
                   "wandb": (("wandb",), "wandb"), "mlflow": (("mlflow",), "mlflow"),
                   "trackio": (("trackio",), "trackio")}


def _check_trackers(trackers: list[str]) -> None:
    """Every tracker ``train.report_to`` names is installed: the trainer would refuse a missing one
    only after generation, scoring and selection have run."""
    for tracker in trackers:
        modules, package = TRACKER_MODULES[tracker]
        if not any(importlib.util.find_spec(m) is not None for m in modules):
            raise HeredityError(f"field 'train.report_to': {tracker} is not installed: pip install {package}")


def _check_training(cfg: RunConfig) -> None:
    """Settings that the trainer would refuse only once training starts."""
    from transformers import (
        SchedulerType,  # only when the run trains: transformers is then needed anyway
    )

    _check_trackers(cfg.train.report_to)
    names = [s.value for s in SchedulerType]
    if cfg.train.lr_scheduler not in names:
        raise HeredityError(f"field 'train.lr_scheduler': unknown scheduler {cfg.train.lr_scheduler!r} "
                            f"(one of: {', '.join(names)})")
    if cfg.train.method == "full":
        return
    modules = cfg.train.lora_target_modules
    if isinstance(modules, str):
        if modules != "all-linear":
            import re

            try:
                re.compile(modules)
            except re.error as exc:
                raise HeredityError(f"field 'train.lora_target_modules': {modules!r} is neither 'all-linear', "
                                    f"a list of module names, nor a valid regular expression ({exc})") from None
            _check_lora_targets(cfg.student, modules)
        return
    if not modules:
        raise HeredityError("field 'train.lora_target_modules': empty list (name modules, e.g. [q_proj, v_proj], "
                            "or use all-linear)")
    for i, name in enumerate(modules):
        if not name or not all(part.isidentifier() or part.isdigit() for part in name.split(".")):
            raise HeredityError(f"field 'train.lora_target_modules.{i}': {name!r} is not a module name "
                                "(e.g. q_proj)")
    if len(set(modules)) != len(modules):
        raise HeredityError("field 'train.lora_target_modules': a module is named twice")
    _check_lora_targets(cfg.student, modules)


# the layer types peft's LoRA wraps (a target matching anything else fails when training starts)
_LORA_LAYERS = {"Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D", "MultiheadAttention"}


def _check_lora_targets(student: str, targets: list[str] | str) -> None:
    """Each LoRA target names a layer of the student, by peft's rule (a module's full name, or its
    last dotted parts), checked on the student's config alone (``module_names``), before any stage."""
    from heredity.core.models import module_names

    names = module_names(student)
    if names is None:
        return
    wrappable = sorted({n.rsplit(".", 1)[-1] for n, kind in names.items() if kind in _LORA_LAYERS})
    hint = f"the student's layers LoRA can adapt: {', '.join(wrappable)}; or use all-linear"
    if isinstance(targets, str):
        import re

        if not any(re.fullmatch(targets, n) for n in names):
            raise HeredityError(f"field 'train.lora_target_modules': {targets!r} matches no module of the student "
                                f"{student} ({hint})")
        return
    for i, target in enumerate(targets):
        matched = [n for n in names if n == target or n.endswith("." + target)]
        if not matched:
            raise HeredityError(f"field 'train.lora_target_modules.{i}': {target!r} names no module of the student "
                                f"{student} ({hint})")
        other = sorted({names[n] for n in matched} - _LORA_LAYERS)
        if other:
            raise HeredityError(f"field 'train.lora_target_modules.{i}': {target!r} names a {other[0]}, which LoRA "
                                f"cannot adapt ({hint})")


def _context_length(ref: str) -> tuple[Any, int | None]:
    """The student's tokenizer and context window, or (None, None) where that is not known offline."""
    if not ref.startswith("embedded:") and not Path(ref).expanduser().is_dir():
        return None, None  # a hub id (offline) or a .gguf file: checked when the stage loads it
    from heredity.core.models import load_tokenizer

    tokenizer = load_tokenizer(ref)
    limits = []
    maximum = getattr(tokenizer, "model_max_length", None)
    if isinstance(maximum, int) and 0 < maximum < 10**8:  # transformers' "no limit" is ~1e30
        limits.append(maximum)
    config_file = Path(getattr(tokenizer, "name_or_path", "")) / "config.json"
    if config_file.is_file():
        try:
            positions = json.loads(config_file.read_text(encoding="utf-8")).get("max_position_embeddings")
        except ValueError:
            positions = None
        if isinstance(positions, int) and positions > 0:
            limits.append(positions)
    return tokenizer, (min(limits) if limits else None)


def _check_prompt_lengths(cfg: RunConfig, prompts: list[tuple[str, Prompt]]) -> None:
    tokenizer, context = _context_length(cfg.student)
    if tokenizer is None or context is None:
        return
    source = {"train": cfg.prompts.source, "eval": cfg.prompts.eval_source or cfg.prompts.source}
    margin = 256 + len((cfg.system_prompt or "").encode("utf-8"))  # the chat template's own tokens
    for split, prompt in prompts:
        # a train prompt needs room for at least one answer token, an eval prompt for eval.max_new_tokens
        room = cfg.eval.max_new_tokens if split == "eval" else 1
        if len(prompt.text.encode("utf-8")) + margin + room <= context:  # a token holds at least a byte
            continue
        ids = tokenizer.apply_chat_template(chat_messages(prompt.text, cfg.system_prompt),
                                            add_generation_prompt=True, tokenize=True)
        n = len(ids["input_ids"] if hasattr(ids, "keys") else ids)  # a BatchEncoding in new transformers
        if n + room > context:
            need = f"{room} new tokens (eval.max_new_tokens)" if split == "eval" else "an answer"
            raise HeredityError(f"{source[split]}, prompt id '{prompt.id}', field '{cfg.prompts.field}': "
                                f"{n} tokens with the chat template leave no room for {need} in the student's "
                                f"context of {context} tokens (field 'student': {cfg.student})")


def preflight(cfg: RunConfig, out: Path, until: str = "report",
              produced: frozenset[str] = frozenset()) -> tuple[list[Prompt], list[Prompt]]:
    """Everything that can be checked before the first expensive stage, reading only: the run
    directory, the prompt files (returned, as (train, eval)), replay files, every local model the
    run will load, the device, the training settings and each prompt's length in the student's
    context. Raises one HeredityError naming the file, row and field of the first problem.
    ``produced``: models an earlier round of this run will train (``round_config``), not yet on disk."""
    _check_out(Path(out))
    train, held_out = load_prompts(cfg.prompts)
    trains = until not in _STOPS_WITHOUT_TRAINING
    for i, teacher in enumerate(cfg.teachers):
        if teacher.backend == "replay":
            _check_replay(teacher, i, train)
        elif teacher.backend != "openai" and teacher.model not in produced:
            check_model(teacher.model, f"teachers.{i}.model")
    if trains:
        check_model(cfg.student, "student")
        judge = cfg.eval.judge
        if judge is not None and judge.model.backend not in ("openai", "replay"):
            check_model(judge.model.model, "eval.judge.model")
    devices = {"device": cfg.device}
    if trains and cfg.eval.judge is not None:
        devices["eval.judge.device"] = cfg.eval.judge.device
    if "cuda" in devices.values():
        import torch

        if not torch.cuda.is_available():
            field = next(f for f, d in devices.items() if d == "cuda")
            raise HeredityError(f"field '{field}': 'cuda' requested but no CUDA GPU is visible "
                                "(use auto or cpu)")
    if trains and not held_out:
        raise HeredityError("field 'prompts.eval_every': no held-out eval prompts (it is null): set eval_every or "
                            "eval_source to train and evaluate students, or run `heredity select` to stop after "
                            "selection")
    _check_metric_files(cfg)
    if trains:
        _check_training(cfg)
        _check_prompt_lengths(cfg, [("train", p) for p in train] + [("eval", p) for p in held_out])
    return train, held_out


def _check_metric_files(cfg: RunConfig) -> None:
    """What metrics read beyond their options (a refitted toxicity head, a reference model's files)
    is read for the stage keys after generation; a missing file must fail before it."""
    from heredity.metrics.scoring import metric_context, reference_models

    context = metric_context(cfg, None, with_tokenizer=False)
    for field, metrics in (("score.metrics", cfg.score.metrics), ("eval.metrics", cfg.eval_metrics)):
        try:
            reference_models(metrics, context)
        except HeredityError as exc:
            raise HeredityError(f"field '{field}': {exc}") from None


# ---------------------------------------------------------------------------- rounds


def round_dir(chain: Path, round_: int) -> Path:
    """Round ``round_`` (1-based) of one chain of rounds: ``OUT/round-<r>/`` (or a seed's own chain)."""
    return Path(chain) / f"round-{round_}"


def round_prompts(train: list[Prompt], cfg: RunConfig, round_: int) -> list[Prompt]:
    """The train prompts of round ``round_``: all of them (``rounds.prompts: same``), or every
    ``count``-th from the ``round_``-th on (``fresh``: disjoint parts, each spread over the source)."""
    if cfg.rounds.prompts == "same":
        return train
    part = train[round_ - 1::cfg.rounds.count]
    if not part:
        raise HeredityError(f"field 'rounds.prompts': fresh prompts for {cfg.rounds.count} rounds need at least "
                            f"{cfg.rounds.count} train prompts; the source gives {len(train)}")
    return part


def round_config(cfg: RunConfig, chain: Path, round_: int) -> RunConfig:
    """The config of round ``round_`` of a rounds run whose rounds live in ``chain``.

    Round 1 is the config itself. From round 2 on, each SFT arm's student of the round before is a
    teacher named after its arm, sampled as the first original teacher is (with the original
    teachers beside it under ``rounds.keep_teachers``), and each arm's rule sees only its own
    chain's candidates (``from_teachers``): the active student never learns from the passive one's
    text, and the passive arm iterates on its own random picks, the model-collapse control.
    Teacher profiles are left to round 1 (a later round's teachers are the earlier round's arms,
    profiled there)."""
    if round_ == 1:
        return cfg
    first = cfg.teachers[0]
    backend = "vllm" if any(t.backend == "vllm" for t in cfg.teachers) else "transformers"
    previous = round_dir(Path(chain).resolve(), round_ - 1) / "train"  # the model is found wherever heredity runs
    arms = cfg.select.arms()
    kept = [t.label for t in cfg.teachers] if cfg.rounds.keep_teachers else []
    clash = sorted(set(arms) & set(kept))
    if clash:
        raise HeredityError(f"field 'rounds.keep_teachers': teacher name {clash[0]!r} is also an arm's name, which "
                            "names that arm's student from round 2 on; rename the teacher (teachers.N.name)")
    data = cfg.model_dump(mode="json")
    students = [{"model": str(previous / arm / "model"), "name": arm, "backend": backend,
                 "sampling": data["teachers"][0]["sampling"], "batch_size": first.batch_size,
                 "vllm": data["teachers"][0]["vllm"]} for arm in arms]
    data["teachers"] = students + (data["teachers"] if cfg.rounds.keep_teachers else [])

    def own(arm: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"strategy": "from_teachers", "teachers": [arm, *kept], "then": spec}

    specs = cfg.select.specs()
    data["select"].update(active=own("active", specs["active"]), passive=own("passive", specs["passive"]),
                          variants={name: own(name, specs[name]) for name in cfg.select.variants})
    if data["eval"].get("profile"):
        data["eval"]["profile"]["teachers"] = False
    return config_from_dict(data, f"round {round_} of the config")


def produced_models(cfg: RunConfig, chain: Path) -> frozenset[str]:
    """Every model a rounds run trains before a later round samples it (see ``preflight``)."""
    return frozenset(str(round_dir(Path(chain).resolve(), r) / "train" / arm / "model")
                     for r in range(1, cfg.rounds.count) for arm in cfg.select.arms())
