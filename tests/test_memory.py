"""memory.py: the parameter count and the estimate against hand arithmetic for a small config, the activation
coefficients against the tensors autograd really saves, rows per generate call, and the stop-before-OOM check."""
from types import SimpleNamespace

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

import memory
import rollout

# h 64, MLP 128, 2 layers, 4 heads of 16, 2 KV heads (kv = 32), vocabulary 100, tied embeddings
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=100, tie_word_embeddings=True)
# embedding 100*64 = 6,400; a layer: q, o 2*64*64 = 8,192, k, v 2*64*32 = 4,096, q/k/v biases 64 + 32 + 32 = 128,
# MLP 3*64*128 = 24,576, two norms 128 -> 37,120; 2 layers 74,240; final norm 64
SMALL_PARAMS = 6_400 + 74_240 + 64


def test_n_params_by_hand_and_against_the_real_models():
    assert memory.n_params(Qwen2Config(**SMALL)) == SMALL_PARAMS
    for config in (Qwen2Config(**SMALL), Qwen2Config(**{**SMALL, "tie_word_embeddings": False}),
                   Qwen3Config(**SMALL, head_dim=16), Qwen3Config(**{**SMALL, "head_dim": 32})):
        model = (Qwen2ForCausalLM if config.model_type == "qwen2" else Qwen3ForCausalLM)(config)
        assert memory.n_params(config) == sum(p.numel() for p in model.parameters()), config.model_type


def test_estimate_by_hand():
    est = memory.estimate(Qwen2Config(**SMALL), micro_batch_size=2, max_new_tokens=16, gen_rows=8,
                          gradient_checkpointing=False, kl_coef=0.0, prompt_tokens=16)
    P = SMALL_PARAMS
    # a micro-batch: 2 x (16 + 16) = 64 tokens; per token and layer 30*64 + 4*32 + 8*128 = 3,072 bytes; 2 layers
    # lm_head chunk: min(512, 2 * 16) = 32 rows x 100 x 16 bytes; its weight-gradient buffers 8 x 100 x 64 = 51,200
    # scoring: 4 micro-batches = 256 tokens x (3,072 + 8 x 64) = 917,504
    # a generate row: end 32 tokens x (2 layers x 2 x 32 x 2 bytes) + K, V repeated to 4 heads of 16: 32 x 4 x 64
    # + 100 x 40 = 8,192 + 8,192 + 4,000 = 20,384; prefill 16 x (6*128 + 12*64 + 4*64) = 28,672 is larger
    assert est["parts"] == {"weights (fp32)": 4 * P, "gradients (fp32)": 4 * P, "AdamW m, v (fp32)": 8 * P,
                            "autocast bf16 weight copies": 2 * P, "reference model (fp32)": 0,
                            "activations, one micro-batch": 64 * 2 * 3_072, "lm_head chunk": 32 * 100 * 16,
                            "lm_head weight gradients": 51_200, "no-grad micro-batch (scoring)": 917_504,
                            "AdamW step temporaries": 0,
                            "generation: KV cache + sampling": 8 * 28_672, "CUDA context, slack": 1.5 * 2 ** 30}
    fixed = 14 * P + 1.5 * 2 ** 30
    assert est["train"] == fixed + 4 * P + 64 * 2 * 3_072 + 32 * 100 * 16 + 51_200
    assert est["score"] == fixed + 917_504 + 32 * 100 * 16
    assert est["optimizer"] == fixed + 4 * P
    assert est["generate"] == fixed + 8 * 28_672 and est["peak"] == est["score"]  # 4 micro-batches at once
    foreach = memory.estimate(Qwen2Config(**SMALL), micro_batch_size=2, max_new_tokens=16, gen_rows=8,
                              gradient_checkpointing=False, kl_coef=0.0, prompt_tokens=16, fused_adamw=False)
    assert foreach["optimizer"] == fixed + 8 * P  # foreach AdamW's sqrt(v) temporary: 20 bytes per parameter
    ckpt = memory.estimate(Qwen2Config(**SMALL), micro_batch_size=2, max_new_tokens=16, gen_rows=8,
                           gradient_checkpointing=True, kl_coef=0.1, prompt_tokens=16)
    # each layer's fp32 input (64 tokens x 2 layers x 4 x 64) + one layer recomputed (64 x 3,072); reference fp32
    assert ckpt["parts"]["activations, one micro-batch"] == 64 * 2 * 256 + 64 * 3_072
    assert ckpt["parts"]["reference model (fp32)"] == 4 * P


def saved_bytes(config, batch, length):
    """Bytes of the distinct non-parameter tensors autograd saves in a forward of the decoder under bf16 autocast."""
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model.model(input_ids=torch.randint(1, 100, (batch, length)), use_cache=False)
    return sum(v for ptr, v in seen.items() if ptr not in params)


@pytest.mark.parametrize("shape", [dict(hidden_size=128, intermediate_size=384), dict(hidden_size=64, intermediate_size=512)])
def test_activation_coefficients_match_what_autograd_saves(shape):
    """Per token and layer = the growth from 1 to 2 layers and from 32 to 64 tokens (the bf16 weight copies that
    autocast saves are per layer, not per token, and drop out)."""
    def per_layer(length):
        return (saved_bytes(Qwen2Config(**{**SMALL, **shape, "num_hidden_layers": 2}), 2, length)
                - saved_bytes(Qwen2Config(**{**SMALL, **shape, "num_hidden_layers": 1}), 2, length))
    measured = (per_layer(64) - per_layer(32)) / (2 * 32)
    kv = 2 * shape["hidden_size"] // 4  # 2 KV heads of hidden / 4 heads
    predicted = memory.ACT_H * shape["hidden_size"] + memory.ACT_KV * kv + memory.ACT_I * shape["intermediate_size"]
    assert abs(measured - predicted) / predicted < 0.01, (measured, predicted)


def test_gen_rows_per_call():
    config = Qwen2Config(**SMALL)
    row = memory.generation_bytes_per_row(config, 16, 16)  # 28,672 (test_estimate_by_hand)
    assert row == 28_672 and memory.GEN_MARGIN == 0.9  # calls are sized to 90 % of the spare memory
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
