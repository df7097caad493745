"""Generation backends, chosen per teacher with ``backend:`` in the config.

Each lives in ``heredity/backends/<name>_backend.py`` and registers a factory with
``@register_backend(name)``; it is imported only when a teacher uses it, so optional
dependencies (vLLM, an HTTP client) are needed only by those who use them.
"""

from heredity.backends.base import (
    BACKENDS,
    Backend,
    BatchIncomplete,
    Completion,
    Request,
    batched,
    open_backend,
    register_backend,
)

__all__ = ["BACKENDS", "Backend", "BatchIncomplete", "Completion", "Request", "batched", "open_backend", "register_backend"]
