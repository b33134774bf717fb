"""One full RL step (rollouts + rewards + scoring + updates) of ours against TRL's GRPOTrainer, and against the raw work.

    /tmp/trlvenv/bin/python benchmarks/bench_step.py              # toy model, CPU, ~1 minute on 2 cores
    python benchmarks/bench_step.py --no-trl                       # without TRL: ours against the raw work only
    python benchmarks/bench_step.py --profile                      # where one step of ours spends its time (cProfile)
    /tmp/trlvenv/bin/python benchmarks/bench_step.py --model random-qwen2.5-0.5b --device cuda   # the GPU figure

TRL is not a dependency of this project: install it in a throw-away venv that shares the system's torch and
transformers (benchmarks/README.md), and run this whole script with that venv's python.

Both sides get the same model (two copies of the same weights), the same prompts (toy problems, "plain"
template), the same group size, completion length, temperature, micro-batch size and number of optimizer
updates per rollout batch, the same reward function (reward.math_reward), no KL term. The work is made
identical by forcing every completion to max_new_tokens tokens (min_new_tokens = max_new_tokens, so EOS is
never sampled) and checking the completion lengths on both sides. Dtype follows train.py: fp32 weights, bf16
autocast on CUDA (TRL: bf16=True), plain fp32 on CPU.

The step of ours is train.py's loop body, steps 2-7 (rollout.generate -> reward.math_reward ->
etr.group_advantages -> train.train_step, which scores pi_old), without its logging. TRL's step is the group of
`mini_batches` trainer steps that consume one generation batch (steps_per_generation * num_iterations
micro-batches). Both run in this one process, alternating: a TrainerCallback stops TRL's clock at the end of
each of its RL steps, runs one step of ours and then the raw work, and restarts TRL's clock. The first
`--warmup` steps of each are discarded; the medians of the next `--steps` are reported.

The raw work is the same computation with nothing around it, on the tensors of our step just taken, with a
copy of the model: model.generate on the already tokenized prompts, and forward + backward (HF logits ->
log_softmax -> gather) over the same micro-batches followed by one AdamW step per mini-batch. "ours / raw" is
our step time over their sum, as the issue defines it. A no-grad forward over every sequence (what log pi_old
costs without train_step's shortcut) is timed too and reported beside it, outside the sum.
"""
import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import etr  # noqa: E402
import reward  # noqa: E402
import rollout  # noqa: E402
import toy  # noqa: E402
import train  # noqa: E402

# Qwen2.5-0.5B's shape (config.json of Qwen/Qwen2.5-0.5B), random weights; the toy's character tokenizer
# (ids the tokenizer does not know decode to nothing, which is all a reward of random text needs).
QWEN_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, vocab_size=151_936, max_position_embeddings=32_768, rope_theta=1e6,
                rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=None, eos_token_id=0, pad_token_id=0)


def model_path(name: str) -> str:
    """"toy" | "random-qwen2.5-0.5b" (built once, cached) | anything rollout.load_model accepts."""
    if name == "toy":
        return str(toy.build_toy())
    if name != "random-qwen2.5-0.5b":
        return name
    out = rollout.default_cache_dir() / "bench-random-qwen2.5-0.5b"
    if not out.is_dir():
        from transformers import Qwen2Config, Qwen2ForCausalLM
        print(f"building a random model in Qwen2.5-0.5B's shape, once (~2 GB, cached in {out})", file=sys.stderr,
              flush=True)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            Qwen2ForCausalLM(Qwen2Config(**QWEN_05B)).save_pretrained(out)
        toy.make_tokenizer().save_pretrained(out)
    return str(out)


def load(path: str, device: str, max_new_tokens: int):
    """A fresh copy of the model, fp32 weights as in train.run, forced to generate exactly max_new_tokens tokens."""
    model, tokenizer = rollout.load_model(path, device)
    model.float()
    model.generation_config.min_new_tokens = max_new_tokens  # EOS is masked until the last token: fixed-length work
    return model, tokenizer


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_start(device):
    """-> GPU memory allocated now (the step's peak is reported above it); 0 on CPU."""
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def peak_memory_gb(device, start: int) -> float:
    return (torch.cuda.max_memory_allocated() - start) / 2**30 if device.type == "cuda" else float("nan")


# ----------------------------------------------------------------------------------------------- ours

def our_step(model, tokenizer, optimizer, prompts, golds, a, cfg) -> tuple[dict, dict]:
    """train.py's steps 2-7 on one batch of prompts -> (batch, {"step", "gen", "reward"} seconds)."""
    device = model.device
    sync(device)
    t0 = time.perf_counter()
    model.eval()
    with train.autocast(device):
        batch = rollout.generate(model, tokenizer, prompts, a.group_size, temperature=a.temperature, top_p=a.top_p,
                                 max_new_tokens=a.max_new_tokens, batch_size=a.gen_batch_size)
    sync(device)
    t_gen = time.perf_counter() - t0
    t1 = time.perf_counter()
    rewards = torch.tensor([reward.math_reward(text, gold) for text, gold in zip(batch["texts"], golds)])  # [N]
    t_reward = time.perf_counter() - t1
    adv, group_std = etr.group_advantages(rewards, a.group_size, cfg.adv_std)  # [N], [N]
    batch.update(adv=adv, group_std=group_std, ref_logp=None)
    model.train(False)  # as train.run without gradient checkpointing; train_step scores pi_old itself
    train.train_step(model, optimizer, batch, cfg, algo=a.algo, epochs=a.epochs, mini_batches=a.mini_batches,
                     micro_batch_size=a.micro_batch_size, max_grad_norm=a.max_grad_norm, temperature=a.temperature)
    sync(device)
    return batch, {"step": time.perf_counter() - t0, "gen": t_gen, "reward": t_reward}


def raw_logits_logp(model, ids, mask, T: int, temperature: float):
    """HF forward -> log pi of the last T tokens [m, T], through the full log_softmax."""
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)  # [m, L] as generate() assigns them under left padding
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=T + 1).logits
    logits = logits[:, :-1].float() / temperature  # [m, T, V] the state at j predicts token j + 1
    return logits.log_softmax(-1).gather(-1, ids[:, -T:, None]).squeeze(-1)  # [m, T]


def raw_work(model, optimizer, batch, a) -> dict:
    """The bare computation inside our step, on the step's own tensors -> seconds of each part."""
    device, T = model.device, a.max_new_tokens
    prompt_ids, prompt_mask = batch["prompt_ids"].to(device), batch["prompt_mask"].to(device)  # [N, P]
    ids = torch.cat([prompt_ids, batch["completion_ids"].to(device)], 1)  # [N, P + T]
    mask = torch.cat([prompt_mask, batch["completion_mask"].to(device)], 1)  # [N, P + T]
    seconds = {}
    sync(device)
    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad(), train.autocast(device):
        for i in range(0, len(ids), a.gen_batch_size):
            model.generate(input_ids=prompt_ids[i:i + a.gen_batch_size], attention_mask=prompt_mask[i:i + a.gen_batch_size],
                           max_new_tokens=T, min_new_tokens=T, do_sample=True, temperature=a.temperature,
                           top_p=a.top_p, top_k=0)
        sync(device)
        seconds["generate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, len(ids), a.micro_batch_size):
            raw_logits_logp(model, ids[i:i + a.micro_batch_size], mask[i:i + a.micro_batch_size], T, a.temperature)
    sync(device)
    seconds["no-grad forward"] = time.perf_counter() - t0  # reported, not in the sum
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        for mb in torch.arange(len(ids)).tensor_split(a.mini_batches):
            for micro in mb.split(a.micro_batch_size):
                with train.autocast(device):
                    logp = raw_logits_logp(model, ids[micro], mask[micro], T, a.temperature)  # [m, T]
                (-logp.sum() / (len(mb) * T)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    sync(device)
    seconds["forward+backward+AdamW"] = time.perf_counter() - t0
    return seconds


def ours_runner(a, cfg, path, prompts, golds):
    """-> (results, one_step): one_step() takes one step of ours and then the raw work, appending to results."""
    torch.manual_seed(0)
    model, tokenizer = load(path, a.device, a.max_new_tokens)
    optimizer = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    raw_model = copy.deepcopy(model)
    raw_optimizer = torch.optim.AdamW(raw_model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    results = {"step": [], "gen": [], "reward": [], "mem": [], "raw": [], "tokens": [],
               "params": sum(x.numel() for x in model.parameters())}

    def one_step():
        start = peak_memory_start(model.device)
        batch, seconds = our_step(model, tokenizer, optimizer, prompts, golds, a, cfg)
        results["mem"].append(peak_memory_gb(model.device, start))
        results["step"].append(seconds["step"])
        results["gen"].append(seconds["gen"])
        results["reward"].append(seconds["reward"])
        results["tokens"].append(int(batch["completion_mask"].sum()))
        results["raw"].append(raw_work(raw_model, raw_optimizer, batch, a))
    return results, one_step


def profile_ours(a, cfg, path, prompts, golds, top: int = 12):
    """cProfile of one step of ours after a warm-up step: where its time goes, by function."""
    import cProfile
    import pstats

    model, tokenizer = load(path, a.device, a.max_new_tokens)
    optimizer = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    our_step(model, tokenizer, optimizer, prompts, golds, a, cfg)
    profiler = cProfile.Profile()
    profiler.runcall(our_step, model, tokenizer, optimizer, prompts, golds, a, cfg)
    for key in ("cumulative", "tottime"):  # the call tree's big branches, then the functions that do the work
        pstats.Stats(profiler).strip_dirs().sort_stats(key).print_stats(top)


# ----------------------------------------------------------------------------------------------- TRL

def run_trl_and_ours(a, cfg, path, prompts, golds) -> tuple[dict, dict]:
    """TRL's GRPOTrainer for warmup + steps RL steps; after each of them, one step of ours in its callback."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    N = len(prompts) * a.group_size
    mini_batch = N // a.mini_batches  # a multiple of a.micro_batch_size: main checked it
    updates = a.mini_batches * a.epochs  # optimizer updates (= TRL trainer steps) per RL step
    ours, our_step_then_raw = ours_runner(a, cfg, path, prompts, golds)
    torch.manual_seed(0)
    model, tokenizer = load(path, a.device, a.max_new_tokens)
    trl = {"step": [], "gen": [], "reward": [], "mem": [], "tokens": []}
    clock = {}

    inner_generate = model.generate  # TRL's rollouts are timed where they happen, on this instance only

    def timed_generate(*args, **kwargs):
        sync(model.device)
        t0 = time.perf_counter()
        out = inner_generate(*args, **kwargs)
        sync(model.device)
        clock["gen"] += time.perf_counter() - t0
        return out
    model.generate = timed_generate

    def math_reward(completions, answer, completion_ids, **kwargs):
        trl["tokens"][-1] += sum(len(c) for c in completion_ids)  # to check that both sides did the same work
        t0 = time.perf_counter()
        rewards = [reward.math_reward(c, g) for c, g in zip(completions, answer)]
        clock["reward"] += time.perf_counter() - t0
        return rewards

    class AlternateAB(TrainerCallback):  # the Trainer's only hook into its loop is a callback object
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step % updates == 0:  # the first update of an RL step
                clock.update(mem_start=peak_memory_start(model.device), gen=0.0, reward=0.0, t0=time.perf_counter())
                trl["tokens"].append(0)

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % updates == 0:  # the last update of an RL step
                sync(model.device)
                trl["step"].append(time.perf_counter() - clock["t0"])
                trl["gen"].append(clock["gen"])
                trl["reward"].append(clock["reward"])
                trl["mem"].append(peak_memory_gb(model.device, clock["mem_start"]))
                our_step_then_raw()  # B right after A; TRL's clock restarts at its next step

    out_dir = tempfile.TemporaryDirectory(prefix="bench-trl-")
    config = GRPOConfig(
        output_dir=out_dir.name, report_to="none", save_strategy="no", logging_steps=10**9,
        disable_tqdm=True, seed=0, use_cpu=a.device == "cpu", bf16=a.device.startswith("cuda"),
        per_device_train_batch_size=a.micro_batch_size, gradient_accumulation_steps=mini_batch // a.micro_batch_size,
        steps_per_generation=N // a.micro_batch_size, num_iterations=a.epochs, num_generations=a.group_size,
        max_completion_length=a.max_new_tokens, generation_kwargs={"min_new_tokens": a.max_new_tokens},
        gradient_checkpointing=False,  # TRL's default is True; ours (and train.py's) is off
        temperature=a.temperature, top_p=a.top_p, top_k=0, beta=0.0, loss_type="grpo",
        epsilon=cfg.eps_low, epsilon_high=cfg.eps_high, learning_rate=a.lr, weight_decay=a.weight_decay,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=a.max_grad_norm,
        max_steps=(a.warmup + a.steps) * updates)
    dataset = Dataset.from_list([{"prompt": p, "answer": g} for p, g in zip(prompts, golds[::a.group_size])])
    trainer = GRPOTrainer(model=model, reward_funcs=math_reward, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[AlternateAB()])
    trainer.train()
    out_dir.cleanup()
    return ours, trl


# ----------------------------------------------------------------------------------------------- report

def median(values, skip: int) -> float:
    return statistics.median(values[skip:])


def trl_micro_batch(mini_batch: int, micro_batch_size: int) -> int:
    """The largest micro-batch <= micro_batch_size that divides the mini-batch. TRL's GRPOTrainer takes one step
    per micro-batch and accumulates a whole number of them into each update; ours splits any mini-batch."""
    return max(d for d in range(1, micro_batch_size + 1) if mini_batch % d == 0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="toy", help="toy | random-qwen2.5-0.5b | hub id / local dir (default: toy)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    p.add_argument("--prompts-per-step", type=int, help="default: train.py's for the model")
    p.add_argument("--group-size", type=int, help="default: train.py's for the model")
    p.add_argument("--max-new-tokens", type=int, help="every completion has exactly this length (default: train.py's)")
    p.add_argument("--mini-batches", type=int, help="optimizer updates per rollout batch (default: train.py's)")
    p.add_argument("--micro-batch-size", type=int,
                   help="default: train.py's for the model; with TRL, the largest that divides the mini-batch")
    p.add_argument("--warmup", type=int, default=1, help="steps of each side not counted (default: 1)")
    p.add_argument("--steps", type=int, default=10, help="timed A/B pairs (default: 10)")
    p.add_argument("--no-trl", action="store_true", help="ours and the raw work only (TRL not installed)")
    p.add_argument("--profile", action="store_true", help="only profile one step of ours with cProfile")
    b = p.parse_args()
    flags = ["--model", b.model]
    for key in ("prompts_per_step", "group_size", "max_new_tokens", "mini_batches", "micro_batch_size"):
        if getattr(b, key) is not None:
            flags += ["--" + key.replace("_", "-"), str(getattr(b, key))]
    a = train.resolve_args(train.parse_args(flags))  # train.py's defaults and checks; algo grpo, 1 epoch
    mini_batch = a.prompts_per_step * a.group_size // a.mini_batches
    fits = trl_micro_batch(mini_batch, a.micro_batch_size)
    if not b.no_trl and not b.profile and fits != a.micro_batch_size:
        if b.micro_batch_size is not None:
            raise rollout.UserError(f"TRL needs the mini-batch ({mini_batch} sequences) to be a multiple of "
                                    f"--micro-batch-size {a.micro_batch_size}: pass e.g. --micro-batch-size {fits}")
        a.micro_batch_size = fits  # train.py's default does not divide it (the toy: 48 rows, 32): both sides use fits
    a.device = b.device
    a.warmup, a.steps = b.warmup, b.steps
    # train.py's default is one generate call per step when it fits (memory.gen_batch_size); here always one call
    a.gen_batch_size = a.gen_batch_size or a.prompts_per_step * a.group_size
    cfg = train.loss_config(a)
    path = model_path(b.model)
    problems = toy.toy_problems(a.prompts_per_step, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = [rollout.build_prompt(q["problem"], tokenizer, a.template) for q in problems]
    golds = [q["answer"] for q in problems for _ in range(a.group_size)]

    print(f"bench_step: {a.warmup} warm-up + {a.steps} timed steps of " + ("ours" if b.no_trl or b.profile else
          "TRL and ours, alternating") + " (the toy: ~1 min on 2 CPU cores; the Qwen shape on a CPU: minutes); "
          "the table comes at the end", file=sys.stderr, flush=True)
    if b.profile:
        return profile_ours(a, cfg, path, prompts, golds)
    if b.no_trl:
        ours, one_step = ours_runner(a, cfg, path, prompts, golds)
        for _ in range(a.warmup + a.steps):
            one_step()
        trl = None
    else:
        ours, trl = run_trl_and_ours(a, cfg, path, prompts, golds)

    N, T = len(golds), a.max_new_tokens
    device = torch.cuda.get_device_name() if b.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{b.model} ({ours['params'] / 1e6:.1f}M parameters) on {device}; torch {torch.__version__}; "
          f"1-min load {os.getloadavg()[0]:.2f}")
    print(f"{N} sequences ({a.prompts_per_step} prompts x {a.group_size}) x {T} new tokens (fixed), "
          f"{a.mini_batches * a.epochs} AdamW updates per step, micro-batch {a.micro_batch_size}; "
          f"median of {a.steps} steps after {a.warmup} warm-up")
    sides = [("ours", ours)] + ([("TRL GRPOTrainer", trl)] if trl else [])
    for name, r in sides:
        tokens = set(r["tokens"])
        if tokens != {N * T}:
            print(f"warning: {name} did not generate exactly {N * T} tokens per step: {sorted(tokens)}")
    print(f"{'':18} {'step s':>8} {'rollout s':>10} {'reward s':>9} {'rollout tok/s':>14} {'train tok/s':>13} "
          f"{'peak GB':>8}")
    for name, r in sides:
        step, gen, rew = median(r["step"], a.warmup), median(r["gen"], a.warmup), median(r["reward"], a.warmup)
        print(f"{name:18} {step:8.2f} {gen:10.2f} {rew:9.2f} {N * T / gen:14.0f} {N * T * a.epochs / (step - gen - rew):13.0f} "
              f"{median(r['mem'], a.warmup):8.2f}")
    if trl:
        ratio = median(ours["step"], a.warmup) / median(trl["step"], a.warmup)
        print(f"ours / TRL step time: {ratio:.2f}x (target <= 0.7)")
    raw = {k: median([r[k] for r in ours["raw"]], a.warmup) for k in ours["raw"][0]}
    work = raw["generate"] + raw["forward+backward+AdamW"]  # the raw work
    print("raw work: " + ", ".join(f"{k} {v:.2f} s" for k, v in raw.items()) +
          f"; generate + forward+backward+AdamW = {work:.2f} s")
    step = median(ours["step"], a.warmup)
    print(f"ours / raw work: {step / work:.2f}x (target <= 1.15); counting a no-grad forward over every sequence "
          f"(pi_old) as work too: {step / (work + raw['no-grad forward']):.2f}x")


if __name__ == "__main__":
    try:
        main()
    except rollout.UserError as e:  # bad flags: one line naming the fix, exit 2 (as train.py)
        sys.exit(print(f"error: {e}", file=sys.stderr) or 2)
