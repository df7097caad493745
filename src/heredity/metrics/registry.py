"""The metric registry.

A metric is a named, versioned function from a batch of texts to one float per text.
Built-in metrics register themselves with ``@register``; users add their own with the
same decorator, with ``module:function`` in a config, or through the
``heredity.metrics`` entry point group.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Literal, Sequence

from heredity.errors import HeredityError


@dataclass
class MetricContext:
    """What a metric may need besides the texts.

    ``tokenizer`` is the student's tokenizer (a ``transformers`` tokenizer) for token counts;
    ``prompts`` are the prompts the texts answer, aligned with the texts, when known.
    """

    tokenizer: Any = None
    prompts: Sequence[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)


MetricFn = Callable[[Sequence[str], MetricContext], Sequence[float]]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    version: str = "1"
    description: str = ""
    # Which direction a user usually wants; only used for display and defaults.
    better: Literal["higher", "lower", "none"] = "none"
    needs_tokenizer: bool = False

    def __call__(self, texts: Sequence[str], context: MetricContext | None = None) -> list[float]:
        context = context or MetricContext()
        if self.needs_tokenizer and context.tokenizer is None:
            raise HeredityError(f"metric '{self.name}' needs a tokenizer and none was given")
        values = [float(v) for v in self.fn(texts, context)]
        if len(values) != len(texts):
            raise HeredityError(
                f"metric '{self.name}' returned {len(values)} values for {len(texts)} texts"
            )
        return values


_REGISTRY: dict[str, Metric] = {}
_entry_points_loaded = False


def register(
    name: str,
    *,
    version: str = "1",
    description: str = "",
    better: Literal["higher", "lower", "none"] = "none",
    needs_tokenizer: bool = False,
) -> Callable[[MetricFn], MetricFn]:
    """Decorator: add ``fn(texts, context) -> list[float]`` to the registry under ``name``."""

    def decorate(fn: MetricFn) -> MetricFn:
        _REGISTRY[name] = Metric(
            name=name,
            fn=fn,
            version=version,
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            better=better,
            needs_tokenizer=needs_tokenizer,
        )
        return fn

    return decorate


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group="heredity.metrics"):
        try:
            ep.load()  # importing the module runs its @register calls
        except Exception as exc:  # a broken plugin must not break the tool
            raise HeredityError(f"metric plugin '{ep.name}' ({ep.value}) failed to load: {exc}") from exc


def get_metric(name: str) -> Metric:
    """Look a metric up by registry name, or import it from ``module:function``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    _load_entry_points()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise HeredityError(f"metric '{name}': cannot import module '{module_name}': {exc}") from exc
        fn = getattr(module, attr, None)
        if fn is None:
            raise HeredityError(f"metric '{name}': module '{module_name}' has no '{attr}'")
        if name in _REGISTRY:  # the module registered it under its full name
            return _REGISTRY[name]
        metric = Metric(name=name, fn=fn, version=getattr(fn, "version", "1"))
        _REGISTRY[name] = metric
        return metric
    known = ", ".join(sorted(_REGISTRY))
    raise HeredityError(f"unknown metric '{name}'; known metrics: {known}")


def list_metrics() -> list[Metric]:
    _load_entry_points()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
