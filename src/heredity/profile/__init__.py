"""Profile a model (a teacher or a student): calibration, social bias, textual profile and toxicity.

Suites (``SUITES``): scored by likelihood, ``calibration`` (HellaSwag accuracy and ECE),
``crows_pairs``, ``stereoset``, ``bbq`` and ``seat``; by generation, ``textual`` (the metric
registry on greedy answers to Dolly-200) and ``toxicity`` (RealToxicityPrompts: expected maximum
toxicity, toxicity probability). Each suite module has a pure scoring function (log-likelihoods or
metric values in, figures out) and a ``run(model, tokenizer, ...)`` on a real model; ``loglik`` is
the shared batched scorer. Likelihood suites get the right-padded scoring tokenizer, generation
suites (``Suite.generates``) the left-padded chat tokenizer of ``heredity.core.models.load_tokenizer``.
A suite whose items two models share also has ``paired_items(rows, summary)`` (``Suite.pair``):
its per-item values, keyed ``"suite/metric"``, that a run's profile stage pairs across models.
Data comes from ``data_dir`` (default ``$HEREDITY_DATA_DIR``, ``$HEREDITY_SHARED_DATA`` or ``shared/data``
beside the checkout), in the shared layout or as a local copy of the suite's pinned hub dataset, else
from the hub itself (``heredity.core.data``; the catalogue is ``heredity.profile.sources``); see each
module's docstring for its protocol.

    from heredity.profile import profile_model, render_table
    result = profile_model("embedded:smollm2-135m-instruct", ["all"], limit=100, out=Path("profile"))
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heredity.core.data import SuiteResult, data_root
from heredity.core.stats import BOOTSTRAP_SAMPLES
from heredity.errors import HeredityError
from heredity.profile import (
    bbq,
    calibration,
    crows_pairs,
    judge_preference,
    rtp_toxicity,
    seat,
    stereoset,
    textual,
)
from heredity.profile.common import Paired, Replicated


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    limit_counts: str  # what ``limit`` counts in this suite
    run: Callable[..., SuiteResult]
    generates: bool = False  # True: run gets the left-padded chat tokenizer and decodes text
    # (rows, summary) -> {"suite/metric": Paired | Replicated}: values paired across models by item;
    # None: the suite's figures cannot be paired
    pair: Callable[[list[dict[str, Any]], dict[str, Any]], dict[str, Paired | Replicated]] | None = None


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("calibration", "HellaSwag accuracy and expected calibration error (1 and 10 bins)", "items",
              calibration.run, pair=calibration.paired_items),
        Suite("crows_pairs", "CrowS-Pairs: % of pairs where the more stereotyping sentence is more likely",
              "pairs", crows_pairs.run, pair=crows_pairs.paired_items),
        Suite("stereoset", "StereoSet intrasentence: stereotype score, LM score, ICAT", "items", stereoset.run,
              pair=stereoset.paired_items),
        Suite("bbq", "BBQ: accuracy and bias scores, ambiguous and disambiguated contexts", "items",
              bbq.run, pair=bbq.paired_items),
        Suite("seat", "SEAT: effect sizes of embedding associations", "tests", seat.run, pair=seat.paired_items),
        Suite("textual", "Textual profile: the metric registry on greedy answers to Dolly-200 (test split)",
              "prompts", textual.run, generates=True, pair=textual.paired_items),
        Suite("toxicity", "RealToxicityPrompts: expected maximum toxicity and toxicity probability",
              "prompts", rtp_toxicity.run, generates=True, pair=rtp_toxicity.paired_items),
        Suite("judge_preference", "The model as LLM judge of AlpacaEval answer pairs: which models and "
              "lengths it prefers", "pairs", judge_preference.run, pair=judge_preference.paired_items),
    )
}


# What profile_model passes to every suite's run itself; not settable through ``options``.
_COMMON_ARGS = frozenset({"model", "tokenizer", "data_dir", "limit", "seed", "samples", "batch_size", "progress"})


def resolve_suites(names: list[str]) -> list[str]:
    """Suite names in registry order; ``all`` means every suite."""
    wanted = set()
    for name in names:
        if name == "all":
            wanted.update(SUITES)
        elif name in SUITES:
            wanted.add(name)
        else:
            raise HeredityError(f"unknown profile suite '{name}'; known: all, {', '.join(SUITES)}")
    if not wanted:
        raise HeredityError("no profile suite given; known: all, " + ", ".join(SUITES))
    return [name for name in SUITES if name in wanted]


def scoring_tokenizer(model_ref: str):
    """The model's tokenizer, right-padded; unlike generation, scoring needs no chat template."""
    from transformers import AutoTokenizer

    from heredity.core.models import resolve

    try:
        tokenizer = AutoTokenizer.from_pretrained(**resolve(model_ref))
    except OSError as exc:
        raise HeredityError(f"cannot load tokenizer of model '{model_ref}': {str(exc).splitlines()[0]}") from None
    tokenizer.padding_side = "right"
    return tokenizer


def profile_model(model_ref: str, suites: list[str], limit: int | None, out: Path | None, device: str = "cpu",
                  *, data_dir: Path | None = None, batch_size: int = 32, bootstrap_samples: int = BOOTSTRAP_SAMPLES,
                  seed: int = 0, threads: int | None = None, log: Callable[[str], None] | None = None,
                  options: dict[str, dict[str, Any]] | None = None,
                  limits: dict[str, int | None] | None = None) -> dict[str, Any]:
    """Run the chosen suites on one model; return (and with ``out``, write) the metrics.

    ``limit`` caps each suite's sample (items, pairs, tests or prompts; a seeded random sample,
    ``None`` = all); ``limits`` overrides it per suite (``{"toxicity": 30}``). ``options`` maps a
    suite name to extra keyword arguments of its ``run`` (e.g. ``{"toxicity": {"samples_per_prompt":
    5}, "textual": {"max_new_tokens": 128}}``); options of suites not run are ignored. With
    ``out``, writes ``out/<suite>.parquet`` (one row per item) and ``out/summary.json`` (the
    returned dict), each atomically. ``threads`` sets torch's CPU threads for the process:
    on a machine whose cores are shared with other busy processes, 1 is several times faster than
    one per core.
    """
    from heredity.core.models import load_model, model_identity, pick_device
    from heredity.core.rundir import versions, write_json, write_table

    names = resolve_suites(suites)
    # no check that the folder exists: a suite whose files are not there loads its pinned hub dataset,
    # or fails naming what it looked for
    root = data_root(data_dir)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    device = pick_device(device)
    started = time.perf_counter()
    options, limits = options or {}, limits or {}
    for name in limits:
        if name not in names:
            raise HeredityError(f"a limit is given for profile suite '{name}', which is not profiled; "
                                f"profiled: {', '.join(names)}")
    for name, opts in options.items():
        if name not in SUITES:
            raise HeredityError(f"options given for unknown profile suite '{name}'; known: {', '.join(SUITES)}")
        accepted = inspect.signature(SUITES[name].run).parameters
        for key in opts:
            if key not in accepted or key in _COMMON_ARGS:
                known = ", ".join(k for k in accepted if k not in _COMMON_ARGS)
                raise HeredityError(f"profile suite '{name}' has no option '{key}'; options: {known or 'none'}")
    model = load_model(model_ref, device)
    tokenizer = scoring_tokenizer(model_ref) if any(not SUITES[n].generates for n in names) else None
    chat_tokenizer = None
    if any(SUITES[n].generates for n in names):
        from heredity.core.models import load_tokenizer

        chat_tokenizer = load_tokenizer(model_ref)  # left padding, chat template (fails without one)
    result: dict[str, Any] = {
        "model": model_ref,
        "model_identity": model_identity(model_ref),
        "device": device,
        "limit": limit,
        **({"limits": dict(limits)} if limits else {}),
        "seed": seed,
        "bootstrap_samples": bootstrap_samples,
        "suites": {},
        "timings_s": {"load": round(time.perf_counter() - started, 3)},
        "versions": versions(),
    }
    for name in names:
        t0 = time.perf_counter()
        spec = SUITES[name]
        suite = spec.run(model, chat_tokenizer if spec.generates else tokenizer, data_dir=root,
                         limit=limits.get(name, limit), seed=seed, samples=bootstrap_samples,
                         batch_size=batch_size, **options.get(name, {}))
        seconds = time.perf_counter() - t0
        result["suites"][name] = suite.summary
        result["timings_s"][name] = round(seconds, 3)
        if out is not None:
            write_table(Path(out) / f"{name}.parquet", suite.rows)
        if log is not None:
            per = f" x {suite.summary['samples_per_prompt']} samples" if "samples_per_prompt" in suite.summary else ""
            log(f"{name}: {suite.summary['n']} {SUITES[name].limit_counts}{per} in {seconds:.1f}s")
    if out is not None:
        write_json(Path(out) / "summary.json", result)
    return result


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def render_table(result: dict[str, Any], groups: bool = True):
    """A rich table of every suite's metrics, overall then (with ``groups``) per group, with 95% CIs.

    Metrics that describe a distribution (generation suites: ``value`` is the mean) also show their
    10th, 50th and 90th percentiles, in a column that appears only when some metric has them.
    """
    from rich.table import Table

    limit = "all items" if result.get("limit") is None else f"limit {result['limit']}"
    limit += "".join(f"; {name} {'all' if n is None else n}" for name, n in result.get("limits", {}).items())
    table = Table(title=f"profile of {result['model']} ({limit})")
    quantiles = any("p50" in m for s in result["suites"].values() for m in s["metrics"].values())
    columns = [("suite", "left"), ("group", "left"), ("metric", "left"), ("value", "right"), ("95% CI", "right")]
    columns += [("p10 / p50 / p90", "right")] if quantiles else []
    for col, justify in columns + [("n", "right")]:
        # fold, not ellipsis: truncated group names (three Mixtral variants) would look identical;
        # the metric names and figures stay whole, the suite's name gives way first
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col not in ("suite", "group"),
                         max_width=12 if col == "suite" else None)

    def rows(suite: str, group: str, n: int, metrics: dict[str, Any]) -> None:
        for metric, m in metrics.items():
            lo, hi = m["ci95"]
            ci = "" if lo is None else f"[{_fmt(lo)}, {_fmt(hi)}]"
            # the suite's name heads its section only, leaving the width to group and metric names
            cells = [suite if table.row_count == section_start else "", group, metric, _fmt(m["value"]), ci]
            if quantiles:
                cells.append(" / ".join(_fmt(m[k]) for k in ("p10", "p50", "p90")) if "p50" in m else "")
            table.add_row(*cells, str(m.get("n", n)))

    for suite, summary in result["suites"].items():
        section_start = table.row_count
        rows(suite, "all", summary["n"], summary["metrics"])
        for group, g in summary["groups"].items() if groups else ():
            rows(suite, group, g["n"], g["metrics"])
        table.add_section()
    return table


__all__ = ["SUITES", "Paired", "Replicated", "Suite", "profile_model", "render_table", "resolve_suites", "scoring_tokenizer"]
