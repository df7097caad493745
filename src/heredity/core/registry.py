"""One registry for everything heredity finds by name: metrics, selection strategies,
generation backends and profile suites.

A :class:`Registry` maps names to objects, in registration order. It reads like a dict
(``name in reg``, ``reg[name]``, ``list(reg)``) and adds:

- ``add(name, obj)`` / ``@reg.register(name)``: a name already taken by a different object is
  refused with a one-line HeredityError (the same object again is a no-op);
- ``get(name)``: the object, else a one-line error that lists the known names (``get(name,
  default)`` is ``dict.get``); with plugins
  enabled, a ``heredity.<kind>`` entry point group is loaded on the first miss and
  ``package.module:function`` is imported;
- ``load_entry_points()``: import every entry point of the group once; a broken plugin is
  remembered in ``plugin_errors`` and reported only when one of its names is asked for.

An entry point names a module (whose ``register`` calls run on import) or a function; a
function is wrapped by the registry's ``from_function(name, fn, origin)`` and registered under
the entry point's name, unless its module registered that very function itself.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator, MutableMapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from heredity.errors import HeredityError, one_line

T = TypeVar("T")


def import_object(ref: str, kind: str = "object") -> Any:
    """``package.module:attr`` (attr may be dotted) → a callable; HeredityError in one line."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise HeredityError(f"'{ref}' is not a {kind} name nor 'module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, SyntaxError, or whatever the module raises on import
        raise HeredityError(f"cannot import '{ref}': {one_line(exc)}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise HeredityError(f"cannot import '{ref}': module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise HeredityError(f"cannot import '{ref}': it is a {type(obj).__name__}, not a function")
    return obj


class Registry(MutableMapping, Generic[T]):
    """Name → object, with duplicate refusal, one-line lookup errors and optional plugins.

    ``kind`` names the objects in messages ("metric"); ``noun`` how an unknown one is called
    ("selection strategy", default ``kind``); ``group`` is the entry point group (None: no
    plugins, no ``module:function``). ``identity(obj)`` is what makes two registrations the
    same (default: the object itself; e.g. the wrapped function of a Metric).
    An imported ``module:function`` that is already registered is that entry: with
    ``alias_imports`` whatever route registered it, and it is also stored under the reference;
    without, only a function registered by ``add``/``register`` (not one wrapped from an entry
    point or an import) counts, and it is not stored again. ``error`` is the exception type raised.
    """

    def __init__(self, kind: str, *, noun: str | None = None, known_label: str = "known",
                 group: str | None = None,
                 from_function: Callable[[str, Any, str], T] | None = None,
                 identity: Callable[[T], Any] = lambda obj: obj,
                 alias_imports: bool = False,
                 error: type[HeredityError] = HeredityError):
        self.kind = kind
        self.noun = noun or kind
        self.known_label = known_label
        self.group = group
        self.from_function = from_function
        self.identity = identity
        self.alias_imports = alias_imports
        self.error = error
        self.plugin_errors: dict[str, str] = {}
        self.entry_points_loaded = group is None
        self.loading: str | None = None  # the entry point being imported, while it is
        self._items: dict[str, T] = {}
        self._wrapped: set[str] = set()  # names whose entry from_function made

    # -- the mapping

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __setitem__(self, name: str, obj: T) -> None:
        self.add(name, obj)

    def __delitem__(self, name: str) -> None:
        del self._items[name]
        self._wrapped.discard(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._items)!r})"

    # -- registering

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``; a different object under a taken name is refused."""
        old = self._items.get(name)
        if old is not None and old is not obj and self.identity(old) is not self.identity(obj):
            raise self.error(f"{self.kind} '{name}' is registered twice "
                             f"({_where(self.identity(old))} and {_where(self.identity(obj))}); rename one")
        self._items[name] = obj
        self._wrapped.discard(name)
        return obj

    def register(self, name: str, make: Callable[[Any], T] | None = None) -> Callable[[Any], Any]:
        """Decorator: register the decorated object (or ``make(obj)``) under ``name``; returns it unchanged."""

        def decorate(obj: Any) -> Any:
            self.add(name, make(obj) if make is not None else obj)
            return obj

        return decorate

    def registered_as(self, obj: Any, wrapped: bool = True) -> T | None:
        """The registered entry whose identity is ``obj``, if any (``wrapped``: also among the
        entries made by ``from_function``)."""
        return next((o for name, o in self._items.items()
                     if self.identity(o) is obj and (wrapped or name not in self._wrapped)), None)

    def _add_wrapped(self, name: str, fn: Any, origin: str) -> T:
        assert self.from_function is not None
        self._items[name] = self.from_function(name, fn, origin)
        self._wrapped.add(name)
        return self._items[name]

    # -- plugins

    def load_entry_points(self) -> None:
        """Import every entry point of the group once; failures are kept in ``plugin_errors``."""
        if self.entry_points_loaded:
            return
        self.entry_points_loaded = True
        for ep in entry_points(group=self.group):
            self.loading = ep.name
            try:
                obj = ep.load()  # importing a module runs its register calls
            except Exception as exc:
                self.plugin_errors[ep.name] = (f"{self.kind} plugin '{ep.name}' ({ep.value}) "
                                               f"failed to load: {one_line(exc)}")
                continue
            finally:
                self.loading = None
            if (self.from_function is not None and callable(obj) and not inspect.isclass(obj)
                    and ep.name not in self._items and self.registered_as(obj) is None):
                self._add_wrapped(ep.name, obj, f"plugin:{ep.name}")

    def import_object(self, ref: str) -> Any:
        try:
            return import_object(ref, self.kind)
        except HeredityError as exc:
            raise self.error(str(exc)) from None

    # -- lookup

    def get(self, name: str, *default: Any) -> T:  # type: ignore[override]
        """The object registered as ``name``, from a plugin, or ``module:function`` imported;
        else a one-line error. With a ``default`` it is ``dict.get`` (registered names only)."""
        if default:
            return self._items.get(name, *default)
        if name in self._items:
            return self._items[name]
        self.load_entry_points()
        if name in self._items:
            return self._items[name]
        if name in self.plugin_errors:
            raise self.error(self.plugin_errors[name])
        if ":" in name and self.group is not None:
            fn = self.import_object(name)
            if name in self._items:  # the module registered it under its full name
                return self._items[name]
            registered = self.registered_as(fn, wrapped=self.alias_imports)  # or under a short name
            if registered is not None:
                if self.alias_imports:
                    self._items[name] = registered
                return registered
            return self._add_wrapped(name, fn, "import")
        raise self.error(self.unknown(name))

    def unknown(self, name: str) -> str:
        """The one-line message for a name nobody registered."""
        known = ", ".join(sorted(self._items)) or "none"
        imports = " (or 'module:function')" if self.group is not None else ""
        failed = ("; plugins that failed: " + "; ".join(self.plugin_errors.values())
                  if self.plugin_errors else "")
        return f"unknown {self.noun} '{name}'; {self.known_label}: {known}{imports}{failed}"

    def listed(self) -> list[T]:
        """Every entry, plugins included, sorted by name."""
        self.load_entry_points()
        return [self._items[k] for k in sorted(self._items)]


def _where(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or type(obj).__name__
    return f"{module}.{name}" if module else name
