"""The score cache: re-scoring is free, any change to what a value depends on recomputes, and
concurrent writers leave a sound file."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3

import pytest

from heredity.metrics import MetricContext, register, registry
from heredity.metrics.cache import ScoreCache, default_path, open_cache
from heredity.metrics.scoring import score_texts

TEXTS = ["the cat sat on the mat", "a dog barked", "", "the cat sat on the mat", "an owl hooted twice"]


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HEREDITY_CACHE", str(tmp_path))
    monkeypatch.delenv("HEREDITY_SCORE_CACHE", raising=False)
    return tmp_path


@pytest.fixture
def counting():
    """Registers 'test-count' (words per text, NaN for empty texts) and counts the texts it scores."""
    calls: list[list[str]] = []

    def install(version: str = "1", name: str = "test-count", **kw):
        registry.METRICS.pop(name, None)  # a name is registered once; replace the earlier one

        @register(name, version=version, **kw)
        def count(texts, context):
            calls.append(list(texts))
            return [len(t.split()) if t else math.nan for t in texts]

        return count

    install()
    yield calls, install
    for name in ("test-count", "test-prompted", "test-tokens"):
        registry.METRICS.pop(name, None)


def scored(calls) -> int:
    return sum(len(c) for c in calls)


def same(a, b) -> bool:
    return all((x == y) or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b)) and len(a) == len(b)


def test_second_scoring_computes_nothing_and_gives_identical_results(cache_home, counting):
    calls, _ = counting
    first = score_texts(TEXTS, ["test-count", "words"], MetricContext())
    assert scored(calls) == 4  # the repeated text is scored once
    second = score_texts(list(reversed(TEXTS)), ["test-count", "words"], MetricContext())
    assert scored(calls) == 4  # nothing computed
    assert same(second["test-count"], list(reversed(first["test-count"])))
    assert math.isnan(first["test-count"][2])  # NaN survives the round trip
    assert default_path() == cache_home / "scores" / "scores.sqlite"
    assert default_path().is_file()


def test_new_texts_only_are_computed(cache_home, counting):
    calls, _ = counting
    score_texts(TEXTS[:2], ["test-count"], MetricContext())
    score_texts(TEXTS, ["test-count"], MetricContext())
    assert [t for c in calls for t in c] == TEXTS[:2] + ["", "an owl hooted twice"]


def test_changing_the_version_recomputes(cache_home, counting):
    calls, install = counting
    first = score_texts(TEXTS, ["test-count"], MetricContext())
    install(version="2")
    again = score_texts(TEXTS, ["test-count"], MetricContext())
    assert scored(calls) == 8
    assert same(first["test-count"], again["test-count"])
    install(version="1")  # the old version's entries are still there
    score_texts(TEXTS, ["test-count"], MetricContext())
    assert scored(calls) == 8


def test_prompt_and_tokenizer_are_part_of_the_key_only_when_used(cache_home, counting):
    calls, install = counting
    install(name="test-prompted", needs_prompts=True)
    install(name="test-tokens", needs_tokenizer=True)
    texts = ["same answer", "same answer"]
    score_texts(texts, ["test-count"], MetricContext(prompts=["p1", "p2"]))
    assert scored(calls) == 1  # the prompt does not matter to it
    calls.clear()
    score_texts(texts, ["test-prompted"], MetricContext(prompts=["p1", "p2"]))
    assert scored(calls) == 2
    score_texts(texts, ["test-prompted"], MetricContext(prompts=["p2", "p1"]))
    assert scored(calls) == 2
    calls.clear()
    score_texts(texts, ["test-tokens"], MetricContext(tokenizer=object(), tokenizer_id="tok-a"))
    score_texts(texts, ["test-tokens"], MetricContext(tokenizer=object(), tokenizer_id="tok-a"))
    assert scored(calls) == 1
    score_texts(texts, ["test-tokens"], MetricContext(tokenizer=object(), tokenizer_id="tok-b"))
    assert scored(calls) == 2


def test_options_are_part_of_the_key(cache_home, counting):
    calls, _ = counting
    registry.METRICS["test-count"] = registry.metric_from_function(
        "test-count", registry.METRICS["test-count"].fn, "user")  # FreeOptions: takes any option
    score_texts(TEXTS, [{"name": "test-count", "flavour": "a"}], MetricContext())
    score_texts(TEXTS, [{"name": "test-count", "flavour": "a"}], MetricContext())
    assert scored(calls) == 4
    score_texts(TEXTS, [{"name": "test-count", "flavour": "b"}], MetricContext())
    assert scored(calls) == 8


def test_disabled_by_argument_or_environment(cache_home, counting, monkeypatch):
    calls, _ = counting
    score_texts(TEXTS, ["test-count"], MetricContext(), cache=False)
    score_texts(TEXTS, ["test-count"], MetricContext(), cache=False)
    assert scored(calls) == 10  # no dedup either: the metric sees the batch as given
    assert not (cache_home / "scores").exists()
    monkeypatch.setenv("HEREDITY_SCORE_CACHE", "0")
    assert open_cache() is None
    score_texts(TEXTS, ["test-count"], MetricContext())
    assert scored(calls) == 15
    monkeypatch.setenv("HEREDITY_SCORE_CACHE", str(cache_home / "elsewhere.sqlite"))
    score_texts(TEXTS, ["test-count"], MetricContext())
    assert (cache_home / "elsewhere.sqlite").is_file()


def test_config_switch(cache_home):
    from heredity.plan import config_from_dict

    assert config_from_dict({}).score.cache is True
    assert config_from_dict({"score": {"cache": False}}).score.cache is False


def test_unusable_cache_file_falls_back_to_computing(cache_home, counting, capsys):
    calls, _ = counting
    path = cache_home / "broken.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    store = ScoreCache(path)
    assert same(score_texts(TEXTS, ["test-count"], MetricContext(), cache=store)["test-count"],
                [6, 3, math.nan, 6, 4])
    assert store.broken and "unusable" in capsys.readouterr().err


def _writer(path: str, worker: int, n: int) -> None:
    store = ScoreCache(path)
    for batch in range(10):
        # overlapping keys (every worker writes 0..n) plus its own
        items = [(f"k{i}".encode().ljust(16, b"_"), float(i)) for i in range(batch * n // 10, (batch + 1) * n // 10)]
        items += [(f"w{worker}-{i}".encode().ljust(16, b"_"), float(worker)) for i in range(batch * 50, batch * 50 + 50)]
        store.put("concurrent@1", items)
        store.get("concurrent@1", [k for k, _ in items[:100]])


def test_concurrent_writers_do_not_corrupt(tmp_path):
    path = tmp_path / "c.sqlite"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 2000)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 2000 + 4 * 500
    conn.close()
    store = ScoreCache(path)
    keys = [f"k{i}".encode().ljust(16, b"_") for i in range(2000)]
    assert store.get("concurrent@1", keys) == {k: float(i) for i, k in enumerate(keys)}
