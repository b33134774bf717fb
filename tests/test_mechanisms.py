"""Tests of the data behind the mechanism pictures: benchmarks/bounds.py (ETR's bounds against the pass rate) and
benchmarks/one_update.py (one real update replayed from a saved batch). Not the pixels."""
import math
import statistics
import sys

import pytest
import torch

import etr
import train
from conftest import REPO
from test_train import data_file, parity_reward  # noqa: F401  (a fixture: 40 toy problems in a JSONL file)

sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import their siblings (compare, plot) by name
import bounds  # noqa: E402
import one_update  # noqa: E402

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


# --------------------------------------------------------------------------------------------- one update, replayed

@pytest.fixture(scope="module")
def dump(tiny_model_dir, data_file, tmp_path_factory):
    """Two steps of GRPO on the tiny model (4 updates per batch, lr 1e-2: the ratio moves far), the second one's
    update saved by one_update.dump_batch; its loss flags (here ERC's band) hold for every replay."""
    out = tmp_path_factory.mktemp("one_update")
    flags = ["--model", str(tiny_model_dir), "--data", str(data_file), "--out", str(out / "run"), "--algo", "grpo",
             "--prompts-per-step", "2", "--group-size", "8", "--mini-batches", "4", "--max-new-tokens", "6",
             "--lr", "1e-2", "--eval-every", "0", "--steps", "2", "--erc-beta-low", "1e-4", "--erc-beta-high", "1e-4",
             "--overlong", "none"]  # the untrained model's entropy barely moves; it rarely stops within 6 tokens
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train.reward, "math_reward", parity_reward)
        return one_update.dump_batch(flags, out / "batch.pt")


def per_update_mean(tokens, key):
    """The mean over updates of the fraction (or token mean) of `key` within each update: how train_step logs."""
    return statistics.fmean(tokens[key][tokens["update"] == u].float().mean().item()
                            for u in tokens["update"].unique().tolist())


def test_the_replay_is_the_update_the_run_made(dump):
    metrics, _, _ = one_update.replay(dump, "grpo")
    for key in one_update.METRICS:
        assert metrics[key] == pytest.approx(dump["logged"][key], abs=1e-6), key


@pytest.mark.parametrize("algo", ["grpo", "etr", "erc-dapo", "gppo"])
def test_the_token_data_is_what_the_loss_used(dump, algo):
    metrics, tokens, cfg = one_update.replay(dump, algo)
    first = tokens["update"] == 0
    assert sorted(tokens["update"].unique().tolist()) == [0, 1, 2, 3]
    assert (tokens["rho"][first] == 1).all() and not (tokens["clip_low"] | tokens["clip_high"])[first].any()
    # the figure's rule: a token is marked clipped iff its rho is beyond its own sample's bound on the side of its A
    lo, hi = 1 - tokens["eps_low"], 1 + tokens["eps_high"]
    below, above = (tokens["adv"] < 0) & (tokens["rho"] < lo), (tokens["adv"] > 0) & (tokens["rho"] > hi)
    assert torch.equal(tokens["clip_low"], below)
    capped = (tokens["adv"] < 0) & (tokens["rho"] > (cfg.dual_clip or math.inf))  # dual-clip: A < 0, rho > c
    assert torch.equal(tokens["clip_high"], above | capped)
    assert (below | above).any(), "no token is clipped: the test would check nothing"
    # counted per update and averaged over updates, the marks are the fractions train_step logged
    assert per_update_mean(tokens, "clip_low") == pytest.approx(metrics["clip_frac_low"], abs=1e-6)
    assert per_update_mean(tokens, "clip_high") == pytest.approx(metrics["clip_frac_high"], abs=1e-6)
    assert tokens["rho"].max().item() == pytest.approx(metrics["ratio_max"], rel=1e-6)
    # every token of a sample shares its A and its bounds
    for s in tokens["sample"].unique():
        one = tokens["sample"] == s
        for key in ("adv", "eps_low", "eps_high"):
            assert (tokens[key][one] == tokens[key][one][0]).all()
    if algo == "etr":  # per-sample bounds: the token mean is the logged one, and they do differ between samples
        assert per_update_mean(tokens, "eps_low") == pytest.approx(metrics["etr_eps_low_mean"], abs=1e-6)
        assert len(tokens["eps_low"].unique()) > 1
    else:
        assert (tokens["eps_low"] == cfg.eps_low).all() and (tokens["eps_high"] == cfg.eps_high).all()
    if algo.startswith("erc"):  # masked iff the entropy ratio is outside the open band; rho_H = 1 before any update
        inside = (tokens["rho_h"] > 1 - cfg.erc_beta_low) & (tokens["rho_h"] < 1 + cfg.erc_beta_high)
        assert torch.equal(tokens["erc_masked"], ~inside) and tokens["erc_masked"].any()
        assert (tokens["rho_h"][first] == 1).all()
        assert per_update_mean(tokens, "erc_masked") == pytest.approx(metrics["erc_masked_frac"], abs=1e-6)
    else:
        assert tokens["rho_h"].isnan().all() and not tokens["erc_masked"].any()
