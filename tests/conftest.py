"""Shared test fixtures. Tests never touch the network: the hub is switched off here."""
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the scripts are flat modules at the repo root

# The benchmark sets beside the repo (CI has them too); tests that read them skip when absent.
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


# ---- model fixtures (rollout.py / toy.py); no network, everything is built in-process --------------------------

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A randomly initialised 2-layer Qwen2 (hidden 128) + the toy's character tokenizer (pad == eos), saved with
    save_pretrained. Load it with rollout.load_model(str(tiny_model_dir)). Untrained: its samples are noise."""
    import torch
    import toy

    path = tmp_path_factory.mktemp("tiny_model")
    tokenizer = toy.make_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        toy.make_model(len(tokenizer), n_layers=2).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """The pre-trained toy, built once per test session (~30 s on 2 cores) into a session cache directory.
    While the session runs, ETR_CACHE points there, so rollout.load_model("toy") loads it without rebuilding."""
    import toy

    cache = tmp_path_factory.mktemp("etr_cache")
    previous = os.environ.get("ETR_CACHE")
    os.environ["ETR_CACHE"] = str(cache)
    yield toy.build_toy(cache)
    if previous is None:
        os.environ.pop("ETR_CACHE")
    else:
        os.environ["ETR_CACHE"] = previous


def pytest_configure(config):
    """Grader mode (ETR_MODULE=student_etr.py, see the README's "Teaching with this code"): one line per failure,
    the one naming the equation, instead of tracebacks through the student's code."""
    if os.environ.get("ETR_MODULE") and config.option.tbstyle == "auto":
        config.option.tbstyle = "line"
