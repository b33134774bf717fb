"""train.py -- RL with verifiable rewards for math on one GPU (or, for the toy, a laptop CPU).

    python train.py                                      # the offline toy model; learns in a few minutes on 2 CPU cores
    python train.py --algo etr --model Qwen2.5-0.5B      # the real thing, one GPU

One step of the loop below, in the order the code runs it:

    1. take prompts_per_step problems                 a fixed shuffle of --data per pass, from --seed
    2. sample G = group_size completions of each       rollout.generate
    3. reward each completion, 1 = verified correct    reward.math_reward via overlong_rewards (cut at the limit:
                                                       no answer; --overlong penalty: DAPO's soft punishment)
    4. group-relative advantages and group std         etr.group_advantages
    5. leave rows out of the loss: cut completions     DAPO's overlong filtering (--overlong filter, the default)
       and (optional) groups whose rewards are equal   DAPO's dynamic sampling, here without re-sampling
    6. log pi_ref; log pi_old and its entropy, no grad rollout.score; pi_old of the first update's rows
                                                       comes from that update's own forward (no update yet)
    7. for each epoch, for each of --mini-batches mini-batches: one AdamW update, its gradient accumulated
       over micro-batches whose losses are all normalised by the whole mini-batch's token / sequence count,
       so accumulation is exact (etr.ALGOS[algo]); clip the grad norm; skip the update if anything is not finite.
       Clip-Cov, KL-Cov and --top-entropy-quantile choose tokens by a statistic of the whole mini-batch: one
       no-grad pass over it first (etr.batch_choices), so the choice does not depend on the micro-batch size
    8. metrics -> <out>/metrics.jsonl; atomic checkpoint every --save-every steps

Design notes
- Several optimizer updates per rollout batch (--mini-batches, --epochs) are the default on purpose: with
  one update per batch the policy that is trained IS the policy that sampled, the ratio rho is exactly 1,
  and the clip -- and with it GRPO's trust region, ETR and ERC -- does nothing at all.
- Weights are kept in fp32 (on CUDA the forward passes run under bf16 autocast). AdamW on bf16 weights
  loses updates: at lr 1e-6 a step is far below bf16's resolution (8 bits of mantissa) for most weights.
  The frozen reference model (--kl-coef > 0) is loaded and run the same way, so that it computes exactly as the
  policy did before its first update (KL exactly 0 there). The lm_head, log-softmax and entropy run in fp32 even
  under autocast (rollout._chunk_logp_entropy). Dropout: Qwen2.5 and the toy have none, so the
  scored and the trained log-probs are the same function of the weights.
- The learning rate is a pure function of the step (nanoGPT's get_lr): linear warm-up, then constant or
  cosine. The step is therefore the scheduler's whole state.
- Exact resume. Everything random goes through torch's global RNG (sampling in generate, the mini-batch
  shuffle, Clip-Cov's draw of tokens), whose state -- with Python's and CUDA's -- is saved in every checkpoint; the data order is a
  function of (--seed, position), and the position is saved. On the CPU toy, 4 steps in one go and
  2 steps + --resume + 2 steps end with the same weights and the same metrics (tests/test_train.py).
"""
import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

# Before torch initialises CUDA: the caching allocator grows segments instead of keeping one per size class, which
# cuts fragmentation when sequence lengths change every step (generate, then micro-batches of other lengths).
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import etr  # noqa: E402
import eval  # noqa: E402 -- our eval.py (the benchmark harness); Python's builtin eval() is never used here
import memory  # noqa: E402
import reward  # noqa: E402
import rollout  # noqa: E402
import toy  # noqa: E402

# ----------------------------------------------------------------------------------------------- config
# Settings whose sensible value depends on the model. "toy": tuned so that `python train.py` learns within
# a few minutes on 2 CPU cores: 266 steps x 12 problems x 8 completions = 25,536 samples, 2/3 of the 300 x 8 x 16
# of earlier versions; more, smaller steps learn more from the same samples (docs/toy.md). "hf" (any real
# model): common practice for RLVR on Qwen2.5 0.5B-1.5B (sources: docs/training.md, "Where the Qwen defaults
# come from"). A flag the user sets always wins.
DEFAULTS = {
    "toy": dict(data="toy", steps=266, prompts_per_step=12, group_size=8, mini_batches=2, micro_batch_size=32,
                lr=1e-4, warmup_steps=0, weight_decay=0.0, max_new_tokens=32, eval_data="toy", eval_n=64,
                eval_every=0, save_every=0),
    "hf": dict(data="math-train", steps=300, prompts_per_step=64, group_size=8, mini_batches=4, micro_batch_size=4,
               lr=1e-6, warmup_steps=20, weight_decay=0.01, max_new_tokens=1024, eval_data="math500", eval_n=500,
               eval_every=50, save_every=50),
}
TOY_TRAIN_SIZE, TOY_TRAIN_SEED = 20_000, 0  # the toy's training problems (eval.py's held-out ones use seed 10_000)
SAMPLES_PER_STEP = 4  # completions written to samples.jsonl each step (the first sample of the first prompts)
TIMING_KEYS = ("gen_seconds", "train_seconds", "tokens_per_second")  # the only metrics that vary between runs
RESUMABLE_CHANGES = ("steps", "resume", "out", "eval_every", "save_every", "keep_last")  # may differ on --resume

# Loss hyper-parameters: etr.LossConfig field -> (type or choices, help). Unset (None) = the algorithm's default
# in etr.make_config, so only what the user sets overrides it.
LOSS_FLAGS = {
    "eps_low": (float, "lower clip range: rho >= 1 - eps_low"),
    "eps_high": (float, "upper clip range: rho <= 1 + eps_high (DAPO clip-higher: 0.28)"),
    "dual_clip": (float, "dual-clip constant c: the loss of a token with A < 0 is capped at -c*A"),
    "loss_agg": (["token-mean", "seq-mean", "drgrpo"], "aggregation over tokens (etr.aggregate)"),
    "adv_std": (["group", "batch", "none"], "std in the advantage; none = Dr. GRPO"),
    "etr_alpha": (float, "ETR micro elasticity: bounds x (1 + alpha * min(|A|, a_max))"),
    "etr_a_max": (float, "ETR: |A| beyond this widens the bounds no further"),
    "etr_beta": (float, "ETR macro elasticity: bounds x ((1 - beta) + beta * sigma_q^2 / sigma_max^2)"),
    "etr_eps_min": (float, "ETR: smallest clip range"),
    "etr_eps_max": (float, "ETR: largest clip range"),
    "erc_beta_low": (float, "ERC: a token keeps its gradient only if H_new / H_old > 1 - beta_low"),
    "erc_beta_high": (float, "ERC: ... and H_new / H_old < 1 + beta_high"),
    "clip_cov_ratio": (float, "Clip-Cov: share r of the tokens whose gradient it removes"),
    "clip_cov_lb": (float, "Clip-Cov: it chooses among tokens with clip_cov_lb < cov(log pi, A) < clip_cov_ub"),
    "clip_cov_ub": (float, "Clip-Cov: ... (see --clip-cov-lb)"),
    "kl_cov_ratio": (float, "KL-Cov: share k of the tokens (largest cov(log pi, A)) it penalises"),
    "kl_cov_coef": (float, "KL-Cov: beta of the penalty beta * |log rho|"),
    "top_entropy_quantile": (float, "any --algo: only this share of a mini-batch's tokens, highest entropy first,\n"
                                    "keeps its loss ('Beyond the 80/20 rule': 0.2)"),
}


def per_model(key):
    return f"(default: {DEFAULTS['toy'][key]} for --model toy, {DEFAULTS['hf'][key]} otherwise)"


def per_algo(field):
    """ 'default: 0.2 (grpo, gppo, ...), 0.28 (dapo, erc-dapo)' from etr.make_config itself."""
    by_value = {}
    for algo in etr.ALGOS:
        by_value.setdefault(getattr(etr.make_config(algo), field), []).append(algo)
    if len(by_value) == 1:
        return f"(default: {next(iter(by_value))})"
    return "(default: " + "; ".join(f"{v} for {', '.join(a)}" for v, a in by_value.items()) + ")"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--algo", default="grpo", choices=list(etr.ALGOS), help="policy loss (default: grpo)")
    p.add_argument("--model", default="toy", help="hub id, alias (Qwen2.5-0.5B), local directory, 'toy' (default), or a\n"
                   ".gguf file or SmolLM2-135M-Instruct-GGUF (converted once into the cache: gguf_convert.py)")
    p.add_argument("--data", help="training problems: JSONL path or preset (math-train, toy) " + per_model("data"))
    p.add_argument("--template", default="plain", choices=list(rollout.PROMPT_TEMPLATES),
                   help="prompt template; 'chat' for Instruct models (default: plain)")
    p.add_argument("--thinking", choices=["on", "off"],
                   help="with --template chat: Qwen3's thinking switch, passed to the template as enable_thinking\n"
                        "(default: the template's own)")
    p.add_argument("--steps", type=int, help="rollout steps " + per_model("steps"))
    p.add_argument("--prompts-per-step", type=int, help="problems per step " + per_model("prompts_per_step"))
    p.add_argument("--group-size", type=int, help="completions per problem, G " + per_model("group_size"))
    p.add_argument("--mini-batches", type=int,
                   help="optimizer updates per epoch over a rollout batch " + per_model("mini_batches"))
    p.add_argument("--epochs", type=int, default=1, help="passes over each rollout batch (default: 1)")
    p.add_argument("--micro-batch-size", type=int,
                   help="sequences per forward/backward; accumulation is exact " + per_model("micro_batch_size"))
    p.add_argument("--gen-batch-size", type=int,
                   help="sequences per generate call (default: all of the step's in one call when their KV cache\n"
                        "fits the GPU's spare memory, else the fewest calls that fit: memory.gen_batch_size)")
    p.add_argument("--lr", type=float, help="peak AdamW learning rate " + per_model("lr"))
    p.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"],
                   help="after warm-up: constant, or cosine decay to 0 at --steps (default: constant)")
    p.add_argument("--warmup-steps", type=int, help="linear LR warm-up, in steps " + per_model("warmup_steps"))
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay " + per_model("weight_decay"))
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (default: 1.0)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, > 0 (default: 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default: 1.0)")
    p.add_argument("--max-new-tokens", type=int, help="generation budget " + per_model("max_new_tokens"))
    p.add_argument("--kl-coef", type=float, default=0.0,
                   help="KL penalty to the initial model (k3); 0 = no reference model loaded (default: 0.0)")
    p.add_argument("--overlong", default="filter", choices=["none", "filter", "penalty"],
                   help="completions cut at --max-new-tokens (DAPO Sec. 3.4): 'filter' leaves them out of the loss,\n"
                        "'penalty' adds DAPO's soft overlong punishment to the reward; with either, a cut completion\n"
                        "has no final answer (reward 0); 'none' rewards whatever it holds (default: filter)")
    p.add_argument("--overlong-buffer", type=int,
                   help="penalty: L_cache, the last tokens before --max-new-tokens over which the penalty falls\n"
                        "linearly from 0 to -1 (default: max-new-tokens // 5, DAPO's 4,096 of 20,480)")
    p.add_argument("--overlong-penalty-max", type=float, default=0.5,
                   help="penalty: the penalty at --max-new-tokens is -this. DAPO's -1 is for rewards of -1/+1 (a gap\n"
                        "of 2); ours are 0/1, so 0.5 is DAPO's in proportion (default: 0.5)")
    p.add_argument("--dynamic-sampling", action="store_true",
                   help="drop groups whose rewards are all equal (DAPO; no re-sampling here) (default: off)")
    for field, (kind, text) in LOSS_FLAGS.items():
        typed = {"choices": kind} if isinstance(kind, list) else {"type": kind}
        p.add_argument("--" + field.replace("_", "-"), **typed, help=f"{text} {per_algo(field)}")
    p.add_argument("--eval-every", type=int, help="greedy eval every N steps, 0 = never " + per_model("eval_every"))
    p.add_argument("--eval-data", help="held-out problems: preset or JSONL path " + per_model("eval_data"))
    p.add_argument("--eval-n", type=int, help="number of eval problems " + per_model("eval_n"))
    p.add_argument("--save-every", type=int,
                   help="checkpoint every N steps (and at the end); 0 = only at the end " + per_model("save_every"))
    p.add_argument("--keep-last", type=int, default=2, help="checkpoints kept (default: 2)")
    p.add_argument("--out", help="run directory (default: runs/<algo>-<model>)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order and of torch's RNG (default: 0)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in backward: less memory, ~30%% slower (default: off)")
    p.add_argument("--lm-head-precision", default="tf32", choices=["tf32", "fp32"],
                   help="the lm_head's fp32 matmuls on CUDA (scoring and sampling): tf32 runs them on the tensor cores\n"
                        "(log pi within ~1e-3 of fp32; docs/training.md, the GPU path); no effect on CPU (default: tf32)")
    p.add_argument("--estimate-memory", action="store_true",
                   help="print the estimated peak GPU memory of this run from the model's config and exit;\n"
                        "loads no weights (a directory with config.json alone will do)")
    return p.parse_args(argv)


def resolve_args(args):
    """Fill the per-model defaults, then check everything that can be checked before loading a model."""
    defaults = DEFAULTS["toy" if args.model == "toy" else "hf"]
    user_set_micro_batch = args.micro_batch_size is not None
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.out = args.out or f"runs/{args.algo}-{Path(args.model).name}"

    if args.group_size < 2:
        raise rollout.UserError(f"--group-size must be >= 2 (got {args.group_size}): group advantages compare "
                                f"completions of the same prompt")
    for name in ("steps", "prompts_per_step", "mini_batches", "epochs", "gen_batch_size", "max_new_tokens",
                 "keep_last"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise rollout.UserError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    for name in ("warmup_steps", "eval_every", "save_every", "kl_coef", "weight_decay"):
        if getattr(args, name) < 0:
            raise rollout.UserError(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(args, name)})")
    if not (args.temperature > 0 and 0 < args.top_p <= 1 and args.lr > 0 and args.max_grad_norm > 0):
        raise rollout.UserError("need --temperature > 0 (training samples), 0 < --top-p <= 1, --lr > 0 and "
                                "--max-grad-norm > 0")
    batch = args.prompts_per_step * args.group_size
    if batch % args.mini_batches:
        raise rollout.UserError(f"prompts-per-step x group-size = {batch} sequences do not split into "
                                f"{args.mini_batches} equal mini-batches: change --mini-batches or --prompts-per-step")
    if args.overlong_buffer is None:
        args.overlong_buffer = max(1, args.max_new_tokens // 5)
    if not args.overlong_penalty_max > 0:
        raise rollout.UserError(f"--overlong-penalty-max must be > 0 (got {args.overlong_penalty_max})")
    if not 1 <= args.overlong_buffer <= args.max_new_tokens:
        raise rollout.UserError(f"--overlong-buffer {args.overlong_buffer} must be between 1 and --max-new-tokens "
                                f"{args.max_new_tokens}")
    mini_batch = batch // args.mini_batches
    if user_set_micro_batch and not 1 <= args.micro_batch_size <= mini_batch:
        raise rollout.UserError(f"--micro-batch-size {args.micro_batch_size} must be between 1 and the mini-batch "
                                f"size {mini_batch} (= {batch} sequences / {args.mini_batches} mini-batches)")
    args.micro_batch_size = min(args.micro_batch_size, mini_batch)
    return args


def loss_config(args):
    """etr.LossConfig: the algorithm's defaults, the flags the user set, and what the loop itself fixes."""
    overrides = {field: getattr(args, field) for field in LOSS_FLAGS}
    reward_min = -args.overlong_penalty_max if args.overlong == "penalty" else 0.0  # ETR's sigma_max^2: the true range
    try:
        return etr.make_config(args.algo, max_len=args.max_new_tokens, kl_coef=args.kl_coef, reward_min=reward_min,
                               **overrides)
    except (TypeError, ValueError) as e:
        raise rollout.UserError(f"bad loss setting ({e}); fix the flag") from None


# ----------------------------------------------------------------------------------------------- helpers

def autocast(device):
    """bf16 autocast on CUDA (the weights stay fp32, see the docstring); nothing on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def memory_estimate(config, args, prompt_tokens: int = memory.PROMPT_TOKENS) -> dict:
    """memory.estimate for these settings; generation counted as one call of the whole step (the default when it fits)."""
    return memory.estimate(config, micro_batch_size=args.micro_batch_size, max_new_tokens=args.max_new_tokens,
                           gen_rows=args.gen_batch_size or args.prompts_per_step * args.group_size,
                           gradient_checkpointing=args.gradient_checkpointing, kl_coef=args.kl_coef,
                           prompt_tokens=prompt_tokens, top_p=args.top_p)  # top-p < 1 sorts: more sampling buffers


def lr_at(step: int, args) -> float:
    """Learning rate of the 0-based step: linear warm-up over warmup_steps, then constant or cosine to 0."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    if args.lr_schedule == "constant":
        return args.lr
    progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    return args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def data_order(n: int, seed: int, start: int, count: int) -> list[int]:
    """Indices of the problems at positions start .. start+count-1 of an endless stream: each pass over the
    n problems is a fresh permutation seeded by (seed, pass). The position alone is the data loader's state."""
    perms = {}
    out = []
    for k in range(start, start + count):
        pass_ = k // n
        if pass_ not in perms:
            perms[pass_] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + pass_)).tolist()
        out.append(perms[pass_][k % n])
    return out


def load_data(args):
    """Training problems, and held-out eval problems (any whose text is also a training problem is dropped)."""
    if args.data == "toy":  # eval.load_problems("toy") is the held-out toy set; training draws from another seed
        problems = toy.toy_problems(TOY_TRAIN_SIZE, seed=TOY_TRAIN_SEED)
    else:
        problems = eval.load_problems(args.data)
    if not problems:
        raise rollout.UserError(f"--data {args.data} holds no problems: pass a JSONL file with problem and answer fields")
    eval_problems = []
    if args.eval_every:
        seen = {p["problem"] for p in problems}
        try:
            loaded = eval.load_problems(args.eval_data, flag="--eval-data")
        except rollout.UserError as e:  # a preset that cannot be fetched: evaluating is optional in training
            raise rollout.UserError(f"{e}, or train without evaluating: --eval-every 0") from None
        eval_problems = [p for p in loaded if p["problem"] not in seen][:args.eval_n]
        if not eval_problems:
            raise rollout.UserError(f"--eval-data {args.eval_data} has no problems outside the training data: "
                                    f"pass another --eval-data or --eval-every 0")
    return problems, eval_problems


def overlong_rewards(texts, golds, lengths, truncated, overlong: str, max_new_tokens: int, buffer: int,
                     penalty_max: float = 0.5):
    """Step 3 -> (reward [N]: 1 = the final answer is verified correct, penalty [N]: DAPO's soft overlong punishment).

    What counts as the final answer: the last \\boxed{} (reward.extract_answer) of a completion that ended by itself
    with EOS. A completion cut at max_new_tokens has none under "filter" and "penalty" -- reward 0 whatever boxes it
    holds: the answer it was still writing is unknown, and a box written before the cut is what a base model
    that writes on past its answer (or the toy padding `\\boxed{3}}}}}...` to the limit) would otherwise be paid
    for. "none" reads the cut text as it is (the behaviour before --overlong, for comparison).
    """
    correct = torch.tensor([0.0 if was_cut and overlong != "none" else reward.math_reward(text, gold)
                            for text, gold, was_cut in zip(texts, golds, truncated.tolist())])  # [N]
    if overlong != "penalty":
        return correct, torch.zeros_like(correct)
    # DAPO Sec. 3.4, R_length(y): 0 up to L_max - L_cache tokens, then linear down to -1 at L_max (= max_new_tokens).
    # DAPO's rewards are -1/+1; ours 0/1, half the gap: penalty_max = 0.5 keeps DAPO's proportion.
    penalty = penalty_max * ((max_new_tokens - buffer - lengths.float()) / buffer).clamp(-1.0, 0.0)  # [N]
    return correct, penalty


def select(batch: dict, idx) -> dict:
    """Rows idx of every tensor / list in a batch dict (None stays None)."""
    return {k: v[idx] if torch.is_tensor(v) else None if v is None else [v[i] for i in idx.tolist()]
            for k, v in batch.items()}


# ----------------------------------------------------------------------------------------------- steps 6-7

def train_step(model, optimizer, batch: dict, cfg, *, algo: str, epochs: int, mini_batches: int,
               micro_batch_size: int, max_grad_norm: float, temperature: float, ref_model=None,
               phase=lambda name: None) -> dict:
    """Steps 6-7: log pi_old (and log pi_ref), then epochs x mini_batches AdamW updates on one rollout batch.

    batch: a rollout.generate dict plus adv [N], group_std [N] and ref_logp [N, T] (or None). log pi_old and
    its entropy are computed here and added as old_logp / old_entropy [N, T], unless the batch has them already;
    with a ref_model, ref_logp [N, T] is computed here too (in the same micro-batches as log pi_old).
    Each update's gradient is the sum of its micro-batches' gradients, and each micro-batch loss is normalised
    by the *mini-batch's* counts (num_tokens, num_seqs), so the sum is the gradient of the whole mini-batch's
    loss, whatever micro_batch_size is. Token choices made from the whole mini-batch (Clip-Cov's and KL-Cov's
    covariance, the high-entropy quantile) come from a no-grad pass over it before its first micro-batch.
    Returns the metrics averaged over updates (keys ending in _max: max), grad_norm (before clipping), the
    mean entropy of pi_old, old_logp_diff_max (when pi_old is computed here; see 6.), the sampling gap (below) and
    the number of updates skipped because the loss or the gradient was not finite.
    phase(name) is called as each phase begins ("score", "train", "optimizer", then "end"): benchmarks/gpu_check.py
    times and measures them there; it does nothing in training.
    """
    loss_fn = etr.ALGOS[algo]
    needs_entropy = algo.startswith("erc")  # only ERC's mask uses the current policy's entropy
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    N = batch["completion_ids"].shape[0]
    perms = [torch.randperm(N) for _ in range(epochs)]  # [N] each; torch's global RNG, saved in checkpoints
    fill = perms[0].tensor_split(mini_batches)[0]  # the rows of the first update
    rest = perms[0][len(fill):]  # [N - len(fill)] the rows of the later updates of the first epoch
    score = lambda m, rows, size, **k: rollout.score(m, select(batch, rows), size, temperature, **k)  # noqa: E731
    score_size = memory.SCORE_MICRO_BATCHES * micro_batch_size  # no-grad passes keep no activations: larger batches
    phase("score")

    # 6. log pi_old and its entropy, without grad. The rows of the first update need no pass of their own:
    #    until the first optimizer step pi_theta *is* pi_old, so that update's forward gives their pi_old
    #    exactly (rho = 1 there), and the extra forward shrinks to the other (mini_batches - 1) / mini_batches.
    #    The two sources of pi_old must agree (under autocast a grad and a no-grad forward could pick other
    #    kernels). Checked every step at the cost of one micro-batch: the first micro-batch of the first update
    #    is also scored without grad, and the largest |difference| is logged as old_logp_diff_max.
    fill_old = "old_logp" not in batch or "old_entropy" not in batch  # the first update fills in pi_old of `fill`
    if fill_old:
        batch["old_logp"] = torch.zeros(batch["completion_ids"].shape)  # [N, T]
        batch["old_entropy"] = torch.zeros(batch["completion_ids"].shape)  # [N, T]
        with autocast(device):
            if len(rest):
                batch["old_logp"][rest], batch["old_entropy"][rest] = score(model, rest, score_size)  # [n, T], [n, T]
            probe_logp, _ = score(model, fill[:micro_batch_size], micro_batch_size, with_entropy=False)  # [m, T]
    old_logp_diff_max = None
    # log pi_ref, without grad, in the very micro-batches that give pi_old (rest's no-grad ones, then the first
    # update's training ones): under bf16 autocast the numbers depend on a micro-batch's padded shape, and only the
    # same shapes make pi_ref == pi_old exactly before the first update (KL = 0).
    if ref_model is not None:
        batch["ref_logp"] = torch.zeros(batch["completion_ids"].shape)  # [N, T]
        with autocast(device):
            for rows, size in ((rest, score_size), (fill, micro_batch_size)):
                if len(rows):
                    batch["ref_logp"][rows] = score(ref_model, rows, size, with_entropy=False)[0]  # [n, T]

    updates, skipped = [], 0
    for epoch, perm in enumerate(perms):
        for k, mb in enumerate(perm.tensor_split(mini_batches)):  # the rows of one optimizer update
            if len(mb) == 0:
                continue
            first = epoch == 0 and k == 0 and fill_old
            mask = batch["completion_mask"][mb]  # [b, T]
            T = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 0  # last used column; past it: padding
            num_tokens, num_seqs = int(mask.sum()), len(mb)
            choices = {}  # token choices that are statistics of the whole mini-batch (etr.batch_choices), if any
            if algo in etr.COV_TOKENS or cfg.top_entropy_quantile < 1:
                with autocast(device):
                    now_logp, now_entropy = score(model, mb, score_size)  # [b, T], [b, T] pi_theta now, no grad
                old_logp = now_logp if first else batch["old_logp"][mb]  # the first update: pi_theta is pi_old
                choices = etr.batch_choices(algo, cfg, now_logp, old_logp, batch["adv"][mb], mask, now_entropy)
            metrics = {"loss": torch.zeros(())}
            phase("train")
            for rows, micro in zip(torch.arange(len(mb)).split(micro_batch_size), mb.split(micro_batch_size)):
                cols = lambda key: batch[key][micro][:, :T].to(device)  # noqa: E731  [m, T]
                with autocast(device):
                    logp, entropy = rollout.completion_logprobs(  # [m, T], [m, T] or None; logp has grad
                        model, batch["prompt_ids"][micro], batch["prompt_mask"][micro], cols("completion_ids"),
                        cols("completion_mask"), temperature=temperature, with_entropy=needs_entropy or first)
                if first:  # pi_theta == pi_old before the first update (see 6.)
                    batch["old_logp"][micro, :T] = logp.detach().cpu()
                    batch["old_entropy"][micro, :T] = entropy.cpu()
                    if old_logp_diff_max is None:  # the first micro-batch: the rows of probe_logp
                        old_logp_diff_max = (logp.detach().cpu() - probe_logp[:, :T]).abs().max().item()
                loss, m = loss_fn(logp, cols("old_logp"), batch["adv"][micro].to(device), cols("completion_mask"), cfg,
                                  num_tokens=num_tokens, num_seqs=num_seqs,
                                  group_std=batch["group_std"][micro].to(device), entropy=entropy,
                                  old_entropy=cols("old_entropy"),
                                  ref_logp=cols("ref_logp") if batch.get("ref_logp") is not None else None,
                                  **{k: v[rows][:, :T].to(device) for k, v in choices.items()})
                loss.backward()  # gradients add up over micro-batches
                for key, value in {"loss": loss.detach(), **m}.items():
                    value = value.detach().float().cpu()
                    old = metrics.get(key)
                    metrics[key] = value if old is None else torch.maximum(old, value) if key.endswith("_max") else old + value
            phase("optimizer")
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)  # norm before clipping
            if not (torch.isfinite(metrics["loss"]) and torch.isfinite(grad_norm)):
                tqdm.write(f"warning: non-finite loss ({metrics['loss'].item()}) or grad norm ({grad_norm.item()}): "
                           f"optimizer update skipped")
                skipped += 1
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            updates.append({**{k: v.item() for k, v in metrics.items()}, "grad_norm": grad_norm.item()})
    phase("end")
    averaged = {}
    for key in updates[0]:
        values = [u[key] for u in updates]
        averaged[key] = max(values) if key.endswith("_max") else sum(values) / len(values)
    mask = batch["completion_mask"]  # [N, T]
    entropy = ((batch["old_entropy"] * mask).sum() / mask.sum()).item()  # mean entropy of pi_old per token
    diff = {} if old_logp_diff_max is None else {"old_logp_diff_max": old_logp_diff_max}
    if batch.get("sample_logp") is not None:  # how far the sampling policy was from the scored pi_old (rollout.py)
        gap = (batch["sample_logp"] - batch["old_logp"])[mask.bool()].abs()  # [M]
        diff.update(sample_logp_gap_max=gap.max().item(), sample_logp_gap_mean=gap.mean().item())
    return {**averaged, "entropy": entropy, **diff, "skipped_updates": skipped}


# ----------------------------------------------------------------------------------------------- checkpoints

def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints in <out>/checkpoints, oldest first (a directory named step_N with a trainer state)."""
    root = out / "checkpoints"
    found = [d for d in root.glob("step_*") if d.name[5:].isdigit() and (d / "trainer_state.pt").is_file()]
    return sorted(found, key=lambda d: int(d.name[5:]))


def save_checkpoint(out: Path, step: int, model, tokenizer, optimizer, state: dict, keep_last: int):
    """<out>/checkpoints/step_N: weights + tokenizer (save_pretrained: plain transformers and eval.py load it) and
    trainer_state.pt. Written to a temporary directory first, then renamed: a crash mid-save leaves the previous
    checkpoints intact and no directory that looks complete."""
    root = out / "checkpoints"
    final, tmp = root / f"step_{step}", root / f".tmp_step_{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    use_cache, model.config.use_cache = model.config.use_cache, True  # off in training with gradient checkpointing;
    model.save_pretrained(tmp)  # a checkpoint is for inference too, where the KV cache is what makes it fast
    model.config.use_cache = use_cache
    tokenizer.save_pretrained(tmp)
    rng = {"python": random.getstate(), "torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    torch.save({**state, "step": step, "optimizer": optimizer.state_dict(), "rng": rng}, tmp / "trainer_state.pt")
    shutil.rmtree(final, ignore_errors=True)  # only if this very step was saved before (e.g. by a killed run)
    os.replace(tmp, final)
    for old in checkpoints(out)[:-keep_last]:
        shutil.rmtree(old)


def restore_rng(rng: dict):
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def truncate_jsonl(path: Path, last_step: int) -> list[dict]:
    """Keep the records of steps <= last_step (later ones come from after the checkpoint) -> kept records."""
    kept = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            if record["step"] <= last_step:
                kept.append(record)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, path)
    return kept


def start_run(args, out: Path):
    """Fresh run: refuse to overwrite an earlier one. Resume: the latest checkpoint, with the same settings."""
    found = checkpoints(out)
    if not args.resume:
        if found:
            raise rollout.UserError(f"{out} already holds checkpoints: pass --resume to continue that run, "
                                    f"or a new --out")
        return None
    if not found:
        raise rollout.UserError(f"--resume: no checkpoint in {out / 'checkpoints'}: drop --resume to start a new run "
                                f"or pass the --out of an earlier run")
    saved = json.loads((out / "config.json").read_text())["args"]
    diff = [f"--{k.replace('_', '-')} {saved.get(k)} -> {v}" for k, v in vars(args).items()
            if k not in RESUMABLE_CHANGES and saved.get(k) != v]
    if diff:
        raise rollout.UserError(f"--resume with other settings than {out / 'config.json'} ({'; '.join(diff)}): "
                                f"pass the same flags, or a new --out")
    return found[-1]


def jsonable(x):
    """float('nan') / inf -> None, so that metrics.jsonl is strict JSON."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


def load_models(args, resume_from, problems):
    """The policy (the checkpoint's weights when resuming), its tokenizer, the frozen reference (--kl-coef > 0) and
    the prompt of a problem; on CUDA, memory.py's estimate beside the GPU's memory: stop now, not at the first OOM."""
    # fp32 weights on every device (see the docstring); on CUDA the forward passes run under bf16 autocast.
    rollout.LM_HEAD_TF32 = args.lm_head_precision == "tf32"
    model, tokenizer = rollout.load_model(str(resume_from or args.model), dtype=torch.float32,
                                          gradient_checkpointing=args.gradient_checkpointing)
    prompt_of = lambda problem: rollout.build_prompt(problem, tokenizer, args.template, rollout.thinking(args.thinking))  # noqa: E731
    ref_model = None
    if args.kl_coef > 0:  # the reference policy is the initial model, frozen. Loaded as the policy is (fp32
        # weights) and scored under the same autocast, it computes exactly as the policy did before its first
        # update: KL = 0 there, not the difference between bf16 and fp32 weights (up to 0.09 in log pi, issue 14).
        ref_model, _ = rollout.load_model(args.model, dtype=torch.float32)
        ref_model.eval().requires_grad_(False)
    available = memory.available_bytes(model.device)  # None off CUDA
    if available is not None:
        # with the longest prompt of --data (tokenised once), not memory.PROMPT_TOKENS: MATH has far longer ones
        prompt_tokens = max(len(ids) for ids in tokenizer([prompt_of(p["problem"]) for p in problems])["input_ids"])
        print(memory.report(memory_estimate(model.config, args, prompt_tokens), available))
        memory.check(model.config, args, available, prompt_tokens)
    return model, tokenizer, ref_model, prompt_of


def open_run(args, out: Path, resume_from, optimizer, config: dict):
    """Fresh run: seed everything, empty metrics and samples files. Resume: the optimizer, the RNG states and the
    data position from the checkpoint, and the records written after it dropped. Either way <out>/config.json.
    -> (steps done, data position, skipped updates so far, the metrics records kept)"""
    if resume_from:
        state = torch.load(resume_from / "trainer_state.pt", map_location="cpu", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        history = truncate_jsonl(out / "metrics.jsonl", state["step"])
        truncate_jsonl(out / "samples.jsonl", state["step"])
        print(f"resuming {out} from {resume_from.name}")
        run_state = state["step"], state["data_position"], state["skipped_steps"], history
    else:
        out.mkdir(parents=True, exist_ok=True)
        random.seed(args.seed)
        torch.manual_seed(args.seed)  # also seeds CUDA
        (out / "metrics.jsonl").write_text("")
        (out / "samples.jsonl").write_text("")
        run_state = 0, 0, 0, []
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return run_state


def rollout_metrics(correct, penalty, group_std, lengths, truncated, G: int) -> dict:
    """What the sampled batch looks like: its accuracy (0/1 rewards, before any overlong penalty), the share of
    groups with nothing to learn (equal rewards), lengths and cuts."""
    return {"reward_mean": correct.mean().item(), "reward_std": correct.std(unbiased=False).item(),
            "frac_zero_std_groups": (group_std.view(-1, G)[:, 0] == 0).float().mean().item(),
            "response_len_mean": lengths.float().mean().item(), "truncated_frac": truncated.float().mean().item(),
            "overlong_penalty_mean": penalty.mean().item()}


def write_samples(samples_file, step: int, step_problems: list, texts: list, golds: list, rewards, G: int):
    """The first completion of each of the first SAMPLES_PER_STEP problems -> samples.jsonl (for reading, not
    training)."""
    for i in range(0, min(SAMPLES_PER_STEP * G, len(golds)), G):
        samples_file.write(json.dumps({"step": step, "id": step_problems[i // G]["id"],
                                       "problem": step_problems[i // G]["problem"], "completion": texts[i],
                                       "answer": golds[i], "reward": rewards[i].item()}) + "\n")


def evaluate_in_training(model, tokenizer, eval_problems: list, prompt_of, args) -> dict:
    """Greedy accuracy on the held-out problems -> eval_* metrics; generate calls sized for their own prompts."""
    model.eval()
    eval_prompts = [prompt_of(p["problem"]) for p in eval_problems]
    batch_size = memory.gen_batch_size(model, len(eval_problems), eval.context_budget(model, tokenizer, eval_prompts)[0],
                                       args.max_new_tokens)
    with autocast(model.device):
        summary = eval.evaluate(model, tokenizer, eval_problems, n=1, temperature=0.0, max_new_tokens=args.max_new_tokens,
                                batch_size=batch_size, template=args.template, thinking=rollout.thinking(args.thinking))
    return {f"eval_{k}": v for k, v in summary.items() if isinstance(v, (int, float))}


def log_step(record: dict, metrics_file, samples_file, pbar):
    """The step's record -> metrics.jsonl (strict JSON: nan -> null), both files flushed (a crash loses no finished
    step), and the progress bar's reward, entropy, length and clipped fraction."""
    metrics_file.write(json.dumps({k: jsonable(v) for k, v in record.items()}) + "\n")
    metrics_file.flush()
    samples_file.flush()
    pbar.set_postfix(reward=f"{record['reward_mean']:.3f}", ent=f"{record.get('entropy', float('nan')):.3f}",
                     len=f"{record['response_len_mean']:.0f}",
                     clip=f"{record.get('clip_frac_low', 0) + record.get('clip_frac_high', 0):.3f}")


def finish(history: list, out: Path) -> dict:
    """The mean reward of the first and the last 10 steps, printed and returned with the run's records."""
    rewards = [r["reward_mean"] for r in history] or [float("nan")]
    first, last = sum(rewards[:10]) / len(rewards[:10]), sum(rewards[-10:]) / len(rewards[-10:])
    print(f"mean reward: first {len(rewards[:10])} steps {first:.3f} -> last {len(rewards[-10:])} steps {last:.3f} "
          f"({last - first:+.3f}); run in {out}")
    return {"first_reward": first, "last_reward": last, "history": history, "out": out}


# ----------------------------------------------------------------------------------------------- the loop

def run(args) -> dict:
    args = resolve_args(args)
    cfg = loss_config(args)
    if args.estimate_memory:  # from config.json alone: no weights, no run directory
        print(memory.report(memory_estimate(memory.load_config(args.model), args)))
        return {}
    out = Path(args.out)
    resume_from = start_run(args, out)
    torch.set_flush_denormal(True)  # on CPU, denormal floats in small Adam moments slow every matmul ~10x
    problems, eval_problems = load_data(args)
    model, tokenizer, ref_model, prompt_of = load_models(args, resume_from, problems)
    # fused=True on CUDA: one kernel for the whole update and no temporaries -- the default (foreach) AdamW
    # allocates a full fp32 temporary for sqrt(v), a peak of 20 bytes per parameter instead of 16 (memory.py)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), weight_decay=args.weight_decay,
                                  fused=model.device.type == "cuda")
    start, data_pos, skipped_total, history = open_run(args, out, resume_from, optimizer, config={
        "args": vars(args), "loss_config": dataclasses.asdict(cfg), "prompt_template": prompt_of("{problem}"),
        "device": str(model.device), "n_train_problems": len(problems), "n_eval_problems": len(eval_problems)})

    G = args.group_size
    metrics_file = open(out / "metrics.jsonl", "a", encoding="utf-8")
    samples_file = open(out / "samples.jsonl", "a", encoding="utf-8")
    pbar = tqdm(range(start + 1, args.steps + 1), initial=start, total=args.steps, desc=args.algo)
    for step in pbar:
        lr = lr_at(step - 1, args)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # 1. prompts: the next prompts_per_step problems of the seeded stream
        idx = data_order(len(problems), args.seed, data_pos, args.prompts_per_step)
        data_pos += args.prompts_per_step
        step_problems = [problems[i] for i in idx]
        prompts = [prompt_of(p["problem"]) for p in step_problems]

        # 2. G completions of each prompt (rows i*G .. i*G+G-1 belong to prompt i)
        t0 = time.perf_counter()
        model.eval()
        gen_batch_size = args.gen_batch_size or memory.gen_batch_size(  # calls sized to the memory left (CUDA)
            model, len(prompts) * G, max(len(ids) for ids in tokenizer(prompts)["input_ids"]), args.max_new_tokens,
            top_p=args.top_p)
        with autocast(model.device):
            batch = rollout.generate(model, tokenizer, prompts, G, temperature=args.temperature, top_p=args.top_p,
                                     max_new_tokens=args.max_new_tokens, batch_size=gen_batch_size)
        gen_seconds = time.perf_counter() - t0

        # 3. rewards: 1 if the final \boxed{} answer is equivalent to the reference, else 0
        #    (+ DAPO's soft overlong penalty with --overlong penalty; a completion cut at the limit has no answer)
        golds = [p["answer"] for p in step_problems for _ in range(G)]
        lengths = batch["completion_mask"].sum(1)  # [N] completion tokens incl. EOS
        correct, penalty = overlong_rewards(batch["texts"], golds, lengths, batch["truncated"], args.overlong,
                                            args.max_new_tokens, args.overlong_buffer,
                                            args.overlong_penalty_max)  # [N], [N]
        rewards = correct + penalty  # [N]
        write_samples(samples_file, step, step_problems, batch["texts"], golds, rewards, G)

        # 4. group-relative advantages; group_std = sigma_q of each sample's group (ETR's macro elasticity)
        adv, group_std = etr.group_advantages(rewards, G, cfg.adv_std)  # [N], [N]
        record = {"step": step, **rollout_metrics(correct, penalty, group_std, lengths, batch["truncated"], G)}
        batch.update(adv=adv, group_std=group_std)

        # 5. rows left out of the loss (their rewards did count in their group's mean and std above):
        #    dynamic sampling (DAPO Sec. 3.2): a group whose rewards are all equal has A = 0 everywhere and only
        #    dilutes the token mean; DAPO re-samples until the batch is full, here the batch just gets smaller.
        #    overlong filtering (DAPO Sec. 3.4): a completion cut at --max-new-tokens gets no gradient.
        keep = torch.ones(len(rewards), dtype=torch.bool)  # [N]
        if args.dynamic_sampling:
            keep &= group_std > 0
        if args.overlong == "filter":
            keep &= ~batch["truncated"]
        if not keep.all():
            batch = select(batch, keep.nonzero().squeeze(1))

        # 6-7. log pi_old (and log pi_ref), then epochs x mini-batches AdamW updates. With one update per rollout
        #    batch rho == 1 and the clip, ETR and ERC do nothing: that is why several mini-batches are the default.
        t1 = time.perf_counter()
        train = {}
        if batch["completion_ids"].shape[0] == 0:
            tqdm.write(f"step {step}: no completion left to learn from (--dynamic-sampling dropped groups of equal "
                       f"rewards, --overlong filter dropped cut completions): update skipped")
        else:
            model.train(args.gradient_checkpointing)  # HF checkpoints only in train mode; no dropout either way
            train = train_step(model, optimizer, batch, cfg, algo=args.algo, epochs=args.epochs,
                               mini_batches=args.mini_batches, micro_batch_size=args.micro_batch_size,
                               max_grad_norm=args.max_grad_norm, temperature=args.temperature, ref_model=ref_model)
            skipped_total += train.pop("skipped_updates")
        train_seconds = time.perf_counter() - t1

        # 8. metrics, eval, checkpoint
        record.update(train, lr=lr, skipped_steps=skipped_total, gen_seconds=gen_seconds, train_seconds=train_seconds,
                      tokens_per_second=lengths.sum().item() / (gen_seconds + train_seconds))
        if args.eval_every and step % args.eval_every == 0:
            record.update(evaluate_in_training(model, tokenizer, eval_problems, prompt_of, args))
        log_step(record, metrics_file, samples_file, pbar)
        history.append(record)
        if step == args.steps or (args.save_every and step % args.save_every == 0):
            save_checkpoint(out, step, model, tokenizer, optimizer,
                            {"data_position": data_pos, "skipped_steps": skipped_total}, args.keep_last)
    for f in (pbar, metrics_file, samples_file):
        f.close()
    return finish(history, out)


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except rollout.UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
