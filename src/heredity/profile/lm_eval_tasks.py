"""General capability through lm-evaluation-harness (optional: ``pip install 'heredity[lm-eval]'``).

Runs named harness tasks on a model reference heredity understands (embedded, local folder,
hub id) with the harness's ``hf`` model, and returns each task's metrics with a 95% interval:
a percentile bootstrap over documents where the metric is a mean of per-document values (as
every other heredity figure), else ±1.96 × the harness's own standard error (corpus-level
metrics such as BLEU); ``ci_method`` says which. The per-document values are kept
(``per_doc``) so that two models' results can be paired document by document. Tasks come from the harness's registry or from
YAML files in ``include_path``; a task whose data is on the hub needs hub access (or a local
copy named in a custom YAML, ``dataset_path: json`` with ``data_files``). Zero-shot and no
chat template by default, the harness's usual setting for likelihood tasks.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from heredity.core.models import resolve
from heredity.core.stats import bootstrap_mean_ci
from heredity.errors import HeredityError
from heredity.profile.common import Paired

Z95 = 1.959963984540054


def _metrics(task_result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"acc,none": v, "acc_stderr,none": se}`` → ``{"acc": {"value": v, "ci95": [...]}}``."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in task_result.items():
        if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
            continue
        name, flt = key.split(",", 1)
        se = task_result.get(f"{name}_stderr,{flt}")
        ci = [None, None]
        if isinstance(se, (int, float)) and math.isfinite(se):
            ci = [value - Z95 * se, value + Z95 * se]
        out[name if flt == "none" else f"{name} ({flt})"] = {"value": float(value), "ci95": ci}
    return out


def per_document(samples: list[dict[str, Any]], metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{metric: {doc_id: value}}`` for the metrics whose task figure is the mean of the
    documents' numeric values (accuracy-like); corpus-level ones (BLEU, F1) are left out."""
    out: dict[str, dict[str, float]] = {}
    for label, m in metrics.items():
        # _metrics labels "acc" (filter "none") or "exact_match (strict-match)"
        name, _, flt = label.partition(" (")
        flt = flt.rstrip(")") or "none"
        values = {str(s["doc_id"]): s.get(name) for s in samples if s.get("filter", "none") == flt}
        if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values.values()):
            continue
        numbers = {k: float(v) for k, v in values.items()}
        if abs(sum(numbers.values()) / len(numbers) - m["value"]) <= 1e-9 * max(1.0, abs(m["value"])):
            out[label] = numbers
    return out


def _bootstrap_intervals(metrics: dict[str, dict[str, Any]], per_doc: dict[str, dict[str, float]],
                         samples: int, seed: int) -> None:
    for name, m in metrics.items():
        if name in per_doc and len(per_doc[name]) >= 2:
            m["ci95"] = list(bootstrap_mean_ci(np.array(list(per_doc[name].values())), samples, seed))
            m["ci_method"] = "bootstrap"
        else:
            m["ci_method"] = "harness stderr" if m["ci95"][0] is not None else None


def run_lm_eval(model_ref: str, tasks: list[str], *, limit: int | None = None, include_path: Path | None = None,
                device: str = "cpu", batch_size: int = 8, num_fewshot: int | None = None, seed: int = 0,
                log_samples: bool = False, bootstrap_samples: int = 1000) -> dict[str, Any]:
    """Run harness ``tasks`` on ``model_ref``; ``limit`` caps the documents per task (the first ones).

    Returns ``{"tasks": {task: {"n": docs, "metrics": {...}}}, "versions": ..., "samples": ...}``
    (``samples`` only with ``log_samples``: the harness's per-document records).
    """
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise HeredityError("lm-evaluation-harness tasks need it installed: pip install 'heredity[lm-eval]'") from None

    if not tasks:
        raise HeredityError("no lm-evaluation-harness task given")
    if include_path is not None and not Path(include_path).is_dir():
        raise HeredityError(f"{include_path}: lm-eval task folder not found")
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise HeredityError(f"unknown lm-eval task(s): {', '.join(unknown)} (custom tasks: pass their YAML folder)")
    source = resolve(model_ref)
    model_args: dict[str, Any] = {"pretrained": source["pretrained_model_name_or_path"],
                                  "dtype": "bfloat16" if device.startswith("cuda") else "float32"}
    if "gguf_file" in source:
        model_args["gguf_file"] = source["gguf_file"]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        results = lm_eval.simple_evaluate(
            model="hf", model_args=model_args, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
            batch_size=batch_size, device=device, task_manager=manager, log_samples=True,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        )
    except (OSError, ConnectionError, ValueError, FileNotFoundError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HeredityError(f"lm-eval task(s) {', '.join(tasks)} failed: {first[:300]}") from None
    counts = results.get("n-samples", {})
    task_results: dict[str, Any] = {}
    for task, res in results["results"].items():
        metrics = _metrics(res)
        per_doc = per_document(results.get("samples", {}).get(task, []), metrics)
        _bootstrap_intervals(metrics, per_doc, bootstrap_samples, seed)
        task_results[task] = {"n": (counts.get(task) or {}).get("effective"), "metrics": metrics, "per_doc": per_doc}
    summary: dict[str, Any] = {
        "tasks": task_results,
        "versions": {"lm_eval": lm_eval.__version__, **{t: v for t, v in results.get("versions", {}).items()}},
        "protocol": {"num_fewshot": num_fewshot, "limit": limit, "chat_template": False, "seed": seed},
    }
    if log_samples:
        summary["samples"] = results.get("samples", {})
    return summary


def paired_items(result: dict[str, Any]) -> dict[str, Paired]:
    """``lm_eval:<task>/<metric>`` → its per-document values (``per_doc``), paired across models by document."""
    return {f"lm_eval:{task}/{metric}": Paired(values)
            for task, t in result["tasks"].items() for metric, values in t.get("per_doc", {}).items()}
