"""Score stage: every candidate gets every configured metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heredity.config import RunConfig
from heredity.metrics import MetricContext, get_metric
from heredity.models import load_tokenizer, model_identity
from heredity.rundir import Stage, read_table, write_table


def score_texts(texts: list[str], metric_names: list[str], context: MetricContext) -> dict[str, list[float]]:
    return {name: get_metric(name)(texts, context) for name in metric_names}


def metric_versions(metric_names: list[str]) -> dict[str, str]:
    return {name: get_metric(name).version for name in metric_names}


def needs_tokenizer(metric_names: list[str]) -> bool:
    return any(get_metric(name).needs_tokenizer for name in metric_names)


def run_score(cfg: RunConfig, run_dir: Path, generate: Stage) -> Stage:
    metrics = cfg.score.metrics
    # Only token-counting metrics need the student's tokenizer; without them a replayed pool
    # can be scored and selected with no model installed at all.
    with_tokenizer = needs_tokenizer(metrics)
    stage = Stage(run_dir, "score", {
        "candidates": generate.key,
        "metrics": metric_versions(metrics),
        "tokenizer": model_identity(cfg.student) if with_tokenizer else None,
    })
    if stage.reuse():
        return stage
    stage.start()
    rows = read_table(generate.dir / "candidates.parquet")
    tokenizer = load_tokenizer(cfg.student) if with_tokenizer else None
    context = MetricContext(tokenizer=tokenizer, prompts=[r["prompt"] for r in rows])
    scores = score_texts([r["text"] for r in rows], metrics, context)
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        out.append({
            "candidate_key": row["candidate_key"], "prompt_id": row["prompt_id"], "prompt": row["prompt"],
            "teacher": row["teacher"], "sample_index": row["sample_index"], "text": row["text"],
            "finish_reason": row["finish_reason"], **{m: scores[m][i] for m in metrics},
        })
    write_table(stage.dir / "scores.parquet", out)
    stage.finish({"scores": "scores.parquet"}, counts={"candidates": len(out)})
    return stage
