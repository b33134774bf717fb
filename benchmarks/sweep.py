"""sweep.py -- where does the clip bind? GRPO on the toy over updates per rollout batch x learning rate, one seed each.

    python benchmarks/sweep.py                                      # 4 x 3 runs of 60 steps -> runs/sweep/
    python benchmarks/sweep.py --mini-batches 2 8 --lrs 3e-4 --steps 30
    python benchmarks/sweep.py --mini-batches 2 --epochs 1 2 4 8    # more passes instead of smaller mini-batches

Every point is `python train.py --model toy --algo grpo --seed S --steps N --mini-batches M --epochs E --lr LR`
(plus any flag this script does not know) into <out>/mb<M>-ep<E>-lr<LR>; a rollout batch gets M x E AdamW updates.
More mini-batches keep the work of a step (each sequence is still trained on once per epoch, in smaller
mini-batches); more epochs multiply it. Interrupted? Run the same command again: benchmarks/compare.py's run_train
skips finished runs and extends shorter ones.

Per run, from its metrics.jsonl:
- clip fraction: clip_frac_low + clip_frac_high, averaged over the steps (each step's value is already the mean over
  its updates, and the first update of a step clips nothing by construction: with M x E updates at most
  (M x E - 1) / (M x E) of a step's tokens can be clipped);
- entropy of the first and of the last 10 steps, reward of the first 10 and its gain (last 10 minus first 10);
- ratio_max: the largest ratio of the run; seconds: the run's own generate + train time (its metrics, not the wall).
A row is marked "yes" where the clip binds on >= --min-clip (3 %) of the tokens while the reward still improves
(gain > 0): the candidates for compare.py's --regime offpolicy.
"""
import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import compare  # noqa: E402  (benchmarks/compare.py, beside this file)
import plot  # noqa: E402
import rollout  # noqa: E402
import train  # noqa: E402


def run_row(records: list[dict], n: int = 10) -> dict:
    """The numbers of one run (see the docstring)."""
    one = [records]
    value = lambda key, **window: plot.window_values(one, key, **window)[0]  # noqa: E731
    return {"clip": value("clip_frac_low") + value("clip_frac_high"),
            "entropy_first": value("entropy", first=n), "entropy_last": value("entropy", last=n),
            "reward_first": value("reward_mean", first=n), "gain": plot.gain(records, n),
            "ratio_max": value("ratio_max", reduce=max),
            "seconds": value("gen_seconds", reduce=sum) + value("train_seconds", reduce=sum)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                epilog="Other flags are passed to every train.py run (python train.py --help).")
    p.add_argument("--mini-batches", nargs="+", type=int, default=[2, 4, 8, 16], help="default: 2 4 8 16")
    p.add_argument("--epochs", nargs="+", type=int, default=[1], help="default: 1")
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-4, 3e-4, 1e-3], help="default: 1e-4 3e-4 1e-3")
    p.add_argument("--algo", default="grpo", help="default: grpo")
    p.add_argument("--seed", type=int, default=0, help="one seed for every point (default: 0)")
    p.add_argument("--steps", type=int, default=60, help="rollout steps of every run (default: 60)")
    p.add_argument("--min-clip", type=float, default=0.03, help="clip fraction that marks a row (default: 0.03)")
    p.add_argument("--out", type=Path, default=Path("runs/sweep"), help="default: runs/sweep")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (compare.py --jobs; default: 1)")
    args, extra = p.parse_known_args(argv)

    points = [(m, e, lr) for m in args.mini_batches for e in args.epochs for lr in args.lrs]
    runs = []
    try:  # check every run's flags before the first one starts
        for m, e, lr in points:
            run = args.out / f"mb{m}-ep{e}-lr{lr:g}"
            flags = ["--model", "toy", "--algo", args.algo, "--seed", str(args.seed), "--steps", str(args.steps),
                     "--mini-batches", str(m), "--epochs", str(e), "--lr", str(lr), "--out", str(run), *extra]
            train.resolve_args(train.parse_args(flags))
            runs.append((m, e, lr, run, flags))
    except rollout.UserError as err:
        raise SystemExit(f"error: {err}")

    print(f"{len(runs)} runs of {args.steps} steps into {args.out}/: {args.algo}, seed {args.seed}, mini-batches "
          f"{args.mini_batches} x epochs {args.epochs} x lr {args.lrs}{' with ' + ' '.join(extra) if extra else ''}")
    t_start = time.perf_counter()
    # The runs with the most epochs first: a step's training work grows with the epochs, and with --jobs 2 the long
    # runs then share the two cores instead of the longest one finishing alone at the end (the table keeps its order).
    by_work = sorted(runs, key=lambda r: -r[1])
    compare.run_all([(run, flags) for *_, run, flags in by_work], args.steps, args.jobs)

    print(f"\n| updates / batch | mini-batches | epochs | lr | clip fraction | entropy, first 10 | entropy, last 10 | "
          f"reward, first 10 | reward gain | ratio_max | seconds | clip >= {args.min_clip:g}, gain > 0 |")
    print("|---" * 12 + "|")
    total = 0.0
    for m, e, lr, run, _ in runs:
        r = run_row(plot.read_metrics(run))
        total += r["seconds"]
        print(f"| {m * e} | {m} | {e} | {lr:g} | {r['clip']:.4f} | {r['entropy_first']:.3f} | {r['entropy_last']:.3f} | "
              f"{r['reward_first']:.3f} | {r['gain']:+.3f} | {r['ratio_max']:.2f} | {r['seconds']:.0f} | "
              f"{'yes' if r['clip'] >= args.min_clip and r['gain'] > 0 else 'no'} |")
    print(f"\n{total:.0f} s ({total / 60:.1f} min) of generate + train time in these runs; this call took "
          f"{time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
