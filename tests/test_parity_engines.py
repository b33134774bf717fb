"""etr.py's GSPO, CISPO, Clip-Cov, KL-Cov and high-entropy mask against verl's and TRL's (benchmarks/parity_clip_family.py).

Neither engine is a dependency: each test skips unless its engine imports. Run them with the python of an
environment that has it (docs/clip-family.md says how the measured ones were made):

    /work/venv-verl/bin/python -m pytest -q tests/test_parity_engines.py
    /work/venv-trl/bin/python -m pytest -q tests/test_parity_engines.py
"""
import pytest

from benchmarks import parity_clip_family as parity


@pytest.mark.parametrize("engine", ["verl", "trl"])
def test_value_and_gradient_agree_within_1e_6(engine):
    pytest.importorskip("verl.trainer.ppo.core_algos" if engine == "verl" else "trl")
    rows = parity.compare(parity.verl_cases() if engine == "verl" else parity.trl_cases(), seeds=5)
    bad = [(r["case"], r["max_abs_loss"], r["max_abs_grad"]) for r in rows if not r["ok"]]
    assert not bad
    acted = [sum(r["acted"]) for r in rows]
    assert all(acted), [r["case"] for r in rows if not sum(r["acted"])]  # every mechanism acted on some tokens


@pytest.mark.parametrize("engine", ["verl", "trl"])
def test_engines_take_batch_statistics_per_call_ours_per_mini_batch(engine):
    pytest.importorskip("verl.trainer.ppo.core_algos" if engine == "verl" else "trl")
    (row,) = parity.split_vs_whole(parity.split_cases({engine}), seeds=3)
    assert row["engine_split_minus_whole"] > 1e-3 and row["ours_split_minus_whole"] < 1e-6
