"""rollout.py: loading, prompts, generation masks, and exact chunked scoring against a naive log-softmax."""
import pytest
import torch

import rollout
import toy
from rollout import UserError


@pytest.fixture(scope="module")
def tiny():
    """In-memory random 2-layer Qwen2 + character tokenizer (pad == eos), as load_model would set it up."""
    tokenizer = toy.make_tokenizer()
    torch.manual_seed(0)
    model = toy.make_model(len(tokenizer), n_layers=2).eval()
    return model, tokenizer


PROMPTS = ["Ann has 3 pens. How many?", "Bob has 12 eggs, gets 40 more, gives away 7. How many eggs?"]


# ---------------------------------------------------------------------------------------------- loading

def test_alias_resolution():
    assert rollout.resolve_model_name("Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    assert rollout.resolve_model_name("qwen2.5-math-1.5b") == "Qwen/Qwen2.5-Math-1.5B"
    assert rollout.resolve_model_name("Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"
    assert rollout.resolve_model_name("someone/their-model") == "someone/their-model"  # hub ids pass through


def test_saved_model_loads_back(tiny, tmp_path):
    model, tokenizer = tiny
    tokenizer = toy.make_tokenizer()
    tokenizer.pad_token = None  # a tokenizer without a pad token gets eos as pad
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = rollout.load_model(str(tmp_path), device="cpu")
    assert loaded.dtype == torch.float32 and loaded_tok.padding_side == "left"
    assert loaded_tok.pad_token_id == loaded_tok.eos_token_id == 0
    for (name, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("name", ["/no/such/dir", "./no_such_dir", "nobody/no-such-model-xyz"])
def test_load_failure_is_one_line_naming_the_fix(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        rollout.load_model(name, device="cpu")
    message = str(e.value)
    assert "\n" not in message and name.lstrip("./") in message
    assert "--model" in message


def test_transformers_older_than_the_bound_is_one_line_naming_the_fix(tiny_model_dir, monkeypatch):
    """requirements.txt's bound is load_model's (and .ci/oldest installs exactly it); an older transformers is
    refused before it can fail with a raw traceback (4.51.0, or 4.55 with dtype=, did: issue 14)."""
    import transformers
    from pathlib import Path
    requirements = (Path(rollout.__file__).parent / "requirements.txt").read_text().splitlines()
    assert f"transformers>={rollout.MIN_TRANSFORMERS}" in requirements
    monkeypatch.setattr(transformers, "__version__", "4.51.0")
    with pytest.raises(UserError) as e:
        rollout.load_model(str(tiny_model_dir), device="cpu")
    assert "\n" not in str(e.value) and f"pip install 'transformers>={rollout.MIN_TRANSFORMERS}'" in str(e.value)


# ---------------------------------------------------------------------------------------------- prompts

def test_prompt_templates(tiny):
    _, tokenizer = tiny
    prompt = rollout.build_prompt("What is 1+1?", tokenizer, "plain")
    assert prompt.startswith("What is 1+1?\n") and "\\boxed{}" in prompt and "step by step" in prompt
    with pytest.raises(UserError, match="no chat template"):
        rollout.build_prompt("What is 1+1?", tokenizer, "chat")
    with pytest.raises(UserError, match="plain"):
        rollout.build_prompt("What is 1+1?", tokenizer, "fancy")
    tokenizer = toy.make_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    chat = rollout.build_prompt("What is 1+1?", tokenizer, "chat")
    assert chat.startswith("<u>What is 1+1?\n") and chat.endswith("</u><a>") and "\\boxed{}" in chat
    # chat-example: the worked example as an earlier exchange, then the problem
    shot = rollout.build_prompt("What is 1+1?", tokenizer, "chat-example")
    assert shot.startswith("<u>What is 3 + 4?\n") and "</u><u>3 + 4 = 7, so the answer is \\boxed{7}.</u>" in shot
    assert shot.endswith("<u>What is 1+1?\n" + chat[len("<u>What is 1+1?\n"):])


# ---------------------------------------------------------------------------------------------- generation

def test_generate_shapes_left_padding_and_masks(tiny):
    model, tokenizer = tiny
    torch.manual_seed(0)
    out = rollout.generate(model, tokenizer, PROMPTS, 3, max_new_tokens=12, batch_size=4)  # 6 rows, 2 batches
    N, P = out["prompt_ids"].shape
    assert N == 6 and out["completion_ids"].shape == out["completion_mask"].shape == (6, out["completion_ids"].shape[1])
    for i, prompt in enumerate(PROMPTS):
        ids = tokenizer(prompt)["input_ids"]
        for row in range(i * 3, i * 3 + 3):  # samples of prompt i are rows i*n .. i*n+n-1
            mask = out["prompt_mask"][row]
            assert mask.tolist() == [0] * (P - len(ids)) + [1] * len(ids)  # left padding
            assert out["prompt_ids"][row, P - len(ids):].tolist() == ids
            assert (out["prompt_ids"][row, :P - len(ids)] == tokenizer.pad_token_id).all()
    mask = out["completion_mask"]
    assert (mask[:, 1:] <= mask[:, :-1]).all()  # a prefix of ones
    for row in range(N):
        ids = out["completion_ids"][row]
        assert out["texts"][row] == tokenizer.decode(ids[mask[row].bool()], skip_special_tokens=True)
        assert out["truncated"][row] == (ids[mask[row].bool()] != tokenizer.eos_token_id).all()


def _fake_generate(completions):
    """A stand-in for model.generate returning the prompt followed by hand-written completions."""
    def fake(input_ids, attention_mask, **kwargs):
        return torch.cat([input_ids, torch.tensor(completions)], 1)
    return fake


@pytest.mark.parametrize("pad_is_eos", [True, False])
def test_completion_mask_keeps_first_eos_and_drops_what_follows(tiny, monkeypatch, pad_is_eos):
    model, tokenizer = tiny
    tokenizer = toy.make_tokenizer()
    if not pad_is_eos:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    E, D = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert (E == D) == pad_is_eos
    completions = [[5, 6, E, D, D],   # EOS at 2: kept; padding after it is not
                   [5, 6, 7, 8, 9],   # no EOS: truncated, every token kept
                   [E, D, D, D, D],   # stops at once: only the EOS is an action
                   [5, 6, 7, 8, E]]   # EOS as the very last token: not truncated
    monkeypatch.setattr(model, "generate", _fake_generate(completions))
    out = rollout.generate(model, tokenizer, ["a", "bc"], 2, max_new_tokens=5)
    assert out["completion_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert out["truncated"].tolist() == [False, True, False, False]
    assert out["texts"][0] == tokenizer.decode([5, 6]) and out["texts"][2] == ""


def test_sampling_knobs_are_passed_through(tiny, monkeypatch):
    model, tokenizer = tiny
    seen = []
    real = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: seen.append(kw) or real(**kw))
    rollout.generate(model, tokenizer, PROMPTS[:1], 2, temperature=0.7, top_p=0.9, max_new_tokens=3)
    kw = seen[-1]
    assert (kw["do_sample"], kw["temperature"], kw["top_p"], kw["max_new_tokens"]) == (True, 0.7, 0.9, 3)
    assert kw["top_k"] == 0 and kw["repetition_penalty"] == 1.0  # no hidden top-k 50 / checkpoint defaults
    rollout.generate(model, tokenizer, PROMPTS[:1], 1, temperature=0.0, max_new_tokens=3)
    assert seen[-1]["do_sample"] is False and "temperature" not in seen[-1]


def test_generation_is_deterministic_under_a_seed(tiny):
    model, tokenizer = tiny
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(rollout.generate(model, tokenizer, PROMPTS, 2, max_new_tokens=8))
    assert torch.equal(runs[0]["completion_ids"], runs[1]["completion_ids"])
    torch.manual_seed(124)
    other = rollout.generate(model, tokenizer, PROMPTS, 2, max_new_tokens=8)
    assert not torch.equal(runs[0]["completion_ids"], other["completion_ids"])


def test_kv_cache_stores_bf16_keys_under_autocast_with_identical_logits(tiny):
    """Under bf16 autocast HF's cache keeps RoPE's fp32 keys beside bf16 values; rollout.kv_cache stores the keys in
    bf16. Attention casts them to bf16 anyway, so every logit generate sees is bit-identical, and the cache is 1/3 smaller."""
    model, tokenizer = tiny
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    outs = []
    for cache in ({}, rollout.kv_cache(model)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(model.generate(**enc, max_new_tokens=6, do_sample=False, output_logits=True, **cache,
                                       return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id))
    (hf, ours), caches = outs, [dict(o.items()).get("cache", dict(o.items()).get("past_key_values")) for o in outs]
    assert all(torch.equal(a, b) for a, b in zip(hf.logits, ours.logits)) and torch.equal(hf.sequences, ours.sequences)
    hf_layer, our_layer = caches[0].layers[0], caches[1].layers[0]
    assert (hf_layer.keys.dtype, hf_layer.values.dtype) == (torch.float32, torch.bfloat16)  # what the fix is for
    assert (our_layer.keys.dtype, our_layer.values.dtype) == (torch.bfloat16, torch.bfloat16)
    assert torch.equal(our_layer.keys, hf_layer.keys.bfloat16())
    nbytes = [sum(t.nbytes for layer in c.layers for t in (layer.keys, layer.values)) for c in caches]
    assert nbytes[1] * 3 == nbytes[0] * 2


def test_greedy_generation_does_not_depend_on_padding(tiny):
    """Alone in its batch a prompt has no padding; beside a longer one it is left-padded. Same greedy tokens."""
    model, tokenizer = tiny
    together = rollout.generate(model, tokenizer, PROMPTS, 1, temperature=0, max_new_tokens=10, batch_size=2)
    alone = rollout.generate(model, tokenizer, PROMPTS[:1], 1, temperature=0, max_new_tokens=10, batch_size=1)
    T = alone["completion_ids"].shape[1]
    assert torch.equal(together["completion_ids"][0, :T], alone["completion_ids"][0])


# ---------------------------------------------------------------------------------------------- scoring

def naive_logprobs(model, batch, temperature):
    """The textbook computation: full logits, fp32 log_softmax over [B, T, V]."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    P = batch["prompt_ids"].shape[1]
    logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    logp_all = (logits[:, P - 1:-1].float() / temperature).log_softmax(-1)  # [B, T, V]
    keep = batch["completion_mask"].float()
    logp = logp_all.gather(-1, batch["completion_ids"][..., None]).squeeze(-1) * keep
    entropy = -(logp_all.exp() * logp_all).sum(-1) * keep
    return logp, entropy


@pytest.fixture(scope="module")
def batch(tiny):
    model, tokenizer = tiny
    torch.manual_seed(1)
    return rollout.generate(model, tokenizer, PROMPTS, 3, max_new_tokens=10)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_scoring_equals_naive_log_softmax(tiny, batch, temperature, monkeypatch):
    model, _ = tiny
    monkeypatch.setattr(rollout, "CHUNK_ROWS", 7)  # several chunks, the last one partial
    with torch.no_grad():
        ref_logp, ref_entropy = naive_logprobs(model, batch, temperature)
    for micro in (1, 4):
        logp, entropy = rollout.score(model, batch, micro, temperature=temperature)
        torch.testing.assert_close(logp, ref_logp, atol=1e-5, rtol=0)
        torch.testing.assert_close(entropy, ref_entropy, atol=1e-5, rtol=0)
    # the temperature really is applied: at T != 1 the scores differ from those at T = 1
    if temperature != 1.0:
        logp_1, _ = rollout.score(model, batch, 6, temperature=1.0)
        assert (logp_1 - ref_logp).abs().max() > 1e-2


@pytest.mark.parametrize("with_entropy", [True, False])  # False: the training path of every non-ERC algorithm
def test_scoring_gradient_equals_naive(tiny, batch, monkeypatch, with_entropy):
    model, _ = tiny
    monkeypatch.setattr(rollout, "CHUNK_ROWS", 5)
    keys = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
    weights = torch.randn(batch["completion_ids"].shape)
    model.zero_grad()
    logp, entropy = rollout.completion_logprobs(model, *(batch[k] for k in keys), temperature=0.8,
                                                with_entropy=with_entropy)
    assert logp.requires_grad and (entropy is None if not with_entropy else not entropy.requires_grad)
    (logp * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    (naive_logprobs(model, batch, 0.8)[0] * weights).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)
    model.zero_grad()


@pytest.mark.parametrize("scale, boost, temperature", [(1, 0, 1.0), (3, 0, 1.0), (2, 10, 1.0), (2, 15, 1.0),
                                                       (2, 20, 1.0), (2, 10, 0.6)])
def test_entropy_keeps_its_relative_precision_on_confident_tokens(scale, boost, temperature):
    """The scored entropy against float64, from logits as a confident LM makes them (a top logit of 20-40): within
    5e-6 relative from H ~ 10 down to H ~ 1e-8. The textbook logsumexp(z) - sum p z in fp32 is off by 4 % at
    H ~ 0.01 and by 100 % below 1e-6 (checked below), noise larger than ERC's band of +-5 % on the entropy ratio."""
    torch.manual_seed(0)
    M, V = 16, 5000
    z = torch.randn(M, V) * scale
    z[:, 0] += z.max(-1).values + boost  # one dominant token per row
    h, weight = torch.eye(M), z.T.contiguous()  # logits = h @ weight.T = z
    tokens = torch.zeros(M, dtype=torch.long)
    _, entropy = rollout._chunk_logp_entropy(h, tokens, weight, None, temperature, with_entropy=True)  # [M]
    p = (z.double() / temperature).softmax(-1)  # [M, V] float64 reference
    exact = -(p * torch.special.xlogy(1, p)).sum(-1)  # [M]
    assert exact.min() > 1e-8
    assert ((entropy.double() - exact) / exact).abs().max() < 5e-6
    if boost >= 10:  # the cancelling form fails where this one holds
        zt = z / temperature
        textbook = zt.logsumexp(-1) - zt.softmax(-1).mul(zt).sum(-1)  # [M]
        assert ((textbook.double() - exact) / exact).abs().max() > 1e-2


def test_scores_match_the_distribution_generate_sampled_from(tiny):
    """generate's own per-step logits (KV cache, left padding) give the same log-probs as the one-pass scorer."""
    model, tokenizer = tiny
    torch.manual_seed(2)
    out = rollout.generate(model, tokenizer, PROMPTS, 2, temperature=0.7, max_new_tokens=8)
    T = out["completion_ids"].shape[1]
    torch.manual_seed(2)  # same seed, same batch: the same samples, now with their logits
    hf = model.generate(input_ids=out["prompt_ids"], attention_mask=out["prompt_mask"], do_sample=True,
                        temperature=0.7, top_p=1.0, top_k=0, max_new_tokens=8, eos_token_id=[tokenizer.eos_token_id],
                        pad_token_id=tokenizer.pad_token_id, output_logits=True, return_dict_in_generate=True)
    assert torch.equal(hf.sequences[:, out["prompt_ids"].shape[1]:], out["completion_ids"])
    logits = torch.stack(hf.logits, 1)[:, :T].float() / 0.7  # [N, T, V] raw logits at each generation step
    gen_logp = logits.log_softmax(-1).gather(-1, out["completion_ids"][..., None]).squeeze(-1) * out["completion_mask"]
    logp, _ = rollout.score(model, out, 4, temperature=0.7)
    torch.testing.assert_close(logp, gen_logp, atol=1e-4, rtol=0)


@pytest.mark.parametrize("grad", [False, True])  # False: rollout.score (pi_old, pi_ref); True: the training forward
def test_logprobs_are_fp32_under_bf16_autocast(toy_dir, grad, monkeypatch):
    """Under bf16 autocast (train.py on CUDA) the lm_head chunk, log-softmax and entropy run in fp32: log pi and the
    entropy are within 1e-4 of a float64 lm_head + log-softmax on the same hidden states. (With the lm_head in bf16,
    as autocast runs it, they were 0.078 off on this model: logits of 8-32 rounded to 0.06-0.125.)"""
    model, tokenizer = rollout.load_model(str(toy_dir), device="cpu")
    monkeypatch.setattr(rollout, "CHUNK_ROWS", 50)  # several chunks
    torch.manual_seed(0)
    prompts = [rollout.build_prompt(p["problem"], tokenizer) for p in toy.toy_problems(4, seed=3)]
    batch = rollout.generate(model, tokenizer, prompts, 4, max_new_tokens=24)  # [16, T] sampled at temperature 1
    keys = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)  # [B, P + T]
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)  # [B, P + T]
    P, keep = batch["prompt_ids"].shape[1], batch["completion_mask"].bool()  # keep: [B, T]
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(grad):
        logp, entropy = rollout.completion_logprobs(model, *(batch[k] for k in keys), temperature=0.7)  # [B, T]
        hidden = model.base_model(input_ids=ids, attention_mask=mask,
                                  position_ids=(mask.cumsum(1) - 1).clamp(min=0)).last_hidden_state  # [B, P + T, H]
    assert logp.dtype == entropy.dtype == torch.float32 and logp.requires_grad == grad
    z = hidden[:, P - 1:-1].detach().double() @ model.lm_head.weight.detach().double().T / 0.7  # [B, T, V]
    assert z[keep].abs().max() > 8  # logits where bf16 rounds in steps of 0.06 and more
    logp_all = z.log_softmax(-1)  # [B, T, V]
    ref_logp = logp_all.gather(-1, batch["completion_ids"][..., None]).squeeze(-1)  # [B, T]
    ref_entropy = -(logp_all.exp() * logp_all).sum(-1)  # [B, T]
    assert (logp.detach().double() - ref_logp)[keep].abs().max() <= 1e-4
    assert (entropy.double() - ref_entropy)[keep].abs().max() <= 1e-4


# ---------------------------------------------------------------------------------------------- sampling = scoring

def test_sample_logp_is_the_scored_logp(tiny):
    """generate's recorded log pi(token) at sampling time equals the one-pass scorer's (fp32, no autocast): the
    recorder sees raw logits (before temperature and top-p) and pairs each step's distribution with its token."""
    model, tokenizer = tiny
    torch.manual_seed(3)
    out = rollout.generate(model, tokenizer, PROMPTS, 3, temperature=0.7, max_new_tokens=10)
    logp, _ = rollout.score(model, out, 4, temperature=0.7)
    assert out["sample_logp"].shape == logp.shape and (out["sample_logp"][out["completion_mask"] == 0] == 0).all()
    torch.testing.assert_close(out["sample_logp"], logp, atol=1e-4, rtol=0)
    assert rollout.generate(model, tokenizer, PROMPTS, 1, temperature=0.0, max_new_tokens=4)["sample_logp"] is None


def test_sampling_from_fp32_logits_closes_the_gap_under_bf16_autocast(toy_dir, monkeypatch):
    """Under bf16 autocast (CUDA's setting, forced here on the CPU) the sampled tokens' log pi at sampling time and
    the scored pi_old differ: by the bf16 lm_head's rounding (logits of 8-32 in steps of 0.06-0.125) unless
    generate's lm_head runs in fp32 as the scorer's does. What remains with the fix is the decoder's own bf16
    arithmetic along two paths (KV cache vs one pass)."""
    model, tokenizer = rollout.load_model(str(toy_dir), device="cpu")
    prompts = [rollout.build_prompt(p["problem"], tokenizer) for p in toy.toy_problems(8, seed=5)]

    def gap():
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            batch = rollout.generate(model, tokenizer, prompts, 4, max_new_tokens=24)
            logp, _ = rollout.score(model, batch, 16, with_entropy=False)
        keep = batch["completion_mask"].bool()
        return (batch["sample_logp"] - logp)[keep].abs()

    fixed = gap()
    monkeypatch.setattr(rollout, "fp32_lm_head", lambda model: __import__("contextlib").nullcontext())
    unfixed = gap()
    print(f"sampling gap under CPU bf16 autocast: fp32 lm_head max {fixed.max():.4f} mean {fixed.mean():.5f}; "
          f"bf16 lm_head max {unfixed.max():.4f} mean {unfixed.mean():.5f}")
    assert fixed.mean() < unfixed.mean() / 2 and fixed.max() < unfixed.max()


# ---------------------------------------------------------------------------------------------- the fp32 / TF32 lm_head

def round_to_tf32(x):
    """x rounded to TF32's 10-bit mantissa (round to nearest on the fp32 bit pattern), kept in fp32."""
    bits = x.float().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def test_tf32_lm_head_error_is_small_and_bf16s_is_not(toy_dir):
    """TF32's log pi error, emulated on the CPU by rounding the lm_head's inputs to a 10-bit mantissa (what the
    tensor cores read; they accumulate in fp32 and return fp32), against fp64: <= 2e-3 here, and far below the
    error of autocast's bf16 lm_head (bf16 inputs, and bf16 logits: steps of 0.06-0.125 at 8-32)."""
    model, tokenizer = rollout.load_model(str(toy_dir), device="cpu")
    prompts = [rollout.build_prompt(p["problem"], tokenizer) for p in toy.toy_problems(8, seed=6)]
    torch.manual_seed(0)
    batch = rollout.generate(model, tokenizer, prompts, 4, max_new_tokens=24)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        h = model.base_model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0))
    P, keep = batch["prompt_ids"].shape[1], batch["completion_mask"].bool()
    h, tokens, W = h.last_hidden_state[:, P - 1:-1][keep], batch["completion_ids"][keep], model.lm_head.weight.detach()

    def logp(a, b, out=torch.float64):  # products accumulated in fp64, the logits rounded to `out`
        return (a.double() @ b.double().T).to(out).double().log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1)

    exact = logp(h, W)
    tf32 = (logp(round_to_tf32(h), round_to_tf32(W), torch.float32) - exact).abs().max().item()
    bf16 = (logp(h.bfloat16(), W.bfloat16(), torch.bfloat16) - exact).abs().max().item()  # autocast: bf16 logits
    print(f"lm_head log pi error against fp64: TF32 (emulated) {tf32:.2e}, bf16 {bf16:.2e}")
    assert tf32 <= 2e-3 and tf32 < bf16 / 8


def test_linear32_sets_tf32_in_forward_and_backward_and_matches_linear(monkeypatch):
    calls = []
    real = rollout._tf32
    monkeypatch.setattr(rollout, "_tf32", lambda enabled: calls.append(enabled) or real(enabled))
    torch.manual_seed(0)
    h, W = torch.randn(6, 8, requires_grad=True), torch.randn(11, 8, requires_grad=True)
    g = torch.randn(6, 11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rollout.linear32(h, W)
    assert out.dtype == torch.float32
    out.backward(g)
    assert calls == [rollout.LM_HEAD_TF32] * 2  # forward, backward
    h2, W2 = h.detach().clone().requires_grad_(), W.detach().clone().requires_grad_()
    torch.nn.functional.linear(h2, W2).backward(g)
    torch.testing.assert_close(out, torch.nn.functional.linear(h2, W2).detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(h.grad, h2.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(W.grad, W2.grad, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- chat end of turn

def test_chat_template_end_of_turn_stops_generation_when_eos_is_endoftext(tiny):
    """A base Qwen tokenizer: EOS <|endoftext|>, a ChatML template that closes turns with <|im_end|>. Under
    --template chat the model ends its answer with <|im_end|>, so that must stop generation too."""
    model, tokenizer = tiny
    tokenizer = toy.make_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|endoftext|>" and rollout.end_of_turn_id(tokenizer) == im_end
    assert im_end in rollout.eos_token_ids(model, tokenizer)
    assert rollout.end_of_turn_id(toy.make_tokenizer()) is None  # no template: nothing added


def test_the_flat_modules_import_one_another_without_a_circle():
    """rollout.py is the lower layer and toy.py is built on it (prompts, sampler): rollout imports nothing of toy,
    not even lazily inside a function; "toy" reaches load_model through rollout.BUILT_MODELS, which toy fills.
    gguf_convert.py sits below rollout (its errors are its own GGUFError) and imports nothing of ours."""
    import ast
    from pathlib import Path

    repo = Path(rollout.__file__).parent
    modules = {p.stem for p in repo.glob("*.py")}
    imports = {}
    for name in modules:
        tree = ast.parse((repo / f"{name}.py").read_text())
        found = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
        found |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                  and node.module and node.level == 0}
        imports[name] = found & modules - {name}
    assert "toy" not in imports["rollout"] and "rollout" in imports["toy"] and imports["gguf_convert"] == set()

    def circle(path):
        for nxt in imports[path[-1]]:
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            found = circle(path + [nxt])
            if found:
                return found
        return None
    assert [c for name in sorted(modules) if (c := circle([name]))] == []


def test_load_model_toy_without_toy_imported_is_one_line_naming_the_fix(monkeypatch):
    monkeypatch.delitem(rollout.BUILT_MODELS, "toy")
    with pytest.raises(UserError, match=r"import toy before rollout.load_model\('toy'\)"):
        rollout.load_model("toy", device="cpu")


def test_thinking_switch_reaches_the_chat_template(tiny):
    """Qwen3's template opens an empty <think></think> block when enable_thinking is False; unset, the template's
    own default applies (no variable passed)."""
    _, tokenizer = tiny
    tokenizer = toy.make_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
                               "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}"
                               "{% if enable_thinking is defined and enable_thinking %}[think on]{% endif %}")
    off = rollout.build_prompt("1+1?", tokenizer, "chat", rollout.thinking("off"))
    on = rollout.build_prompt("1+1?", tokenizer, "chat", rollout.thinking("on"))
    default = rollout.build_prompt("1+1?", tokenizer, "chat", rollout.thinking(None))
    assert off.endswith("<assistant><think></think>") and on.endswith("[think on]") and default.endswith("<assistant>")
