"""heredity.core.registry: names to objects, duplicates refused, one-line errors, plugins."""

from __future__ import annotations

import sys
import textwrap

import pytest

from heredity.core.registry import Registry, import_object
from heredity.errors import HeredityError, one_line


class Wrapped:
    def __init__(self, name, fn, origin="user"):
        self.name, self.fn, self.origin = name, fn, origin


def make(**kw) -> Registry:
    return Registry("widget", from_function=Wrapped, identity=lambda w: w.fn, **kw)


def double(x):
    return 2 * x


def triple(x):
    return 3 * x


def test_register_get_and_mapping_view():
    reg = make()
    reg.register("double", lambda fn: Wrapped("double", fn))(double)
    reg.add("triple", Wrapped("triple", triple))
    assert reg.get("double").fn is double and reg["triple"].fn is triple
    assert list(reg) == ["double", "triple"] and len(reg) == 2 and "double" in reg
    assert [w.name for w in reg.listed()] == ["double", "triple"]
    assert reg.get("nothing", None) is None  # with a default: dict.get
    del reg["double"]
    assert "double" not in reg


def test_unknown_name_is_one_line_listing_known_names():
    reg = make()
    reg.add("b", Wrapped("b", triple))
    reg.add("a", Wrapped("a", double))
    with pytest.raises(HeredityError) as info:
        reg.get("c")
    assert str(info.value) == "unknown widget 'c'; known: a, b"
    assert "\n" not in str(info.value)
    plugins = Registry("gadget", noun="shiny gadget", known_label="known gadgets", group="heredity.test-none")
    with pytest.raises(HeredityError, match=r"^unknown shiny gadget 'x'; known gadgets: none \(or 'module:function'\)$"):
        plugins.get("x")


def test_duplicate_name_is_refused_in_one_line():
    reg = make()
    reg.add("double", Wrapped("double", double))
    reg.add("double", Wrapped("double", double))  # the same function again: no-op
    with pytest.raises(HeredityError) as info:
        reg.add("double", Wrapped("double", triple))
    message = str(info.value)
    assert "widget 'double' is registered twice" in message and "\n" not in message
    assert "triple" in message
    with pytest.raises(HeredityError, match="registered twice"):
        reg["double"] = Wrapped("double", triple)
    assert reg["double"].fn is double


def test_custom_error_type():
    class SpecialError(HeredityError):
        pass

    reg = Registry("thing", error=SpecialError)
    reg.add("x", 1)
    with pytest.raises(SpecialError):
        reg.add("x", 2)
    with pytest.raises(SpecialError):
        reg.get("y")


def test_import_object():
    assert import_object("os.path:join") is __import__("os").path.join
    with pytest.raises(HeredityError, match="'nocolon' is not a widget name nor 'module:function'"):
        import_object("nocolon", "widget")
    with pytest.raises(HeredityError, match="cannot import 'nopkg_xyz_1:fn': ModuleNotFoundError"):
        import_object("nopkg_xyz_1:fn")
    with pytest.raises(HeredityError, match="has no attribute 'nothere'"):
        import_object("os:nothere")
    with pytest.raises(HeredityError, match="it is a str, not a function"):
        import_object("os:sep")


def test_one_line():
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert one_line(KeyError()) == "KeyError"


PLUGIN = '''
from heredity_test_reg import REG

def plain(x):
    return x + 1

def decorated(x):
    return x - 1

REG.register("short", lambda fn: __import__("heredity_test_reg").Wrapped("short", fn))(decorated)
'''


@pytest.fixture
def plugin_pkg(tmp_path, monkeypatch):
    """A module ``regplug`` and a distribution with a ``heredity.test-widgets`` entry point group."""
    (tmp_path / "regplug.py").write_text(textwrap.dedent(PLUGIN))
    dist = tmp_path / "regplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: regplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[heredity.test-widgets]\nplus = regplug:plain\nmod = regplug\nbroken = nopkg_xyz_2:fn\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = make(group="heredity.test-widgets")
    host = type(sys)("heredity_test_reg")
    host.REG, host.Wrapped = reg, Wrapped
    monkeypatch.setitem(sys.modules, "heredity_test_reg", host)
    yield reg
    sys.modules.pop("regplug", None)


def test_entry_points_modules_functions_and_broken_plugins(plugin_pkg):
    reg = plugin_pkg
    plus = reg.get("plus")  # loads the group on the first miss
    assert plus.origin == "plugin:plus" and plus.fn(1) == 2
    assert reg.get("short").fn(1) == 0  # registered by the module entry point on import
    with pytest.raises(HeredityError, match=r"widget plugin 'broken' \(nopkg_xyz_2:fn\) failed to load: ModuleNotFoundError"):
        reg.get("broken")
    with pytest.raises(HeredityError, match="plugins that failed: widget plugin 'broken'"):
        reg.get("nothing")


def test_module_function_reference(plugin_pkg):
    reg = plugin_pkg
    assert reg.get("regplug:decorated") is reg["short"]  # registered under a short name: that entry
    assert "regplug:decorated" not in reg  # and not stored twice
    wrapped = reg.get("regplug:plain")  # wrapped from the entry point "plus" does not count here
    assert wrapped.origin == "import" and "regplug:plain" in reg


def test_module_function_reference_with_aliases(tmp_path, monkeypatch, plugin_pkg):
    reg = make(group="heredity.test-widgets", alias_imports=True)
    sys.modules["heredity_test_reg"].REG = reg
    assert reg.get("regplug:plain") is reg["plus"]  # any registration counts, and is aliased
    assert reg["regplug:plain"] is reg["plus"]
