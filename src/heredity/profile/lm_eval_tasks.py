"""General capability through lm-evaluation-harness (optional: ``pip install 'heredity[lm-eval]'``).

Runs named harness tasks on a model reference heredity understands (embedded, local folder,
hub id) with the harness's ``hf`` model, and returns each task's metrics with a 95% interval
of ±1.96 × the harness's own standard error. Tasks come from the harness's registry or from
YAML files in ``include_path``; a task whose data is on the hub needs hub access (or a local
copy named in a custom YAML, ``dataset_path: json`` with ``data_files``). Zero-shot and no
chat template by default, the harness's usual setting for likelihood tasks.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from heredity.errors import HeredityError

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


def run_lm_eval(model_ref: str, tasks: list[str], *, limit: int | None = None, include_path: Path | None = None,
                device: str = "cpu", batch_size: int = 8, num_fewshot: int | None = None, seed: int = 0,
                log_samples: bool = False) -> dict[str, Any]:
    """Run harness ``tasks`` on ``model_ref``; ``limit`` caps the documents per task (the first ones).

    Returns ``{"tasks": {task: {"n": docs, "metrics": {...}}}, "versions": ..., "samples": ...}``
    (``samples`` only with ``log_samples``: the harness's per-document records).
    """
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise HeredityError("lm-evaluation-harness tasks need it installed: pip install 'heredity[lm-eval]'") from None
    from heredity.models import resolve

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
            batch_size=batch_size, device=device, task_manager=manager, log_samples=log_samples,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        )
    except (OSError, ConnectionError, ValueError, FileNotFoundError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HeredityError(f"lm-eval task(s) {', '.join(tasks)} failed: {first[:300]}") from None
    counts = results.get("n-samples", {})
    summary: dict[str, Any] = {
        "tasks": {
            task: {"n": (counts.get(task) or {}).get("effective"), "metrics": _metrics(res)}
            for task, res in results["results"].items()
        },
        "versions": {"lm_eval": lm_eval.__version__, **{t: v for t, v in results.get("versions", {}).items()}},
        "protocol": {"num_fewshot": num_fewshot, "limit": limit, "chat_template": False, "seed": seed},
    }
    if log_samples:
        summary["samples"] = results.get("samples", {})
    return summary
