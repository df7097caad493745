"""The generation backend interface: a batch of chat requests in, one completion each out."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from heredity.core.registry import Registry
from heredity.errors import HeredityError

if TYPE_CHECKING:
    from heredity.config import SamplingConfig, TeacherConfig


@dataclass(frozen=True)
class Request:
    """One sequence to decode: a chat conversation and the seed of its own sampler."""

    messages: list[dict[str, str]]
    seed: int


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (end of turn) or "length" (hit max_new_tokens)
    prompt_tokens: int
    completion_tokens: int
    latency_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class BatchIncomplete(HeredityError):
    """Some requests of a batch still failed after every retry.

    ``completions`` holds the finished ones (``None`` where a request failed), in request
    order, so a caller can keep the work that did finish.
    """

    def __init__(self, message: str, completions: list[Completion | None]):
        super().__init__(message)
        self.completions = completions



def batched(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """``items`` in consecutive slices of ``size``: the batches a backend is handed."""
    return [items[i : i + size] for i in range(0, len(items), size)]


class Backend(Protocol):
    """What a generation backend provides. ``batch_size`` requests arrive per call."""

    def generate(self, requests: Sequence[Request], sampling: "SamplingConfig") -> list[Completion]: ...

    def close(self) -> None: ...


BackendFactory = Callable[["TeacherConfig", str], Backend]
# name -> factory; each ``heredity/backends/<name>_backend.py`` registers its own on import
BACKENDS: Registry[BackendFactory] = Registry("backend")


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Decorator: register a backend factory (a class) under ``name``; a taken name is refused."""
    return BACKENDS.register(name)


def open_backend(teacher: "TeacherConfig", device: str) -> Backend:
    """Start the backend a teacher names (imports optional dependencies only now)."""
    if teacher.backend not in BACKENDS:
        try:
            importlib.import_module(f"heredity.backends.{teacher.backend}_backend")
        except ImportError as exc:
            raise HeredityError(f"teacher '{teacher.label}': backend '{teacher.backend}' unavailable: {exc}") from None
    if teacher.backend not in BACKENDS:
        raise HeredityError(f"teacher '{teacher.label}': unknown backend '{teacher.backend}'")
    return BACKENDS[teacher.backend](teacher, device)
