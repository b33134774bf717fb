"""Tests of train.py: every algorithm learns something, exact accumulation, exact resume, atomic checkpoints,
one-line errors. A tiny random model (conftest's tiny_model_dir) keeps them fast; its reward is a deterministic
function of the completion text (parity_reward), so groups have reward variance from step 1."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import etr
import memory
import rollout
import toy
import train

REPO = Path(__file__).resolve().parent.parent
TIMING = set(train.TIMING_KEYS)


def parity_reward(text: str, gold: str) -> float:
    """A stand-in verifier: 0 or 1 by the parity of the characters' code points (random text -> mixed rewards)."""
    return float(sum(map(ord, text)) % 2)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in toy.toy_problems(40, seed=1)))
    return path


@pytest.fixture
def reward_stub(monkeypatch):
    monkeypatch.setattr(train.reward, "math_reward", parity_reward)


def argv(tiny_model_dir, data_file, out, *extra):
    # --overlong none: the untrained tiny model rarely stops within 6 tokens, and the default (filter) would leave
    # almost no completion to train on; the overlong modes have tests of their own below.
    return ["--overlong", "none", "--model", str(tiny_model_dir), "--data", str(data_file), "--out", str(out), "--prompts-per-step", "2",
            "--group-size", "4", "--mini-batches", "2", "--max-new-tokens", "6", "--lr", "1e-2",
            "--weight-decay", "0", "--warmup-steps", "0", "--eval-every", "0", "--save-every", "2", "--steps", "2", *extra]


def weights(path):
    return rollout.load_model(str(path), device="cpu", dtype=torch.float32)[0].state_dict()


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("algo", list(etr.ALGOS))
def test_every_algo_trains_and_logs(algo, tiny_model_dir, data_file, tmp_path, reward_stub):
    kl = ["--kl-coef", "0.05"] if algo == "etr" else []  # one run with the reference model
    top = ["--top-entropy-quantile", "0.5"] if algo == "dapo" else []  # and one with the 80/20 mask
    train.main(argv(tiny_model_dir, data_file, tmp_path, "--algo", algo, *kl, *top))

    # weight decay is 0, so any change comes from the policy gradient
    before, after = weights(tiny_model_dir), weights(tmp_path / "checkpoints" / "step_2")
    assert all(torch.isfinite(w).all() for w in after.values())
    assert max((after[k] - before[k]).abs().max().item() for k in before) > 1e-4

    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2]
    required = {"step", "reward_mean", "reward_std", "frac_zero_std_groups", "entropy", "clip_frac_low",
                "clip_frac_high", "ratio_max", "response_len_mean", "truncated_frac", "grad_norm", "lr",
                "gen_seconds", "train_seconds", "tokens_per_second", "skipped_steps", "old_logp_diff_max"}
    required |= {"etr_eps_low_mean", "etr_eps_high_mean", "kl"} if algo == "etr" else set()
    required |= {"erc_masked_frac"} if algo.startswith("erc") else set()
    required |= {"cov_selected_frac"} if algo.endswith("-cov") else set()
    required |= {"entropy_kept_frac"} if algo == "dapo" else set()
    for r in records:
        assert required <= set(r), required - set(r)
        assert 0 <= r["reward_mean"] <= 1 and r["entropy"] > 0 and r["lr"] == 1e-2
        assert 1 <= r["response_len_mean"] <= 6
    # the second mini-batch is trained by an updated policy: the ratio has moved away from 1
    assert max(r["ratio_max"] for r in records) > 1

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["args"]["algo"] == algo and "{problem}" in config["prompt_template"]
    assert config["loss_config"]["max_len"] == 6
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2} and all("completion" in s for s in samples)


def test_resume_is_exact(tiny_model_dir, data_file, tmp_path, reward_stub):
    """4 steps in one go == 2 steps + resume + 2 steps (weights and every non-timing metric), and a crash
    after step 3 (step_4 lost, a half-written metrics line) resumes from step_2 to the same end."""
    one, split = tmp_path / "one", tmp_path / "split"
    train.main(argv(tiny_model_dir, data_file, one, "--algo", "etr", "--steps", "4"))
    reference = read_metrics(one)
    train.main(argv(tiny_model_dir, data_file, split, "--algo", "etr", "--steps", "2"))
    train.main(argv(tiny_model_dir, data_file, split, "--algo", "etr", "--steps", "4", "--resume"))

    def same(a, b):
        assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
        for x, y in zip(a, b):
            assert {k: v for k, v in x.items() if k not in TIMING} == {k: v for k, v in y.items() if k not in TIMING}

    def same_weights(a, b):
        wa, wb = weights(a / "checkpoints" / "step_4"), weights(b / "checkpoints" / "step_4")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)

    same(reference, read_metrics(split))
    same_weights(one, split)
    assert weights(one / "checkpoints" / "step_4")["model.norm.weight"].ne(1).any()  # it did train

    # crash simulation: lose the last checkpoint, leave a half-written line
    crashed = tmp_path / "crashed"
    train.main(argv(tiny_model_dir, data_file, crashed, "--algo", "etr", "--steps", "4"))
    import shutil
    shutil.rmtree(crashed / "checkpoints" / "step_4")
    with open(crashed / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "rew')
    train.main(argv(tiny_model_dir, data_file, crashed, "--algo", "etr", "--steps", "4", "--resume"))
    same(reference, read_metrics(crashed))
    same_weights(one, crashed)


# --------------------------------------------------------------------------------------------- train_step

def synthetic_batch(model, algo, N=8, G=4, P=5, T=7, seed=0, **settings):
    """A rollout batch of uneven, left-padded prompts and uneven completions, scored by the model itself."""
    g = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(1, 90, (N, P), generator=g)  # [N, P]
    prompt_len = torch.randint(2, P + 1, (N,), generator=g)  # [N]
    prompt_mask = (torch.arange(P)[None] >= P - prompt_len[:, None]).long()  # [N, P] left padding
    completion_ids = torch.randint(1, 90, (N, T), generator=g)  # [N, T]
    completion_len = torch.randint(1, T + 1, (N,), generator=g)  # [N]
    completion_mask = (torch.arange(T)[None] < completion_len[:, None]).long()  # [N, T]
    rewards = torch.randint(0, 2, (N,), generator=g).float()  # [N]
    cfg = etr.make_config(algo, max_len=T, **settings)
    adv, group_std = etr.group_advantages(rewards, G, cfg.adv_std)
    batch = {"prompt_ids": prompt_ids * prompt_mask, "prompt_mask": prompt_mask,
             "completion_ids": completion_ids * completion_mask, "completion_mask": completion_mask,
             "adv": adv, "group_std": group_std, "ref_logp": None}
    batch["old_logp"], batch["old_entropy"] = rollout.score(model, batch, N)
    return batch, cfg


def tiny_model(tiny_model_dir):
    model, _ = rollout.load_model(str(tiny_model_dir), device="cpu")
    return model


@pytest.mark.parametrize("algo, settings", [
    ("grpo", {}), ("drgrpo", {}), ("etr", {}), ("erc-gppo", {}), ("gspo", {}), ("gspo-token", {}), ("cispo", {}),
    # Clip-Cov, KL-Cov and the high-entropy mask choose tokens from the whole mini-batch (r, k: several tokens)
    ("clip-cov", {"clip_cov_ratio": 0.2, "clip_cov_lb": 0.0}), ("kl-cov", {"kl_cov_ratio": 0.2}),
    ("dapo", {"top_entropy_quantile": 0.3}), ("gspo", {"top_entropy_quantile": 0.3})])
def test_accumulation_is_exact(algo, settings, tiny_model_dir):
    """Micro-batches of 1 sequence give the same updated weights as whole mini-batches (1e-5).

    Plain SGD: its update is the gradient itself. (AdamW's first steps are ~lr * sign(g), so weights whose
    true gradient is 0 turn float round-off of ~1e-10 into lr-sized differences -- noise, not a bug.)"""
    results = []
    for micro_batch_size in (1, 4):
        model = tiny_model(tiny_model_dir)
        batch, cfg = synthetic_batch(model, algo, **settings)
        if algo == "kl-cov":  # pi_old from the first update's own forward, as in training: rho = 1 exactly there.
            del batch["old_logp"], batch["old_entropy"]  # (scored apart, rho = 1 +- 5e-7, and the gradient of
            # |log rho| is +-beta by the sign of that round-off: KL-Cov's penalty has a kink at rho = 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        torch.manual_seed(0)  # the same mini-batch shuffle for both
        metrics = train.train_step(model, optimizer, batch, cfg, algo=algo, epochs=2, mini_batches=2,
                                   micro_batch_size=micro_batch_size, max_grad_norm=1.0, temperature=1.0)
        results.append(({k: v.detach().clone() for k, v in model.state_dict().items()}, metrics))
    (w1, m1), (w4, m4) = results
    initial = tiny_model(tiny_model_dir).state_dict()
    assert max((w1[k] - initial[k]).abs().max().item() for k in w1) > 1e-3  # the updates were not empty
    for k in w1:
        torch.testing.assert_close(w1[k], w4[k], atol=1e-5, rtol=0)
    for k in m1:
        assert m1[k] == pytest.approx(m4[k], rel=1e-4, abs=1e-6), k
    assert m1["ratio_max"] > 1  # later updates ran with rho != 1, so the clip paths were exercised
    for key in ("cov_selected_frac", "entropy_kept_frac"):  # the choices were made, of some tokens, not all
        assert key not in m1 or 0 < m1[key] < 0.5, (key, m1[key])


@pytest.mark.parametrize("algo, epochs, mini_batches", [("grpo", 1, 2), ("erc-dapo", 2, 4), ("etr", 1, 1)])
def test_pi_old_from_the_first_update_equals_a_separate_pass(algo, epochs, mini_batches, tiny_model_dir, monkeypatch):
    """train_step's shortcut -- the first update's own forward gives its rows' pi_old -- changes nothing but
    the work: the same weights, metrics, old_logp and old_entropy as scoring every row beforehand, and the
    separate pass scores only the rows of the later mini-batches."""
    scored = []
    score = rollout.score
    monkeypatch.setattr(rollout, "score", lambda model, batch, *a, **k: scored.append(len(batch["adv"])) or
                        score(model, batch, *a, **k))
    results = []
    for precomputed in (True, False):
        model = tiny_model(tiny_model_dir)
        batch, cfg = synthetic_batch(model, algo)  # scores every row (one call to rollout.score)
        if not precomputed:
            reference = batch.pop("old_logp"), batch.pop("old_entropy")
        scored.clear()
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        torch.manual_seed(0)  # the same mini-batch shuffle for both
        metrics = train.train_step(model, optimizer, batch, cfg, algo=algo, epochs=epochs, mini_batches=mini_batches,
                                   micro_batch_size=3, max_grad_norm=1.0, temperature=1.0)
        results.append((model.state_dict(), metrics, scored[:]))
    (w_pre, m_pre, s_pre), (w_lazy, m_lazy, s_lazy) = results
    N = len(batch["adv"])
    first = len(torch.arange(N).tensor_split(mini_batches)[0])  # rows of the first update
    assert s_pre == [] and sum(s_lazy) == N - first + min(3, first)  # + one micro-batch: old_logp_diff_max's check
    torch.testing.assert_close(batch["old_logp"], reference[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(batch["old_entropy"], reference[1], atol=1e-6, rtol=0)
    for k in w_pre:
        torch.testing.assert_close(w_pre[k], w_lazy[k], atol=1e-5, rtol=0)
    for k in m_pre:
        assert m_pre[k] == pytest.approx(m_lazy[k], rel=1e-4, abs=1e-6), k
    assert m_lazy["entropy"] == pytest.approx(
        ((reference[1] * batch["completion_mask"]).sum() / batch["completion_mask"].sum()).item())


def test_old_logp_diff_max_compares_the_two_sources_of_pi_old(tiny_model_dir, monkeypatch):
    """old_logp_diff_max: the largest |log pi_old| difference between the no-grad pass and the first update's own
    forward, on the first update's first micro-batch. 0 on CPU (both compute the same numbers); a forward whose
    grad mode computes otherwise shows up with the size of the difference."""
    def run():
        model = tiny_model(tiny_model_dir)
        batch, cfg = synthetic_batch(model, "grpo")
        del batch["old_logp"], batch["old_entropy"]
        torch.manual_seed(0)
        return train.train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), batch, cfg, algo="grpo",
                                epochs=1, mini_batches=2, micro_batch_size=2, max_grad_norm=1.0,
                                temperature=1.0)["old_logp_diff_max"]

    assert run() == 0.0
    logprobs = rollout.completion_logprobs

    def shifted(model, prompt_ids, prompt_mask, completion_ids, completion_mask, **kwargs):
        """log pi moved by 0.25 on every counted token, in grad mode only."""
        logp, entropy = logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, **kwargs)
        return logp + 0.25 * torch.is_grad_enabled() * completion_mask, entropy

    monkeypatch.setattr(rollout, "completion_logprobs", shifted)
    assert run() == pytest.approx(0.25, abs=1e-6)


def test_reference_computes_exactly_as_the_policy_under_bf16_autocast(tiny_model_dir, data_file, tmp_path,
                                                                      reward_stub, monkeypatch):
    """--kl-coef > 0 under bf16 autocast (train.py's CUDA numerics, here on CPU): the reference model gives the
    very log-probs of the policy before its first update, so the k3 KL there is exactly 0. (A bf16 reference
    next to the fp32 policy differed by up to 0.09 per token on the toy, issue 14.)"""
    monkeypatch.setattr(train, "autocast", lambda device: torch.autocast("cpu", dtype=torch.bfloat16))
    batches = []
    train_step = train.train_step
    monkeypatch.setattr(train, "train_step", lambda model, opt, batch, *a, **k: batches.append(batch) or
                        train_step(model, opt, batch, *a, **k))
    train.main(argv(tiny_model_dir, data_file, tmp_path, "--algo", "grpo", "--kl-coef", "0.1", "--steps", "1",
                    "--save-every", "0"))
    batch = batches[0]
    mask = batch["completion_mask"].bool()  # [N, T]
    assert mask.sum() > 10 and batch["old_logp"][mask].abs().min() > 0  # every counted token was scored
    assert torch.equal(batch["ref_logp"][mask], batch["old_logp"][mask])  # so every k3 term is exactly 0


def test_every_masked_in_token_is_scored_even_behind_a_hole(tiny_model_dir, monkeypatch):
    """A completion mask need not be a prefix (e.g. masked tool output): columns are cropped at the last used
    one, not at the longest row's token count, so no counted token goes unscored."""
    model = tiny_model(tiny_model_dir)
    batch, cfg = synthetic_batch(model, "dapo")
    batch["completion_mask"][:] = 0
    batch["completion_mask"][:, 0] = 1
    batch["completion_mask"][0, 5] = 1  # row 0: tokens 0 and 5 -> every row has <= 2 tokens, one reaches column 5
    seen = []
    logprobs = rollout.completion_logprobs
    monkeypatch.setattr(rollout, "completion_logprobs", lambda *a, **k: seen.append(int(a[4].sum())) or logprobs(*a, **k))
    train.train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), batch, cfg, algo="dapo", epochs=1,
                     mini_batches=1, micro_batch_size=8, max_grad_norm=1.0, temperature=1.0)
    assert seen == [int(batch["completion_mask"].sum())]


def test_non_finite_loss_skips_the_update(tiny_model_dir, monkeypatch):
    model = tiny_model(tiny_model_dir)
    batch, cfg = synthetic_batch(model, "grpo")
    nan_loss = lambda *a, **k: (lambda loss, m: (loss * float("nan"), m))(*etr.grpo_loss(*a, **k))  # noqa: E731
    monkeypatch.setitem(train.etr.ALGOS, "grpo", nan_loss)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    metrics = train.train_step(model, optimizer, batch, cfg, algo="grpo", epochs=1, mini_batches=2,
                               micro_batch_size=4, max_grad_norm=1.0, temperature=1.0)
    assert metrics["skipped_updates"] == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weight decay did not run either
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------------------------- pieces

def test_data_order_is_a_seeded_stream_of_permutations():
    n = 7
    stream = train.data_order(n, seed=3, start=0, count=3 * n)
    assert all(sorted(stream[i * n:(i + 1) * n]) == list(range(n)) for i in range(3))  # every pass covers all
    assert stream[:n] != stream[n:2 * n]  # a fresh shuffle each pass
    assert train.data_order(n, seed=3, start=5, count=9) == stream[5:14]  # the position is the whole state
    assert train.data_order(n, seed=4, start=0, count=n) != stream[:n]


def test_lr_schedule():
    args = train.argparse.Namespace(lr=1.0, warmup_steps=4, steps=14, lr_schedule="cosine")
    assert [train.lr_at(s, args) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert train.lr_at(9, args) == pytest.approx(0.5)  # half-way through the 10 decay steps
    assert train.lr_at(14, args) == pytest.approx(0.0, abs=1e-12)
    args.lr_schedule = "constant"
    assert train.lr_at(13, args) == 1.0


def test_checkpoint_is_atomic_and_pruned(tiny_model_dir, tmp_path, monkeypatch):
    model, tokenizer = rollout.load_model(str(tiny_model_dir), device="cpu")
    optimizer = torch.optim.AdamW(model.parameters())
    state = {"data_position": 0, "skipped_steps": 0}
    for step in (1, 2, 3):
        train.save_checkpoint(tmp_path, step, model, tokenizer, optimizer, state, keep_last=2)
    assert [d.name for d in train.checkpoints(tmp_path)] == ["step_2", "step_3"]

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(train.torch, "save", crash)
    with pytest.raises(OSError):
        train.save_checkpoint(tmp_path, 4, model, tokenizer, optimizer, state, keep_last=2)
    assert [d.name for d in train.checkpoints(tmp_path)] == ["step_2", "step_3"]  # nothing lost, no step_4
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoints" / "step_3")  # plain transformers loads it


# --------------------------------------------------------------------------------------------- overlong (DAPO 3.4)

def test_overlong_rewards_by_hand():
    texts = ["6-3=3. \\boxed{3}", "\\boxed{3}}}}}}}}}}", "\\boxed{4}", "\\boxed{3} Problem 2: what is 1+1", "\\boxed{3}"]
    lengths = torch.tensor([6, 10, 7, 10, 8])  # [N] max_new_tokens = 10, L_cache = 4: the penalty starts after 6
    truncated = torch.tensor([False, True, False, True, False])  # [N] the two of length 10 were cut
    args = (texts, ["3"] * 5, lengths, truncated)
    correct, penalty = train.overlong_rewards(*args, "none", 10, 4)
    assert correct.tolist() == [1, 1, 0, 1, 1] and penalty.tolist() == [0] * 5  # the padded box is paid
    correct, penalty = train.overlong_rewards(*args, "filter", 10, 4)
    assert correct.tolist() == [1, 0, 0, 0, 1] and penalty.tolist() == [0] * 5  # cut: no final answer
    correct, penalty = train.overlong_rewards(*args, "penalty", 10, 4, 1.0)  # DAPO's -1 .. 0
    assert correct.tolist() == [1, 0, 0, 0, 1] and penalty.tolist() == [0, -1, -0.25, -1, -0.5]  # (6 - len) / 4
    # the default: DAPO's penalty in proportion to our 0/1 rewards (DAPO's -1/+1 have twice the gap)
    correct, penalty = train.overlong_rewards(*args, "penalty", 10, 4)
    assert penalty.tolist() == [0, -0.5, -0.125, -0.5, -0.25]


@pytest.mark.parametrize("overlong", ["none", "filter", "penalty"])
def test_overlong_modes_in_the_loop(overlong, tiny_model_dir, data_file, tmp_path, monkeypatch):
    """Every completion's box is 'right'; rows 1 and 3 of each group of 4 are marked cut at the limit."""
    monkeypatch.setattr(train.reward, "math_reward", lambda text, gold: 1.0)
    real_generate, seen = rollout.generate, []

    def generate(*a, **k):
        assert k["batch_size"] == 8  # --gen-batch-size unset, on CPU: the whole step in one call
        batch = real_generate(*a, **k)
        batch["truncated"] = torch.arange(len(batch["texts"])) % 2 == 1  # [N]
        return batch

    def train_step(model, optimizer, batch, cfg, **k):
        seen.append((batch["truncated"].clone(), batch["adv"].clone(), cfg.reward_min))
        return {"skipped_updates": 0}

    monkeypatch.setattr(train.rollout, "generate", generate)
    monkeypatch.setattr(train, "train_step", train_step)
    train.main(argv(tiny_model_dir, data_file, tmp_path, "--steps", "1", "--overlong", overlong,
                    "--overlong-buffer", "6"))
    (truncated, adv, reward_min), = seen
    record, = read_metrics(tmp_path)
    assert record["truncated_frac"] == 0.5
    if overlong == "none":  # every reward is 1: no signal at all
        assert len(adv) == 8 and (adv == 0).all() and record["reward_mean"] == 1
    if overlong == "filter":  # rewards 1, 0, 1, 0 per group (a cut completion has no answer); the cut rows get no loss
        assert len(adv) == 4 and not truncated.any() and torch.allclose(adv, torch.ones(4), atol=1e-5)
        assert record["reward_mean"] == 0.5 and record["overlong_penalty_mean"] == 0
    if overlong == "penalty":  # buffer = max_new_tokens: penalty = -0.5 len / 6, -0.5 for the cut rows
        assert len(adv) == 8 and reward_min == -0.5 and record["overlong_penalty_mean"] < -0.25
        assert (adv[truncated] < 0).all() and (adv[~truncated] > 0).all()
    assert reward_min == (-0.5 if overlong == "penalty" else 0)


# --------------------------------------------------------------------------------------------- memory (memory.py)

def test_estimate_memory_needs_only_config_json(tiny_model_dir, tmp_path, capsys):
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    out = tmp_path / "run"
    train.main(["--model", str(config_only), "--estimate-memory", "--out", str(out), "--micro-batch-size", "2"])
    printed = capsys.readouterr().out
    est = memory.estimate(memory.load_config(str(config_only)), micro_batch_size=2, max_new_tokens=1024,
                          gen_rows=64 * 8, gradient_checkpointing=False, kl_coef=0.0)
    for phase in ("generate", "score", "train", "optimizer"):
        assert re.search(rf"peak in {phase} +{est[phase] / 2**30:.2f} GiB", printed), phase
    assert "512 rows" in printed
    assert not out.exists()  # nothing written, no weights read


def test_run_stops_before_the_first_step_when_memory_cannot_fit(tiny_model_dir, data_file, tmp_path, capsys,
                                                                 monkeypatch):
    """The CUDA path with a mocked figure: the GPU has 1 MiB for the run."""
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**20)
    with pytest.raises(SystemExit) as e:
        train.main(argv(tiny_model_dir, data_file, tmp_path))
    captured = capsys.readouterr()
    assert e.value.code == 2 and "GPU memory this run can use" in captured.out
    err = captured.err.strip().splitlines()[-1]  # (above it: transformers' loading progress bar)
    assert err.startswith("error: ") and "smaller model" in err
    assert not (tmp_path / "metrics.jsonl").exists()


# --------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("extra, words", [
    (["--group-size", "1"], "--group-size"),
    (["--micro-batch-size", "5"], "--micro-batch-size"),
    (["--mini-batches", "3"], "--mini-batches"),
    (["--resume"], "drop --resume"),
    (["--overlong-buffer", "0"], "--overlong-buffer"),
    (["--overlong-buffer", "7"], "--max-new-tokens 6"),
    (["--estimate-memory", "--model", "/nonexistent/model"], "config.json"),
])
def test_bad_input_is_one_line(extra, words, tiny_model_dir, data_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(argv(tiny_model_dir, data_file, tmp_path, *extra))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err


def test_refuses_to_overwrite_a_run(tiny_model_dir, data_file, tmp_path, capsys, reward_stub):
    train.main(argv(tiny_model_dir, data_file, tmp_path, "--steps", "1"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.main(argv(tiny_model_dir, data_file, tmp_path, "--steps", "1"))
    assert e.value.code == 2 and "--resume" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # resuming with other settings would silently change the run
        train.main(argv(tiny_model_dir, data_file, tmp_path, "--steps", "2", "--lr", "1e-3", "--resume"))
    assert e.value.code == 2 and "--lr" in capsys.readouterr().err


@pytest.mark.parametrize("offline", [True, False])
def test_a_real_model_offline_names_eval_data_for_the_default_eval_set(offline, tiny_model_dir, tmp_path, capsys,
                                                                      monkeypatch):
    # a real model evaluates math500 every 50 steps by default; with no Hub (HF_HUB_OFFLINE, or no connection:
    # the network is mocked) the one-line error names train.py's flag for it, --eval-data, at once
    import urllib.error
    import urllib.request

    import huggingface_hub
    import huggingface_hub.constants as hub

    def refused(request, timeout):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(urllib.request, "urlopen", refused)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kw: pytest.fail("download retried"))
    with pytest.raises(SystemExit) as e:
        train.main(["--model", str(tiny_model_dir), "--data", "toy", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and "\n" not in err
    assert "preset 'math500'" in err and err.endswith("pass a local copy with --eval-data path/to/math500.jsonl, "
                                                    "or train without evaluating: --eval-every 0")


@pytest.mark.parametrize("extra", [["--data", "/nonexistent/problems.jsonl"], ["--algo", "ppo"]])
def test_cli_exits_2_without_traceback(extra, tiny_model_dir, tmp_path):
    cmd = [sys.executable, str(REPO / "train.py"), "--model", str(tiny_model_dir), "--out", str(tmp_path), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith(
        ("error: ", "train.py: error:"))


# --------------------------------------------------------------------------------------------- the GPU path, on a CPU

def test_checkpoint_keeps_use_cache_and_the_sampling_gap_is_logged(tiny_model_dir, data_file, tmp_path):
    """Gradient checkpointing turns the KV cache off for training; the saved config.json must not keep that (an
    inference load would then generate without a cache). The sampling gap is logged every step: on a CPU in fp32 the
    sampling and the scoring policy are the same, so it is ~0."""
    train.main(argv(tiny_model_dir, data_file, tmp_path, "--steps", "1", "--gradient-checkpointing"))
    saved = json.loads((tmp_path / "checkpoints" / "step_1" / "config.json").read_text())
    assert saved["use_cache"] is True
    record, = read_metrics(tmp_path)
    assert 0 <= record["sample_logp_gap_mean"] <= record["sample_logp_gap_max"] <= 1e-4


def test_in_training_eval_sizes_its_generate_calls_for_its_own_prompts(tiny_model_dir, data_file, tmp_path,
                                                                        monkeypatch):
    """The eval's generate calls are sized (memory.gen_batch_size) for the eval problems -- their number and their
    longest prompt -- not reused from the training step's."""
    eval_file = tmp_path / "eval.jsonl"
    long_problem = {"id": "long", "problem": "x " * 60 + "What is 1+1?", "answer": "2"}
    eval_file.write_text("".join(json.dumps(p) + "\n" for p in [long_problem, *toy.toy_problems(2, seed=99)]))
    calls, real = [], memory.gen_batch_size
    monkeypatch.setattr(memory, "gen_batch_size", lambda model, rows, prompt_tokens, new, **kw: calls.append(
        (rows, prompt_tokens)) or real(model, rows, prompt_tokens, new, **kw))
    train.main(argv(tiny_model_dir, data_file, tmp_path / "run", "--steps", "1", "--eval-every", "1",
                    "--eval-data", str(eval_file), "--eval-n", "3"))
    (train_rows, train_tokens), (eval_rows, eval_tokens) = calls
    assert train_rows == 8 and eval_rows == 3 and eval_tokens > train_tokens + 60  # 120 characters more than the toy problems
    assert "eval_avg@1" in read_metrics(tmp_path / "run")[0]
