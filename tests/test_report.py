import numpy as np

from heredity.stages.report import bootstrap_mean_ci, paired_difference


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
