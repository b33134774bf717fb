"""memory.py -- the peak GPU memory of a train.py run, from the model's config.json alone (no weights loaded).

    python train.py --model Qwen2.5-0.5B --estimate-memory       # prints this table and exits (any machine, no GPU)

The memory table of docs/training.md as code. The run it describes is train.py's on CUDA: fp32 weights, gradients and
AdamW state, forward passes under bf16 autocast. Per part, in bytes (P parameters; h hidden, i MLP width,
L layers, kv = KV heads x head dim, q = heads x head dim, V vocabulary; S = p + max_new_tokens tokens per sequence,
p = the longest prompt, PROMPT_TOKENS before any prompt is seen):

    weights, gradients        4P + 4P        fp32 master weights (train.py's docstring says why)
    AdamW moments             8P             fp32 m and v
    autocast copies           2P             bf16 casts of the weights, cached while an autocast region runs
    reference model           4P             only with --kl-coef > 0; computes as the policy does (fp32 weights)
    activations               B S L A        A = 30h + 4kv + 8i bytes per token and layer, saved for backward
                                             (measured, see ACT_*); with gradient checkpointing only each
                                             layer's fp32 input, B S L 4h, plus one layer's B S A in recompute
    lm_head chunk             C V 16         C = rollout.CHUNK_ROWS completion tokens: fp32 logits, logsumexp's
                                             exp buffer and two fp32 gradient buffers in backward
    lm_head weight gradients  8 V h          every chunk's backward makes an fp32 [V, h] gradient, added into a
                                             buffer that lives until the (tied) embedding's backward: 2 of them
    KV cache (generation)     n S L kv 4     bf16 keys and values (rollout.kv_cache), n rows per generate call
    repeated K, V             n S q 4        with a padding mask, SDPA attention repeats K and V to every query
                                             head (transformers' repeat_kv), one layer at a time
    sampling buffers          n V 40         per row and step: fp32 logits 4 (rollout.fp32_lm_head) and their
                                             copy 4, SampledLogp's log-softmax 4 + its input 4, temperature 4,
                                             softmax 4, top-p sort 4 + int64 indices 8, the previous step's 4
    prefill                   n p (6i + 12h + 4q)  the prompt's pass: bf16 MLP gate/up/product, fp32 residual
                                             and norm, repeated K, V
    no-grad micro-batch       m S (A/L... )  scoring pi_old / pi_ref: one layer's activations at a time (A per token)
                                             plus the fp32 hidden states, for m = train.SCORE_MICRO_BATCHES micro-batches
    AdamW step temporaries    4P             torch's foreach AdamW: a full fp32 sqrt(v); 0 with fused=True (CUDA)
    CUDA context, slack       1.5 GiB

Four phases, each peak the fixed part (weights, AdamW m and v, autocast copies, reference, slack) plus:
    generate   n rows' KV cache, repeated K, V and sampling buffers (or the prefill, whichever is larger)
    score      the no-grad micro-batch and an lm_head chunk (gradients are None between updates)
    train      gradients, one micro-batch's activations, the lm_head chunk and its weight-gradient buffers
    optimizer  gradients and the step's temporaries (autocast's copies are freed when its region ends; kept here)
The run's peak is the largest of the four. benchmarks/gpu_check.py measures each phase on a GPU against this.
"""
import math
from pathlib import Path

import torch

import rollout
import toy  # noqa: F401 -- registers "toy" in rollout.BUILT_MODELS

GiB = 2 ** 30
PHASES = ("generate", "score", "train", "optimizer")
PROMPT_TOKENS = 256  # assumed prompt length for the estimate before any prompt is seen: MATH problems + instruction
SLACK = int(1.5 * GiB)  # CUDA context, cuBLAS workspaces, allocator fragmentation
# Bytes saved for backward per token and layer of a Qwen2/Qwen3 decoder layer under bf16 autocast with the fp32
# residual stream: ACT_H * hidden + ACT_KV * (KV heads x head dim) + ACT_I * MLP width. Fitted to the saved tensors
# of forward passes under CPU bf16 autocast (torch.autograd.graph.saved_tensors_hooks, 1- vs 2-layer models at two
# sequence lengths, four shapes: within 0.3%; tests/test_memory.py); e.g. the MLP keeps its bf16 input twice, gate,
# up, silu(gate) and their product. Assumed the same on CUDA, whose SDPA kernels save the same q, k, v, output and
# logsumexp (not measured: no GPU).
ACT_H, ACT_KV, ACT_I = 30, 4, 8
LM_HEAD_BYTES = 16  # per logit of a chunk, see the table above
SAMPLING_BYTES = 40  # per vocabulary entry and row of one sampling step
SCORE_MICRO_BATCHES = 4  # train.py scores pi_old / pi_ref (no grad, no activations kept) in this many micro-batches at once
GEN_MARGIN = 0.9  # generate calls are sized to this share of the spare memory: allocator fragmentation


def shape(config) -> dict:
    """The numbers the estimate needs from a transformers config (Qwen2 / Qwen3 / Llama-like decoders)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return dict(h=config.hidden_size, i=config.intermediate_size, layers=config.num_hidden_layers, heads=heads,
                kv=(getattr(config, "num_key_value_heads", None) or heads) * head_dim, head_dim=head_dim,
                vocab=config.vocab_size, tied=bool(getattr(config, "tie_word_embeddings", False)),
                qkv_bias=config.model_type == "qwen2" or bool(getattr(config, "attention_bias", False)),
                qk_norm=config.model_type == "qwen3")


def n_params(config) -> int:
    """Parameter count of the decoder from its config: embedding (+ untied lm_head), per layer attention, MLP and
    two RMSNorms (+ Qwen2's q/k/v biases, Qwen3's q/k norms), final norm."""
    s = shape(config)
    q = s["heads"] * s["head_dim"]
    attention = s["h"] * q + 2 * s["h"] * s["kv"] + q * s["h"]
    attention += (q + 2 * s["kv"]) * s["qkv_bias"] + 2 * s["head_dim"] * s["qk_norm"]
    layer = attention + 3 * s["h"] * s["i"] + 2 * s["h"]
    return s["vocab"] * s["h"] * (1 if s["tied"] else 2) + s["layers"] * layer + s["h"]


def kv_bytes_per_token(config, bytes_per_value: int = 2) -> int:
    """KV cache of one token over all layers: keys + values (bf16 under autocast with rollout.kv_cache)."""
    s = shape(config)
    return s["layers"] * 2 * s["kv"] * bytes_per_value


def generation_bytes_per_row(config, prompt_tokens: int, max_new_tokens: int) -> int:
    """What one more row of a generate call costs at its peak: KV cache, K and V repeated to every query head in
    the layer being computed, sampling buffers; or the prefill."""
    s = shape(config)
    S, q = prompt_tokens + max_new_tokens, s["heads"] * s["head_dim"]
    end = S * kv_bytes_per_token(config) + S * 4 * q + s["vocab"] * SAMPLING_BYTES
    prefill = prompt_tokens * (6 * s["i"] + 12 * s["h"] + 4 * q)
    return max(end, prefill)


def estimate(config, *, micro_batch_size: int, max_new_tokens: int, gen_rows: int, gradient_checkpointing: bool,
             kl_coef: float, prompt_tokens: int = PROMPT_TOKENS, fused_adamw: bool = True) -> dict:
    """Bytes per part of a CUDA run (module docstring) and the peaks: {"parts": {name: bytes}, "generate": ...,
    "score": ..., "train": ..., "optimizer": ..., "peak": ...}."""
    s, P = shape(config), n_params(config)
    tokens = micro_batch_size * (prompt_tokens + max_new_tokens)  # one training micro-batch
    per_layer = ACT_H * s["h"] + ACT_KV * s["kv"] + ACT_I * s["i"]  # bytes per token and layer
    if gradient_checkpointing:
        activations = tokens * s["layers"] * 4 * s["h"] + tokens * per_layer
    else:
        activations = tokens * s["layers"] * per_layer
    score_tokens = SCORE_MICRO_BATCHES * tokens
    parts = {
        "weights (fp32)": 4 * P,
        "gradients (fp32)": 4 * P,
        "AdamW m, v (fp32)": 8 * P,
        "autocast bf16 weight copies": 2 * P,
        "reference model (fp32)": 4 * P if kl_coef > 0 else 0,
        "activations, one micro-batch": activations,
        "lm_head chunk": min(rollout.CHUNK_ROWS, micro_batch_size * max_new_tokens) * s["vocab"] * LM_HEAD_BYTES,
        "lm_head weight gradients": 8 * s["vocab"] * s["h"],
        "no-grad micro-batch (scoring)": score_tokens * (per_layer + 8 * s["h"]),
        "AdamW step temporaries": 0 if fused_adamw else 4 * P,
        "generation: KV cache + sampling": gen_rows * generation_bytes_per_row(config, prompt_tokens, max_new_tokens),
        "CUDA context, slack": SLACK,
    }
    fixed = sum(parts[k] for k in ("weights (fp32)", "AdamW m, v (fp32)", "autocast bf16 weight copies",
                                   "reference model (fp32)", "CUDA context, slack"))
    phases = {
        "generate": fixed + parts["generation: KV cache + sampling"],
        "score": fixed + parts["no-grad micro-batch (scoring)"] + parts["lm_head chunk"],
        "train": fixed + parts["gradients (fp32)"] + parts["activations, one micro-batch"] + parts["lm_head chunk"]
                 + parts["lm_head weight gradients"],
        "optimizer": fixed + parts["gradients (fp32)"] + parts["AdamW step temporaries"],
    }
    return {"parts": parts, **phases, "peak": max(phases.values()), "gen_rows": gen_rows}


def report(est: dict, available: int | None = None) -> str:
    names = {"generation: KV cache + sampling": f"generation: KV cache + sampling, {est['gen_rows']} rows"}
    lines = [f"  {names.get(name, name):<44} {value / GiB:7.2f} GiB" for name, value in est["parts"].items() if value]
    lines += [f"  {'peak in ' + phase:<44} {est[phase] / GiB:7.2f} GiB" for phase in PHASES]
    if available is not None:
        lines.append(f"  {'GPU memory this run can use':<44} {available / GiB:7.2f} GiB")
    return "estimated peak GPU memory (memory.py):\n" + "\n".join(lines)


def load_config(name: str):
    """The transformers config of --model (hub id, alias, local directory -- config.json alone will do -- or toy)."""
    from transformers import AutoConfig

    path = str(rollout.BUILT_MODELS[name]()) if name in rollout.BUILT_MODELS else rollout.resolve_model_name(name)
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().is_dir():
        raise rollout.UserError(f"model directory {path!r} does not exist: pass a directory holding config.json, a hub "
                                f"id or an alias to --model")
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise rollout.UserError(f"cannot read the config of {path!r} ({reason}): pass a directory holding "
                                f"config.json to --model, or a hub id or alias with a connection to the Hub") from e


def available_bytes(device) -> int | None:
    """GPU memory this process can use in all: free on the device + what its caching allocator holds. None off CUDA."""
    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device)


def gen_rows_per_call(config, rows: int, prompt_tokens: int, max_new_tokens: int, spare: int | None) -> int:
    """Rows per generate call: all of them when they fit in `spare` bytes (None: no limit known, as on CPU), else
    the fewest calls that fit, with the rows spread evenly over them."""
    if spare is None:
        return rows
    fit = int(spare * GEN_MARGIN) // generation_bytes_per_row(config, prompt_tokens, max_new_tokens)
    if fit < 1:
        raise rollout.UserError(f"not even one sequence of {prompt_tokens} + {max_new_tokens} tokens fits in the "
                                f"{max(spare, 0) / GiB:.2f} GiB left for generation: lower --max-new-tokens or use a "
                                f"smaller model")
    return math.ceil(rows / math.ceil(rows / min(fit, rows)))


def gen_batch_size(model, rows: int, prompt_tokens: int, max_new_tokens: int) -> int:
    """train.py's default --gen-batch-size: one generate call for the whole step when its KV cache fits the GPU's
    spare memory now (the weights and AdamW state are already allocated; autocast's bf16 weight copies and SLACK
    are set aside), fewer rows per call otherwise. On CPU: one call."""
    spare = None
    if model.device.type == "cuda":
        free = torch.cuda.mem_get_info(model.device)[0]
        spare = free + torch.cuda.memory_reserved(model.device) - torch.cuda.memory_allocated(model.device)
        spare -= 2 * n_params(model.config) + SLACK
    return gen_rows_per_call(model.config, rows, prompt_tokens, max_new_tokens, spare)


def check(config, args, available: int, prompt_tokens: int = PROMPT_TOKENS):
    """Stop before the first step, with one line naming what to change, when the training peak cannot fit. Tried in
    the issue's order: --gradient-checkpointing, then a smaller --micro-batch-size (with or without it)."""
    base = dict(micro_batch_size=args.micro_batch_size, max_new_tokens=args.max_new_tokens, gen_rows=1,
                gradient_checkpointing=args.gradient_checkpointing, kl_coef=args.kl_coef, prompt_tokens=prompt_tokens)

    def need(**change) -> int:  # the training phases' peak (generation is sized to fit by gen_rows_per_call)
        est = estimate(config, **{**base, **change})
        return max(est["score"], est["train"], est["optimizer"])

    if need() <= available:
        return
    head = (f"the estimated training peak, {need() / GiB:.1f} GiB, does not fit in the {available / GiB:.1f} GiB "
            f"this GPU has for the run")
    smaller = range(args.micro_batch_size - 1, 0, -1)
    for ckpt, mbs in [(True, args.micro_batch_size), *((args.gradient_checkpointing, m) for m in smaller),
                      *((True, m) for m in smaller)]:
        if need(micro_batch_size=mbs, gradient_checkpointing=ckpt) <= available:
            flags = ["--gradient-checkpointing"] * (ckpt and not args.gradient_checkpointing)
            flags += [f"--micro-batch-size {mbs}"] * (mbs != args.micro_batch_size)
            raise rollout.UserError(f"{head}: add {' '.join(flags)}")
    if args.kl_coef > 0 and need(micro_batch_size=1, gradient_checkpointing=True, kl_coef=0) <= available:
        raise rollout.UserError(f"{head}, even with --gradient-checkpointing --micro-batch-size 1: drop the reference "
                                f"model (--kl-coef 0) as well, or use a smaller model")
    raise rollout.UserError(f"{head}, even with --gradient-checkpointing --micro-batch-size 1: use a smaller model "
                            f"(fp32 weights, gradients and AdamW state take 16 bytes per parameter)")
