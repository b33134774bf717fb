"""parity_clip_family.py -- etr.py's GSPO, CISPO, Clip-Cov, KL-Cov and high-entropy mask against verl's and TRL's.

    /work/venv-verl/bin/python benchmarks/parity_clip_family.py      # verl (and TRL if that venv has it too)
    /work/venv-trl/bin/python benchmarks/parity_clip_family.py       # TRL
    python benchmarks/parity_clip_family.py --seeds 20 --json out.json

Run it with the python of a throw-away environment that has verl and / or TRL installed (never a dependency of
this project; docs/clip-family.md says how the ones measured were made); an engine it cannot import is skipped with
one line. For each case and each seed it draws random tensors -- B = 8 responses of ragged lengths 1..T (one of
length 1), padding filled with junk that must not count, log-ratios of spread 0.4 (ratios ~0.3-3, so every clip
binds somewhere), one advantage per response -- and compares the loss value and the gradient d loss / d log pi of
etr.py's function with the engine's, on the same tensors and the same settings. A case passes when both maximum
absolute differences are <= 1e-6 over every seed.

Only cases where the two definitions agree are compared; the ways they differ (defaults, tie-breaking, where a
batch statistic is taken) are listed in docs/clip-family.md. Clip-Cov draws its tokens at random: etr.py draws
them the way the authors' code (and verl's copy of it) does -- torch.randperm over the candidates in row-major
order -- so with the same seed of torch's RNG both choose the same tokens, and the case compares them too.

verl's losses are called through verl.trainer.ppo.core_algos.get_policy_loss_fn with an ActorConfig; TRL's loss
lives inside GRPOTrainer._compute_loss, which is called unbound on a stand-in trainer: an object with the
attributes that method reads, whose _get_per_token_logps_and_entropies returns our log-probs (with grad) and
entropies, and whose accelerator is a single process. Exit status 1 if a compared case differs by more than 1e-6.
"""
import argparse
import importlib.util
import json
import sys
import types
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import etr  # noqa: E402

TOL = 1e-6


def random_batch(seed: int, B: int = 8, T: int = 12) -> dict:
    """Ragged masks (lengths 1..T, one response of 1 token), log-ratios of spread 0.4, group advantages of 0/1
    rewards in groups of 4, token entropies; junk values on the padded positions."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = 1
    mask = (torch.arange(T)[None] < lengths[:, None]).long()                       # [B, T]
    old_logp = -torch.rand(B, T, generator=g, dtype=torch.float64).float() * 4    # [B, T]
    jumps = 2.0 * torch.randn(B, T, generator=g).sign() * (torch.rand(B, T, generator=g) < 0.08)  # a few far tokens
    logp = old_logp + 0.4 * torch.randn(B, T, generator=g) + jumps                 # [B, T]
    junk = 5 * torch.randn(B, T, generator=g)
    logp, old_logp = torch.where(mask.bool(), logp, junk), torch.where(mask.bool(), old_logp, -junk.abs())
    rewards = torch.randint(0, 2, (B,), generator=g).float()
    rewards[:4] = torch.tensor([1.0, 0.0, 0.0, 1.0])                               # no group without signal
    adv, _ = etr.group_advantages(rewards, 4)                                      # [B]
    entropy = torch.rand(B, T, generator=g) * 3                                    # [B, T]
    return dict(logp=logp, old_logp=old_logp, mask=mask, adv=adv, entropy=entropy)


def ours(algo: str, b: dict, seed: int, **settings):
    """etr.py's loss and gradient; the global RNG seeded right before (Clip-Cov's draw)."""
    cfg = etr.make_config(algo, **settings)
    logp = b["logp"].clone().requires_grad_(True)
    torch.manual_seed(seed)
    loss, m = etr.ALGOS[algo](logp, b["old_logp"], b["adv"], b["mask"], cfg, entropy=b["entropy"])
    (grad,) = torch.autograd.grad(loss, logp)
    n = int(b["mask"].sum())  # the tokens the mechanism acted on: clipped, chosen by Cov, dropped for low entropy
    acted = [m["clip_frac_low"] + m["clip_frac_high"], m.get("cov_selected_frac", 0), 1 - m.get("entropy_kept_frac", 1)]
    return loss.detach(), grad * b["mask"], torch.tensor([round(float(x) * n) for x in acted])


# ----------------------------------------------------------------------------------------------------- verl

def verl_case(name: str, actor: dict, policy_loss: dict, agg: str):
    """A function (batch, seed) -> (loss, grad) of verl's registered policy loss `name`."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.workers.config import ActorConfig, PolicyLossConfig

    loss_fn = get_policy_loss_fn(name)

    def run(b: dict, seed: int, total_tokens=None):
        """total_tokens: the token count of the whole batch, when b is one micro-batch of it."""
        info = {} if total_tokens is None else {"batch_num_tokens": total_tokens, "dp_size": 1}
        config = ActorConfig(strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=8, loss_agg_mode=agg,
                             policy_loss=PolicyLossConfig(loss_mode=name, **policy_loss), global_batch_info=info,
                             **actor)
        logp = b["logp"].clone().requires_grad_(True)
        adv = b["adv"][:, None] * b["mask"]  # verl's advantages are per token, 0 on padding
        torch.manual_seed(seed)
        loss, _ = loss_fn(b["old_logp"], logp, adv, b["mask"].float(), loss_agg_mode=agg, config=config)
        (grad,) = torch.autograd.grad(loss, logp)
        return loss.detach(), grad * b["mask"]
    return run


def verl_cases():
    """(case, our algo, our settings, engine function): each engine setting mirrors ours."""
    gspo = dict(clip_ratio=3e-4, clip_ratio_low=3e-4, clip_ratio_high=4e-4)
    wide = dict(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.2)
    cispo = dict(clip_ratio=1.0, clip_ratio_low=1.0, clip_ratio_high=4.0)
    cispo_dapo = dict(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28)
    cov1 = dict(clip_ratio=1.0, clip_ratio_low=1.0, clip_ratio_high=1.0)
    return [
        ("verl gspo, eps 3e-4 / 4e-4 (GSPO's)", "gspo", {}, verl_case("gspo", gspo, {}, "seq-mean-token-mean")),
        ("verl gspo against our gspo-token", "gspo-token", {}, verl_case("gspo", gspo, {}, "seq-mean-token-mean")),
        ("verl gspo, eps 0.2 / 0.2", "gspo", dict(eps_low=0.2, eps_high=0.2),
         verl_case("gspo", wide, {}, "seq-mean-token-mean")),
        ("verl cispo, weight in [0, 5]", "cispo", {}, verl_case("cispo", cispo, {}, "token-mean")),
        ("verl cispo, weight in [0.8, 1.28]", "cispo", dict(eps_low=0.2, eps_high=0.28),
         verl_case("cispo", cispo_dapo, {}, "token-mean")),
        ("verl clip_cov, r 0.2, Cov in (0, 5), PPO eps 1 / 1", "clip-cov",
         dict(clip_cov_ratio=0.2, clip_cov_lb=0.0),
         verl_case("clip_cov", cov1, dict(clip_cov_ratio=0.2, clip_cov_lb=0.0, clip_cov_ub=5.0), "token-mean")),
        ("verl clip_cov, r 0.2, Cov in (0, 5), PPO eps 0.2 / 0.2", "clip-cov",
         dict(clip_cov_ratio=0.2, clip_cov_lb=0.0, eps_low=0.2, eps_high=0.2),
         verl_case("clip_cov", wide, dict(clip_cov_ratio=0.2, clip_cov_lb=0.0, clip_cov_ub=5.0), "token-mean")),
        ("verl clip_cov, paper's r 2e-4, (1, 5)", "clip-cov", {},
         verl_case("clip_cov", cov1, dict(clip_cov_ratio=2e-4, clip_cov_lb=1.0, clip_cov_ub=5.0), "token-mean")),
        ("verl kl_cov, k 2e-3, beta 1 (paper's)", "kl-cov", {},
         verl_case("kl_cov", {}, dict(kl_cov_ratio=2e-3, ppo_kl_coef=1.0), "token-mean")),
        ("verl kl_cov, k 0.2, beta 0.1 (verl's beta)", "kl-cov", dict(kl_cov_ratio=0.2, kl_cov_coef=0.1),
         verl_case("kl_cov", {}, dict(kl_cov_ratio=0.2, ppo_kl_coef=0.1), "token-mean")),
    ]


# ----------------------------------------------------------------------------------------------------- TRL

class _OneProcess:
    """accelerate's Accelerator as GRPOTrainer._compute_loss uses it, for one process."""
    num_processes, sync_gradients = 1, True

    def pad_across_processes(self, x, dim=0, pad_index=0):
        return x

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def trl_case(loss_type: str, level: str, eps_low: float, eps_high: float, quantile: float = 1.0):
    """A function (batch, seed) -> (loss, grad) of TRL's GRPOTrainer._compute_loss, on a stand-in trainer."""
    from trl import GRPOTrainer

    def run(b: dict, seed: int, total_tokens=None):
        logp = b["logp"].clone().requires_grad_(True)
        trainer = types.SimpleNamespace(
            loss_type=loss_type, importance_sampling_level=level, epsilon_low=eps_low, epsilon_high=eps_high,
            top_entropy_quantile=quantile, beta=0.0, off_policy_mask_threshold=None, use_vllm=False,
            vllm_importance_sampling_correction=False, aux_loss_enabled=False, _entropy_bonus_enabled=False,
            current_gradient_accumulation_steps=1, accelerator=_OneProcess(), model=types.SimpleNamespace(training=True),
            args=types.SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1),
            _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
            _get_per_token_logps_and_entropies=lambda *a, **k: (logp, b["entropy"], None))
        trainer.get_high_entropy_mask = types.MethodType(GRPOTrainer.get_high_entropy_mask, trainer)
        T = b["mask"].shape[1]
        inputs = {"prompt_ids": torch.zeros(len(logp), 1, dtype=torch.long), "prompt_mask": torch.ones(len(logp), 1),
                  "completion_ids": torch.zeros(len(logp), T, dtype=torch.long), "completion_mask": b["mask"],
                  "advantages": b["adv"], "old_per_token_logps": b["old_logp"],
                  "num_items_in_batch": b["mask"].sum() if total_tokens is None else torch.tensor(total_tokens)}
        loss = GRPOTrainer._compute_loss(trainer, None, inputs)
        (grad,) = torch.autograd.grad(loss, logp)
        return loss.detach(), grad * b["mask"]
    return run


def trl_cases():
    return [
        ("TRL GSPO (importance_sampling_level='sequence', loss 'grpo'), eps 3e-4 / 4e-4", "gspo", {},
         trl_case("grpo", "sequence", 3e-4, 4e-4)),
        ("TRL GSPO against our gspo-token", "gspo-token", {}, trl_case("grpo", "sequence", 3e-4, 4e-4)),
        ("TRL GSPO, eps 0.2 / 0.2", "gspo", dict(eps_low=0.2, eps_high=0.2), trl_case("grpo", "sequence", 0.2, 0.2)),
        ("TRL cispo, epsilon_high 5 (= our 1 + 4)", "cispo", {}, trl_case("cispo", "token", 0.2, 5.0)),
        ("TRL cispo, epsilon_high 1.28 (= our 1 + 0.28), no lower bound", "cispo", dict(eps_low=1.0, eps_high=0.28),
         trl_case("cispo", "token", 0.2, 1.28)),
        ("TRL top_entropy_quantile 0.2, loss 'dapo' (0.2 / 0.28)", "dapo", dict(top_entropy_quantile=0.2),
         trl_case("dapo", "token", 0.2, 0.28, quantile=0.2)),
        ("TRL top_entropy_quantile 0.5, loss 'grpo'", "grpo", dict(top_entropy_quantile=0.5),
         trl_case("grpo", "token", 0.2, 0.2, quantile=0.5)),
        ("TRL top_entropy_quantile 0.2 with GSPO", "gspo", dict(top_entropy_quantile=0.2),
         trl_case("grpo", "sequence", 3e-4, 4e-4, quantile=0.2)),
        ("TRL top_entropy_quantile 0.2 with cispo", "cispo", dict(top_entropy_quantile=0.2),
         trl_case("cispo", "token", 0.2, 5.0, quantile=0.2)),
    ]


# ----------------------------------------------------------------------------------------------- where they differ

def split_cases(engines: set) -> list:
    """Batch statistics taken per call: the engine's loss of a batch in two micro-batches (each normalised by the
    whole batch's token count) against its loss of the whole batch; ours with batch_choices of the whole batch."""
    cases = []
    if "verl" in engines:
        cases += [("verl kl_cov, k 0.2: top-k per call", "kl-cov", dict(kl_cov_ratio=0.2, kl_cov_coef=1.0),
                   verl_case("kl_cov", {}, dict(kl_cov_ratio=0.2, ppo_kl_coef=1.0), "token-mean"))]
    if "trl" in engines:
        cases += [("TRL top_entropy_quantile 0.2 ('dapo'): quantile per call", "dapo",
                   dict(top_entropy_quantile=0.2), trl_case("dapo", "token", 0.2, 0.28, quantile=0.2))]
    return cases


def rows_of(b: dict, rows) -> dict:
    return {k: v[rows] for k, v in b.items()}


def split_vs_whole(cases, seeds: int) -> list[dict]:
    out = []
    for name, algo, settings, engine in cases:
        cfg = etr.make_config(algo, **settings)
        d_engine = d_ours = 0.0
        for seed in range(seeds):
            b = random_batch(seed)
            n, halves = int(b["mask"].sum()), [slice(0, 4), slice(4, 8)]
            whole_e = engine(b, seed)[0]
            split_e = sum(engine(rows_of(b, h), seed, total_tokens=n)[0] for h in halves)
            choices = etr.batch_choices(algo, cfg, b["logp"], b["old_logp"], b["adv"], b["mask"], b["entropy"])
            whole_o = ours(algo, b, seed, **settings)[0]
            split_o = sum(etr.ALGOS[algo](b["logp"][h], b["old_logp"][h], b["adv"][h], b["mask"][h], cfg,
                                          num_tokens=n, num_seqs=8, entropy=b["entropy"][h],
                                          **{k: v[h] for k, v in choices.items()})[0] for h in halves)
            d_engine, d_ours = max(d_engine, abs(split_e - whole_e).item()), max(d_ours, abs(split_o - whole_o).item())
        out.append(dict(case=name, seeds=seeds, engine_split_minus_whole=d_engine, ours_split_minus_whole=d_ours))
    return out


# ----------------------------------------------------------------------------------------------------- main

def compare(cases, seeds: int) -> list[dict]:
    rows = []
    for name, algo, settings, engine in cases:
        d_loss = d_grad = 0.0
        acted, tokens = torch.zeros(3, dtype=torch.long), 0
        for seed in range(seeds):
            b = random_batch(seed)
            loss_o, grad_o, n = ours(algo, b, seed, **settings)
            loss_e, grad_e = engine(b, seed)
            d_loss = max(d_loss, (loss_o - loss_e).abs().item())
            d_grad = max(d_grad, (grad_o - grad_e).abs().max().item())
            acted, tokens = acted + n, tokens + int(b["mask"].sum())
        rows.append(dict(case=name, algo=algo, settings=settings, seeds=seeds, max_abs_loss=d_loss,
                         max_abs_grad=d_grad, acted=acted.tolist(), tokens=tokens, ok=d_loss <= TOL and d_grad <= TOL))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="random batches per case (default: 10)")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    args = p.parse_args(argv)
    cases, versions = [], {"torch": torch.__version__}
    for engine, make in (("verl", verl_cases), ("trl", trl_cases)):
        if importlib.util.find_spec(engine) is None:
            print(f"{engine}: not importable with {sys.executable}, skipped")
            continue
        module = __import__(engine)
        versions[engine] = getattr(module, "__version__", "?")
        cases += make()
    rows = compare(cases, args.seeds)
    split = split_vs_whole(split_cases(set(versions)), args.seeds)
    print(f"{sys.executable}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"| case | ours | max abs diff, loss | max abs diff, d loss / d log pi | tokens clipped / chosen by Cov / "
          f"dropped (low entropy), of all | <= {TOL:g} |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ours_name = r["algo"] + "".join(f", {k} {v}" for k, v in r["settings"].items())
        print(f"| {r['case']} | {ours_name} | {r['max_abs_loss']:.1e} | {r['max_abs_grad']:.1e} | "
              f"{' / '.join(map(str, r['acted']))} of {r['tokens']} | {'yes' if r['ok'] else 'NO'} |")
    if split:
        print("\nWhere a batch statistic is taken: the loss of the batch as two micro-batches minus the loss of the "
              "whole batch (max abs over the seeds)")
        print("| case | engine | ours (batch_choices of the whole batch) |")
        print("|---|---|---|")
        for r in split:
            print(f"| {r['case']} | {r['engine_split_minus_whole']:.1e} | {r['ours_split_minus_whole']:.1e} |")
    if args.json:
        args.json.write_text(json.dumps({"versions": versions, "rows": rows, "split": split}, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
