"""compare.py -- the papers' claims at toy scale: GRPO, DAPO, ETR and ERC on the offline toy, five seeds each, on a CPU.

    python benchmarks/compare.py                                   # runs/compare/<algo>-s<seed>/ + runs/compare/compare.png
    python benchmarks/compare.py --algos grpo etr --seeds 0 1 --steps 20 --out runs/quick
    python benchmarks/compare.py --lr 1e-3                         # any other flag goes to every train.py run
    python benchmarks/compare.py --regime offpolicy                # more updates per rollout batch: the clip binds
    python benchmarks/compare.py --regime offpolicy --algos grpo gspo cispo clip-cov kl-cov dapo-top20 \
        --out runs/compare-clip-family                             # the clip family (docs/lab.md)

Every run is `python train.py --model toy --algo A --seed S --steps N --out <out>/A-sS` plus the extra flags, and
the toy's defaults for everything else: the runs differ in the algorithm (with its own loss defaults from
etr.make_config, e.g. DAPO's clip-higher 0.28 and token-mean) and in the seed (data order and sampling), nothing
else. They run seed by seed, each in its own process (no torch state carried from one to the next), with
train.py's output in <out>/A-sS/train.log. `--jobs 2` runs two at a time, each with half the CPU threads: the
toy's small matrices use two cores poorly, so two single-threaded runs side by side finish sooner than one
after the other with two threads each.

Interrupted? Run the same command again. A run whose metrics.jsonl already reaches --steps with the same settings
is skipped; a finished shorter one is extended with train.py --resume (the toy saves a checkpoint at its last step);
one that died half-way starts again. At the end plot.py draws the figure and prints the tables of numbers.

--algos takes --algo names (etr.ALGOS) and the names of VARIANTS: an algorithm with flags of its own, run into
<out>/<name>-s<seed> (e.g. dapo-top20: DAPO trained on the 20 % highest-entropy tokens, "Beyond the 80/20 rule").

--regime picks a set of train.py flags added to every run (REGIMES; flags given on the command line come after
them and win): "default" adds none (2 updates per rollout batch, the clip binds on < 0.1 % of the tokens),
"offpolicy" adds more updates per batch, where GRPO's clip binds on >= 3 % of the tokens while the reward
still improves (found by benchmarks/sweep.py).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import etr  # noqa: E402
import plot  # noqa: E402  (benchmarks/plot.py, beside this file)
import rollout  # noqa: E402
import train  # noqa: E402

ALGOS = ["grpo", "dapo", "etr", "erc-dapo"]
# --regime -> train.py flags. offpolicy: 16 mini-batches x 4 epochs = 64 AdamW updates per rollout batch at the
# toy's lr 1e-4, the one point of benchmarks/sweep.py where GRPO's clip binds on >= 3 % of the tokens (3.4 %) while
# the reward still improves (docs/lab.md, "Where the trust region matters"); 8 x 4 learns faster but clips 2.7 %
# with the toy's batch of 12 x 8 (3.2 % with the 8 x 16 of earlier versions); a larger lr collapses the policy instead.
REGIMES = {"default": [], "offpolicy": ["--mini-batches", "16", "--epochs", "4"]}
# --algos name -> train.py flags, for the runs that are an algorithm with settings of its own
VARIANTS = {"dapo-top20": ["--algo", "dapo", "--top-entropy-quantile", "0.2"],   # the 80/20 paper's setting
            "grpo-top20": ["--algo", "grpo", "--top-entropy-quantile", "0.2"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,  # --seed must reach train.py
                                epilog="Other flags are passed to every train.py run (python train.py --help).")
    p.add_argument("--algos", nargs="+", default=ALGOS, choices=[*etr.ALGOS, *VARIANTS],
                   help=f"algorithms or VARIANTS (default: {' '.join(ALGOS)})")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="seeds (default: 0 1 2 3 4)")
    p.add_argument("--steps", type=int, default=60, help="rollout steps of every run (default: 60)")
    p.add_argument("--regime", default="default", choices=list(REGIMES),
                   help="train.py flags added to every run: " + "; ".join(f"{k}: {' '.join(v) or 'none'}"
                                                                       for k, v in REGIMES.items()))
    p.add_argument("--out", type=Path, help="parent of the run directories "
                   "(default: runs/compare, runs/compare-<regime> for another regime)")
    p.add_argument("--figure", type=Path, help="the figure (default: <out>/compare.png)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each with cores / jobs threads (default: 1)")
    p.add_argument("--smooth", type=int, default=5, help="plot.py --smooth (default: 5)")
    return p.parse_known_args(argv)


def train_flags(algo: str, seed: int, steps: int, run: Path, extra: list[str]) -> list[str]:
    """algo: an --algo name or a VARIANTS name."""
    return ["--model", "toy", *VARIANTS.get(algo, ["--algo", algo]), "--seed", str(seed), "--steps", str(steps),
            "--out", str(run), *extra]


def last_step(run: Path) -> int:
    """The last step in <run>/metrics.jsonl, 0 if none."""
    records = plot.read_metrics(run) if (run / "metrics.jsonl").is_file() else []
    return records[-1]["step"] if records else 0


def other_settings(run: Path, flags: list[str]) -> list[str]:
    """The train.py settings (those a --resume may not change) in which <run>/config.json differs from flags."""
    saved = json.loads((run / "config.json").read_text())["args"]
    wanted = vars(train.resolve_args(train.parse_args(flags)))
    return [f"--{k.replace('_', '-')} {saved.get(k)} -> {v}" for k, v in wanted.items()
            if k not in train.RESUMABLE_CHANGES and saved.get(k) != v]


def run_train(run: Path, flags: list[str], steps: int, tag: str, t_start: float, env: dict | None = None):
    """Run `train.py flags` into run, or skip it if done, or extend a finished shorter run with --resume."""
    done = last_step(run)
    if done and (differ := other_settings(run, flags)):
        raise SystemExit(f"error: {run} holds a run with other settings ({'; '.join(differ)}): "
                         f"pass another --out or delete it")
    if done > steps:
        raise SystemExit(f"error: {run} already ran {done} > --steps {steps} steps: pass another --out")
    if done == steps:
        print(f"{tag} {run}: already done, skipped")
        return
    if train.checkpoints(run):  # a finished shorter run: continue it
        flags = [*flags, "--resume"]
    t0 = time.perf_counter()
    run.mkdir(parents=True, exist_ok=True)
    log = run / "train.log"
    print(f"{tag} {run}: started ({steps} steps; its output goes to {log})", flush=True)
    with open(log, "a") as f:
        rc = subprocess.call([sys.executable, str(REPO / "train.py"), *flags], stdout=f, stderr=subprocess.STDOUT,
                             env=env)
    if rc:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise SystemExit(f"error: {run} failed (exit {rc}); the end of {log}:\n" + "\n".join(tail))
    reward = plot.window_mean([plot.read_metrics(run)], "reward_mean", last=10)[0]
    print(f"{tag} {run}: {time.perf_counter() - t0:.0f} s, mean reward of the last 10 steps "
          f"{reward:.3f} (elapsed {(time.perf_counter() - t_start) / 60:.1f} min)", flush=True)


def run_all(todo: list[tuple[Path, list[str]]], steps: int, jobs: int = 1):
    """run_train for every (run, flags), `jobs` at a time, each process with os.cpu_count() // jobs threads."""
    if jobs < 1:
        raise SystemExit("error: --jobs must be >= 1")
    env = None if jobs == 1 else {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}
    t_start = time.perf_counter()
    tasks = [(run, flags, steps, f"[{i}/{len(todo)}]", t_start, env) for i, (run, flags) in enumerate(todo, 1)]
    pool = ThreadPoolExecutor(jobs)  # the threads only wait on train.py processes
    try:
        for future in [pool.submit(run_train, *task) for task in tasks]:
            future.result()  # re-raises a failed run's SystemExit
    finally:  # on a failure, runs not yet started are dropped; those already running finish
        pool.shutdown(wait=True, cancel_futures=True)


def main(argv=None):
    args, extra = parse_args(argv)
    extra = [*REGIMES[args.regime], *extra]  # argparse in train.py: the last occurrence of a flag wins
    args.out = args.out or Path("runs/compare" if args.regime == "default" else f"runs/compare-{args.regime}")
    # seed by seed: a comparison stopped early still has every algorithm, with fewer seeds
    runs = [(algo, seed, args.out / f"{algo}-s{seed}") for seed in args.seeds for algo in args.algos]
    try:  # check every run's flags before the first one starts
        for algo, seed, run in runs:
            train.resolve_args(train.parse_args(train_flags(algo, seed, args.steps, run, extra)))
    except rollout.UserError as e:
        raise SystemExit(f"error: {e}")

    print(f"{len(runs)} runs of {args.steps} steps into {args.out}/: {', '.join(args.algos)} x seeds "
          f"{' '.join(map(str, args.seeds))}{' with ' + ' '.join(extra) if extra else ''}")
    run_all([(run, train_flags(algo, seed, args.steps, run, extra)) for algo, seed, run in runs], args.steps, args.jobs)

    figure = args.figure or args.out / "compare.png"
    plot.main([*(str(run) for _, _, run in runs), "--out", str(figure), "--smooth", str(args.smooth)])


if __name__ == "__main__":
    main()
