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
from verl_etr import LOSSES  # noqa: E402 -- the seven losses registered (not etr.py's clip family: verl has its own)

ROOT = Path(__file__).resolve().parents[1]
B, G, T, P = 17, 4, 12, 5  # rows (16 responses, 4 per prompt, and one of verl's padding rows), longest response, prompt
TOL = 1e-6
# verl's loss_agg_mode -> etr.aggregate's mode and max_len (docs/verl.md), written out here as the specification.
MODES = {"token-mean": ("token-mean", 0), "seq-mean-token-mean": ("seq-mean", 0),
         "seq-mean-token-sum": ("drgrpo", 1), "seq-mean-token-sum-norm": ("drgrpo", T)}


def rollout_batch(seed=0):
    """One step's batch: rewards not only 0/1 (-1 = the overlong penalty), one group of equal rewards, ragged lengths,
    one row without a response token (the samples verl appends to make a batch divisible), ratios and entropy ratios
    well outside the clip and ERC ranges; rows shuffled (verl's balance_batch), so a prompt's rows are not side by
    side. The reference advantages and group std are etr.group_advantages on the responses in prompt order, as
    train.py computes them (0 for the padding row)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0], lengths[-1] = T, 0  # a full-length response; the padding row
    rewards = torch.tensor([-1.0, 0.0, 0.5, 1.0])[torch.randint(0, 4, (B,), generator=g)]
    rewards[G:2 * G] = 1.0  # a group whose rewards are all equal: advantage 0
    rewards[-1] = 0.0
    adv, group_std = (torch.cat([x, torch.zeros(1)]) for x in etr.group_advantages(rewards[:-1], G))
    logp = -3 * torch.rand(B, T, generator=g)
    b = dict(mask=torch.arange(T) < lengths[:, None], logp=logp, old_logp=logp + 0.8 * torch.randn(B, T, generator=g),
             entropy=0.1 + 2 * torch.rand(B, T, generator=g), rewards=rewards, adv=adv, group_std=group_std,
             prompt_len=torch.randint(1, P + 1, (B,), generator=g),
             uid=np.array([f"q{i // G}" for i in range(B - 1)] + ["pad0"]))
    b["old_entropy"] = b["entropy"] * (1 + 0.08 * torch.randn(B, T, generator=g))
    perm = torch.randperm(B, generator=g)
    b = {k: v[perm.numpy()] if isinstance(v, np.ndarray) else v[perm] for k, v in b.items()}
    # verl's reward sits on the last response token; the estimator's outputs become the batch fields
    tlr = torch.zeros(B, T)
    rows = (b["mask"].sum(1) > 0).nonzero().squeeze(1)
    tlr[rows, b["mask"].sum(1)[rows] - 1] = b["rewards"][rows]
    b["advantages"], b["returns"] = core_algos.get_adv_estimator_fn(verl_etr.ESTIMATOR)(
        token_level_rewards=tlr, response_mask=b["mask"].long(), index=b["uid"],
        config={"norm_adv_by_std_in_grpo": True})
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
    assert set(verl_etr.LOSSES) <= set(etr.ALGOS)
    for name in verl_etr.LOSSES:
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
        want = torch.zeros(1) if q == "pad0" else etr.group_advantages(b["rewards"][rows], G, "none")[0]
        assert torch.equal(dr[rows], want[:, None] * mask[rows])
        assert torch.equal(none[rows], b["returns"][rows])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", LOSSES)
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


@pytest.mark.parametrize("name", LOSSES)
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


# ----------------------------------------------------------------------------------------------- bad input

def refusal(run):
    """The one-line message of the ValueError that run() raises."""
    with pytest.raises(ValueError) as e:
        run()
    message = str(e.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


@pytest.mark.parametrize("what, run, says", [
    ("an aggregation mode etr.py lacks", lambda b: through_verl(actor("etr", "token-sum"), b, b["logp"]),
     "loss_agg_mode=token-sum has no counterpart in etr.py: use one of token-mean, seq-mean-token-mean, "
     "seq-mean-token-sum, seq-mean-token-sum-norm"),
    ("Dr. GRPO's normaliser without its constant", lambda b: through_verl(dataclasses.replace(
        actor("drgrpo", "seq-mean-token-sum-norm"), loss_scale_factor=None), b, b["logp"]), "needs actor_rollout_ref"),
    ("rollout correction weights", lambda b: through_verl(actor("grpo"), b, b["logp"], extra={
        "rollout_is_weights": torch.ones(B, T)}), "supported is rollout_is=null, rollout_rs=null, bypass_mode=false"),
    ("token-level advantages", lambda b: through_verl(actor("grpo"), {**b, "advantages": torch.randn(B, T)}, b["logp"]),
     "token-level advantages"),
    ("ETR without the group std", lambda b: core_algos.get_policy_loss_fn("etr")(
        b["old_logp"], b["logp"], b["advantages"], b["mask"], "token-mean", actor("etr")), "`returns`"),
    ("ERC without pi_theta's entropy", lambda b: verl_losses.ppo_loss(actor("erc-dapo"), {"log_probs": flat(
        b["logp"], b, torch.arange(B))}, _data(b)), "calculate_entropy=True"),
    ("groups of unequal size", lambda b: core_algos.get_adv_estimator_fn("etr_group")(
        torch.zeros(B, T), b["mask"].long(), np.array(["a"] * 3 + ["b"] * (B - 3))), "groups of one size"),
])
def test_bad_input_reaching_the_loss_is_refused_in_one_line(what, run, says):
    assert says in refusal(lambda: run(rollout_batch())), what


def _data(b):
    """The batch fields of through_verl, for a call that builds model_output itself."""
    mask = b["mask"]
    data = TensorDict({"prompts": torch.zeros(B, P, dtype=torch.long), "responses": torch.zeros(B, T, dtype=torch.long),
                       "attention_mask": torch.cat([torch.arange(P) >= P - b["prompt_len"][:, None], mask], 1).long(),
                       "response_mask": mask.long(), "old_log_probs": b["old_logp"], "advantages": b["advantages"],
                       "returns": b["returns"], "entropy": b["old_entropy"]}, batch_size=[B])
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=B)
    return data


def documented_overrides(algo="etr", model="Qwen/Qwen2.5-0.5B", tp="1"):
    """docs/verl.md's launch command as Hydra overrides, with the changes its table lists for `algo`."""
    doc = (ROOT / "docs/verl.md").read_text()
    block = re.search(r"```bash\n(MODEL=.*?)```", doc, re.S).group(1)
    assert "export PYTHONPATH=$PWD VERL_USE_EXTERNAL_MODULES=verl_etr\n" in block and "python verl_etr.py data $DATA" in block
    command = block[block.index("python -m verl.trainer.main_ppo"):]
    for var, value in (("$MODEL", model), ("$ROLLOUT_TP", tp), ("$DATA", "/data/etr")):
        command = command.replace(var, value)
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:3] == ["python", "-m", "verl.trainer.main_ppo"]
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| `?([^`|]*)`? \|$", doc, re.M))
    assert set(LOSSES) <= set(rows), f"docs/verl.md's table lacks {set(LOSSES) - set(rows)}"
    changes = [] if rows[algo] == "none" else [re.sub(r"^actor\.", "actor_rollout_ref.actor.", w) for w in rows[algo].split()]
    overrides = {w.split("=", 1)[0].lstrip("+"): w for w in words[3:] + changes}  # a change replaces the command's
    return list(overrides.values())


def compose_config(overrides):
    with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer/config"), version_base=None):
        return compose("ppo_trainer", overrides=overrides)


def start_up(cfg):
    """What verl's main_ppo runs before Ray starts (validate_config, which verl_etr wraps with its check)."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    verl_config.validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


@pytest.mark.parametrize("change, says", [
    (["actor_rollout_ref.actor.loss_agg_mode=token-sum"], "use one of token-mean, seq-mean-token-mean,"),
    (["actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm"], "needs actor_rollout_ref.actor.loss_scale_factor"),
    (["algorithm.rollout_correction.rollout_is=token"], "supported is rollout_is=null, rollout_rs=null, bypass_mode=false"),
    (["algorithm.rollout_correction.rollout_rs=token_k1"], "supported is rollout_is=null, rollout_rs=null"),
    (["algorithm.rollout_correction.bypass_mode=true"], "supported is rollout_is=null, rollout_rs=null"),
    (["algorithm.adv_estimator=grpo"], "set algorithm.adv_estimator=etr_group, not grpo"),
    (["algorithm.use_kl_in_reward=true"], "KL in the reward has no counterpart in etr.py"),
    (["actor_rollout_ref.actor.entropy_coeff=0.001"], "an entropy bonus has no counterpart in etr.py"),
    (["critic.enable=true"], "a critic"),
    (["actor_rollout_ref.actor.use_kl_loss=true", "actor_rollout_ref.actor.kl_loss_type=mse"], "kl_loss_type=mse"),
    (["actor_rollout_ref.actor.policy_loss.loss_mode=erc-dapo"], "calculate_entropy=True"),
    (["actor_rollout_ref.actor.policy_loss.loss_mode=erc-dapo", "actor_rollout_ref.actor.calculate_entropy=true",
      "trainer.use_v1=false"], "trainer.use_v1=True"),
    (["actor_rollout_ref.actor.clip_ratio_low=0"], "eps_low must be > 0"),
])
def test_a_setting_without_counterpart_is_refused_at_start_up(change, says):
    cfg = compose_config(documented_overrides() + change)
    assert says in refusal(lambda: start_up(cfg))


def test_verls_own_losses_pass_the_start_up_check_untouched():
    start_up(compose_config(documented_overrides() + ["algorithm.adv_estimator=grpo", "actor_rollout_ref.actor."
                                                      "policy_loss.loss_mode=vanilla", "actor_rollout_ref.actor."
                                                      "loss_agg_mode=token-sum"]))


# ----------------------------------------------------------------------------------------------- verl changes

@pytest.mark.parametrize("change, says", [
    (lambda mp: mp.delattr(core_algos, "get_policy_loss_fn"), "core_algos.get_policy_loss_fn is gone"),
    (lambda mp: mp.setattr(core_algos, "get_policy_loss_fn", lambda name, strict: None),
     "core_algos.get_policy_loss_fn(name, strict) changed, expected (name)"),
    (lambda mp: mp.setattr(verl_etr, "ACTOR_FIELDS", verl_etr.ACTOR_FIELDS + ["clip_ratio_d"]), "has no clip_ratio_d"),
])
def test_a_verl_api_change_fails_with_a_clear_message(monkeypatch, change, says):
    change(monkeypatch)
    with pytest.raises(ImportError, match=re.escape(says) + ".*verl_etr is written for verl 0.9.1"):
        verl_etr.check_api()
    with pytest.raises(ImportError, match="verl_etr is written for verl 0.9.1, found 0.10.0"):
        verl_etr.check_version("0.10.0")


def test_without_verl_the_import_names_the_fix(monkeypatch):
    import importlib
    import sys
    monkeypatch.setitem(sys.modules, "verl", None)  # what `import verl` sees where verl is not installed
    monkeypatch.delitem(sys.modules, "verl_etr")
    with pytest.raises(ImportError) as e:
        importlib.import_module("verl_etr")
    assert str(e.value).startswith("verl_etr needs verl 0.9.1 in an environment of its own: `bash .ci/verl")
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------- the docs

@pytest.mark.parametrize("algo", LOSSES)
def test_the_documented_launch_means_train_py(algo):
    """docs/verl.md's command (both models for ETR; each row of its table) passes verl's start-up checks and means
    `python train.py --algo ALGO --model M --overlong none`: the same loss settings and the same run settings."""
    import rollout
    import train
    from verl.utils.config import omega_conf_to_dataclass
    models = ["Qwen2.5-0.5B", "Qwen2.5-7B"] if algo == "etr" else ["Qwen2.5-0.5B"]
    for alias, tp in zip(models, ["1", "2"]):
        cfg = compose_config(documented_overrides(algo, rollout.MODEL_ALIASES[alias], tp))
        start_up(cfg)
        args = train.resolve_args(train.parse_args(["--algo", algo, "--model", alias, "--overlong", "none"]))
        want = train.loss_config(args)
        got = verl_etr.loss_config(algo, omega_conf_to_dataclass(cfg.actor_rollout_ref.actor))  # as the worker does
        got = dataclasses.replace(got, adv_std="group" if cfg.algorithm.norm_adv_by_std_in_grpo else "none",
                                  max_len=got.max_len if got.loss_agg == "drgrpo" else want.max_len)  # unused otherwise
        assert got == want, f"{algo}: verl's loss settings {got} != train.py's {want}"
        ar = cfg.actor_rollout_ref
        act, ro = ar.actor, ar.rollout
        for what, verl_value, ours in [
                ("model", ar.model.path, rollout.MODEL_ALIASES[alias]),
                ("prompt template rendered as is", ar.model.custom_chat_template, verl_etr.PROMPT_AS_IS),
                ("reward function", (cfg.reward.custom_reward_function.path, cfg.reward.custom_reward_function.name),
                 ("pkg://verl_etr", "compute_score")),
                ("prompts per step", cfg.data.train_batch_size, args.prompts_per_step),
                ("group size", ro.n, args.group_size),
                ("sequences per update", act.ppo_mini_batch_size * ro.n,
                 args.prompts_per_step * args.group_size // args.mini_batches),
                ("random mini-batches", act.shuffle, True),
                ("epochs", act.ppo_epochs, args.epochs),
                ("micro-batch", act.ppo_micro_batch_size_per_gpu, args.micro_batch_size),
                ("lr", act.optim.lr, args.lr), ("schedule", act.optim.lr_scheduler_type, args.lr_schedule),
                ("warm-up", act.optim.lr_warmup_steps, args.warmup_steps),
                ("weight decay", act.optim.weight_decay, args.weight_decay),
                ("AdamW betas", list(act.optim.betas), [0.9, 0.999]),  # train.py's torch.optim.AdamW(betas=...)
                ("gradient clip", act.optim.clip_grad, args.max_grad_norm),
                ("temperature", ro.temperature, args.temperature), ("top-p", ro.top_p, args.top_p),
                ("top-k", ro.top_k, -1), ("max new tokens", cfg.data.max_response_length, args.max_new_tokens),
                ("steps", cfg.trainer.total_training_steps, args.steps),
                ("eval every", cfg.trainer.test_freq, args.eval_every), ("greedy eval", ro.val_kwargs.temperature, 0),
                ("reference model", act.use_kl_loss, args.kl_coef > 0),
                ("dynamic sampling", cfg.algorithm.filter_groups.enable, args.dynamic_sampling),
                ("GPUs", (cfg.trainer.n_gpus_per_node, cfg.trainer.nnodes), (8, 1))]:
            assert verl_value == ours, f"{algo}, {alias}: {what}: verl {verl_value} != train.py {ours}"


def test_the_data_script_writes_what_verls_dataset_reads_as_train_pys_prompts(tmp_path):
    """verl_etr.write_data (here from local files; `python verl_etr.py data DIR` downloads train.py's presets), read
    back by verl's own RLHFDataset and rendered by the documented chat template: train.py's prompt, its answer, and the
    evaluation set without the training problems."""
    import json

    import rollout
    import toy
    from verl.utils.dataset.rl_dataset import RLHFDataset
    problems = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(5)]
    for name, rows in (("train", problems[:4]), ("eval", problems[2:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in rows))
    train_file, val_file = verl_etr.write_data(str(tmp_path / "out"), str(tmp_path / "train.jsonl"),
                                               str(tmp_path / "eval.jsonl"))
    tokenizer = toy.make_tokenizer()
    tokenizer.chat_template = verl_etr.PROMPT_AS_IS  # actor_rollout_ref.model.custom_chat_template, as documented
    config = compose_config(documented_overrides()).data
    for path, want in ((train_file, problems[:4]), (val_file, problems[4:])):  # problems 2, 3 are training problems
        dataset = RLHFDataset(path, tokenizer, config)
        assert len(dataset) == len(want)
        for item, p in zip(dataset, want):
            text = tokenizer.apply_chat_template(item["raw_prompt"], add_generation_prompt=True, tokenize=False)
            assert text == rollout.build_prompt(p["problem"], None, "plain")
            assert item["reward_model"]["ground_truth"] == p["answer"]
            answer = f"so \\boxed{{{p['answer']}}}"
            assert verl_etr.compute_score(item["data_source"], answer, item["reward_model"]["ground_truth"]) == 1.0
