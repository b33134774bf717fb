"""memory.py: the parameter count and the estimate against hand arithmetic for a small config, the activation
terms against the tensors autograd really saves, every phase's estimate against what train.py's code allocates
(benchmarks/memory_check.py at tiny shapes), rows per generate call, and the stop-before-OOM check."""
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

import memory
import rollout

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import memory_check  # noqa: E402

# h 64, MLP 128, 2 layers, 4 heads of 16 (q = 64), 2 KV heads (kv = 32), vocabulary 100, tied embeddings
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=100, tie_word_embeddings=True)
# embedding 100*64 = 6,400; a layer: q, o 2*64*64 = 8,192, k, v 2*64*32 = 4,096, q/k/v biases 64 + 32 + 32 = 128,
# MLP 3*64*128 = 24,576, two norms 128 -> 37,120; 2 layers 74,240; final norm 64
SMALL_PARAMS = 6_400 + 74_240 + 64
SMALL_LINEAR = 2 * (8_192 + 4_096 + 128 + 24_576)  # what autocast casts: 73,984


def test_n_params_by_hand_and_against_the_real_models():
    assert memory.n_params(Qwen2Config(**SMALL)) == SMALL_PARAMS
    assert memory.n_params(Qwen2Config(**SMALL), linear_only=True) == SMALL_LINEAR
    for config in (Qwen2Config(**SMALL), Qwen2Config(**{**SMALL, "tie_word_embeddings": False}),
                   Qwen3Config(**SMALL, head_dim=16), Qwen3Config(**{**SMALL, "head_dim": 32})):
        model = (Qwen2ForCausalLM if config.model_type == "qwen2" else Qwen3ForCausalLM)(config)
        assert memory.n_params(config) == sum(p.numel() for p in model.parameters()), config.model_type
        linear = [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
        assert memory.n_params(config, linear_only=True) == sum(p.numel() for m in linear for p in m.parameters())


def test_estimate_by_hand():
    est = memory.estimate(Qwen2Config(**SMALL), micro_batch_size=2, max_new_tokens=16, gen_rows=8,
                          gradient_checkpointing=False, kl_coef=0.0, prompt_tokens=16)
    P, C = SMALL_PARAMS, SMALL_LINEAR
    # a micro-batch: 2 x (16 + 16) = 64 tokens. Per token and layer A = 26*64 + 8*128 + 8*64 + 4*4 heads + 2*32 + 40
    # = 3,320; once T = 16*64 + 8*16 + 24 = 1,176: 64 x (2 x 3,320 + 1,176) = 500,224
    # lm_head chunk: min(512, 2 * 16) = 32 rows x 100 = 3,200 logits: max(3,200 x 20, 3,200 x 4 + 4 x 100 x 64);
    # weight-gradient buffer 4 x 100 x 64 = 25,600
    # scoring, 4 micro-batches = 256 tokens: F = max(8*64 + 16*64 + 6*32 + 4*4 + 4*32, 12*64 + 6*128) + 4*64 + 8*16
    # + 32 + 24 = 2,312 per token, 591,872, more than 256 x 8 x 64 + 128 rows x 100 x 8 = 233,472 at the lm_head
    # a generate row: the end, 32 tokens x (2 layers x 2 x 32 x 2 bytes + 2 x 32 + 40) + 100 x 24 = 13,920, or the
    # prefill, 16 x (F = 2,232 at 16 tokens + 256) = 39,808, which is larger
    assert est["parts"] == {"weights (fp32)": 4 * P, "gradients (fp32)": 4 * P, "AdamW m, v (fp32)": 8 * P,
                            "autocast bf16 weight copies": 2 * C, "reference model (fp32)": 0,
                            "activations, one micro-batch": 500_224, "lm_head chunk": 64_000,
                            "lm_head weight gradients": 25_600, "recomputed layer (checkpointing)": 0,
                            "no-grad micro-batch (scoring)": 591_872, "AdamW step temporaries": 0,
                            "generation: KV cache + sampling": 8 * 39_808, "CUDA context, slack": 1.5 * 2 ** 30}
    fixed = 12 * P + 2 * C + 1.5 * 2 ** 30
    assert est["train"] == fixed + 4 * P + 500_224 + 64_000 + 25_600
    assert est["score"] == fixed + 591_872
    assert est["optimizer"] == fixed + 4 * P
    assert est["generate"] == fixed + 8 * 39_808 and est["peak"] == est["train"]
    foreach = memory.estimate(Qwen2Config(**SMALL), micro_batch_size=2, max_new_tokens=16, gen_rows=8,
                              gradient_checkpointing=False, kl_coef=0.0, prompt_tokens=16, fused_adamw=False)
    assert foreach["optimizer"] == fixed + 8 * P  # foreach AdamW's sqrt(v) temporary: 20 bytes per parameter
    ckpt = memory.estimate(Qwen2Config(**SMALL), micro_batch_size=2, max_new_tokens=16, gen_rows=8,
                           gradient_checkpointing=True, kl_coef=0.1, prompt_tokens=16)
    # each layer's fp32 input and T, 64 x (2 x 4 x 64 + 1,176); the layer recomputed in backward, 64 x 3,320, comes
    # after the lm_head chunk and is larger than it; reference fp32
    assert ckpt["parts"]["activations, one micro-batch"] == 64 * (2 * 256 + 1_176)
    assert ckpt["train"] == fixed + 4 * P + 64 * (2 * 256 + 1_176) + 64 * 3_320 + 25_600 + 4 * P
    assert ckpt["parts"]["reference model (fp32)"] == 4 * P


def test_the_end_of_generation_by_hand(monkeypatch):
    """Long completions of a short prompt: the end of generation, not the prefill, is a row's peak; top-p's sort and
    (with a transformers that repeats K and V at each decode step) the repeated K and V add to it."""
    config = Qwen2Config(**SMALL)
    monkeypatch.setattr(memory, "decode_repeats_kv", lambda: False)
    # 4 + 124 = 128 tokens x (256 KV cache + 2 x 32 + 40) + 100 x 24 = 48,480; prefill 4 x (F + 256): far less
    assert memory.generation_bytes_per_row(config, 4, 124) == 128 * 360 + 2_400
    assert memory.generation_bytes_per_row(config, 4, 124, top_p=0.95) == 128 * 360 + 100 * (24 + 20)
    monkeypatch.setattr(memory, "decode_repeats_kv", lambda: True)
    assert memory.generation_bytes_per_row(config, 4, 124) == 128 * (360 + 4 * 64) + 2_400


def test_train_py_passes_top_p_to_the_estimate():
    import train

    config = Qwen2Config(**SMALL)
    args = train.resolve_args(train.parse_args(["--max-new-tokens", "124", "--top-p", "0.9"]))
    rows = args.prompts_per_step * args.group_size
    def gen(top_p):  # 4-token prompts, 124 new tokens: the end of generation is a row's peak
        est = train.memory_estimate(config, SimpleNamespace(**{**vars(args), "top_p": top_p}), prompt_tokens=4)
        return est["parts"]["generation: KV cache + sampling"]

    assert gen(0.9) - gen(1.0) == rows * 100 * memory.TOP_P_BYTES


def saved_per_token_layer(kind, shape: dict, length: int) -> float:
    """Bytes per token of the distinct non-parameter tensors autograd saves in one decoder layer under bf16 autocast
    with a left-padding mask: the growth from 1 to 2 layers, less the layer's bf16 weight copies (autocast's, which
    its linear layers save; not the biases), per token of 2 rows of `length`."""
    config_cls, model_cls = kind
    models = {}

    def saved(layers):
        torch.manual_seed(0)
        model = models[layers] = model_cls(config_cls(**{**shape, "num_hidden_layers": layers}))
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        mask = torch.ones(2, length, dtype=torch.long)
        mask[1, :length // 2] = 0  # left padding
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
            model.model(input_ids=torch.randint(1, 100, (2, length)), attention_mask=mask,
                        position_ids=(mask.cumsum(1) - 1).clamp(min=0), use_cache=False)
        return sum(v for ptr, v in seen.items() if ptr not in params)

    growth = saved(2) - saved(1)
    layer = models[2].model.layers[1]
    weight_copies = 2 * sum(m.weight.numel() for m in layer.modules() if isinstance(m, torch.nn.Linear))
    return (growth - weight_copies) / (2 * length)


@pytest.mark.parametrize("kind, shape", [((Qwen2Config, Qwen2ForCausalLM), {**SMALL, "hidden_size": 128,
                                                                              "intermediate_size": 384}),
                                         ((Qwen3Config, Qwen3ForCausalLM), {**SMALL, "head_dim": 32,
                                                                              "intermediate_size": 256})],
                         ids=["qwen2", "qwen3 (heads x head_dim = 2 x hidden, q/k norms)"])
def test_activation_terms_match_what_autograd_saves(kind, shape):
    """A of memory.py, per token and layer, at two lengths (its mask term grows with them): what autograd saves on
    the CPU, where the mask's rows are not padded to 16 as on CUDA (the 32 bytes A counts for that)."""
    for length in (32, 64):
        A, _ = memory.saved_per_token(kind[0](**shape), length)
        assert saved_per_token_layer(kind, shape, length) == A - 32, length


@pytest.fixture(scope="module")
def measured():
    """benchmarks/memory_check.py's measurements: one train.py step per tiny shape, phase by phase (~15 s)."""
    return {name: memory_check.measure(name) for name in memory_check.SHAPES}


@pytest.mark.parametrize("shape", list(memory_check.SHAPES))
def test_every_phase_estimate_covers_what_is_allocated(measured, shape):
    """estimate / measured in [1.00, 1.15] for every phase: never below what train.py's code allocates, at most
    15 % above it."""
    ratios = {phase: r["estimate"] / r["measured"] for phase, r in measured[shape].items()}
    assert set(ratios) == set(memory_check.PHASES)
    outside = {phase: round(ratio, 4) for phase, ratio in ratios.items() if not 1.0 <= ratio <= 1.15}
    assert not outside, outside


def test_gen_rows_per_call():
    config = Qwen2Config(**SMALL)
    row = memory.generation_bytes_per_row(config, 16, 16)  # 39,808 (test_estimate_by_hand)
    assert row == 39_808 and memory.GEN_MARGIN == 0.9  # calls are sized to 90 % of the spare memory
    assert memory.gen_rows_per_call(config, 8, 16, 16, None) == 8  # CPU: one call
    assert memory.gen_rows_per_call(config, 8, 16, 16, 8 * row * 10 // 9 + 1) == 8  # all fit: one call
    assert memory.gen_rows_per_call(config, 8, 16, 16, 8 * row) == 4  # 7 fit in 90 %: 2 calls of 4, not 7 + 1
    assert memory.gen_rows_per_call(config, 8, 16, 16, 5 * row * 10 // 9 + 1) == 4  # 2 calls of 4, not 5 + 3
    assert memory.gen_rows_per_call(config, 8, 16, 16, 4 * row) == 3  # 3 fit in 90 %: 3 calls, 3 + 3 + 2
    with pytest.raises(rollout.UserError, match="--max-new-tokens"):
        memory.gen_rows_per_call(config, 8, 16, 16, row)  # 90 % of one row


def test_check_names_what_to_change():
    config = Qwen2Config(**{**SMALL, "num_hidden_layers": 8})  # 8 layers: training, not scoring, is the peak
    args = SimpleNamespace(micro_batch_size=4, max_new_tokens=512, gradient_checkpointing=False, kl_coef=0.0)

    def need(**change):
        est = memory.estimate(config, **{"micro_batch_size": 4, "max_new_tokens": 512, "gen_rows": 1,
                                         "gradient_checkpointing": False, "kl_coef": 0.0, **change})
        return max(est["score"], est["train"], est["optimizer"])

    memory.check(config, args, need())  # fits exactly: no error
    with pytest.raises(rollout.UserError, match=r"add --gradient-checkpointing$"):
        memory.check(config, args, need(gradient_checkpointing=True))
    # checkpointing already on: a smaller micro-batch, the largest that fits
    with pytest.raises(rollout.UserError, match=r"add --micro-batch-size 2$"):
        memory.check(config, SimpleNamespace(**{**vars(args), "gradient_checkpointing": True}),
                     need(gradient_checkpointing=True, micro_batch_size=2))
    with pytest.raises(rollout.UserError, match=r"add --gradient-checkpointing --micro-batch-size 1$"):
        memory.check(config, args, need(gradient_checkpointing=True, micro_batch_size=1))
    with pytest.raises(rollout.UserError, match="smaller model"):
        memory.check(config, args, need(gradient_checkpointing=True, micro_batch_size=1) - 1)
    args.kl_coef = 0.1
    with pytest.raises(rollout.UserError, match="--kl-coef 0"):
        memory.check(config, args, need(gradient_checkpointing=True, micro_batch_size=1))
