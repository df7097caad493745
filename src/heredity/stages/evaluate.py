"""Evaluate stage: each student answers the held-out prompts (greedy unless eval.temperature > 0); answers are scored.

With ``ray:`` set, :func:`run_evaluations_on_ray` answers with every model at once, one Ray task
per model given one replica's resources. A task returns its answers; the driver scores them
(through the score cache) and writes the stage as each task comes back, so a stage is written
once whatever Ray reran. A trained arm is read from the run directory (``train/<arm>/model``),
so on a multi-node cluster the run directory must be on a file system every node mounts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heredity.backends import Request, batched
from heredity.backends.transformers_backend import generate_batch
from heredity.config import RunConfig, SamplingConfig
from heredity.core.cluster import fan_out
from heredity.core.models import (
    chat_messages,
    load_model,
    load_tokenizer,
    model_identity,
    pick_device,
)
from heredity.core.prompts import Prompt
from heredity.core.rundir import Stage, read_table, stable_hash, write_table
from heredity.errors import HeredityError
from heredity.metrics.scoring import metric_context, metric_versions, reference_models, score_texts


def answer(model_ref: str, prompts: list[Prompt], cfg: RunConfig, progress=None, label: str = "") -> list[dict[str, Any]]:
    device = pick_device(cfg.device)
    tokenizer = load_tokenizer(model_ref)
    model = load_model(model_ref, device)
    decoding = SamplingConfig(temperature=cfg.eval.temperature, top_p=cfg.eval.top_p,
                              max_new_tokens=cfg.eval.max_new_tokens, repetition_penalty=cfg.eval.repetition_penalty)
    # Longest prompts first: the first batch shows early whether memory suffices.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i].text))
    task = progress.add_task(f"evaluate [{label}]", total=len(prompts)) if progress else None
    rows: dict[int, dict[str, Any]] = {}
    for chunk in batched(order, cfg.eval.batch_size):
        # Seeded by the prompt's position, not its batch: the same prompt gets the same seed in every arm.
        requests = [Request(chat_messages(prompts[i].text, cfg.system_prompt), cfg.eval.seed + i) for i in chunk]
        for i, c in zip(chunk, generate_batch(model, tokenizer, requests, decoding)):
            rows[i] = {"prompt_id": prompts[i].id, "prompt": prompts[i].text, "text": c.text,
                       "finish_reason": c.finish_reason, "completion_tokens": c.completion_tokens}
        if progress is not None:
            progress.update(task, advance=len(chunk))
    return [rows[i] for i in range(len(prompts))]


def eval_key(cfg: RunConfig) -> dict[str, Any]:
    """The evaluation settings that change answers. Greedy decoding leaves the sampling fields out, and
    no penalty leaves repetition_penalty out, so runs made before they existed keep their keys (top_p
    and seed do not change greedy answers)."""
    key = cfg.eval.model_dump(exclude={"batch_size", "bootstrap_samples", "profile", "judge"})
    if key["repetition_penalty"] == 1.0:
        key.pop("repetition_penalty")
    if cfg.eval.temperature == 0.0:
        for name in ("temperature", "top_p", "seed"):
            key.pop(name)
    return key


def evaluate_stage(cfg: RunConfig, run_dir: Path, arm: str, eval_prompts: list[Prompt],
                   model_stage: Stage | None) -> tuple[Stage, str]:
    """The stage ``evaluate/<arm>`` with its key, and the model it answers with (nothing computed)."""
    model_ref = cfg.student if model_stage is None else str(model_stage.dir / "model")
    key: dict[str, Any] = {
        "model": model_identity(cfg.student) if model_stage is None else model_stage.key,
        "prompts": stable_hash([(p.id, p.text) for p in eval_prompts]),
        "system_prompt": cfg.system_prompt,
        "eval": eval_key(cfg),
        "metrics": metric_versions(cfg.eval_metrics, cfg.score.metric_options),
        "tokenizer": model_identity(cfg.student),
        "device": cfg.device,
    }
    # What a metric's values depend on beyond its options (a refitted toxicity head's file, a
    # reference model): only when there is any, so evaluations without such metrics keep their keys.
    models = reference_models(cfg.eval_metrics, metric_context(cfg, None, with_tokenizer=False))
    if models:
        key["metric_models"] = models
    return Stage(run_dir, f"evaluate/{arm}", key), model_ref


@dataclass(frozen=True)
class EarlierAnswers:
    """Answers to re-score, and the compute (s) it took to produce them."""

    rows: list[dict[str, Any]]
    seconds: float


def earlier_answers(stage: Stage) -> EarlierAnswers | None:
    """The answers of a finished evaluation that differs from ``stage`` in its metrics only (a
    metric added, dropped or of a new version), without their scores; else None.

    The answers depend on the model, prompts and decoding, all in the key, not on the metrics, so
    a changed metric re-scores them rather than generating them again. Call before ``start()``.
    """
    old = stage.manifest()
    if not old or old.get("status") != "complete" or not isinstance(old.get("config"), dict):
        return None
    if _answers_key(old["config"]) != _answers_key(stage.key_material):
        return None
    try:
        rows = read_table(stage.dir / old["outputs"]["answers"])
    except (KeyError, TypeError, HeredityError):  # no such output, or a corrupt file: answer again
        return None
    scored = {"arm", *(old["config"].get("metrics") or {})}
    seconds = old.get("seconds")
    return EarlierAnswers([{k: v for k, v in row.items() if k not in scored} for row in rows],
                          float(seconds) if isinstance(seconds, (int, float)) else 0.0)


def _answers_key(key_material: dict[str, Any]) -> str:
    """What the answers depend on: the stage key without the metrics (``eval.metrics`` included)."""
    settings = key_material.get("eval")
    settings = {**settings, "metrics": None} if isinstance(settings, dict) else settings
    return stable_hash({**key_material, "metrics": None, "metric_models": None, "eval": settings})


def finish_evaluate(cfg: RunConfig, stage: Stage, arm: str, rows: list[dict[str, Any]],
                    earlier: EarlierAnswers | None = None) -> Stage:
    """Score the answers (on the driver, through the score cache) and write them. With
    ``earlier`` (``rows`` are its rows, re-scored), the manifest's ``seconds`` adds the compute
    that produced them, so a run's compute figure stays that of its outputs."""
    started = time.perf_counter()
    metrics = cfg.eval_metrics
    # Every arm is measured with the base student's tokenizer, so lengths are comparable.
    context = metric_context(cfg, [r["prompt"] for r in rows], with_tokenizer=True)
    scores = score_texts([r["text"] for r in rows], metrics, context, cache=cfg.score.cache)
    for i, row in enumerate(rows):
        row["arm"] = arm
        row.update({m: scores[m][i] for m in metrics})
    write_table(stage.dir / "answers.parquet", rows)
    extra: dict[str, Any] = {}
    if earlier is not None:
        extra = {"rescored": True, "seconds": round(earlier.seconds + time.perf_counter() - started, 3)}
    stage.finish({"answers": "answers.parquet"}, counts={"prompts": len(rows)}, **extra)
    return stage


def require_weights(model_stage: Stage | None, model_ref: str) -> None:
    """A trained stage is reused by its manifest, so its evaluations still are when its weights were
    deleted to save disk (or a run folder was moved without them); only a new evaluation needs them."""
    if model_stage is not None and not Path(model_ref).exists():
        raise HeredityError(f"{model_ref}: the weights of {model_stage.name} are missing (deleted after "
                            f"training?); delete {model_stage.dir} and rerun to train it again")


def run_evaluate(cfg: RunConfig, run_dir: Path, arm: str, eval_prompts: list[Prompt],
                 model_stage: Stage | None, progress=None) -> Stage:
    stage, model_ref = evaluate_stage(cfg, run_dir, arm, eval_prompts, model_stage)
    if stage.reuse():
        return stage
    earlier = earlier_answers(stage)
    if earlier is None:
        require_weights(model_stage, model_ref)
    stage.start()
    if earlier is not None:
        return finish_evaluate(cfg, stage, arm, earlier.rows, earlier)
    return finish_evaluate(cfg, stage, arm, answer(model_ref, eval_prompts, cfg, progress, arm))


def run_evaluations_on_ray(cfg: RunConfig, run_dir: Path, eval_prompts: list[Prompt],
                           models: dict[str, Stage | None]) -> dict[str, Stage]:
    """``evaluate/<arm>`` for every ``arm → trained stage`` (None: the base student), one Ray task
    per arm whose stage is not already done; answers are scored and written here."""
    assert cfg.ray is not None
    stages, refs = {}, {}
    for arm, model_stage in models.items():
        stages[arm], refs[arm] = evaluate_stage(cfg, run_dir, arm, eval_prompts, model_stage)
    todo = [arm for arm, stage in stages.items() if not stage.reuse()]
    earlier = {arm: earlier_answers(stages[arm]) for arm in todo}
    for arm in todo:
        stages[arm].start()
        found = earlier[arm]
        if found is not None:  # only a metric changed: re-score here, generate nothing
            finish_evaluate(cfg, stages[arm], arm, found.rows, found)
    for arm in todo:
        if earlier[arm] is None:
            require_weights(models[arm], refs[arm])
    jobs = {arm: (answer, (refs[arm], eval_prompts, cfg)) for arm in todo if earlier[arm] is None}
    for arm, rows in fan_out(cfg.ray, jobs, "evaluate"):
        finish_evaluate(cfg, stages[arm], arm, rows)
    return stages
