"""Tests of benchmarks/plot.py's aggregation over seeds, on hand-written metrics.jsonl files (no training)."""
import json
import math
import shlex
import subprocess
import sys

import pytest

from benchmarks import plot
from conftest import REPO


def write_run(root, name, rows, tail=""):
    """A run directory <root>/<name> whose metrics.jsonl holds `rows` (+ an optional raw last line)."""
    run = root / name
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return run


def rows(rewards, **other):
    """Records for steps 1..n with these rewards; other metrics given as lists of the same length."""
    return [{"step": i + 1, "reward_mean": r, **{k: v[i] for k, v in other.items()}} for i, r in enumerate(rewards)]


@pytest.fixture
def three_seeds(tmp_path):
    """etr with three seeds (the third one step shorter), grpo with one seed."""
    return [write_run(tmp_path, "etr-s0", rows([0.0, 0.5, 1.0], entropy=[1.0, None, 0.6])),
            write_run(tmp_path, "etr-s1", rows([0.2, 0.3, 0.4], entropy=[0.8, 0.7, 0.5])),
            write_run(tmp_path, "etr-s12", rows([0.4, 0.1], entropy=[0.6, 0.9]), tail='{"step": 3, "rew'),
            write_run(tmp_path, "grpo-s0", rows([0.5, 0.5, 0.5], entropy=[1.0, 1.0, 1.0]))]


def test_group_name_strips_only_the_seed_suffix():
    assert plot.group_name("runs/compare/etr-s2") == "etr"
    assert plot.group_name("erc-dapo-s10") == "erc-dapo"
    assert plot.group_name("etr-alpha1-s0") == "etr-alpha1"
    assert plot.group_name("runs-s") == "runs-s"  # no seed number: the whole name


def test_groups_by_name_in_order_and_skips_a_line_cut_by_a_crash(three_seeds):
    groups = plot.load_groups(three_seeds)
    assert list(groups) == ["etr", "grpo"]
    assert [len(run) for run in groups["etr"]] == [3, 3, 2]  # the cut line of etr-s12 is dropped


def test_spread_is_mean_min_max_over_seeds_on_common_steps(three_seeds):
    steps, mean, low, high = plot.spread(plot.load_groups(three_seeds)["etr"], "reward_mean")
    assert steps == [1, 2]  # etr-s12 stops at step 2
    assert mean == pytest.approx([0.2, 0.3])
    assert low == pytest.approx([0.0, 0.1])
    assert high == pytest.approx([0.4, 0.5])


def test_spread_leaves_out_steps_that_did_not_log(three_seeds):
    _, mean, low, high = plot.spread(plot.load_groups(three_seeds)["etr"], "entropy")
    assert mean == pytest.approx([0.8, 0.8])  # step 2: seed 0 logged null -> mean of 0.7 and 0.9
    assert (low[1], high[1]) == pytest.approx((0.7, 0.9))


def test_spread_smooths_each_seed_before_averaging(tmp_path):
    runs = [plot.read_metrics(write_run(tmp_path, "a-s0", rows([0.0, 1.0, 0.0, 1.0]))),
            plot.read_metrics(write_run(tmp_path, "a-s1", rows([1.0, 1.0, 0.0, 0.0])))]
    _, mean, low, high = plot.spread(runs, "reward_mean", window=2)
    # seed 0 smoothed: 0, .5, .5, .5; seed 1: 1, 1, .5, 0
    assert mean == pytest.approx([0.5, 0.75, 0.5, 0.25])
    assert low == pytest.approx([0.0, 0.5, 0.5, 0.0])
    assert high == pytest.approx([1.0, 1.0, 0.5, 0.5])


def test_smooth_is_a_trailing_mean_without_nan():
    out = plot.smooth([1.0, 3.0, math.nan, 5.0, math.nan, math.nan], window=2)
    assert out[:5] == pytest.approx([1.0, 2.0, 3.0, 5.0, 5.0])
    assert math.isnan(out[5])
    assert plot.smooth([1.0, 3.0], window=1) == [1.0, 3.0]


def test_a_metric_nobody_logs_is_none(three_seeds):
    assert plot.spread(plot.load_groups(three_seeds)["grpo"], "etr_eps_low_mean") is None


def test_window_mean_first_and_last_steps_per_seed(tmp_path):
    runs = [plot.read_metrics(write_run(tmp_path, "a-s0", rows([0.0, 0.2, 0.4, 0.6]))),
            plot.read_metrics(write_run(tmp_path, "a-s1", rows([1.0, 1.0, 0.0, 0.0])))]
    assert plot.window_mean(runs, "reward_mean", first=2) == pytest.approx((0.55, 0.1, 1.0))
    assert plot.window_mean(runs, "reward_mean", last=2) == pytest.approx((0.25, 0.0, 0.5))


def test_table_has_the_numbers(three_seeds):
    text = plot.table(plot.load_groups(three_seeds), last=1)
    etr_row = next(line for line in text.splitlines() if line.startswith("| etr |"))
    # seeds: 3; common steps: 2; reward at step 1: 0, .2, .4; at step 2: .5, .3, .1; entropy at step 2: null
    # (seed 0: no value in its window, left out), .7, .9
    assert etr_row == "| etr | 3 | 2 | 0.200 [0.000, 0.400] | 0.300 [0.100, 0.500] | 0.800 [0.700, 0.900] |"


def test_missing_run_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="metrics.jsonl not found"):
        plot.read_metrics(tmp_path / "nope")


def test_without_matplotlib_prints_the_table_and_one_line(three_seeds, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    plot.main([*map(str, three_seeds), "--out", str(tmp_path / "fig.png")])
    out = capsys.readouterr().out
    assert "| grpo | 1 | 3 | 0.500 [0.500, 0.500]" in out
    assert out.strip().splitlines()[-1] == "no figure: `pip install matplotlib` is needed for plots"
    assert not (tmp_path / "fig.png").exists()


# --------------------------------------------------------------------------------------------- intervals over seeds

@pytest.mark.parametrize("df, t", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452)])
def test_t_quantile_matches_the_printed_tables(df, t):
    assert plot.t_quantile(0.975, df) == pytest.approx(t, abs=1e-4)  # t_{0.975, df} of any statistics textbook


def test_t_quantile_tends_to_the_normal_and_is_exact_for_one_degree():
    assert plot.t_quantile(0.975, 100_000) == pytest.approx(1.959964, abs=1e-4)
    assert plot.t_quantile(0.9, 1) == pytest.approx(math.tan(math.pi * 0.4), abs=1e-6)  # Cauchy: tan(pi (q - 1/2))


def test_t_interval_by_hand():
    # 1..5: mean 3, s = sqrt(10 / 4) = 1.5811, s / sqrt(5) = 0.70711, t_{.975,4} = 2.77645 -> 3 -+ 1.96324
    assert plot.t_interval([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx((3.0, 1.03676, 4.96324), abs=1e-5)
    # nan left out; one value: a mean and no interval
    assert plot.t_interval([2.0, math.nan, 4.0])[0] == 3.0
    mean, low, high = plot.t_interval([0.5])
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)


def test_paired_interval_pairs_by_seed_not_by_position():
    # differences by seed: 0: 1 - 0.5, 1: 2 - 2.5, 2: 3 - 2 = 0.5, -0.5, 1.0; mean 1/3, s^2 = (1/36 + 25/36 + 16/36) / 2
    # = 7/12, s / sqrt(3) = 0.44096, t_{.975,2} = 4.30265 -> 1/3 -+ 1.89729; seed 7 has no pair and is left out
    algo = {2: 3.0, 0: 1.0, 1: 2.0, 7: 9.0}
    base = {0: 0.5, 1: 2.5, 2: 2.0}
    assert plot.paired_interval(algo, base) == pytest.approx((1 / 3, -1.56396, 2.23062), abs=1e-5)
    # the same values without their seeds' pairing (algo minus the baseline's mean) would be a different interval
    assert plot.t_interval([3.0, 1.0, 2.0]) != pytest.approx(plot.paired_interval(algo, base))


def test_window_values_last_n_and_lowest_per_seed(tmp_path):
    runs = [plot.read_metrics(write_run(tmp_path, "a-s0", rows([0.0] * 4, entropy=[0.9, 0.3, None, 0.5]))),
            plot.read_metrics(write_run(tmp_path, "a-s1", rows([0.0] * 4, entropy=[0.8, 0.7, 0.6, 0.65])))]
    assert plot.window_values(runs, "entropy", last=2) == pytest.approx([0.5, 0.625])  # null step left out
    assert plot.window_values(runs, "entropy", reduce=min) == pytest.approx([0.3, 0.6])
    assert plot.window_values(runs, "entropy", first=1) == pytest.approx([0.9, 0.8])


def test_ci_table_rows_and_paired_differences(tmp_path):
    # grpo seeds 0-2 reward 0.5, 0.6, 0.7; etr = grpo + 0.1, 0.2, 0.3 -> difference 0.2 -+ 4.30265 * 0.1 / sqrt(3)
    # = [-0.048, +0.448]: no star. dapo = grpo + 0.1 exactly on every seed: s = 0, interval [+0.1, +0.1], a star.
    entropy = [1.0, 0.5, 0.8]  # lowest 0.5, last 2 steps 0.65
    dirs = []
    for name, shift in (("grpo", [0.0, 0.0, 0.0]), ("etr", [0.1, 0.2, 0.3]), ("dapo", [0.1, 0.1, 0.1])):
        for seed, base in enumerate([0.5, 0.6, 0.7]):
            dirs.append(write_run(tmp_path, f"{name}-s{seed}", rows([base + shift[seed]] * 3, entropy=entropy)))
    lines = plot.ci_table(plot.load_seeded(dirs), "grpo", last=2).splitlines()
    grpo, etr, dapo = (next(l for l in lines if l.startswith(f"| {n} |")) for n in ("grpo", "etr", "dapo"))
    # grpo: 0.6 -+ 4.30265 * 0.1 / sqrt(3) = [0.352, 0.848]; its own difference column is empty
    # entropy, first 2 steps: (1.0 + 0.5) / 2 = 0.75; last 2 steps: (0.5 + 0.8) / 2 = 0.65
    assert grpo.startswith("| grpo | 3 | 3 | 0.600 [0.352, 0.848] |  | 0.000 [0.000, 0.000] |  | 0.750 [0.750, 0.750] "
                           "|  | 0.650 [0.650, 0.650] |  | 0.500 [0.500, 0.500] |")
    assert "| +0.200 [-0.048, +0.448] |" in etr
    assert "| +0.100 [+0.100, +0.100] * |" in dapo
    assert etr.endswith("| 0.500 [0.500, 0.500] | +0.000 [+0.000, +0.000] |")


def test_the_default_baseline_finds_real_lms_task_prefixed_group(tmp_path, capsys):
    # real_lm.py names its runs add2-grpo-s0, ...: the default --baseline grpo must pair add2-etr with add2-grpo
    # (etr = grpo + 0.1 on both seeds -> +0.100 [+0.100, +0.100] *), and a name that matches no group says so
    assert plot.resolve_baseline(["add2-etr", "add2-grpo"], "grpo") == "add2-grpo"
    assert plot.resolve_baseline(["grpo", "add2-grpo"], "grpo") == "grpo"  # an exact name wins
    assert plot.resolve_baseline(["add2-grpo", "mul-grpo"], "grpo") == "grpo"  # two candidates: none chosen
    dirs = [write_run(tmp_path, f"add2-{name}-s{seed}", rows([0.5 + seed / 10 + shift] * 2))
            for name, shift in (("grpo", 0.0), ("etr", 0.1)) for seed in (0, 1)]
    plot.main([*map(str, dirs), "--out", str(tmp_path / "fig.png"), "--last", "1", "--ci-last", "1"])
    etr = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("| add2-etr | 2 |") and "*" in l)
    assert "| +0.100 [+0.100, +0.100] * |" in etr
    plot.main([*map(str, dirs), "--out", str(tmp_path / "fig.png"), "--baseline", "dapo"])
    assert "no group named dapo" in capsys.readouterr().err


def test_real_lm_keeps_another_regime_apart_and_passes_it_to_train(tmp_path, monkeypatch):
    # the default regime's runs are add2-<algo>-s<seed> (plot.py's add2-*); another --lr or --mini-batches is another
    # regime, so its runs must neither match add2-* nor be trained with the default's settings
    import fnmatch

    import train
    from benchmarks import real_lm

    lr, mb = real_lm.SETTINGS["lr"], real_lm.SETTINGS["mini_batches"]
    assert real_lm.run_name(real_lm.MODEL, "add2", "grpo", 0, lr, mb) == "add2-grpo-s0"
    assert real_lm.run_name(real_lm.MODEL, "add2", "etr", 1, 3e-5, mb) == "lr3e-05-add2-etr-s1"
    assert real_lm.run_name(real_lm.MODEL, "add2", "etr", 1, lr, 16) == "mb16-add2-etr-s1"
    # 4 prompts a step sample in 40 steps what 8 sample in 20: p4-; another number of steps is named too
    assert real_lm.run_name(real_lm.MODEL, "add2", "grpo", 0, lr, mb, 4, 40) == "p4-add2-grpo-s0"
    assert real_lm.run_name(real_lm.MODEL, "add2", "grpo", 0, lr, mb, 4, 30) == "p4-steps30-add2-grpo-s0"
    assert real_lm.run_name(real_lm.MODEL, "add2", "grpo", 0, lr, mb, 8, 30) == "steps30-add2-grpo-s0"
    assert real_lm.run_name(real_lm.MODEL, "add2", "grpo", 0, lr, mb, 4, 40, 0.25) == "clip0.25-p4-add2-grpo-s0"
    hub = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert real_lm.run_name(hub, "mul", "grpo", 2, lr, mb) == "SmolLM2-135M-Instruct-mul-grpo-s2"
    assert not fnmatch.fnmatch("lr3e-05-add2-etr-s1", "add2-*")
    assert plot.resolve_baseline(["lr3e-05-add2-etr", "lr3e-05-add2-grpo"], "grpo") == "lr3e-05-add2-grpo"

    seen = []
    monkeypatch.setattr(train, "main", lambda argv: seen.append(argv) or sys.exit(0))
    with pytest.raises(SystemExit):
        real_lm.main(["--algo", "etr", "--lr", "3e-5", "--out", str(tmp_path)])
    assert "--lr=3e-05" in seen[0] and f"--lr={lr}" not in seen[0]
    assert seen[0][seen[0].index("--out") + 1] == str(tmp_path / "lr3e-05-add2-etr-s0" / "run")
    # 16 updates of 64 / 16 = 4 rows each: the micro-batch (8 in the default) must shrink to 4, or train.py refuses it
    with pytest.raises(SystemExit):
        real_lm.main(["--mini-batches", "16", "--out", str(tmp_path)])
    assert {"--mini-batches=16", "--micro-batch-size=4", f"--lr={lr}"} <= set(seen[1])
    # 4 prompts x 8 samples = 32 rows, 8 updates of 4 rows, and 40 steps unless told otherwise
    with pytest.raises(SystemExit):
        real_lm.main(["--prompts-per-step", "4", "--out", str(tmp_path)])
    assert {"--prompts-per-step=4", "--steps=40", "--mini-batches=8", "--micro-batch-size=4"} <= set(seen[2])
    assert seen[2][seen[2].index("--out") + 1] == str(tmp_path / "p4-add2-grpo-s0" / "run")
    # --clip-scale 0.25: each algorithm's own ranges a quarter as wide (erc-dapo's clip-higher 0.28 -> 0.07; ETR's
    # clamp [0.05, 0.5] -> [0.0125, 0.125]), and nothing else of the regime changes
    for algo, want in (("grpo", {"eps_low": 0.05, "eps_high": 0.05}), ("erc-dapo", {"eps_low": 0.05, "eps_high": 0.07}),
                       ("etr", {"eps_low": 0.05, "eps_high": 0.05, "etr_eps_min": 0.0125, "etr_eps_max": 0.125})):
        with pytest.raises(SystemExit):
            real_lm.main(["--algo", algo, "--clip-scale", "0.25", "--out", str(tmp_path)])
        got = {f[2:].split("=")[0].replace("-", "_"): float(f.split("=")[1]) for f in seen[-1]
               if f.startswith(("--eps-", "--etr-eps-"))}
        assert got == pytest.approx(want) and f"--lr={lr}" in seen[-1]
        assert seen[-1][seen[-1].index("--out") + 1] == str(tmp_path / f"clip0.25-add2-{algo}-s0" / "run")
    assert not any(f.startswith("--eps") for f in seen[0])  # the default scale leaves the algorithm's own ranges
    for bad in (["--mini-batches", "0"], ["--mini-batches", "7"], ["--prompts-per-step", "0"],
                ["--prompts-per-step", "3", "--mini-batches", "16"], ["--clip-scale", "0"],
                ["--algo", "nope", "--clip-scale", "0.5"]):  # one line naming the fix, exit 2, no training
        with pytest.raises(SystemExit) as exit_:
            real_lm.main([*bad, "--out", str(tmp_path)])
        assert exit_.value.code == 2 and len(seen) == 6


def test_ci_table_gain_is_last_minus_first_paired_by_seed(tmp_path):
    # grpo seed 0: 0.1 0.2 0.5 0.6 -> last 2 minus first 2 = 0.55 - 0.15 = 0.40; seed 1: 0.2 0.2 0.3 0.3 -> 0.10.
    # etr: seed 0 -> 0.50, seed 1 -> 0.30, so etr - grpo = +0.10, +0.20 per seed: mean +0.150, t(0.975, 1) = 12.706
    # -> half width 12.706 * 0.0707 / sqrt(2) = 0.635 -> [-0.485, +0.785]
    rewards = {"grpo-s0": [0.1, 0.2, 0.5, 0.6], "grpo-s1": [0.2, 0.2, 0.3, 0.3],
               "etr-s0": [0.0, 0.1, 0.5, 0.6], "etr-s1": [0.0, 0.2, 0.3, 0.5]}
    dirs = [write_run(tmp_path, name, rows(r)) for name, r in rewards.items()]
    lines = plot.ci_table(plot.load_seeded(dirs), "grpo", last=2).splitlines()
    assert "gain, last 2 - first 2" in lines[0]
    grpo, etr = (next(l for l in lines if l.startswith(f"| {n} |")) for n in ("grpo", "etr"))
    assert "| 0.250 [-1.656, 2.156] |" in grpo  # mean 0.25, 12.706 * 0.2121 / sqrt(2) = 1.906
    assert "| 0.400 [-0.871, 1.671] | +0.150 [-0.485, +0.785] |" in etr


# --------------------------------------------------------------------------------------------- sweep.py and --regime

def test_sweep_row_by_hand(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))  # sweep imports its siblings (compare, plot) by name
    import sweep
    records = rows([0.2, 0.4, 0.6], entropy=[0.9, 0.6, 0.3], clip_frac_low=[0.0, 0.01, 0.02],
                   clip_frac_high=[0.0, 0.03, 0.03], ratio_max=[1.0, 1.8, 1.5], gen_seconds=[1.0, 1.0, 1.5],
                   train_seconds=[0.5, 0.5, 0.5])
    r = sweep.run_row(records, n=2)
    assert r["clip"] == pytest.approx(0.03)  # (0 + .04 + .05) / 3
    assert (r["entropy_first"], r["entropy_last"]) == pytest.approx((0.75, 0.45))
    assert (r["reward_first"], r["gain"]) == pytest.approx((0.3, 0.2))  # .5 - .3
    assert (r["ratio_max"], r["seconds"]) == pytest.approx((1.8, 5.0))


def test_regime_flags_come_first_and_flags_given_win(monkeypatch, tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import compare
    started = []
    monkeypatch.setattr(compare, "run_train", lambda run, flags, *rest, **kw: started.append((run, flags)))
    monkeypatch.setattr(compare.plot, "main", lambda argv: None)
    monkeypatch.setitem(compare.REGIMES, "test", ["--mini-batches", "8", "--lr", "3e-4"])
    monkeypatch.chdir(tmp_path)
    compare.main(["--regime", "test", "--algos", "grpo", "--seeds", "0", "--lr", "1e-3"])
    (run, flags), = started
    assert run == tmp_path.joinpath("runs/compare-test/grpo-s0").relative_to(tmp_path)
    args = compare.train.resolve_args(compare.train.parse_args(flags))
    assert (args.mini_batches, args.lr) == (8, 1e-3)


def test_sweep_starts_the_runs_with_the_most_epochs_first(monkeypatch, tmp_path, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import sweep
    started = []
    monkeypatch.setattr(sweep.compare, "run_all", lambda runs, steps, jobs: started.extend(r.name for r, _ in runs))
    monkeypatch.setattr(sweep.plot, "read_metrics", lambda run: [])
    monkeypatch.setattr(sweep, "run_row", lambda records: dict.fromkeys(
        ["clip", "entropy_first", "entropy_last", "reward_first", "gain", "ratio_max", "seconds"], 0.0))
    sweep.main(["--mini-batches", "8", "16", "--epochs", "2", "4", "--lrs", "1e-4", "--out", str(tmp_path)])
    assert started == ["mb8-ep4-lr0.0001", "mb16-ep4-lr0.0001", "mb8-ep2-lr0.0001", "mb16-ep2-lr0.0001"]
    table = [line.split(" | ")[1:3] for line in capsys.readouterr().out.splitlines() if line.startswith("| 16 ")
             or line.startswith("| 32 ") or line.startswith("| 64 ")]
    assert table == [["8", "2"], ["8", "4"], ["16", "2"], ["16", "4"]]  # the table keeps the order of the flags


def readme_commands(script):
    """docs/lab.md's command lines that run benchmarks/<script>, as argument lists (comments dropped); the text
    moved there from the README."""
    return [shlex.split(line.split("#")[0])[2:] for line in (REPO / "docs" / "lab.md").read_text().splitlines()
            if line.startswith(f"python benchmarks/{script} ")]


@pytest.mark.parametrize("regime, updates, steps", [("default", (2, 1), 80), ("offpolicy", (16, 4), 70)])
def test_the_readmes_comparison_commands_run_five_seeds_of_each_algorithm(monkeypatch, tmp_path, regime, updates,
                                                                          steps):
    # docs/lab.md, "2. The comparison": issue 13 asks for >= 5 seeds per algorithm in both regimes, and the sweep and
    # both comparisons within 60 minutes on 2 cores -- hence 80 and 70 steps (docs/lab.md says how long they took)
    sys.path.insert(0, str(REPO / "benchmarks"))
    import compare
    regime_of = lambda c: c[c.index("--regime") + 1] if "--regime" in c else "default"  # noqa: E731
    command, = {tuple(c) for c in readme_commands("compare.py")  # one command per regime (the clip family: below)
                if regime_of(c) == regime and "--algos" not in c}
    started = []
    monkeypatch.setattr(compare, "run_train", lambda run, flags, *rest, **kw: started.append(flags))
    monkeypatch.setattr(compare.plot, "main", lambda argv: None)
    monkeypatch.chdir(tmp_path)
    compare.main(list(command))
    runs = [compare.train.resolve_args(compare.train.parse_args(flags)) for flags in started]
    assert sorted((a.algo, a.seed) for a in runs) == sorted(
        (algo, seed) for algo in ["grpo", "dapo", "etr", "erc-dapo"] for seed in range(5))
    assert {(a.mini_batches, a.epochs, a.lr, a.steps) for a in runs} == {(*updates, 1e-4, steps)}


def test_run_all_runs_every_run_jobs_at_a_time_with_a_share_of_the_threads(monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import threading
    import compare
    monkeypatch.setattr(compare.os, "cpu_count", lambda: 4)
    lock, running, peak, seen = threading.Lock(), [0], [0], []
    both_started = threading.Barrier(2, timeout=5)  # fails unless two runs are in flight together

    def fake_run_train(run, flags, steps, tag, t_start, env=None):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            seen.append((run, tag, env and env["OMP_NUM_THREADS"]))
        if run in ("a", "b"):
            both_started.wait()
        with lock:
            running[0] -= 1
    monkeypatch.setattr(compare, "run_train", fake_run_train)
    compare.run_all([("a", []), ("b", []), ("c", [])], 10, jobs=2)
    assert peak[0] == 2 and sorted(seen) == [("a", "[1/3]", "2"), ("b", "[2/3]", "2"), ("c", "[3/3]", "2")]
    seen.clear()
    compare.run_all([("x", [])], 10, jobs=1)
    assert seen == [("x", "[1/1]", None)]  # one at a time: the caller's environment, all threads


def test_run_all_stops_starting_runs_after_a_failure(monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import compare
    started = []

    def fake_run_train(run, *rest):
        started.append(run)
        if run == "a":
            raise SystemExit("error: a failed")
    monkeypatch.setattr(compare, "run_train", fake_run_train)
    with pytest.raises(SystemExit, match="a failed"):
        compare.run_all([("a", []), ("b", []), ("c", [])], 10, jobs=1)
    assert started == ["a"]
    with pytest.raises(SystemExit, match="--jobs"):
        compare.run_all([("a", [])], 10, jobs=0)


def test_bench_step_refuses_a_micro_batch_that_trl_cannot_split_in_one_line():
    # TRL's GRPOTrainer steps once per micro-batch: a mini-batch of 12 x 8 / 2 = 48 sequences cannot be cut into 32s.
    # The check runs before any model is loaded, and names the largest micro-batch up to 32 that works, 24 (what
    # bench_step takes by itself when --micro-batch-size is not given).
    flags = ["--prompts-per-step", "12", "--group-size", "8", "--mini-batches", "2", "--micro-batch-size", "32"]
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_step.py"), *flags],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: TRL needs the mini-batch (48 sequences) to be a multiple of --micro-batch-size 32: pass e.g. "
        "--micro-batch-size 24"]


@pytest.mark.parametrize("mini_batch, micro, fits", [(48, 32, 24), (64, 32, 32), (48, 48, 48), (7, 4, 1), (12, 5, 4)])
def test_bench_step_takes_the_largest_micro_batch_that_divides_the_mini_batch(mini_batch, micro, fits):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_step
    assert bench_step.trl_micro_batch(mini_batch, micro) == fits


def test_the_clip_family_command_runs_five_seeds_of_each_beside_grpo(monkeypatch, tmp_path):
    """docs/lab.md's one command for issue 27: GRPO, GSPO, CISPO, Clip-Cov, KL-Cov and DAPO on the 20 % highest-entropy
    tokens (a VARIANTS run), 5 seeds each, in the off-policy regime, into their own directory."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import compare
    command, = [c for c in readme_commands("compare.py") if "--algos" in c and "clip-cov" in c]
    started = []
    monkeypatch.setattr(compare, "run_train", lambda run, flags, *rest, **kw: started.append((run, flags)))
    monkeypatch.setattr(compare.plot, "main", lambda argv: started.append(argv))
    monkeypatch.chdir(tmp_path)
    compare.main(list(command))
    figure = started.pop()
    runs = {run.name: compare.train.resolve_args(compare.train.parse_args(flags)) for run, flags in started}
    names = ["grpo", "gspo", "cispo", "clip-cov", "kl-cov", "dapo-top20"]
    assert sorted(runs) == sorted(f"{name}-s{seed}" for name in names for seed in range(5))
    assert {(a.mini_batches, a.epochs, a.lr) for a in runs.values()} == {(16, 4, 1e-4)}  # the off-policy regime
    assert {(a.algo, a.top_entropy_quantile) for name, a in runs.items() if name.startswith("dapo-top20")} == {
        ("dapo", 0.2)}
    assert all(a.top_entropy_quantile is None for name, a in runs.items() if not name.startswith("dapo-top20"))
    assert "docs/compare-clip-family.png" in figure and all(str(run.parent).endswith("compare-clip-family")
                                                           for run, _ in started)
