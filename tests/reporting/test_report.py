import numpy as np
import pytest

from heredity.core.stats import bootstrap_mean_ci, paired_difference


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(10, 2, 20), rng.normal(10, 2, 2000)
    lo_s, hi_s = bootstrap_mean_ci(small, 2000, 0)
    lo_l, hi_l = bootstrap_mean_ci(large, 2000, 0)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    # the normal-theory width for n=2000 is 2 * 1.96 * 2 / sqrt(2000) ≈ 0.175
    assert abs((hi_l - lo_l) - 0.175) < 0.03


def test_paired_difference_uses_the_pairing():
    rng = np.random.default_rng(1)
    base = rng.normal(50, 20, 40)  # large spread between prompts...
    shifted = base + 2.0 + rng.normal(0, 0.5, 40)  # ...but a small, consistent shift per prompt
    d = paired_difference(shifted, base, 2000, 0)
    assert d["diff"] > 0 and d["ci95"][0] > 1.5  # paired: clearly above zero
    assert d["ratio"] == shifted.mean() / base.mean()


def test_undefined_metric_values_are_left_out_of_the_means_and_shown():
    from heredity.plan import config_from_dict
    from heredity.reporting.report import render_markdown, summarise

    cfg = config_from_dict({"score": {"metrics": ["length", "words"]}, "eval": {"bootstrap_samples": 200}})
    values = {"base": [3.0, float("nan"), 5.0, None], "passive": [1.0, 2.0, 3.0, 4.0], "active": [None] * 4}
    answers = {arm: [{"prompt_id": i, "length": v, "words": 2.0 * i, "finish_reason": "stop"} for i, v in enumerate(vs)]
               for arm, vs in values.items()}
    card = {"teacher_share": {}, "prompts": 4, "pool_size": 8, "metrics": {}}
    s = summarise(cfg, answers, card, {}, {})
    assert s["arms"]["base"]["length"] == 4.0  # mean of the defined values, not NaN
    assert s["arms"]["active"]["length"] is None and s["ci95"]["active"]["length"] == [None, None]
    assert s["undefined"] == {"base": {"length": 2}, "active": {"length": 4}}
    d = s["differences"]["passive_vs_base"]["length"]
    assert d["n"] == 2 and d["n_undefined"] == 2 and d["diff"] == (1.0 + 3.0) / 2 - (3.0 + 5.0) / 2
    assert s["differences"]["active_vs_passive"]["length"]["diff"] is None
    assert s["differences"]["active_vs_passive"]["words"]["n_undefined"] == 0
    text = render_markdown(s)
    assert "undefined on the answer (NaN): base length 2; active length 4." in text
    assert "(2 pairs undefined)" in text and "nan" not in text.lower().replace("(nan)", "")


def test_cost_table_shows_wall_time_and_latency_percentiles_never_a_sum_of_batches():
    from heredity.reporting.html import teacher_costs

    # a local teacher: two batches of four, every candidate of a batch carrying its batch's time
    local = [{"teacher": "local", "prompt_tokens": 10, "completion_tokens": 20, "latency_s": t}
             for t in [2.0] * 4 + [3.0] * 4]
    api = [{"teacher": "api", "prompt_tokens": 5, "completion_tokens": 7, "latency_s": t}
           for t in (0.1, 0.2, 0.3, 0.4, float("nan"))]
    summary = {"config": {"teachers": [{"model": "x", "name": "api", "price_per_1k_prompt_tokens": 2.0}]}}
    costs = {c["teacher"]: c for c in teacher_costs(summary, local + api, {"local": 5.5})}
    assert costs["local"]["wall_s"] == 5.5 and costs["api"]["wall_s"] is None  # none recorded for it
    assert (costs["local"]["latency_p50_s"], costs["local"]["latency_p99_s"]) == (2.5, pytest.approx(3.0))
    assert costs["api"]["timed"] == 4 and costs["api"]["latency_p50_s"] == pytest.approx(0.25)
    assert "latency_s" not in costs["local"]  # no total of per-candidate latencies anywhere
    assert costs["api"]["cost"] == pytest.approx(5 * 5 * 2.0 / 1000) and costs["local"]["cost"] is None
