"""A run plan: the config read, then checked against everything it names, before any work.

``heredity.config`` checks a config's shape; this module checks what the schema cannot see on
its own — that every metric, selection rule and judge it names exists and takes the options
given — and completes it (metrics a selection reads are scored even when ``score.metrics``
leaves them out). Every loader of a run config goes through here, so a bad name is a one-line
error naming its field before the first expensive stage, not hours later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heredity.config import (
    RunConfig,
    bundled_config_data,
    parse_config,
    read_config_file,
)
from heredity.errors import HeredityError
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
    return sorted({cfg.select.metric, *(m for spec in cfg.select.specs().values() for m in spec_metrics(spec))})


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
             **{f"select.variants.{name}": spec for name, spec in cfg.select.variants.items()}}
    for field, spec in rules.items():
        if spec is not None:
            try:
                parse_spec(spec.as_dict())
            except HeredityError as exc:
                problems.append(f"field '{field}': {exc}")
    if not problems:
        missing = [m for m in selection_metrics(cfg) if m not in cfg.score.metrics]
        for m in missing:
            if (why := _metric_problem(m, options)) is not None:
                field = "select.metric" if m == cfg.select.metric else "select"
                problems.append(f"field '{field}': {why}")
        if not problems and missing:
            cfg.score.metrics = [*cfg.score.metrics, *missing]
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
