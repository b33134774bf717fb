"""Tests of benchmarks/plot.py's aggregation over seeds, on hand-written metrics.jsonl files (no training)."""
import json
import math
import sys

import pytest

from benchmarks import plot


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
