"""plot.py -- the curves of any set of train.py runs, mean and spread over seeds, plus a table of the numbers.

    python benchmarks/plot.py runs/compare/*-s*                     # -> compare.png in the current directory
    python benchmarks/plot.py runs/etr-s0 runs/etr-s1 runs/grpo-s0 --out fig.png --smooth 1

Runs are grouped by the name of their directory without its "-s<seed>" suffix (etr-s0, etr-s1 -> etr), so two
settings of one algorithm compare as well as two algorithms do (etr-alpha1-s0 against etr-s0). For every group
and metric:

- each seed's curve is smoothed first, with a trailing moving average over --smooth steps (1 = raw);
- the line is the mean over seeds, the band spans the lowest to the highest seed (min/max: with three seeds a
  standard deviation would be a guess);
- only the steps that every seed of the group has reached are drawn, so the band never narrows just because a
  seed is missing.

A group that never logs a metric (etr_eps_* outside ETR, erc_masked_frac outside ERC) is absent from its panel.
The table printed below the figure's path uses the raw, unsmoothed values: per group the mean reward of the
first and of the last --last steps and the mean entropy of the last --last steps, as the mean over seeds
[lowest seed, highest seed].

matplotlib draws the figure; it is not a dependency of the project. Without it the table is still printed.
"""
import argparse
import io
import json
import math
import re
import statistics
import sys
from pathlib import Path

# metrics.jsonl key -> panel title
METRICS = {
    "reward_mean": "reward (fraction correct)",
    "entropy": "entropy of pi_old (nats / token)",
    "clip_frac_low": "clip_frac_low (rho < 1 - eps_low, A < 0)",
    "clip_frac_high": "clip_frac_high (rho > 1 + eps_high, A > 0)",
    "etr_eps_low_mean": "ETR: mean eps_low",
    "etr_eps_high_mean": "ETR: mean eps_high",
    "erc_masked_frac": "ERC: fraction of tokens masked",
    "response_len_mean": "response length (tokens)",
}


def group_name(run_dir: Path) -> str:
    """'runs/compare/etr-s2' -> 'etr': the directory name without its -s<seed> suffix."""
    return re.sub(r"-s\d+$", "", Path(run_dir).name)


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of <run_dir>/metrics.jsonl, one per step."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found: pass run directories written by train.py")
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash
            continue
    return records


def load_groups(run_dirs) -> dict[str, list[list[dict]]]:
    """{group: [records of seed 1, records of seed 2, ...]}, groups in the order they first appear."""
    groups = {}
    for run_dir in run_dirs:
        groups.setdefault(group_name(run_dir), []).append(read_metrics(run_dir))
    return groups


def series(runs: list[list[dict]], key: str) -> tuple[list[int], list[list[float]]]:
    """(steps every run has reached, one list of values per run on those steps); a value a step did not log
    (None in the JSON, or no key) is nan."""
    steps = sorted(set.intersection(*({r["step"] for r in run} for run in runs)))
    values = []
    for run in runs:
        by_step = {r["step"]: r.get(key) for r in run}
        values.append([math.nan if by_step[s] is None else float(by_step[s]) for s in steps])
    return steps, values


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average over the last `window` values, nan values left out (nan if all are)."""
    out = []
    for i in range(len(values)):
        finite = [v for v in values[max(0, i - window + 1):i + 1] if not math.isnan(v)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def spread(runs: list[list[dict]], key: str, window: int = 1):
    """(steps, mean, lowest, highest) over seeds of the smoothed curves; None if no run logs `key` at all."""
    if not any(key in r for run in runs for r in run):
        return None
    steps, values = series(runs, key)
    curves = [smooth(v, window) for v in values]
    mean, low, high = [], [], []
    for at_step in zip(*curves):
        finite = [v for v in at_step if not math.isnan(v)]
        mean.append(sum(finite) / len(finite) if finite else math.nan)
        low.append(min(finite, default=math.nan))
        high.append(max(finite, default=math.nan))
    return steps, mean, low, high


def window_mean(runs: list[list[dict]], key: str, first: int | None = None, last: int | None = None):
    """Per seed, the mean of `key` over the first or the last n common steps -> (mean over seeds, min, max);
    a seed that logged nothing there is left out (all nan if every seed is)."""
    _, values = series(runs, key)
    per_seed = []
    for v in values:
        finite = [x for x in (v[:first] if first is not None else v[-last:]) if not math.isnan(x)]
        if finite:
            per_seed.append(sum(finite) / len(finite))
    if not per_seed:
        return math.nan, math.nan, math.nan
    return statistics.fmean(per_seed), min(per_seed), max(per_seed)


def table(groups: dict, last: int = 10) -> str:
    """A markdown table of the numbers the README's reading rests on."""
    fmt = lambda m: f"{m[0]:.3f} [{m[1]:.3f}, {m[2]:.3f}]"  # noqa: E731
    lines = [f"| run | seeds | steps | reward, first {last} steps | reward, last {last} steps | "
             f"entropy, last {last} steps |",
             "|---|---|---|---|---|---|"]
    for name, runs in groups.items():
        steps = len(series(runs, "reward_mean")[0])
        lines.append(f"| {name} | {len(runs)} | {steps} | {fmt(window_mean(runs, 'reward_mean', first=last))} | "
                     f"{fmt(window_mean(runs, 'reward_mean', last=last))} | {fmt(window_mean(runs, 'entropy', last=last))} |")
    return "\n".join(lines)


def plot(groups: dict, out: Path, window: int, title: str = ""):
    """One panel per metric of METRICS, one line + min/max band per group; written to `out` as a PNG."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(2, 4, figsize=(16, 7), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, panel_title) in zip(axes.flat, METRICS.items()):
        for i, (name, runs) in enumerate(groups.items()):
            curve = spread(runs, key, window)
            if curve is None:
                continue
            steps, mean, low, high = curve
            color = colors[i % len(colors)]
            ax.plot(steps, mean, color=color, lw=1.5, label=f"{name} (n={len(runs)})")
            ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)
        if not ax.lines:
            ax.text(0.5, 0.5, "not logged by these runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    axes[0, 0].legend(fontsize=8)
    smoothing = "raw values" if window == 1 else f"trailing mean over {window} steps"
    fig.suptitle(f"{title}{' -- ' if title else ''}line: mean over seeds, band: lowest to highest seed; {smoothing}",
                 fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a 256-colour palette (Pillow comes with matplotlib): a third of the bytes, small enough to commit
    Image.open(buffer).convert("RGB").quantize(colors=256).save(out, optimize=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories of train.py (each with a metrics.jsonl)")
    p.add_argument("--out", type=Path, default=Path("compare.png"), help="the figure (default: compare.png)")
    p.add_argument("--smooth", type=int, default=5,
                   help="trailing moving average over this many steps, per seed; 1 = raw (default: 5)")
    p.add_argument("--last", type=int, default=10, help="steps averaged in the table (default: 10)")
    p.add_argument("--title", default="", help="text in front of the figure's caption")
    args = p.parse_args(argv)
    if args.smooth < 1 or args.last < 1:
        p.error("--smooth and --last must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    groups = load_groups(args.runs)
    print(table(groups, args.last))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("no figure: `pip install matplotlib` is needed for plots")
        return
    plot(groups, args.out, args.smooth, args.title)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    sys.exit(main())
