"""Custom metrics and strategies: ``module:function`` in a config, and entry-point plugins
(``heredity.metrics``, ``heredity.strategies``) listed by ``heredity metrics list``."""

from __future__ import annotations

import sys
import textwrap

import pytest

from heredity import strategies
from heredity.errors import HeredityError
from heredity.metrics import MetricContext, get_metric, list_metrics, registry
from heredity.plan import config_from_dict
from heredity.metrics.scoring import metric_versions, score_texts
from heredity.strategies import group_by_prompt, select

MODULE = '''
from heredity.metrics import register
from heredity.strategies import Params, register_strategy


def exclamations(texts, context):
    """Exclamation marks in the text"""
    return [t.count("!") for t in texts]


exclamations.version = "2"
exclamations.better = "lower"


def chars_plus(texts):
    return [len(t) + 1000 for t in texts]


@register("plug-registered", description="registered on import")
def registered(texts, context):
    return [1.0 for _ in texts]


def prefer_short(groups, params, ctx):
    """The candidate with the fewest characters of 'metric'"""
    return [min(rows, key=lambda r: (r[params.metric], ctx.order_key(r))) for _, rows in sorted(groups.items())]


class FloorParams(Params):
    metric: str
    floor: float = 0.0

    def metrics(self):
        return {self.metric}


@register_strategy("plug-floor", FloorParams)
def floor(groups, params, ctx):
    """First candidate whose metric is above the floor"""
    out = []
    for _, rows in sorted(groups.items()):
        ok = [r for r in rows if r[params.metric] > params.floor]
        if ok:
            out.append(min(ok, key=ctx.order_key))
    return out
'''

ENTRY_POINTS = """\
[heredity.metrics]
shouty = myplug.metrics:exclamations
plugmod = myplug.metrics
broken = myplug.nothere:fn

[heredity.strategies]
shortest = myplug.metrics:prefer_short
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A package ``myplug`` on sys.path, installed as a distribution with entry points."""
    pkg = tmp_path / "myplug"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "metrics.py").write_text(textwrap.dedent(MODULE))
    dist = tmp_path / "myplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    saved_metrics, saved_strategies = dict(registry.METRICS), dict(strategies.STRATEGIES)
    for reg in (registry.METRICS, strategies.STRATEGIES):
        monkeypatch.setattr(reg, "entry_points_loaded", False)
        monkeypatch.setattr(reg, "plugin_errors", {})
    monkeypatch.setenv("HEREDITY_SCORE_CACHE", "0")
    yield tmp_path
    registry.METRICS.clear()
    registry.METRICS.update(saved_metrics)
    strategies.STRATEGIES.clear()
    strategies.STRATEGIES.update(saved_strategies)
    for name in [m for m in sys.modules if m == "myplug" or m.startswith("myplug.")]:
        del sys.modules[name]


POOL = [
    {"prompt_id": "p1", "prompt": "q1", "teacher": "a", "sample_index": 0, "text": "Hello!! there", "finish_reason": "stop"},
    {"prompt_id": "p1", "prompt": "q1", "teacher": "a", "sample_index": 1, "text": "Hi.", "finish_reason": "stop"},
    {"prompt_id": "p2", "prompt": "q2", "teacher": "a", "sample_index": 0, "text": "Calm answer", "finish_reason": "stop"},
    {"prompt_id": "p2", "prompt": "q2", "teacher": "a", "sample_index": 1, "text": "Wow!", "finish_reason": "stop"},
]


def test_module_function_metric_in_a_config_and_when_scoring(plugin):
    cfg = config_from_dict({"score": {"metrics": ["words", "myplug.metrics:exclamations", "myplug.metrics:chars_plus"]},
                            "select": {"target": "myplug.metrics:exclamations", "direction": "min"}})
    assert cfg.score.metrics == ["words", "myplug.metrics:exclamations", "myplug.metrics:chars_plus"]
    texts = [r["text"] for r in POOL]
    scores = score_texts(texts, cfg.score.metrics, MetricContext())
    assert scores["myplug.metrics:exclamations"] == [2, 0, 0, 1]
    assert scores["myplug.metrics:chars_plus"] == [1000 + len(t) for t in texts]  # a one-argument function
    metric = get_metric("myplug.metrics:exclamations")
    assert (metric.version, metric.better, metric.description) == ("2", "lower", "Exclamation marks in the text")
    assert metric_versions(["myplug.metrics:exclamations"]) == {"myplug.metrics:exclamations": "2"}
    # a module that registers its function under a short name resolves to that metric
    assert get_metric("myplug.metrics:registered").name == "plug-registered"


def test_module_function_metric_with_a_column_name_and_options(plugin):
    cfg = config_from_dict({"score": {"metrics": [{"name": "myplug.metrics:exclamations", "as": "bangs", "any": 1}]},
                            "select": {"target": "bangs"}})
    assert cfg.score.metrics == ["bangs"]
    assert cfg.score.metric_options == {"bangs": {"name": "myplug.metrics:exclamations", "any": 1}}
    scores = score_texts(["a!", "b"], cfg.score.metrics, MetricContext(metric_options=cfg.score.metric_options))
    assert scores == {"bangs": [1.0, 0.0]}


@pytest.mark.parametrize("ref, message", [
    ("nopkg_xyz.mod:fn", "score.metrics.2': cannot import 'nopkg_xyz.mod:fn': ModuleNotFoundError: No module named 'nopkg_xyz'"),
    ("myplug.metrics:nothere", "score.metrics.2': cannot import 'myplug.metrics:nothere': module 'myplug.metrics' has no attribute 'nothere'"),
    ("myplug.metrics:MODULE_CONSTANT", "score.metrics.2': cannot import 'myplug.metrics:MODULE_CONSTANT': module"),
    ("no-such-metric", "score.metrics.2': unknown metric 'no-such-metric'"),
])
def test_bad_metric_references_are_one_line_errors(plugin, ref, message):
    with pytest.raises(HeredityError) as info:
        config_from_dict({"score": {"metrics": ["words", "mtld", ref]}}, "exp.yaml")
    text = str(info.value)
    assert text.startswith("exp.yaml: invalid config: field '")
    assert message in text
    assert "\n" not in text
    # the same reference straight to the scorer names its position too
    with pytest.raises(HeredityError, match=r"^score\.metrics\[2\]: "):
        from heredity.metrics import resolve_all

        resolve_all(["words", "mtld", ref], where="score.metrics")


def test_module_function_strategies(plugin):
    groups = group_by_prompt([{**r, "bangs": r["text"].count("!"), "chars": len(r["text"])} for r in POOL])
    chosen = select(groups, {"strategy": "myplug.metrics:prefer_short", "metric": "chars"})
    assert [r["text"] for r in chosen] == ["Hi.", "Wow!"]
    chosen = select(groups, {"strategy": "myplug.metrics:floor", "metric": "bangs", "floor": 0.5})
    assert [r["text"] for r in chosen] == ["Hello!! there", "Wow!"]
    # declared parameters are checked; metrics read by a free-parameter strategy must be scored
    with pytest.raises(HeredityError, match="unknown parameter 'flor'"):
        select(groups, {"strategy": "myplug.metrics:floor", "metric": "bangs", "flor": 1})
    with pytest.raises(HeredityError, match="'missing' which was not scored|reads 'missing'"):
        select(groups, {"strategy": "myplug.metrics:prefer_short", "metric": "missing"})
    cfg = config_from_dict({"score": {"metrics": ["words"]},
                            "select": {"target": "words", "active": {"strategy": "myplug.metrics:prefer_short",
                                                                     "metric": "chars"}}})
    assert "chars" in cfg.score.metrics  # the strategy's metric is scored
    with pytest.raises(HeredityError) as info:
        config_from_dict({"select": {"active": {"strategy": "myplug.nothere:fn", "metric": "words"}}}, "exp.yaml")
    assert "field 'select.active'" in str(info.value)
    assert "cannot import 'myplug.nothere:fn': ModuleNotFoundError: No module named 'myplug.nothere'" in str(info.value)


def test_entry_point_plugins(plugin):
    names = {m.name: m for m in list_metrics()}
    assert "shouty" in names and names["shouty"].origin == "plugin:shouty"
    assert "plug-registered" in names  # a module entry point registers on import
    assert get_metric("shouty")(["hey!!"]) == [2.0]
    with pytest.raises(HeredityError, match=r"metric plugin 'broken' \(myplug.nothere:fn\) failed to load: "
                                            r"ModuleNotFoundError"):
        get_metric("broken")
    assert score_texts(["a!"], ["shouty"], MetricContext()) == {"shouty": [1.0]}
    groups = group_by_prompt([{**r, "chars": len(r["text"])} for r in POOL])
    assert [r["text"] for r in select(groups, {"strategy": "shortest", "metric": "chars"})] == ["Hi.", "Wow!"]
    assert "shortest" in {s.name for s in strategies.list_strategies()}


def test_metrics_list_shows_plugins(plugin, monkeypatch):
    from typer.testing import CliRunner

    from heredity.cli import app

    monkeypatch.setenv("COLUMNS", "250")
    result = CliRunner().invoke(app, ["metrics", "list"])
    assert result.exit_code == 0, result.output
    assert "shouty" in result.output and "plugin:shouty" in result.output
    assert "perplexity" in result.output and "judge" in result.output
    assert "metric plugin 'broken'" in result.output  # reported, not fatal
