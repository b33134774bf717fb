"""verl_etr.py -- the losses of etr.py inside verl 0.9.1 (FSDP training, vLLM rollouts, Ray), for more than one GPU.

The only file of this repository that imports verl. It runs in verl's own environment (`bash .ci/verl DIR` builds
one: verl pins other transformers versions than ours). The launch command, the settings that make a verl run mean
what `python train.py --algo etr` means, and what does not map: docs/verl.md.

    export PYTHONPATH=/path/to/this/repo VERL_USE_EXTERNAL_MODULES=verl_etr   # verl imports us on every `import verl`
    python -m verl.trainer.main_ppo algorithm.adv_estimator=etr_group \\
        actor_rollout_ref.actor.policy_loss.loss_mode=etr ...   # the full command: docs/verl.md

Registered, through verl's own registries (verl/trainer/ppo/core_algos.py):
    policy losses  grpo, dapo, drgrpo, gppo, etr, erc-dapo, erc-gppo (LOSSES): each calls the etr.py function of
                   its name; the settings verl has are verl's (loss_config: clip_ratio_low/high -> eps_low/high,
                   clip_ratio_c -> dual_clip, inf = off; loss_agg_mode -> loss_agg; loss_scale_factor -> max_len).
    estimator      etr_group (algorithm.adv_estimator): etr.group_advantages on verl's batch, as train.py computes
                   them (population std; verl's grpo divides by the unbiased one; norm_adv_by_std_in_grpo=False:
                   Dr. GRPO), and each sample's group std, which ETR's macro level reads: exact for any reward.
    compute_score  reward.math_reward as verl's custom reward function
                   (reward.custom_reward_function.path=pkg://verl_etr, .name=compute_score).

Patched, pinned to verl 0.9.1 (any other version is refused on import), and why:
    1. verl.workers.utils.losses.ppo_loss, the actor's loss function (verl.workers.engine_workers binds it when
       this module is loaded first, as VERL_USE_EXTERNAL_MODULES does; the binding is patched too if it exists).
       A registered loss receives old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config and
       rollout_is_weights, nothing else; ETR also needs each sample's group std, ERC the per-token entropies of
       pi_theta and pi_old. All three already reach ppo_loss in verl 0.9.1: the batch field `returns` (where verl
       stores an advantage estimator's second output: etr_group puts the group std there, and without a critic
       nothing else reads it), the field `entropy` (pi_old's, which the v1 trainer stores when it recomputes
       log pi_old) and model_output["entropy"] (pi_theta's, with actor.calculate_entropy=True). Our ppo_loss hands
       them to the registered loss (a context variable) and calls verl's ppo_loss unchanged: the KL loss, the
       entropy term and the metrics stay verl's. For any other loss it only calls verl's.
    2. verl.utils.config.validate_config, main_ppo's start-up check: it also runs check(config), which refuses in
       one line, before Ray starts, a setting that has no counterpart in etr.py (an aggregation mode, rollout
       correction, a critic, ...). The losses and the estimator refuse the same things again when called.

Hyper-parameters: verl's PolicyLossConfig rejects unknown keys, so ETR's and ERC's (etr_alpha, ..., reward_min,
reward_max, erc_beta_low, erc_beta_high) travel in EtrPolicyLossConfig, verl's class with those fields added,
chosen by Hydra's _target_ (unset, each is etr.make_config's default):
    actor_rollout_ref.actor.policy_loss._target_=verl_etr.EtrPolicyLossConfig
    +actor_rollout_ref.actor.policy_loss.etr_alpha=0.3
"""
from __future__ import annotations

import contextvars
import dataclasses
import inspect
import math
import sys
from typing import Optional

import numpy as np
import torch

import etr
import reward

try:
    import verl
except ImportError:
    raise ImportError("verl_etr needs verl 0.9.1 in an environment of its own: `bash .ci/verl ~/venv-verl`, then run "
                      "~/venv-verl/bin/python (docs/verl.md)") from None

VERL_VERSION = "0.9.1"


def check_version(version: str):
    if version != VERL_VERSION:
        raise ImportError(f"verl_etr is written for verl {VERL_VERSION}, found {version}: it patches verl's ppo_loss "
                          f"and reads batch fields by name (pip install --no-deps verl=={VERL_VERSION}, or re-check "
                          f"the patch against the new version)")


check_version(verl.__version__)

from verl.trainer.ppo import core_algos  # noqa: E402
from verl.utils import config as verl_config  # noqa: E402
from verl.workers.config import ActorConfig, PolicyLossConfig  # noqa: E402
from verl.workers.utils import losses as verl_losses  # noqa: E402
from verl.workers.utils import padding as verl_padding  # noqa: E402

# What this module relies on, as verl 0.9.1 defines it: (module, name) -> parameters, and the actor config's fields.
API = {
    (core_algos, "register_policy_loss"): ["name"],
    (core_algos, "get_policy_loss_fn"): ["name"],
    (core_algos, "register_adv_est"): ["name_or_enum"],
    (core_algos, "get_adv_estimator_fn"): ["name_or_enum"],
    (core_algos, "compute_policy_loss_vanilla"): ["old_log_prob", "log_prob", "advantages", "response_mask",
                                                  "loss_agg_mode", "config", "rollout_is_weights"],
    (verl_losses, "ppo_loss"): ["config", "model_output", "data", "dp_group"],
    (verl_config, "validate_config"): ["config", "use_reference_policy", "use_critic"],
    (verl_padding, "no_padding_2_padding"): ["tensor", "data"],
}
ACTOR_FIELDS = ["clip_ratio", "clip_ratio_low", "clip_ratio_high", "clip_ratio_c", "loss_agg_mode", "loss_scale_factor",
                "global_batch_info", "policy_loss", "calculate_entropy", "entropy_coeff", "use_kl_loss", "kl_loss_type"]


def check_api():
    """One line naming what changed, when verl's functions or the actor config are not what this module calls."""
    for (module, name), params in API.items():
        fn = getattr(module, name, None)
        if fn is None:
            raise ImportError(f"verl {verl.__version__}: {module.__name__}.{name} is gone; verl_etr is written for "
                              f"verl {VERL_VERSION}")
        got = list(inspect.signature(fn).parameters)
        if got != params:
            raise ImportError(f"verl {verl.__version__}: {module.__name__}.{name}({', '.join(got)}) changed, expected "
                              f"({', '.join(params)}); verl_etr is written for verl {VERL_VERSION}")
    missing = sorted(set(ACTOR_FIELDS) - {f.name for f in dataclasses.fields(ActorConfig)})
    if missing:
        raise ImportError(f"verl {verl.__version__}: ActorConfig has no {', '.join(missing)}; verl_etr is written for "
                          f"verl {VERL_VERSION}")


check_api()

ESTIMATOR = "etr_group"  # algorithm.adv_estimator
# verl's loss_agg_mode -> etr.aggregate's mode. verl divides a rank's sum by the global count (and multiplies by the
# data-parallel size, whose gradients are averaged), etr.py by the count it is given: batch_counts passes global / dp.
AGG = {
    "token-mean": "token-mean",            # sum / N_tokens
    "seq-mean-token-mean": "seq-mean",     # mean over sequences of each sequence's token mean (GRPO)
    "seq-mean-token-sum": "drgrpo",        # sum / N_seqs: Dr. GRPO's normaliser with max_len = 1
    "seq-mean-token-sum-norm": "drgrpo",   # sum / (N_seqs * loss_scale_factor): Dr. GRPO, max_len = loss_scale_factor
}
# ETR's and ERC's settings, and the reward range ETR's macro level divides by: what verl's actor config lacks.
HYPER = [f.name for f in dataclasses.fields(etr.LossConfig) if f.name.startswith(("etr_", "erc_", "reward_"))]
EtrPolicyLossConfig = dataclasses.make_dataclass(
    "EtrPolicyLossConfig", [(name, Optional[float], None) for name in HYPER], bases=(PolicyLossConfig,))
EtrPolicyLossConfig.__module__ = __name__  # Hydra's _target_: verl_etr.EtrPolicyLossConfig
EtrPolicyLossConfig.__doc__ = f"verl's PolicyLossConfig plus etr.LossConfig's {', '.join(HYPER)} (None: etr.py's default)."
# The losses registered here. etr.py's clip family (gspo, gspo-token, cispo, clip-cov, kl-cov, --top-entropy-quantile)
# is not: verl ships its own gspo, cispo, clip_cov and kl_cov (benchmarks/parity_clip_family.py compares them with
# etr.py's; docs/clip-family.md), and Clip-Cov's, KL-Cov's and the entropy quantile's token choices are statistics of
# a whole mini-batch, which a loss called per micro-batch does not see.
LOSSES = ("grpo", "dapo", "drgrpo", "gppo", "etr", "erc-dapo", "erc-gppo")
# The batch tensors each loss takes beyond verl's (its keyword-only parameters: group_std; entropy, old_entropy), and
# where they come from in verl 0.9.1.
NEEDS = {name: [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
         for name, fn in etr.ALGOS.items() if name in LOSSES}
SOURCE = {
    "group_std": f"the batch field `returns`, where algorithm.adv_estimator={ESTIMATOR} puts each sample's group std",
    "old_entropy": "the batch field `entropy`, pi_old's entropy, which only verl's v1 trainer keeps "
                   "(trainer.use_v1=True)",
    "entropy": "model_output['entropy'], pi_theta's entropy (actor_rollout_ref.actor.calculate_entropy=True)",
}
ROLLOUT_CORRECTION = ("algorithm.rollout_correction has no counterpart in etr.py, whose pi_old is recomputed by "
                      "the trained model before the updates: supported is rollout_is=null, rollout_rs=null, "
                      "bypass_mode=false")


# ----------------------------------------------------------------------------------------------- settings

def loss_config(name: str, actor, loss_agg_mode: str | None = None) -> etr.LossConfig:
    """etr.LossConfig of loss `name` under verl's actor config (the dataclass, or its DictConfig at start-up).

    verl's settings win over etr.make_config's defaults for the algorithm; refuses, in one line, a setting with no
    counterpart in etr.py. KL to the reference stays verl's (actor.use_kl_loss, added by ppo_loss): kl_coef = 0 here.
    """
    mode = actor.loss_agg_mode if loss_agg_mode is None else loss_agg_mode
    if mode not in AGG:
        raise ValueError(f"verl_etr: loss_agg_mode={mode} has no counterpart in etr.py: use one of {', '.join(AGG)}")
    max_len = 1 if mode == "seq-mean-token-sum" else 0
    if mode == "seq-mean-token-sum-norm":
        if not actor.get("loss_scale_factor"):
            raise ValueError("verl_etr: loss_agg_mode=seq-mean-token-sum-norm needs actor_rollout_ref.actor."
                             "loss_scale_factor=MAX_RESPONSE_LENGTH (Dr. GRPO's constant); unset, verl divides by each "
                             "micro-batch's padded length, which has no counterpart in etr.py")
        max_len = actor.loss_scale_factor
    low = actor.clip_ratio_low if actor.clip_ratio_low is not None else actor.clip_ratio  # as verl's vanilla reads them
    high = actor.clip_ratio_high if actor.clip_ratio_high is not None else actor.clip_ratio
    c = actor.get("clip_ratio_c", 3.0)
    hyper = {key: actor.policy_loss.get(key) for key in HYPER}
    return etr.make_config(name, eps_low=low, eps_high=high, dual_clip=None if math.isinf(c) else c, loss_agg=AGG[mode],
                           max_len=max_len, kl_coef=0.0, **hyper)


def check(config, use_critic: bool = False):
    """Refuse, in one line, a composed verl config whose run would not compute what etr.py computes.

    Runs at start-up (through validate_config, patch 2); a config for one of verl's own losses passes untouched.
    """
    actor = config.actor_rollout_ref.actor
    name = actor.policy_loss.loss_mode
    if name not in LOSSES:
        return
    loss_config(name, actor)
    algorithm = config.algorithm
    if algorithm.adv_estimator != ESTIMATOR:
        raise ValueError(f"verl_etr: loss_mode={name} takes etr.group_advantages (population std, and each sample's "
                         f"group std): set algorithm.adv_estimator={ESTIMATOR}, not {algorithm.adv_estimator}")
    correction = algorithm.get("rollout_correction")
    if correction is not None and (correction.get("rollout_is") or correction.get("rollout_rs")
                                   or correction.get("bypass_mode")):
        raise ValueError(f"verl_etr: {ROLLOUT_CORRECTION}")
    for setting, wrong, why in (
            ("algorithm.use_kl_in_reward", algorithm.get("use_kl_in_reward"), "KL in the reward"),
            ("actor_rollout_ref.actor.entropy_coeff", actor.get("entropy_coeff"), "an entropy bonus"),
            ("critic.enable", use_critic, f"a critic (and {ESTIMATOR} uses the critic's field `returns`)")):
        if wrong:
            raise ValueError(f"verl_etr: {why} has no counterpart in etr.py: set {setting} to false / 0")
    if actor.get("use_kl_loss") and actor.get("kl_loss_type") not in ("low_var_kl", "k3"):
        raise ValueError(f"verl_etr: kl_loss_type={actor.kl_loss_type} has no counterpart in etr.py, whose KL is k3 "
                         f"(etr.kl_k3): use kl_loss_type=low_var_kl")
    if "entropy" in NEEDS[name] and not actor.get("calculate_entropy"):
        raise ValueError(f"verl_etr: loss_mode={name} needs {SOURCE['entropy']}")
    if "old_entropy" in NEEDS[name] and not config.trainer.get("use_v1"):
        raise ValueError(f"verl_etr: loss_mode={name} needs {SOURCE['old_entropy']}")


# ----------------------------------------------------------------------------------------------- the losses

def batch_counts(mask: torch.Tensor, info: dict):
    """(num_tokens, num_seqs) for etr.py: verl's normalisers (agg_loss) for one data-parallel rank.

    verl scales a rank's sum by dp_size / (global count) and averages the ranks' gradients; etr.py divides by the
    count it is given, so global count / dp_size gives the same gradient. Without global counts (dp_size 1): this
    call's tokens and non-empty sequences, as verl counts them.
    """
    dp = info.get("dp_size") or 1
    tokens, seqs = info.get("batch_num_tokens"), info.get("global_batch_size")
    if dp > 1 and (tokens is None or seqs is None):
        raise ValueError("verl_etr: dp_size > 1 needs verl's global batch_num_tokens and global_batch_size")
    num_tokens = mask.sum() if tokens is None else tokens / dp
    num_seqs = mask.any(-1).sum() if seqs is None else seqs / dp
    return num_tokens, num_seqs


def per_sequence(x: torch.Tensor, mask: torch.Tensor, what: str = "advantages") -> torch.Tensor:
    """[B, T] -> [B]: a value that verl repeats on every token of a response (0 for an empty response)."""
    first = mask.int().argmax(-1)  # [B] each response's first token
    value = x.gather(-1, first[:, None]).squeeze(-1)  # [B]
    if torch.where(mask, x != value[:, None], False).any():
        raise ValueError(f"verl_etr: {what} vary along a response; etr.py's losses take one value per response "
                         f"(token-level advantages, e.g. adv_estimator=gae, have no counterpart)")
    return torch.where(mask.any(-1), value, torch.zeros_like(value))


_BATCH = contextvars.ContextVar("verl_etr_batch", default={})  # what ppo_loss hands to the loss it calls


def make_policy_loss(name: str):
    """verl's policy-loss signature around etr.ALGOS[name]; metrics are this call's token means, as verl's own."""
    fn = etr.ALGOS[name]

    def policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                    rollout_is_weights=None):
        if rollout_is_weights is not None:
            raise ValueError(f"verl_etr: rollout_is_weights arrived: {ROLLOUT_CORRECTION}")
        cfg = loss_config(name, config, loss_agg_mode)
        batch = _BATCH.get()
        missing = [key for key in NEEDS[name] if batch.get(key) is None]
        if missing:
            raise ValueError(f"verl_etr: loss_mode={name} needs " + "; ".join(SOURCE[key] for key in missing)
                             + ", handed over by verl_etr.ppo_loss (load verl_etr with VERL_USE_EXTERNAL_MODULES)")
        mask = response_mask.bool()
        num_tokens, num_seqs = batch_counts(mask, config.global_batch_info)
        loss, metrics = fn(log_prob, old_log_prob, per_sequence(advantages, mask), mask, cfg, num_tokens=num_tokens,
                           num_seqs=num_seqs, **{key: batch[key] for key in NEEDS[name]})
        scale = num_tokens / mask.sum().clamp(min=1)  # etr.py's metrics are over num_tokens; verl averages calls
        return loss, {f"actor/{key}": (value if key.endswith("_max") else value * scale).item()
                      for key, value in metrics.items()}

    policy_loss.__name__ = policy_loss.__qualname__ = f"{name.replace('-', '_')}_policy_loss"
    policy_loss.__doc__ = f"etr.ALGOS[{name!r}] ({fn.__name__}) as verl's policy loss {name!r}."
    return policy_loss


for _name in LOSSES:
    core_algos.register_policy_loss(_name)(make_policy_loss(_name))


@core_algos.register_adv_est(ESTIMATOR)
def group_advantage(token_level_rewards, response_mask, index, config=None, **unused):
    """etr.group_advantages on verl's batch, whose rows come in any order: (advantages, group std), each [B, T].

    index: each row's prompt id (verl's uid). Rows without a response token (the synthetic samples verl appends to
    make the batch divisible) are left out: advantage and group std 0. verl stores the second output as `returns`;
    ppo_loss hands it to ETR. norm_adv_by_std_in_grpo=False (algorithm config) divides by no std: Dr. GRPO.
    """
    scores = token_level_rewards.sum(-1).float()  # [B] the reward sits on the response's last token
    rows = response_mask.bool().any(-1).nonzero().squeeze(1)  # [n] the real responses
    _, group, sizes = np.unique(np.asarray(index, dtype=object)[rows.cpu().numpy()].astype(str), return_inverse=True,
                                return_counts=True)
    if len(set(sizes.tolist())) != 1:
        raise ValueError(f"verl_etr: etr.group_advantages needs groups of one size, got sizes {sorted(set(sizes))}: "
                         f"rollout.n samples of every prompt, none filtered before the advantage")
    order = rows[torch.as_tensor(np.argsort(group, kind="stable"), device=rows.device)]  # [n] each prompt's rows together
    std_mode = "group" if config is None or config.get("norm_adv_by_std_in_grpo", True) else "none"
    adv, group_std = etr.group_advantages(scores[order], int(sizes[0]), std_mode)  # [n], [n] in that order
    out = scores.new_zeros(2, len(scores))
    out[0, order], out[1, order] = adv, group_std
    return out[0, :, None] * response_mask, out[1, :, None] * response_mask


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """verl's custom reward function: reward.math_reward, 1.0 when the last \\boxed{} answer is verified equal."""
    return reward.math_reward(solution_str, ground_truth)


# ----------------------------------------------------------------------------------------------- the patches

def ppo_loss(config, model_output, data, dp_group=None):
    """verl 0.9.1's ppo_loss, with the group std and the entropies handed to ETR's and ERC's losses (patch 1)."""
    needs = NEEDS.get(config.policy_loss.get("loss_mode", "vanilla"), [])
    batch = {}
    if needs:
        fields = ["response_mask"] + [key for key in ("returns", "entropy") if key in data.keys()]
        padded = data.select(*fields).to_padded_tensor()  # [B, T] each, as verl's ppo_loss pads its fields
        mask = padded["response_mask"].bool()
        if "returns" in padded.keys():
            batch["group_std"] = per_sequence(padded["returns"], mask, "group std (`returns`)")
        if "entropy" in padded.keys():
            batch["old_entropy"] = padded["entropy"]
        if model_output.get("entropy") is not None:
            batch["entropy"] = verl_padding.no_padding_2_padding(model_output["entropy"], data)
    token = _BATCH.set(batch)
    try:
        return _verl_ppo_loss(config, model_output, data, dp_group)
    finally:
        _BATCH.reset(token)


def validate_config(config, use_reference_policy, use_critic):
    """check(config), then verl's validate_config (patch 2)."""
    check(config, use_critic)
    return _verl_validate_config(config, use_reference_policy, use_critic)


_verl_ppo_loss = getattr(verl_losses.ppo_loss, "verl_original", verl_losses.ppo_loss)
_verl_validate_config = getattr(verl_config.validate_config, "verl_original", verl_config.validate_config)
ppo_loss.verl_original, validate_config.verl_original = _verl_ppo_loss, _verl_validate_config
verl_losses.ppo_loss, verl_config.validate_config = ppo_loss, validate_config
for _module, _attr, _ours in (("verl.workers.engine_workers", "ppo_loss", ppo_loss),
                              ("verl.trainer.distillation.losses", "ppo_loss", ppo_loss),
                              ("verl.trainer.main_ppo", "validate_config", validate_config)):
    if _module in sys.modules:  # imported before us: rebind the name they hold
        setattr(sys.modules[_module], _attr, _ours)


# ----------------------------------------------------------------------------------------------- data

PROMPT_AS_IS = "{{ messages[0].content }}"  # actor_rollout_ref.model.custom_chat_template: the prompt text unchanged


def write_data(out: str, data: str = "math-train", eval_data: str = "math500") -> list[str]:
    """train.py's training and held-out problems as verl's parquet files (out/train.parquet, out/val.parquet).

    Each row: the prompt of train.py's plain template as the one user message (PROMPT_AS_IS renders it unchanged),
    the answer as reward_model.ground_truth (compute_score's third argument), data_source = the preset's name.
    """
    import argparse
    from pathlib import Path

    import datasets

    import rollout
    import train

    problems, eval_problems = train.load_data(argparse.Namespace(data=data, eval_every=1, eval_data=eval_data,
                                                                 eval_n=train.DEFAULTS["hf"]["eval_n"]))
    Path(out).expanduser().mkdir(parents=True, exist_ok=True)
    paths = []
    for split, source, rows in (("train", data, problems), ("val", eval_data, eval_problems)):
        records = [{"data_source": source, "ability": "math",
                    "prompt": [{"role": "user", "content": rollout.build_prompt(p["problem"], None, "plain")}],
                    "reward_model": {"style": "rule", "ground_truth": p["answer"]},
                    "extra_info": {"index": i, "id": str(p.get("id", i))}} for i, p in enumerate(rows)]
        paths.append(str(Path(out).expanduser() / f"{split}.parquet"))
        datasets.Dataset.from_list(records).to_parquet(paths[-1])
        print(f"{paths[-1]}: {len(records)} problems of {source}")
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "data":
        sys.exit("usage: python verl_etr.py data OUT_DIR    (train.parquet, val.parquet for verl; docs/verl.md)")
    write_data(sys.argv[2])
