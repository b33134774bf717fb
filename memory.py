"""memory.py -- the peak GPU memory of a train.py run, from the model's config.json alone (no weights loaded).

    python train.py --model Qwen2.5-0.5B --estimate-memory       # prints this table and exits (any machine, no GPU)

The memory table of docs/training.md as code. The run it describes is train.py's on CUDA: fp32 weights, gradients and
AdamW state, forward passes under bf16 autocast, left-padded rows (so every attention has a mask). Per part, in bytes
(P parameters, C of them in the decoder's linear layers; h hidden, i MLP width, L layers, n heads of d, q = n d,
kv = KV heads x d, V vocabulary; S = p + max_new_tokens tokens per row, p = the longest prompt, PROMPT_TOKENS before
any prompt is seen; B rows of a training micro-batch, r rows of a generate call):

    weights, gradients        4P + 4P        fp32 master weights (train.py's docstring says why)
    AdamW moments             8P             fp32 m and v
    autocast copies           2C             bf16 casts of the linear layers' weights and biases, cached while an
                                             autocast region runs (the embedding, the fp32 lm_head, norms: not cast)
    reference model           4P             only with --kl-coef > 0; computes as the policy does (fp32 weights)
    activations               B S (L A + T)  saved for backward (A, T below); with gradient checkpointing each
                                             layer's fp32 input, B S (4h L + T), and one layer recomputed, B S A
    lm_head chunk             max(20 M V,    M = min(rollout.CHUNK_ROWS, completion tokens); backward: fp32 logits,
                              4 M V + 4 V h) gather's gradient, logsumexp's difference, exp, product; then the
                                             chunk's [V, h] weight gradient being added to the buffer below
    lm_head weight gradients  4 V h          the chunks' fp32 [V, h] weight gradients, summed in a buffer that lives
                                             until the (tied) embedding's backward
    generation, at the end    r S (4L kv + 2kv + 40)  bf16 keys and values (rollout.kv_cache), one layer's K or V
                                             being extended (cat), int64 ids and mask; + r S 4q where this
                                             transformers repeats K and V to every head at each step (repeat_kv)
    sampling buffers          r V 24         per row and step: fp32 logits and their copy, SampledLogp's log-softmax
                                             (old, input, new), softmax; top-p < 1: + 20 (sort, int64 indices, cumsum)
    prefill                   r p (F + 4L kv)  the prompt's forward and its KV cache, if larger than the end
    no-grad micro-batch       4 B S F        scoring pi_old / pi_ref, SCORE_MICRO_BATCHES = 4 micro-batches at once:
                                             one layer at a time, or (if larger) the final and completion hidden
                                             states, 4 B S 8h, and an lm_head chunk, 12 M V (logits; the
                                             entropy's z - max and exp, rollout._entropy)
    AdamW step temporaries    4P             torch's foreach AdamW: a full fp32 sqrt(v); 0 with fused=True (CUDA)
    CUDA context, slack       1.5 GiB

Bytes per token, measured on the CPU under bf16 autocast (benchmarks/memory_check.py: every phase's estimate within
1.00-1.15x of what the allocator gives out, for Qwen2.5-, Qwen3- and Llama-shaped models):
    A = 26h + 8i + 8q + 4n + 2S + 40    per layer, saved for backward: the RMSNorms' fp32 input and output 16h,
                                        bf16 casts of the normed input for q, k, v, gate, up 10h; bf16 gate, up,
                                        silu(gate), product 8i; SDPA's bf16 query, K and V repeated to all heads
                                        (repeat_kv, under a mask) and output 8q, logsumexp 4n; the bf16 mask 2S
                                        (+ 32: its rows padded to 16 on CUDA), rsqrt 8. Qwen3's q/k norms (fp32
                                        input, bf16 output): + 6q + 6kv + 4 per head
    T = 16h + 8d + 24                   once: the final norm's input and output, the completion hidden states the
                                        lm_head chunks keep and their gradient, RoPE's cos, sin, int64 inputs
    F = max(8h + 16q + 6kv + 4n + 4S,   without grad, one layer at a time: attention (input, normed input, fp32
            12h + 6i) + 4h + 8d + S + 24  query after RoPE and its temporaries, K repeated in fp32 and cast, V,
                                        output; the bf16 mask, padded again on CUDA for the mem-efficient kernel)
                                        or MLP (input, residual, normed, silu(gate), up, product); + embeddings,
                                        cos, sin, the boolean mask, int64 inputs

Four phases, each peak the fixed part (weights, AdamW m and v, autocast copies, reference, slack) plus:
    generate   r rows' end of generation and sampling buffers, or their prefill if larger
    score      the no-grad micro-batch (gradients are None between updates)
    train      gradients, one micro-batch's activations, the lm_head chunk (with checkpointing: or the recomputed
               layer, if larger; one comes after the other) and the lm_head weight gradients
    optimizer  gradients and the step's temporaries (autocast's copies are freed when its region ends; counted, as
               the caching allocator keeps their blocks)
The run's peak is the largest of the four. benchmarks/gpu_check.py measures each phase on a GPU against this.
"""
import functools
import math
from pathlib import Path

import torch

import rollout
import toy  # noqa: F401 -- registers "toy" in rollout.BUILT_MODELS

GiB = 2 ** 30
PHASES = ("generate", "score", "train", "optimizer")
PROMPT_TOKENS = 256  # assumed prompt length for the estimate before any prompt is seen: MATH problems + instruction
SLACK = int(1.5 * GiB)  # CUDA context, cuBLAS workspaces, allocator fragmentation
LM_HEAD_BYTES, LM_HEAD_BYTES_NO_GRAD = 20, 12  # per logit of an lm_head chunk, in backward / without grad (table)
SAMPLING_BYTES, TOP_P_BYTES = 24, 20  # per vocabulary entry and row of a sampling step; + top-p's sort
SCORE_MICRO_BATCHES = 4  # train.py scores pi_old / pi_ref (no grad, no activations kept) in this many micro-batches at once
GEN_MARGIN = 0.9  # generate calls are sized to this share of the spare memory: allocator fragmentation


def shape(config) -> dict:
    """The numbers the estimate needs from a transformers config (Qwen2 / Qwen3 / Llama-like decoders)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return dict(h=config.hidden_size, i=config.intermediate_size, layers=config.num_hidden_layers, heads=heads,
                kv_heads=kv_heads, head_dim=head_dim, q=heads * head_dim, kv=kv_heads * head_dim,
                vocab=config.vocab_size, tied=bool(getattr(config, "tie_word_embeddings", False)),
                qkv_bias=config.model_type == "qwen2" or bool(getattr(config, "attention_bias", False)),
                qk_norm=config.model_type == "qwen3")


def n_params(config, linear_only: bool = False) -> int:
    """Parameter count of the decoder from its config: embedding (+ untied lm_head), per layer attention, MLP and
    two RMSNorms (+ Qwen2's q/k/v biases, Qwen3's q/k norms), final norm. linear_only: the decoder's linear layers
    alone (weights and biases), what autocast casts to bf16."""
    s = shape(config)
    attention = 2 * s["h"] * s["q"] + 2 * s["h"] * s["kv"] + (s["q"] + 2 * s["kv"]) * s["qkv_bias"]
    linear = s["layers"] * (attention + 3 * s["h"] * s["i"])
    if linear_only:
        return linear
    norms = s["layers"] * (2 * s["h"] + 2 * s["head_dim"] * s["qk_norm"]) + s["h"]
    return s["vocab"] * s["h"] * (1 if s["tied"] else 2) + linear + norms


def kv_bytes_per_token(config, bytes_per_value: int = 2) -> int:
    """KV cache of one token over all layers: keys + values (bf16 under autocast with rollout.kv_cache)."""
    s = shape(config)
    return s["layers"] * 2 * s["kv"] * bytes_per_value


def saved_per_token(config, seq: int) -> tuple[int, int]:
    """(A, T) of the table above: bytes saved for backward per token in each layer and once, rows of `seq` tokens."""
    s = shape(config)
    A = 26 * s["h"] + 8 * s["i"] + 8 * s["q"] + 4 * s["heads"] + 2 * seq + 40
    if s["qk_norm"]:
        A += 6 * s["q"] + 6 * s["kv"] + 4 * (s["heads"] + s["kv_heads"])
    return A, 16 * s["h"] + 8 * s["head_dim"] + 24


def forward_per_token(config, seq: int) -> int:
    """F of the table above: the peak bytes per token of a forward without grad (prefill, scoring), rows of `seq`."""
    s = shape(config)
    layer = max(8 * s["h"] + 16 * s["q"] + 6 * s["kv"] + 4 * s["heads"] + 4 * seq, 12 * s["h"] + 6 * s["i"])
    return layer + 4 * s["h"] + 8 * s["head_dim"] + seq + 24


@functools.cache
def decode_repeats_kv() -> bool:
    """Whether the installed transformers repeats K and V to every query head at each decode step under a padding
    mask (repeat_kv); 5.25 folds the query heads onto the KV heads instead (sdpa_attention.pack_gqa)."""
    from transformers.integrations import sdpa_attention

    return not hasattr(sdpa_attention, "pack_gqa")


def generation_bytes_per_row(config, prompt_tokens: int, max_new_tokens: int, top_p: float = 1.0) -> int:
    """What one more row of a generate call costs at its peak: the end of generation (KV cache, sampling buffers)
    or the prefill, whichever is larger (table above)."""
    s, S, p = shape(config), prompt_tokens + max_new_tokens, prompt_tokens
    sampling = s["vocab"] * (SAMPLING_BYTES + TOP_P_BYTES * (top_p < 1))
    end = S * (kv_bytes_per_token(config) + 2 * s["kv"] + 4 * s["q"] * decode_repeats_kv() + 40) + sampling
    prefill = p * (forward_per_token(config, p) + kv_bytes_per_token(config))
    return max(end, prefill)


def estimate(config, *, micro_batch_size: int, max_new_tokens: int, gen_rows: int, gradient_checkpointing: bool,
             kl_coef: float, prompt_tokens: int = PROMPT_TOKENS, fused_adamw: bool = True, top_p: float = 1.0) -> dict:
    """Bytes per part of a CUDA run (module docstring) and the peaks: {"parts": {name: bytes}, "generate": ...,
    "score": ..., "train": ..., "optimizer": ..., "peak": ...}."""
    s, P, S = shape(config), n_params(config), prompt_tokens + max_new_tokens
    tokens = micro_batch_size * S  # one training micro-batch
    A, T = saved_per_token(config, S)
    layers_saved = 4 * s["h"] * s["layers"] if gradient_checkpointing else A * s["layers"]
    chunk = min(rollout.CHUNK_ROWS, micro_batch_size * max_new_tokens) * s["vocab"]  # logits of one lm_head chunk
    score_tokens = SCORE_MICRO_BATCHES * tokens
    score_chunk = min(rollout.CHUNK_ROWS, SCORE_MICRO_BATCHES * micro_batch_size * max_new_tokens) * s["vocab"]
    parts = {
        "weights (fp32)": 4 * P,
        "gradients (fp32)": 4 * P,
        "AdamW m, v (fp32)": 8 * P,
        "autocast bf16 weight copies": 2 * n_params(config, linear_only=True),
        "reference model (fp32)": 4 * P if kl_coef > 0 else 0,
        "activations, one micro-batch": tokens * (layers_saved + T),
        "lm_head chunk": max(chunk * LM_HEAD_BYTES, chunk * 4 + 4 * s["vocab"] * s["h"]),
        "lm_head weight gradients": 4 * s["vocab"] * s["h"],
        "recomputed layer (checkpointing)": tokens * A if gradient_checkpointing else 0,
        "no-grad micro-batch (scoring)": max(score_tokens * forward_per_token(config, S),  # a layer, or the lm_head
                                             score_tokens * 8 * s["h"] + score_chunk * LM_HEAD_BYTES_NO_GRAD),
        "AdamW step temporaries": 0 if fused_adamw else 4 * P,
        "generation: KV cache + sampling": gen_rows * generation_bytes_per_row(config, prompt_tokens, max_new_tokens,
                                                                               top_p),
        "CUDA context, slack": SLACK,
    }
    fixed = sum(parts[k] for k in ("weights (fp32)", "AdamW m, v (fp32)", "autocast bf16 weight copies",
                                   "reference model (fp32)", "CUDA context, slack"))
    phases = {
        "generate": fixed + parts["generation: KV cache + sampling"],
        "score": fixed + parts["no-grad micro-batch (scoring)"],
        "train": fixed + parts["gradients (fp32)"] + parts["activations, one micro-batch"]
                 + max(parts["lm_head chunk"], parts["recomputed layer (checkpointing)"])  # one after the other
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


def gen_rows_per_call(config, rows: int, prompt_tokens: int, max_new_tokens: int, spare: int | None,
                      top_p: float = 1.0) -> int:
    """Rows per generate call: all of them when they fit in `spare` bytes (None: no limit known, as on CPU), else
    the fewest calls that fit, with the rows spread evenly over them."""
    if spare is None:
        return rows
    fit = int(spare * GEN_MARGIN) // generation_bytes_per_row(config, prompt_tokens, max_new_tokens, top_p)
    if fit < 1:
        raise rollout.UserError(f"not even one sequence of {prompt_tokens} + {max_new_tokens} tokens fits in the "
                                f"{max(spare, 0) / GiB:.2f} GiB left for generation: lower --max-new-tokens or use a "
                                f"smaller model")
    return math.ceil(rows / math.ceil(rows / min(fit, rows)))


def gen_batch_size(model, rows: int, prompt_tokens: int, max_new_tokens: int, top_p: float = 1.0) -> int:
    """train.py's default --gen-batch-size: one generate call for the whole step when its KV cache fits the GPU's
    spare memory now (the weights and AdamW state are already allocated; autocast's bf16 weight copies and SLACK
    are set aside), fewer rows per call otherwise. On CPU: one call."""
    spare = None
    if model.device.type == "cuda":
        free = torch.cuda.mem_get_info(model.device)[0]
        spare = free + torch.cuda.memory_reserved(model.device) - torch.cuda.memory_allocated(model.device)
        spare -= 2 * n_params(model.config, linear_only=True) + SLACK
    return gen_rows_per_call(model.config, rows, prompt_tokens, max_new_tokens, spare, top_p)


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
