"""Tests of the data behind the mechanism pictures: benchmarks/bounds.py (ETR's bounds against the pass rate) and
benchmarks/one_update.py (one real update replayed from a saved batch). Not the pixels."""
import math

import pytest

import etr
from benchmarks import bounds

G = 16


def by_k(rows):
    return {r["k"]: r for r in rows}


def test_bounds_by_hand_for_one_correct_answer_in_sixteen():
    # k = 1: p = 1/16, sigma^2 = 15/256; correct A = (15/16) / sqrt(15/256) = sqrt(15) = 3.87 > a_max = 3 -> micro
    # 1 + 0.5 * 3 = 2.5; wrong |A| = 1/sqrt(15) -> micro 1 + 0.5 / sqrt(15); macro 0.5 + 0.5 * (15/256) / (1/4)
    row = by_k(bounds.bounds_by_pass_rate(G))[1]
    macro = 0.5 + 0.5 * (15 / 256) / 0.25
    assert row["p"] == 1 / 16
    assert row["adv_correct"] == pytest.approx(math.sqrt(15), rel=1e-5)
    assert row["adv_wrong"] == pytest.approx(-1 / math.sqrt(15), rel=1e-5)
    assert row["eps_low_correct"] == row["eps_high_correct"] == pytest.approx(0.2 * 2.5 * macro, rel=1e-6)
    assert row["eps_low_wrong"] == pytest.approx(0.2 * (1 + 0.5 / math.sqrt(15)) * macro, rel=1e-5)


def test_bounds_of_a_correct_answer_at_p_are_those_of_a_wrong_one_at_1_minus_p():
    rows = by_k(bounds.bounds_by_pass_rate(G))
    assert sorted(rows) == list(range(1, G))  # k = 0 and k = G (A = 0) left out
    for k, r in rows.items():
        mirror = rows[G - k]
        assert r["adv_correct"] == pytest.approx(-mirror["adv_wrong"], rel=1e-5)
        assert r["eps_low_correct"] == pytest.approx(mirror["eps_low_wrong"], rel=1e-5)
        assert r["eps_high_correct"] == pytest.approx(mirror["eps_high_wrong"], rel=1e-5)


def test_bounds_are_monotone_where_both_terms_agree():
    rows = bounds.bounds_by_pass_rate(G)
    # p >= 1/2: |A| of a correct answer and the group variance both fall as p rises -> its eps falls strictly;
    # p <= 1/2: |A| of a wrong answer and the variance both rise -> its eps rises strictly
    upper = [r["eps_high_correct"] for r in rows if r["p"] >= 0.5]
    lower = [r["eps_low_wrong"] for r in rows if r["p"] <= 0.5]
    assert all(a > b for a, b in zip(upper, upper[1:]))
    assert all(a < b for a, b in zip(lower, lower[1:]))
    # the rarer answer of a group gets the wider region; at p = 1/2 both are the same
    for r in rows:
        rarer = "correct" if r["p"] < 0.5 else "wrong"
        other = "wrong" if rarer == "correct" else "correct"
        if r["p"] == 0.5:
            assert r["eps_low_correct"] == pytest.approx(r["eps_low_wrong"])
        else:
            assert r[f"eps_low_{rarer}"] > r[f"eps_low_{other}"]


@pytest.mark.parametrize("eps_high", [0.2, 0.28])
def test_bounds_without_elasticity_are_grpos(eps_high):
    cfg = etr.make_config("etr", etr_alpha=0.0, etr_beta=0.0, eps_high=eps_high)
    for r in bounds.bounds_by_pass_rate(G, cfg):
        for answer in ("correct", "wrong"):
            assert r[f"eps_low_{answer}"] == pytest.approx(0.2)
            assert r[f"eps_high_{answer}"] == pytest.approx(eps_high)
