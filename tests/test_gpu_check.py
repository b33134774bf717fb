"""benchmarks/gpu_check.py at its tiny shape on the CPU: the prepared GPU check is known to run, its phases add up to
the step, and what it measures holds where the answer is known (fp32 on a CPU: no sampling gap, no lm_head error)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import gpu_check  # noqa: E402


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "r.json"
    r = gpu_check.main(["--tiny", "--steps", "2", "--out", str(out)])
    assert out.is_file()
    return r


def test_phases_cover_the_step(result):
    for step in result["steps"]:
        assert set(step["seconds"]) == {"generate", "score", "train", "optimizer"}
        assert all(v > 0 for v in step["seconds"].values())
        assert 0.5 * step["wall"] < sum(step["seconds"].values()) <= step["wall"]  # rewards etc. fall outside
    assert set(result["memory"]) == {"generate", "score", "train", "optimizer"}


def test_what_is_known_on_a_cpu(result):
    assert all(s["sample_logp_gap_max"] <= 1e-4 for s in result["steps"])  # fp32 sampling = fp32 scoring
    head = result["lm_head"]
    assert head["largest_logit"] > 8  # the scaled embedding gives logits in a trained model's range
    assert head["fp32"]["logp_err_max"] <= 1e-5 and head["bf16"]["logp_err_max"] > 100 * head["fp32"]["logp_err_max"]
    assert result["sampling_gap"]["fp32_lm_head"]["max"] <= 1e-4
