"""Metrics: functions from texts to numbers, found by name in a registry."""

# Importing the built-in modules registers their metrics.
from heredity.metrics import length as _length  # noqa: F401,E402
from heredity.metrics import lexical as _lexical  # noqa: F401,E402
from heredity.metrics import model as _model  # noqa: F401,E402
from heredity.metrics import readability as _readability  # noqa: F401,E402
from heredity.metrics import toxicity as _toxicity  # noqa: F401,E402
from heredity.metrics.registry import (
    BoundMetric,
    Metric,
    MetricContext,
    get_metric,
    list_metrics,
    register,
    resolve,
    resolve_all,
)

__all__ = ["BoundMetric", "Metric", "MetricContext", "get_metric", "list_metrics", "register", "resolve",
           "resolve_all"]
