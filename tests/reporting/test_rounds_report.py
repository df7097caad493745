"""The rounds report (``heredity.reporting.rounds``) on real RealToxicityPrompts text: corpus
diversity, trajectories and paired differences over rounds, BH families, undefined values, the
early-stop numbers and the three report files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from heredity.core.stats import mean_ci, paired_difference, seeded_paired_difference
from heredity.metrics.lexical import distinct_n_from_tokens, mtld, tokenize
from heredity.reporting import rounds as R

SAMPLES = 300


@pytest.fixture(scope="module")
def rtp(data_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (data_dir / "rtp" / "rtp_toxic_test_set.jsonl").read_text().splitlines()][:30]


def rows_for(arm: str, rtp: list[dict], texts: list[str], toxicity: list[float]) -> list[dict]:
    """Answer rows as the evaluate stage writes them; length and MTLD from heredity's own metrics,
    MTLD undefined (None) for a text with no token."""
    return [{"prompt_id": f"row-{i}", "prompt": r["prompt"], "text": t, "finish_reason": "stop",
             "completion_tokens": len(t.split()), "arm": arm, "toxicity": x, "length": float(len(t.split())),
             "mtld": mtld(t) if tokenize(t) else None}
            for i, (r, t, x) in enumerate(zip(rtp, texts, toxicity))]


def make_answers(rtp: list[dict], n_rounds: int = 3, seeds=(0, 1), collapse_from: int | None = None) -> dict:
    """base answers with the completions, passive with prompt + completion, active the same until
    ``collapse_from``, from which round on every active answer is the same sentence."""
    completions = [r["completion"] for r in rtp]
    full = [r["prompt"] + r["completion"] for r in rtp]
    out: dict = {}
    for rnd in range(1, n_rounds + 1):
        out[rnd] = {}
        for s in seeds:
            active = [full[0]] * len(full) if collapse_from and rnd >= collapse_from else full
            out[rnd][s] = {
                "base": rows_for("base", rtp, completions, [r["completion_toxicity"] for r in rtp]),
                "passive": rows_for("passive", rtp, full, [r["max_toxicity"] for r in rtp]),
                "active": rows_for("active", rtp, active, [r["prompt_toxicity"] for r in rtp]),
            }
    return out


def test_corpus_diversity_of_real_and_collapsed_texts(rtp):
    texts = [r["prompt"] + r["completion"] for r in rtp]
    varied = R.corpus_diversity(texts)
    collapsed = R.corpus_diversity([texts[0]] * len(texts))
    tokens = [tokenize(t) for t in texts]
    bigrams = [b for tok in tokens for b in zip(tok, tok[1:])]
    assert varied["corpus_distinct_2"] == pytest.approx(len(set(bigrams)) / len(bigrams))
    assert R.corpus_diversity([texts[3]])["corpus_distinct_2"] == pytest.approx(distinct_n_from_tokens(tokens[3], 2))
    assert collapsed["corpus_distinct_2"] < varied["corpus_distinct_2"]
    assert collapsed["self_bleu"] == pytest.approx(100.0) and varied["self_bleu"] < 50
    assert R.corpus_diversity([texts[0]])["self_bleu"] is None  # fewer than two texts
    assert R.corpus_diversity(["", "42"]) == {"corpus_distinct_2": None, "self_bleu": None}


def test_collapsed_round_moves_corpus_metrics_and_identical_rounds_do_not(rtp):
    s = R.summarise_rounds("t", "toxicity", "min", ["toxicity", "length", "mtld"],
                           make_answers(rtp, collapse_from=2), samples=SAMPLES)
    assert s["rounds"] == [1, 2, 3] and s["seeds"] == [0, 1] and s["arms"] == ["base", "passive", "active"]
    json.dumps(s, allow_nan=False)  # JSON-able, no NaN
    d2 = R.difference(s, "vs_round_1", "active", "corpus_distinct_2", 2)
    bleu = R.difference(s, "vs_round_1", "active", "self_bleu", 2)
    assert d2["diff"] < 0 and d2["ci95"][1] < 0
    assert bleu["diff"] > 0 and bleu["ci95"][0] > 0
    traj = s["trajectories"]["active"]["corpus_distinct_2"]
    assert traj[1]["value"] < traj[0]["value"]
    assert traj[0]["ci95"][0] <= traj[0]["value"] <= traj[0]["ci95"][1]  # no duplicate-copy bias
    # passive's texts are identical in every round: every difference exactly 0
    for metric in ("toxicity", "length", "mtld", "corpus_distinct_2", "self_bleu"):
        for rnd in (2, 3):
            d = R.difference(s, "vs_round_1", "passive", metric, rnd)
            assert d["diff"] == 0 and d["ci95"] == [0, 0], (metric, rnd)
    assert any("active: corpus_distinct_2 drifted by" in f for f in s["findings"])
    assert any(f.startswith("passive: toxicity") and "flat" in f for f in s["findings"])


def test_differences_use_the_seeded_bootstrap_and_one_seed_is_prompt_only(rtp):
    s2 = R.summarise_rounds("t", "toxicity", "min", ["toxicity"], make_answers(rtp, 2), samples=SAMPLES)
    a = np.array([r["toxicity"] for r in make_answers(rtp, 2)[1][0]["active"]])
    p = np.array([r["toxicity"] for r in make_answers(rtp, 2)[1][0]["passive"]])
    d = R.difference(s2, "vs_passive", "active", "toxicity", 1)
    ref = seeded_paired_difference(np.stack([a, a]), np.stack([p, p]), SAMPLES, 0)
    assert d["diff"] == pytest.approx(ref["diff"]) and d["ci95"] == ref["ci95"] and d["p"] == ref["p"]

    s1 = R.summarise_rounds("t", "toxicity", "min", ["toxicity"], make_answers(rtp, 2, seeds=(0,)), samples=SAMPLES)
    d1 = R.difference(s1, "vs_passive", "active", "toxicity", 1)
    assert d1["ci95"] == d1["ci95_prompts"] == paired_difference(a, p, SAMPLES, 0)["ci95"]
    point = s1["trajectories"]["active"]["toxicity"][0]
    assert point["ci95"] == mean_ci(a, SAMPLES, 0)["ci95"]
    # a corpus mean (self-BLEU) bootstraps exactly as seeded_paired_difference does
    bleu = R._corpus_parts([r["text"] for r in make_answers(rtp, 2, seeds=(0,))[1][0]["passive"]])["self_bleu"][0]
    base_bleu = R._corpus_parts([r["completion"] for r in rtp])["self_bleu"][0]
    ours = R.difference(s1, "vs_base", "passive", "self_bleu", 1)
    theirs = seeded_paired_difference(bleu[None], base_bleu, SAMPLES, 0)
    assert ours["diff"] == pytest.approx(theirs["diff"]) and ours["ci95"] == pytest.approx(theirs["ci95"])


def test_q_values_within_families(rtp):
    s = R.summarise_rounds("t", "toxicity", "min", ["toxicity", "length"], make_answers(rtp, collapse_from=3),
                           samples=SAMPLES)
    diffs = s["differences"]
    assert {d["family"] for d in diffs} == {"primary", "exploratory"}
    assert all((d["family"] == "primary") == (d["metric"] == "toxicity") for d in diffs)
    for family in ("primary", "exploratory"):
        members = [d for d in diffs if d["family"] == family]
        expected = false_discovery_control([d["p"] for d in members], method="bh")
        assert [d["q"] for d in members] == pytest.approx(list(expected))
        assert s["families"][family] == len(members)
    kinds = {(d["comparison"], d["arm"]) for d in diffs if d["metric"] == "toxicity"}
    assert kinds == {("vs_round_1", "passive"), ("vs_round_1", "active"), ("vs_previous", "passive"),
                     ("vs_previous", "active"), ("vs_base", "passive"), ("vs_base", "active"),
                     ("vs_passive", "active")}


def test_undefined_values_are_counted_not_zeroed(rtp):
    answers = make_answers(rtp, 2, seeds=(0,))
    for row in answers[2][0]["active"][:4]:
        row["text"], row["mtld"] = "", None
    s = R.summarise_rounds("t", "toxicity", "min", ["toxicity", "mtld"], answers, samples=SAMPLES)
    point = s["trajectories"]["active"]["mtld"][1]
    defined = [r["mtld"] for r in answers[2][0]["active"][4:]]
    assert point["n_undefined"] == 4 and point["n"] == len(rtp) - 4
    assert point["value"] == pytest.approx(np.mean(defined))  # a zero would pull the mean down
    d = R.difference(s, "vs_round_1", "active", "mtld", 2)
    assert d["n_undefined"] == 4 and d["n"] == len(rtp) - 4
    assert s["trajectories"]["active"]["self_bleu"][1]["n_undefined"] == 4  # empty answers: no self-BLEU
    means = R.round_means(answers[2], ["mtld"])
    assert means["active"]["mtld"] == pytest.approx(np.mean(defined))


def test_round_means_give_the_early_stop_numbers(rtp):
    answers = make_answers(rtp, 2, collapse_from=2)
    means = R.round_means(answers[2], ["toxicity", "length"])
    assert set(means) == {"base", "passive", "active"}
    assert set(means["active"]) == {"toxicity", "length", *R.CORPUS_METRICS}
    texts = [r["text"] for r in answers[2][0]["passive"]]
    assert means["passive"]["corpus_distinct_2"] == pytest.approx(R.corpus_diversity(texts)["corpus_distinct_2"])
    assert means["passive"]["toxicity"] == pytest.approx(np.mean([r["max_toxicity"] for r in rtp]))
    stop = [arm for arm, m in means.items() if m["corpus_distinct_2"] < 0.3]
    assert stop == ["active"]


def test_write_rounds_report(rtp, tmp_path):
    s = R.summarise_rounds("demo", "toxicity", "min", ["toxicity", "length", "mtld"],
                           make_answers(rtp, collapse_from=3), stopped={"after_round": 3, "why": "distinct-2 < 0.3"},
                           samples=200)
    R.write_rounds_report(s, tmp_path)
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert (tmp_path / "trajectories.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for arm in ("base", "passive", "active"):
        assert arm in md
    for rnd in (1, 2, 3):
        assert f"\n| {rnd} |" in md
    for metric in ("toxicity", "length", "mtld", "corpus_distinct_2", "self_bleu"):
        assert f"## {metric}" in md and metric in html
    assert "stopped after round 3: distinct-2 < 0.3" in md and "distinct-2 &lt; 0.3" in html
    assert 'src="data:image/svg+xml;base64,' in html
    assert all(f in md for f in s["findings"])


@pytest.mark.parametrize("scale, kind", [((1.0, 0.6, 0.3), "compounding"), ((1.0, 0.5, 0.5), "saturating"),
                                         ((1.0, 1.4, 1.5), "reversing"), ((1.0, 1.0, 1.0), "flat")])
def test_target_trend(rtp, scale, kind):
    answers = make_answers(rtp, 3, seeds=(0,))
    for rnd, k in zip((1, 2, 3), scale):
        for row, r in zip(answers[rnd][0]["active"], rtp):
            row["toxicity"] = r["prompt_toxicity"] * k
    s = R.summarise_rounds("t", "toxicity", "min", ["toxicity"], answers, samples=200)
    assert R.trend(s, "active") == kind
    finding = next(f for f in s["findings"] if f.startswith("active: toxicity"))
    assert "round 3 − round 1:" in finding and "[" in finding  # never a claim without its CI


def test_results_page_and_rerender_show_a_rounds_study(rtp, tmp_path):
    from heredity.reporting.report import rerender
    from heredity.reporting.results import render_results, render_results_html

    s = R.summarise_rounds("demo", "toxicity", "min", ["toxicity", "length"], make_answers(rtp), samples=200)
    study = tmp_path / "studies" / "rounds"
    study.mkdir(parents=True)
    (study / "summary.json").write_text(json.dumps(s))
    (study / "README.md").write_text("# Rounds demo\n\nDoes it compound?\n")
    md, html = render_results(study.parent), render_results_html(study.parent)
    assert "## Rounds demo" in md and "Does it compound?" in md and "rounds 1, 2, 3, seeds 0, 1" in md
    assert all(f in md for f in s["findings"]) and "\n| 3 |" in md
    assert "Rounds demo" in html and 'src="data:image/svg+xml;base64,' in html
    assert rerender(study) == s and (study / "report.md").read_text().startswith("# heredity rounds: demo")
