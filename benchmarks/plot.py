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
[lowest seed, highest seed]. A second table gives, over seeds, the mean and a 95 % confidence interval
(Student t, n - 1 degrees of freedom) of the reward of the last --ci-last steps, its gain over the first ones, the
entropy of the first and of the last --ci-last steps and the lowest entropy of the run, and the same for each
group's difference to the --baseline group (default grpo; or the one group ending in "-grpo", as real_lm.py's
add2-grpo), paired by seed: the runs of one seed share their data order and first samples, so their difference
varies less than either.
With matplotlib, a second figure <out>-ci.png draws those differences with their intervals.

matplotlib draws the figure; it is not a dependency of the project. Without it the table is still printed.
"""
import argparse
import functools
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
    "cov_selected_frac": "Clip-Cov / KL-Cov: fraction of tokens chosen",
    "entropy_kept_frac": "80/20: fraction of tokens that keep their loss",
    "response_len_mean": "response length (tokens)",
}


def group_name(run_dir: Path) -> str:
    """'runs/compare/etr-s2' -> 'etr': the directory name without its -s<seed> suffix."""
    return re.sub(r"-s\d+$", "", Path(run_dir).name)


def resolve_baseline(names, baseline: str) -> str:
    """The group the differences are taken to: `baseline` itself, else the one group named '<prefix>-<baseline>'
    (real_lm.py's 'add2-grpo' for the default 'grpo'); unchanged when there is none or more than one."""
    if baseline in names:
        return baseline
    ends = [name for name in names if name.endswith("-" + baseline)]
    return ends[0] if len(ends) == 1 else baseline


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


def load_seeded(run_dirs) -> dict[str, dict]:
    """{group: {seed: records}}, groups in the order they first appear; seed = the number after -s (the
    directory's path if it has none), the key that pairs runs of two groups."""
    groups = {}
    for run_dir in run_dirs:
        seed = re.search(r"-s(\d+)$", Path(run_dir).name)
        groups.setdefault(group_name(run_dir), {})[int(seed[1]) if seed else str(run_dir)] = read_metrics(run_dir)
    return groups


def load_groups(run_dirs) -> dict[str, list[list[dict]]]:
    """{group: [records of seed 1, records of seed 2, ...]}, groups in the order they first appear."""
    return {name: list(by_seed.values()) for name, by_seed in load_seeded(run_dirs).items()}


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


def window_values(runs: list[list[dict]], key: str, first: int | None = None, last: int | None = None,
                  reduce=statistics.fmean) -> list[float]:
    """Per seed, `reduce` (default: the mean) of `key` over the first or the last n common steps (both None: all
    of them), values that were not logged left out; nan for a seed with none there."""
    _, values = series(runs, key)
    window = slice(None, first) if first is not None else slice(-last if last else None, None)
    per_seed = []
    for v in values:
        finite = [x for x in v[window] if not math.isnan(x)]
        per_seed.append(reduce(finite) if finite else math.nan)
    return per_seed


def window_mean(runs: list[list[dict]], key: str, first: int | None = None, last: int | None = None):
    """Per seed, the mean of `key` over the first or the last n common steps -> (mean over seeds, min, max);
    a seed that logged nothing there is left out (all nan if every seed is)."""
    per_seed = [x for x in window_values(runs, key, first, last) if not math.isnan(x)]
    if not per_seed:
        return math.nan, math.nan, math.nan
    return statistics.fmean(per_seed), min(per_seed), max(per_seed)


def gain(records: list[dict], n: int = 10) -> float:
    """Mean reward of the last n steps of one run minus that of its first n (what train.py prints at the end)."""
    runs = [records]
    return window_mean(runs, "reward_mean", last=n)[0] - window_mean(runs, "reward_mean", first=n)[0]


# ---------------------------------------------------------------------------- confidence intervals over seeds

@functools.lru_cache
def t_quantile(q: float, df: int) -> float:
    """The q-quantile (0.5 < q < 1) of Student's t distribution with df degrees of freedom, by bisection on its
    CDF, 1/2 + the integral of the density from 0 to x by Simpson's rule (standard library only, no scipy):

        f(t) = Gamma((df + 1) / 2) / (sqrt(df pi) Gamma(df / 2)) * (1 + t^2 / df)^(-(df + 1) / 2)
    """
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    density = lambda t: c * (1 + t * t / df) ** (-(df + 1) / 2)  # noqa: E731

    def cdf(x, n=2000):  # Simpson's rule over n (even) intervals of [0, x]
        h = x / n
        inner = sum((4 if i % 2 else 2) * density(i * h) for i in range(1, n))
        return 0.5 + h / 3 * (density(0.0) + inner + density(x))

    lo, hi = 0.0, 1.0
    while cdf(hi) < q:
        lo, hi = hi, 2 * hi
    for _ in range(50):  # the interval halves 50 times: far below any printed digit
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the Student t confidence interval of the mean, mean -+ t_{(1+level)/2, n-1} s / sqrt(n),
    s the sample std (n - 1). nan values are left out; fewer than 2 values give no interval (nan, nan)."""
    x = [v for v in values if not math.isnan(v)]
    if not x:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(x)
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = t_quantile((1 + level) / 2, len(x) - 1) * statistics.stdev(x) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def paired_interval(by_seed: dict, baseline_by_seed: dict, level: float = 0.95) -> tuple[float, float, float]:
    """t interval of the mean difference value - baseline over the seeds both have (a seed's pair shares data
    order and first samples): {seed: value} each."""
    return t_interval([v - baseline_by_seed[s] for s, v in by_seed.items() if s in baseline_by_seed], level)


# what the interval table shows: column title -> per-seed values of a group's runs
CI_COLUMNS = {
    "reward, last {n} steps": lambda runs, n: window_values(runs, "reward_mean", last=n),
    "gain, last {n} - first {n}": lambda runs, n: [b - a for a, b in zip(window_values(runs, "reward_mean", first=n),
                                                                    window_values(runs, "reward_mean", last=n))],
    "entropy, first {n} steps": lambda runs, n: window_values(runs, "entropy", first=n),  # how fast it collapses
    "entropy, last {n} steps": lambda runs, n: window_values(runs, "entropy", last=n),
    "lowest entropy of the run": lambda runs, n: window_values(runs, "entropy", reduce=min),
}


def fmt_interval(m: tuple[float, float, float], sign: str = "") -> str:
    """(mean, low, high) -> '0.663 [0.640, 0.686]'; sign='+' writes the sign of every number (differences)."""
    if math.isnan(m[0]):
        return "n/a"
    return f"{m[0]:{sign}.3f}" + ("" if math.isnan(m[1]) else f" [{m[1]:{sign}.3f}, {m[2]:{sign}.3f}]")


def intervals(seeded: dict, baseline: str = "grpo", last: int = 20, level: float = 0.95) -> dict:
    """{group: {column title: (t interval over seeds, paired interval of the difference to the baseline or None)}}
    for the columns of CI_COLUMNS; each interval is (mean, low, high)."""
    titles = [t.format(n=last) for t in CI_COLUMNS]
    per_seed = {}  # group -> column -> {seed: value}
    for name, by_seed in seeded.items():
        runs = list(by_seed.values())
        per_seed[name] = {t: dict(zip(by_seed, f(runs, last))) for t, f in zip(titles, CI_COLUMNS.values())}
    return {name: {t: (t_interval(values.values(), level),
                       None if name == baseline or baseline not in seeded
                       else paired_interval(values, per_seed[baseline][t], level))
                   for t, values in columns.items()}
            for name, columns in per_seed.items()}


def ci_table(seeded: dict, baseline: str = "grpo", last: int = 20, level: float = 0.95) -> str:
    """A markdown table: per group and column of CI_COLUMNS the mean over seeds [95 % t interval], and the
    difference to the baseline group paired by seed [its interval], marked * where that interval excludes 0."""
    found = intervals(seeded, baseline, last, level)
    titles = [t.format(n=last) for t in CI_COLUMNS]
    lines = ["| run | seeds | steps | " + " | ".join(f"{t} | - {baseline}" for t in titles) + " |",
             "|---|---|---|" + "---|---|" * len(titles)]
    for name, by_seed in seeded.items():
        cells = [name, str(len(by_seed)), str(len(series(list(by_seed.values()), "reward_mean")[0]))]
        for interval, diff in found[name].values():
            cells.append(fmt_interval(interval))
            cells.append("" if diff is None else fmt_interval(diff, "+") + (" *" if diff[1] > 0 or diff[2] < 0 else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_intervals(seeded: dict, out: Path, baseline: str = "grpo", last: int = 20, level: float = 0.95):
    """One panel per column of CI_COLUMNS: each group's difference to the baseline, paired by seed, as a point with
    its t interval, and a line at 0; written to `out` as a PNG."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    found = {name: cols for name, cols in intervals(seeded, baseline, last, level).items() if name != baseline}
    titles = [t.format(n=last) for t in CI_COLUMNS]
    fig, axes = plt.subplots(1, len(titles), figsize=(4.5 * len(titles), 0.5 * len(found) + 1.8), squeeze=False)
    for ax, title in zip(axes[0], titles):
        for y, (name, cols) in enumerate(found.items()):
            mean, low, high = cols[title][1]
            ax.errorbar([mean], [y], xerr=[[mean - low], [high - mean]], fmt="o", capsize=4)
        ax.axvline(0, color="black", lw=1)
        ax.set_yticks(range(len(found)), list(found))
        ax.set_title(f"{title}: - {baseline}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(f"difference to {baseline}, paired by seed: mean and {level:.0%} Student t interval "
                 f"(n = {min(len(s) for s in seeded.values())} seeds)", fontsize=10)
    save_figure(fig, out)


def table(groups: dict, last: int = 10) -> str:
    """A markdown table of the numbers docs/lab.md's reading rests on."""
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
    """One panel per metric of METRICS that some run logged (4 to a row), one line + min/max band per group;
    written to `out` as a PNG."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    curves = {key: {name: spread(runs, key, window) for name, runs in groups.items()} for key in METRICS}
    shown = [key for key in METRICS if any(c is not None for c in curves[key].values())] or ["reward_mean"]
    rows = math.ceil(len(shown) / 4)
    fig, axes = plt.subplots(rows, 4, figsize=(16, 3.5 * rows), sharex=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, shown):
        for i, (name, curve) in enumerate(curves[key].items()):
            if curve is None:
                continue
            steps, mean, low, high = curve
            color = colors[i % len(colors)]
            ax.plot(steps, mean, color=color, lw=1.5, label=f"{name} (n={len(groups[name])})")
            ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)
        ax.set_title(METRICS[key], fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for ax in axes.flat[max(0, len(shown) - 4):len(shown)]:  # the lowest panel of each column
        ax.set_xlabel("step")
        ax.xaxis.set_tick_params(labelbottom=True)
    axes[0, 0].legend(fontsize=8)
    smoothing = "raw values" if window == 1 else f"trailing mean over {window} steps"
    fig.suptitle(f"{title}{' -- ' if title else ''}line: mean over seeds, band: lowest to highest seed; {smoothing}",
                 fontsize=11)
    save_figure(fig, out)


def save_figure(fig, out: Path):
    """Lay out, write `fig` to `out` as a PNG and close it (every figure of benchmarks/ goes through here)."""
    import matplotlib.pyplot as plt
    from PIL import Image

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
    p.add_argument("--ci-last", type=int, default=20,
                   help="steps averaged in the table of confidence intervals (default: 20)")
    p.add_argument("--baseline", default="grpo", help="group the differences are taken to (default: grpo)")
    p.add_argument("--title", default="", help="text in front of the figure's caption")
    args = p.parse_args(argv)
    if min(args.smooth, args.last, args.ci_last) < 1:
        p.error("--smooth, --last and --ci-last must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    seeded = load_seeded(args.runs)
    groups = {name: list(by_seed.values()) for name, by_seed in seeded.items()}
    print(table(groups, args.last))
    args.baseline = resolve_baseline(seeded, args.baseline)
    if any(len(by_seed) > 1 for by_seed in seeded.values()):
        if args.baseline not in seeded:
            print(f"note: no group named {args.baseline}: the '- {args.baseline}' columns stay empty "
                  f"(name one of {', '.join(seeded)} with --baseline)", file=sys.stderr)
        print(f"\nMean over seeds [95 % Student t interval, n - 1 degrees of freedom]; differences to "
              f"{args.baseline} paired by seed, * = the interval excludes 0:\n")
        print(ci_table(seeded, args.baseline, args.ci_last))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("no figure: `pip install matplotlib` is needed for plots")
        return
    plot(groups, args.out, args.smooth, args.title)
    print(f"figure: {args.out}")
    if args.baseline in seeded and len(seeded) > 1 and any(len(by_seed) > 1 for by_seed in seeded.values()):
        ci_out = args.out.with_name(f"{args.out.stem}-ci{args.out.suffix}")
        plot_intervals(seeded, ci_out, args.baseline, args.ci_last)
        print(f"figure of the differences to {args.baseline}: {ci_out}")


if __name__ == "__main__":
    sys.exit(main())
