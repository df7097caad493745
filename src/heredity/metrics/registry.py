"""The metric registry.

A metric is a named, versioned function from a batch of texts to one float per text.
Built-in metrics register themselves with ``@register``; users add their own with the
same decorator, with ``module:function`` in a config, or through the ``heredity.metrics``
entry point group (an entry point names a module, whose ``@register`` calls run on import,
or a function, registered under the entry point's name).

Some metrics take options (which model, which rubric): ``register(..., options=Model)``
with a pydantic model; a config passes them as ``{name: perplexity, model: ...}``. A
:class:`BoundMetric` is a metric plus validated options plus the column it writes; its
``version`` includes a hash of the options, so changing an option never reuses old scores.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from heredity.config import split_metric_entry
from heredity.core.registry import Registry
from heredity.errors import HeredityError, describe_validation


@dataclass
class MetricContext:
    """What a metric may need besides the texts.

    ``tokenizer`` is the student's tokenizer (a ``transformers`` tokenizer) for token counts,
    ``tokenizer_id`` a string that changes when it does (for the score cache; derived from the
    tokenizer's vocabulary when absent); ``prompts`` are the prompts the texts answer, aligned
    with the texts, when known. ``model_ref`` is the default reference model of model-based
    metrics (a run passes its student), ``system_prompt`` the run's system prompt (None: the
    chat template's default) and ``device`` where models run (None: auto). ``options`` are the
    options of the metric being called (filled in by :class:`BoundMetric`);
    ``metric_options`` maps a column to its options, as ``score.metric_options`` does.
    ``notes`` collects counts metrics want reported (e.g. unparseable judge replies).
    """

    tokenizer: Any = None
    prompts: Sequence[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    tokenizer_id: str | None = None
    model_ref: str | None = None
    system_prompt: str | None = None
    device: str | None = None
    metric_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


MetricFn = Callable[[Sequence[str], MetricContext], Sequence[float]]
# Extra cache-key material that depends on the context (e.g. the reference model's identity).
IdentityFn = Callable[[dict[str, Any], MetricContext], Any]


class FreeOptions(BaseModel):
    """Options of a ``module:function`` metric that declares no options model: passed as given."""

    model_config = ConfigDict(extra="allow", frozen=True)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    version: str = "1"
    description: str = ""
    # Which direction a user usually wants; only used for display and defaults.
    better: Literal["higher", "lower", "none"] = "none"
    needs_tokenizer: bool = False
    # The prompt is part of what is scored (the score cache keys on it too).
    needs_prompts: bool = False
    # A pydantic model of the options; None: the metric takes none.
    options: type[BaseModel] | None = None
    identity: IdentityFn | None = None
    # It loads a model (or holds a client) worth keeping between batches: on Ray it runs in a
    # pool of long-lived actors, the others in stateless tasks.
    loads_model: bool = False
    # Where it came from: "heredity" (built in), "plugin:<entry point>", "import" (module:function)
    # or "user" (@register elsewhere). Non-heredity metrics add their source code to cache keys.
    origin: str = "user"

    def __call__(self, texts: Sequence[str], context: MetricContext | None = None) -> list[float]:
        context = context or MetricContext()
        if self.options is not None and not context.options:
            context = replace(context, options=self.options().model_dump())
        if self.needs_tokenizer and context.tokenizer is None:
            raise HeredityError(f"metric '{self.name}' needs a tokenizer and none was given")
        if self.needs_prompts:
            if context.prompts is None:
                raise HeredityError(f"metric '{self.name}' needs the prompts the texts answer, and none were given")
            if len(context.prompts) != len(texts):
                raise HeredityError(f"metric '{self.name}': {len(context.prompts)} prompts for {len(texts)} texts")
        values = [float(v) for v in self.fn(texts, context)]
        if len(values) != len(texts):
            raise HeredityError(
                f"metric '{self.name}' returned {len(values)} values for {len(texts)} texts"
            )
        return values

    def bind(self, options: Mapping[str, Any] | None = None, column: str | None = None) -> BoundMetric:
        """This metric with validated options, writing to ``column`` (default: its name)."""
        given = dict(options or {})
        if self.options is None:
            if given:
                raise HeredityError(f"metric '{self.name}' takes no options (got {', '.join(sorted(given))})")
            validated: dict[str, Any] = {}
        else:
            try:
                validated = self.options.model_validate(given).model_dump(mode="json")
            except ValidationError as exc:
                raise HeredityError(f"metric '{self.name}': {describe_validation(exc, self.options, 'option')}") from None
        return BoundMetric(self, column or self.name, validated)

    def code_hash(self) -> str | None:
        """Hash of the function's source for metrics from outside heredity (None for built-ins)."""
        if self.origin == "heredity":
            return None
        try:
            source = inspect.getsource(self.fn)
        except (OSError, TypeError):
            return None
        return hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]


def _stable(obj: Any) -> str:
    data = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:12]


@dataclass(frozen=True)
class BoundMetric:
    """A metric with its options, as one scored column."""

    metric: Metric
    column: str
    options: dict[str, Any]

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def keyed_options(self) -> dict[str, Any]:
        """The options that change values (an options model lists speed-only ones in UNKEYED)."""
        unkeyed = getattr(self.metric.options, "UNKEYED", ())
        return {k: v for k, v in self.options.items() if k not in unkeyed}

    @property
    def version(self) -> str:
        """The metric's version; with options, plus a hash of them ("1+3f2a..."), for stage keys."""
        keyed = self.keyed_options
        return self.metric.version if not keyed else f"{self.metric.version}+{_stable(keyed)}"

    def context(self, context: MetricContext | None) -> MetricContext:
        return replace(context or MetricContext(), options=dict(self.options))

    def namespace(self, context: MetricContext | None = None) -> str:
        """The score cache's namespace: name, version, options and everything else that
        changes the values but is the same for every text (the reference model's identity,
        the source of a user's function)."""
        extra: dict[str, Any] = {}
        if self.keyed_options:
            extra["options"] = self.keyed_options
        identity = self.metric.identity(dict(self.options), self.context(context)) if self.metric.identity else None
        if identity:  # an empty identity (nothing beyond the options) keeps the namespace it had without one
            extra["identity"] = identity
        code = self.metric.code_hash()
        if code:
            extra["code"] = code
        base = f"{self.metric.name}@{self.metric.version}"
        return f"{base}#{_stable(extra)}" if extra else base

    def __call__(self, texts: Sequence[str], context: MetricContext | None = None) -> list[float]:
        return self.metric(texts, self.context(context))


def register(
    name: str,
    *,
    version: str = "1",
    description: str = "",
    better: Literal["higher", "lower", "none"] = "none",
    needs_tokenizer: bool = False,
    needs_prompts: bool = False,
    options: type[BaseModel] | None = None,
    identity: IdentityFn | None = None,
    loads_model: bool = False,
) -> Callable[[MetricFn], MetricFn]:
    """Decorator: add ``fn(texts, context) -> list[float]`` to the registry under ``name``.

    Bump ``version`` whenever the function's values change: cached scores are keyed by it.
    A name already registered to another function is refused.
    """

    def decorate(fn: MetricFn) -> MetricFn:
        module = getattr(fn, "__module__", "") or ""
        # a plugin's metrics are tagged while its entry point imports
        origin = (f"plugin:{METRICS.loading}" if METRICS.loading is not None
                  else "heredity" if module.startswith("heredity.") else "user")
        METRICS.add(name, Metric(
            name=name,
            fn=fn,
            version=version,
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            better=better,
            needs_tokenizer=needs_tokenizer,
            needs_prompts=needs_prompts,
            options=options,
            identity=identity,
            loads_model=loads_model,
            origin=origin,
        ))
        return fn

    return decorate


def adapt(fn: Callable[..., Sequence[float]]) -> MetricFn:
    """Accept ``fn(texts)`` as well as ``fn(texts, context)``."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
        varargs = any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return fn
    if len(params) == 1 and not varargs:
        def one_arg(texts: Sequence[str], context: MetricContext) -> Sequence[float]:
            return fn(texts)

        one_arg.__wrapped__ = fn  # type: ignore[attr-defined]
        return one_arg
    return fn


def metric_from_function(name: str, fn: Callable[..., Any], origin: str) -> Metric:
    """Wrap an unregistered function; attributes on it (``version``, ``better``,
    ``needs_tokenizer``, ``needs_prompts``, ``loads_model``, ``options``, ``description``) fill in the rest."""
    options = getattr(fn, "options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        options = FreeOptions
    return Metric(
        name=name,
        fn=adapt(fn),
        version=str(getattr(fn, "version", "1")),
        description=getattr(fn, "description", None) or (fn.__doc__ or "").strip().split("\n")[0],
        better=getattr(fn, "better", "none"),
        needs_tokenizer=bool(getattr(fn, "needs_tokenizer", False)),
        needs_prompts=bool(getattr(fn, "needs_prompts", False)),
        loads_model=bool(getattr(fn, "loads_model", False)),
        options=options,
        origin=origin,
    )


# Built-in metrics, ``@register``ed ones, ``heredity.metrics`` entry points and imported
# ``module:function`` references, by name.
METRICS: Registry[Metric] = Registry("metric", known_label="known metrics", group="heredity.metrics",
                                     from_function=metric_from_function, identity=lambda m: m.fn)


def get_metric(name: str) -> Metric:
    """Look a metric up by registry name (built in or from a plugin), or import ``module:function``."""
    return METRICS.get(name)


def list_metrics() -> list[Metric]:
    return METRICS.listed()


def plugin_errors() -> dict[str, str]:
    METRICS.load_entry_points()
    return dict(METRICS.plugin_errors)


# --- metric entries as a config writes them ---------------------------------------------------

def resolve(entry: str | Mapping[str, Any] | BoundMetric,
            metric_options: Mapping[str, Mapping[str, Any]] | None = None) -> BoundMetric:
    """A config's metric entry → a BoundMetric.

    A bare name is a column: its registry name and options come from ``metric_options[column]``
    when present (``{name: METRIC, ...options}``; ``name`` defaults to the column).
    """
    if isinstance(entry, BoundMetric):
        return entry
    column, name, options = split_metric_entry(entry)
    if isinstance(entry, str) and metric_options and column in metric_options:
        options = dict(metric_options[column])
        name = options.pop("name", column)
        options.pop("as", None)
    return get_metric(name).bind(options, column)


def resolve_all(entries: Sequence[str | Mapping[str, Any] | BoundMetric],
                metric_options: Mapping[str, Mapping[str, Any]] | None = None,
                where: str = "metrics") -> list[BoundMetric]:
    """Every entry resolved; a bad one fails as ``where[i]: problem``, in one line."""
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(resolve(entry, metric_options))
        except HeredityError as exc:
            raise HeredityError(f"{where}[{i}]: {exc}") from None
    columns = [b.column for b in out]
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise HeredityError(f"{where}: column(s) {', '.join(dupes)} appear twice; give one of them 'as: NAME'")
    return out


