"""verl_etr.py inside verl 0.9.1, proven equal to etr.py on a CPU (issue 26; docs/verl.md).

Runs only where verl is installed (`bash .ci/verl DIR` builds that environment and runs this file there); the main
environment has no verl and skips it. Every loss goes through verl's own registry (get_policy_loss_fn, called by
verl's ppo_loss, which verl_etr wraps) on random tensors with ragged masks, laid out as verl's actor hands them over:
flat per-token log-probs and entropies over prompt + response, padded batch fields, rows of a prompt scattered.
"""
import dataclasses
import math
import re
import shlex
from pathlib import Path

import pytest
import torch

verl = pytest.importorskip("verl", reason="verl is not installed here: `bash .ci/verl DIR` builds its environment")

import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.utils import config as verl_config  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.workers.config import FSDPActorConfig  # noqa: E402
from verl.workers.utils import losses as verl_losses  # noqa: E402

import etr  # noqa: E402
import verl_etr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
B, G, T, P = 16, 4, 12, 5  # responses, group size, longest response, longest prompt
TOL = 1e-6
# verl's loss_agg_mode -> etr.aggregate's mode and max_len (docs/verl.md), written out here as the specification.
MODES = {"token-mean": ("token-mean", 0), "seq-mean-token-mean": ("seq-mean", 0),
         "seq-mean-token-sum": ("drgrpo", 1), "seq-mean-token-sum-norm": ("drgrpo", T)}


def rollout_batch(seed=0):
    """One step's batch: rewards not only 0/1 (-1 = the overlong penalty), one group of equal rewards, one empty
    response, ragged lengths, ratios and entropy ratios well outside the clip and ERC ranges; rows shuffled (verl's
    balance_batch), so a prompt's rows are not side by side. The reference advantages and group std are
    etr.group_advantages on the rows in prompt order, as train.py computes them."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[:2] = torch.tensor([T, 0])  # a full-length and an empty response
    rewards = torch.tensor([-1.0, 0.0, 0.5, 1.0])[torch.randint(0, 4, (B,), generator=g)]
    rewards[G:2 * G] = 1.0  # a group whose rewards are all equal: advantage 0
    rewards[1] = 0.0  # the empty response: no token, no answer
    adv, group_std = etr.group_advantages(rewards, G)
    logp = -3 * torch.rand(B, T, generator=g)
    b = dict(mask=torch.arange(T) < lengths[:, None], logp=logp, old_logp=logp + 0.8 * torch.randn(B, T, generator=g),
             entropy=0.1 + 2 * torch.rand(B, T, generator=g), rewards=rewards, adv=adv, group_std=group_std,
             prompt_len=torch.randint(1, P + 1, (B,), generator=g), uid=np.array([f"q{i // G}" for i in range(B)]))
    b["old_entropy"] = b["entropy"] * (1 + 0.08 * torch.randn(B, T, generator=g))
    perm = torch.randperm(B, generator=g)
    b = {k: v[perm.numpy()] if isinstance(v, np.ndarray) else v[perm] for k, v in b.items()}
    # verl's reward sits on the last response token; the estimator's outputs become the batch fields
    tlr = torch.zeros(B, T)
    rows = (b["mask"].sum(1) > 0).nonzero().squeeze(1)
    tlr[rows, b["mask"].sum(1)[rows] - 1] = b["rewards"][rows]
    b["advantages"], b["returns"] = core_algos.get_adv_estimator_fn(verl_etr.ESTIMATOR)(
        token_level_rewards=tlr, response_mask=b["mask"].long(), index=b["uid"], config={"norm_adv_by_std_in_grpo": True})
    return b


def actor(name, mode="token-mean", c=3.0, low=0.2, high=0.28, **hyper):
    """verl's actor config as the worker builds it, our hyper-parameters in EtrPolicyLossConfig."""
    return FSDPActorConfig(strategy="fsdp", rollout_n=G, ppo_micro_batch_size_per_gpu=4, clip_ratio_low=low,
                           clip_ratio_high=high, clip_ratio_c=c, loss_agg_mode=mode,
                           loss_scale_factor=T if mode == "seq-mean-token-sum-norm" else None,
                           policy_loss=verl_etr.EtrPolicyLossConfig(loss_mode=name, **hyper))


def flat(x, b, rows):
    """[n, T] -> verl's flat per-token model output over prompt + response (a response's values sit one token early)."""
    pieces = []
    for i in rows.tolist():
        n = int(b["mask"][i].sum())
        pieces += [torch.zeros(int(b["prompt_len"][i]) - 1), x[i, :n], torch.zeros(1)]
    return torch.cat(pieces)


def through_verl(act, b, logp, rows=None, dp=1, extra=None):
    """verl's ppo_loss (the actor's loss function) on rows of the batch, with the global counts of the whole batch."""
    rows = torch.arange(B) if rows is None else rows
    mask = b["mask"][rows]
    attention = torch.cat([torch.arange(P) >= P - b["prompt_len"][rows, None], mask], 1).long()
    data = TensorDict({"prompts": torch.zeros(len(rows), P, dtype=torch.long),
                       "responses": torch.zeros(len(rows), T, dtype=torch.long), "attention_mask": attention,
                       "response_mask": mask.long(), "old_log_probs": b["old_logp"][rows],
                       "advantages": b["advantages"][rows], "returns": b["returns"][rows],
                       "entropy": b["old_entropy"][rows], **(extra or {})}, batch_size=[len(rows)])
    tu.assign_non_tensor(data, dp_size=dp, batch_num_tokens=int(b["mask"].sum()), global_batch_size=B)
    model_output = {"log_probs": flat(logp, b, rows), "entropy": flat(b["entropy"], b, rows)}
    return verl_losses.ppo_loss(act, model_output, data)


def ours(name, b, logp, mode="token-mean", c=3.0, low=0.2, high=0.28, **hyper):
    """etr.py itself on the whole batch, with the trainer's advantages and group std."""
    agg, max_len = MODES[mode]
    cfg = etr.make_config(name, eps_low=low, eps_high=high, dual_clip=None if math.isinf(c) else c, loss_agg=agg,
                          max_len=max_len, **hyper)
    return etr.ALGOS[name](logp, b["old_logp"], b["adv"], b["mask"], cfg, group_std=b["group_std"],
                           entropy=b["entropy"], old_entropy=b["old_entropy"])[0]


def value_and_grad(run, b):
    logp = b["logp"].clone().requires_grad_(True)
    loss = run(logp)
    loss.backward()
    return loss.detach(), logp.grad


def assert_close(got, want, what):
    (v1, g1), (v2, g2) = got, want
    assert torch.isfinite(v1) and torch.isfinite(g1).all(), f"{what}: not finite"
    assert abs(v1 - v2) <= TOL, f"{what}: loss {v1.item():.9f} != {v2.item():.9f}"
    assert (g1 - g2).abs().max() <= TOL, f"{what}: gradient differs by {(g1 - g2).abs().max().item():.3g}"


# ----------------------------------------------------------------------------------------------- registration

def test_every_algorithm_is_in_verls_registries_and_the_actor_uses_our_ppo_loss():
    for name in etr.ALGOS:
        assert core_algos.get_policy_loss_fn(name).__doc__.startswith(f"etr.ALGOS[{name!r}]"), name
    assert core_algos.get_adv_estimator_fn("etr_group") is verl_etr.group_advantage
    from verl.workers import engine_workers  # builds the actor's loss function: partial(ppo_loss, config=...)
    assert engine_workers.ppo_loss is verl_etr.ppo_loss is verl_losses.ppo_loss
    assert verl_config.validate_config is verl_etr.validate_config  # main_ppo's start-up check
    assert verl_etr.compute_score("math", "so \\boxed{\\frac{1}{2}}", "0.5") == 1.0


def test_verls_v1_trainer_still_stores_what_the_patch_reads():
    """The patch reads the batch fields `returns` and `entropy`: verl 0.9.1's v1 trainer writes them (read as text:
    importing the trainer needs TransferQueue)."""
    src = (Path(verl.__file__).parent / "trainer/ppo/v1/trainer_base.py").read_text()
    assert 'data["entropy"] = response_from_nested(data.pop("entropy")' in src, \
        "verl's v1 trainer no longer stores pi_old's entropy as the batch field `entropy`: ERC's patch must change"
    assert 'fields = ["advantages", "returns"]' in src, \
        "verl's v1 trainer no longer writes the estimator's second output as `returns`: ETR's patch must change"


# ----------------------------------------------------------------------------------------------- equality

def test_the_macro_level_is_the_trainers_group_std_for_any_reward():
    """etr_group on verl's shuffled rows gives etr.group_advantages' advantages and group std exactly; verl's own
    grpo estimator divides by the unbiased std instead."""
    b = rollout_batch()
    mask = b["mask"].float()
    assert torch.equal(b["advantages"], b["adv"][:, None] * mask)
    assert torch.equal(b["returns"], b["group_std"][:, None] * mask)
    assert set(b["rewards"].tolist()) - {0.0, 1.0}, "the test must use rewards other than 0/1"
    tlr = b["advantages"] * 0
    rows = (b["mask"].sum(1) > 0).nonzero().squeeze(1)
    tlr[rows, b["mask"].sum(1)[rows] - 1] = b["rewards"][rows]
    verl_adv, _ = core_algos.compute_grpo_outcome_advantage(tlr, mask, b["uid"])
    assert not torch.allclose(verl_adv, b["advantages"], atol=1e-3)
    dr, none = core_algos.get_adv_estimator_fn("etr_group")(token_level_rewards=tlr, response_mask=mask,
                                                           index=b["uid"], config={"norm_adv_by_std_in_grpo": False})
    for q in np.unique(b["uid"]):  # norm_adv_by_std_in_grpo=False: Dr. GRPO's advantages, group by group
        rows = torch.as_tensor(b["uid"] == q)
        assert torch.equal(dr[rows], etr.group_advantages(b["rewards"][rows], G, "none")[0][:, None] * mask[rows])
        assert torch.equal(none[rows], b["returns"][rows])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", etr.ALGOS)
def test_every_loss_through_verl_equals_etr_py(name, mode):
    b = rollout_batch()
    got = value_and_grad(lambda lp: through_verl(actor(name, mode), b, lp)[0], b)
    want = value_and_grad(lambda lp: ours(name, b, lp, mode), b)
    assert_close(got, want, f"{name}, {mode}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["grpo", "dapo", "drgrpo", "etr"])
@pytest.mark.parametrize("c", [3.0, math.inf])
def test_grpo_dapo_drgrpo_and_etr_without_elasticity_equal_verls_vanilla(name, mode, c):
    """verl's vanilla is its always-on dual clip (clip_ratio_c; inf turns it off in both); ETR with alpha = beta = 0."""
    b = rollout_batch(1)
    hyper = {"etr_alpha": 0.0, "etr_beta": 0.0} if name == "etr" else {}
    got = value_and_grad(lambda lp: through_verl(actor(name, mode, c, **hyper), b, lp)[0], b)
    want = value_and_grad(lambda lp: through_verl(actor("vanilla", mode, c), b, lp)[0], b)
    assert_close(got, want, f"{name} vs vanilla, {mode}, clip_ratio_c={c}")


@pytest.mark.parametrize("name", etr.ALGOS)
def test_split_over_shards_with_verls_global_counts_equals_the_whole_batch(name):
    """4 data-parallel ranks (gradients averaged) x 2 micro-batches each (gradients added), verl's global counts."""
    b = rollout_batch(2)
    shards = torch.randperm(B, generator=torch.Generator().manual_seed(3)).tensor_split(8)
    for mode in MODES:
        act = actor(name, mode)
        got = value_and_grad(lambda lp: sum(through_verl(act, b, lp, rows, dp=4)[0] for rows in shards) / 4, b)
        assert_close(got, value_and_grad(lambda lp: ours(name, b, lp, mode), b), f"{name}, {mode}, 4 shards")


def test_erc_masks_the_tokens_etr_py_masks():
    b = rollout_batch(4)
    keep = etr.erc_keep_mask(b["entropy"], b["old_entropy"], 0.05, 0.05)
    logp = b["logp"].clone().requires_grad_(True)
    loss, metrics = through_verl(actor("erc-dapo"), b, logp)
    loss.backward()
    dropped = b["mask"] & ~keep
    assert 0.1 < dropped.sum() / b["mask"].sum() < 0.9, "the test needs tokens on both sides of the entropy bounds"
    assert (logp.grad[dropped] == 0).all()
    assert abs(metrics["actor/erc_masked_frac"].aggregate() - dropped.sum() / b["mask"].sum()) < 1e-6
