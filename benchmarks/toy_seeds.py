"""toy_seeds.py -- does the toy land in the same place on every machine? Five pre-training seeds as five CPUs.

    python benchmarks/toy_seeds.py                               # seeds 1234 1 2 3 4 -> runs/toy_seeds/
    python benchmarks/toy_seeds.py --seeds 1234 7 --algos grpo   # fewer runs

A different CPU rounds differently, and a different pre-training seed changes the toy far more than rounding
does: if the toy lands in the same band for every ETR_TOY_SEED, it lands there on every machine. For each seed
(ETR_TOY_SEED=N, each its own cached toy):

1. the toy is built (toy.build_toy; its pretrain.json says after how many steps the criterion was met);
2. its sampled accuracy at temperature 1 is measured exactly as a user would: `python eval.py --model toy --data toy
   --limit 1000 --n 2 --temperature 1 --max-new-tokens 32` (1,000 held-out problems x 2 samples);
3. `python train.py --algo A` runs with the toy defaults for every algorithm A (default grpo and etr), and its
   gain is the mean sampled reward of the last 10 steps minus that of the first 10 (what train.py prints).

It prints one table row per seed: the start accuracy, each algorithm's gain and wall time. Interrupted? Run the
same command again: finished evaluations and runs are skipped (benchmarks/compare.py's rules). Any flag it does not
know goes to every train.py run.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import compare  # noqa: E402  (benchmarks/compare.py, beside this file)
import plot  # noqa: E402

# 1,000 held-out problems x 2 samples: the standard error is ~0.012 (200 problems x 8 samples: ~0.025, because
# problems differ far more than two samples of one problem do)
EVAL_FLAGS = ["--model", "toy", "--data", "toy", "--limit", "1000", "--n", "2", "--temperature", "1",
              "--max-new-tokens", "32"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                epilog="Other flags are passed to every train.py run (python train.py --help).")
    p.add_argument("--seeds", nargs="+", type=int, default=[1234, 1, 2, 3, 4], help="ETR_TOY_SEED values")
    p.add_argument("--algos", nargs="+", default=["grpo", "etr"], help="train.py --algo values (default: grpo etr)")
    p.add_argument("--out", type=Path, default=Path("runs/toy_seeds"), help="default: runs/toy_seeds")
    args, extra = p.parse_known_args(argv)
    steps = compare.train.resolve_args(compare.train.parse_args(extra)).steps

    rows, t_start = [], time.perf_counter()
    for seed in args.seeds:
        env = {**os.environ, "ETR_TOY_SEED": str(seed)}
        built = subprocess.run([sys.executable, "-c", "import toy; print(toy.build_toy())"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, text=True, check=True).stdout.strip().splitlines()[-1]
        report = json.loads((Path(built) / "pretrain.json").read_text())
        evaluation = args.out / f"s{seed}" / "eval"
        if not (evaluation / "summary.json").is_file():
            subprocess.run([sys.executable, str(REPO / "eval.py"), *EVAL_FLAGS, "--out", str(evaluation)], env=env,
                           check=True, stdout=subprocess.DEVNULL)
        row = {"seed": seed, "steps": report["steps"], "build": report["seconds"],
               "start": json.loads((evaluation / "summary.json").read_text())["avg@2"]}
        for algo in args.algos:
            run = args.out / f"s{seed}" / algo
            wall = run / "wall_seconds.txt"
            t0 = time.perf_counter()
            compare.run_train(run, ["--algo", algo, "--out", str(run), *extra], steps, f"[seed {seed}]", t_start, env)
            if not wall.is_file():  # a run made here and now (a resumed one counts only its last part)
                wall.write_text(f"{time.perf_counter() - t0:.1f}\n")
            row[algo] = (plot.gain(plot.read_metrics(run)), float(wall.read_text()))
        rows.append(row)

    print(f"\n| ETR_TOY_SEED | pre-training steps | build | start (sampled acc.) | "
          + " | ".join(f"{a} gain | {a} wall" for a in args.algos) + " |")
    print("|---" * (4 + 2 * len(args.algos)) + "|")
    for r in rows:
        cells = [str(r["seed"]), str(r["steps"]), f"{r['build']:.0f} s", f"{r['start']:.3f}"]
        cells += [x for a in args.algos for x in (f"{r[a][0]:+.3f}", f"{r[a][1] / 60:.1f} min")]
        print("| " + " | ".join(cells) + " |")
    starts = [r["start"] for r in rows]
    print(f"start: {min(starts):.3f} .. {max(starts):.3f}; "
          + "; ".join(f"{a} gain: min {min(r[a][0] for r in rows):+.3f}" for a in args.algos))


if __name__ == "__main__":
    main()
