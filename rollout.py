"""The model side of RL with verifiable rewards: load a causal LM, sample groups of completions, score them.

Three jobs, shared by train.py and eval.py:

1. load_model: a Hugging Face hub id, a local directory, a short alias ("Qwen2.5-0.5B"), "toy" (the tiny
   offline model built by toy.py, which registers itself in BUILT_MODELS) or a GGUF file (converted once,
   gguf_convert.py) -> (model, tokenizer), bf16 on CUDA, fp32 on CPU, left padding.
2. generate: every prompt x n samples through `model.generate` (KV cache, left padding), re-padded into one
   batch. The completion mask covers each generated token up to AND INCLUDING the first EOS: the policy chose
   to stop, so the EOS token carries reward and gradient like any other action. Tokens after it are padding,
   and are masked by position, not by value, so pad == eos (the Qwen base models) cannot hide the EOS.
3. completion_logprobs / score: log pi(token) of each completion token and the entropy of pi at that
   position, from one forward pass, with the logits divided by the sampling temperature so that the scores
   are those of the distribution that was sampled. The vocabulary is large (151,936 for Qwen), so the
   [B, T, V] fp32 log-softmax is never built: the final hidden states of the completion tokens are pushed
   through the lm_head a chunk of rows at a time, keeping only logsumexp, the gathered logit and the entropy.

top_p < 1 makes the sampled distribution differ from the scored (full-softmax) one; this is the usual
practice in GRPO implementations and is left to the caller.
"""
import contextlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import gguf_convert  # imports nothing of ours; its optional packages (gguf, accelerate) only when it converts


class UserError(ValueError):
    """Bad user input. The message is one line naming the fix; the CLIs print it and exit with status 2."""


# ----------------------------------------------------------------------------------------------- loading

MODEL_ALIASES = {
    name: "Qwen/" + name
    for name in [
        "Qwen2.5-0.5B", "Qwen2.5-0.5B-Instruct",
        "Qwen2.5-1.5B", "Qwen2.5-1.5B-Instruct",
        "Qwen2.5-3B", "Qwen2.5-3B-Instruct",
        "Qwen2.5-7B", "Qwen2.5-7B-Instruct",
        "Qwen2.5-Math-1.5B", "Qwen2.5-Math-1.5B-Instruct",
        "Qwen2.5-Math-7B", "Qwen2.5-Math-7B-Instruct",
        "Qwen3-0.6B-Base", "Qwen3-1.7B-Base", "Qwen3-4B-Base",
    ]
}
# Models built on this machine instead of downloaded: name -> a function that builds one (once) and returns its
# directory. toy.py is built on this module (its prompts, its sampler) and adds "toy" here when it is imported --
# train.py, eval.py and memory.py import it -- so this module never imports toy.py: the dependency goes one way.
BUILT_MODELS = {}


def default_cache_dir() -> Path:
    """Where built and converted models and downloaded data go: $ETR_CACHE, else ~/.cache/etr."""
    return Path(os.environ.get("ETR_CACHE", Path.home() / ".cache" / "etr"))


def resolve_model_name(name: str) -> str:
    """Alias -> hub id (case-insensitive); a GGUF file (a path ending in .gguf, or gguf_convert.GGUF_ALIASES) -> its
    Hugging Face directory in the cache, converted on first use (gguf_convert.py); anything else (hub id, local
    dir, "toy") is returned unchanged. load_model and memory.load_config both go through here."""
    if gguf_convert.is_gguf(name):
        try:
            return str(gguf_convert.converted_dir(name, default_cache_dir()))
        except gguf_convert.GGUFError as e:
            raise UserError(str(e)) from None
    by_lower = {alias.lower(): repo for alias, repo in MODEL_ALIASES.items()}
    return by_lower.get(name.lower(), name)


MIN_TRANSFORMERS = "4.51.3"  # the oldest transformers this code runs with (CI's oldest-versions check); = requirements.txt


def load_model(name: str, device: str | None = None, gradient_checkpointing: bool = False, dtype=None):
    """Load (model, tokenizer). name: hub id | local directory | alias | "toy".

    dtype: of the weights; default bf16 on CUDA, fp32 on CPU (train.py asks for fp32 everywhere, see there)."""
    import transformers
    from packaging.version import Version  # comes with transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer  # slow import, only where needed

    if Version(transformers.__version__) < Version(MIN_TRANSFORMERS):
        raise UserError(f"transformers {transformers.__version__} is older than this code supports: "
                        f"pip install 'transformers>={MIN_TRANSFORMERS}' (or pip install -r requirements.txt)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "toy" and name not in BUILT_MODELS:
        raise UserError("the toy model is built by toy.py: import toy before rollout.load_model('toy')")
    path = str(BUILT_MODELS[name]()) if name in BUILT_MODELS else resolve_model_name(name)
    looks_local = path.startswith((".", "/", "~")) or os.sep + os.sep in path or path.count("/") > 1
    if looks_local and not Path(path).expanduser().is_dir():
        raise UserError(f"model directory {path!r} does not exist: pass an existing directory, a hub id such as "
                        f"Qwen/Qwen2.5-0.5B, an alias ({', '.join(list(MODEL_ALIASES)[:3])}, ...) or 'toy' to --model")
    path = str(Path(path).expanduser()) if Path(path).expanduser().is_dir() else path
    dtype = dtype or (torch.bfloat16 if str(device).startswith("cuda") else torch.float32)
    # from_pretrained's `dtype=` exists from transformers 4.56 on; before, the same argument was `torch_dtype=`
    # (which 4.56+ still takes, with a deprecation warning).
    dtype_kwarg = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **{dtype_kwarg: dtype})
    except Exception as e:  # noqa: BLE001 -- any load failure becomes one line naming the fix (exit 2)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if Path(path).is_dir():
            fix = ("pass a directory written by save_pretrained (config.json, weights, tokenizer files); if it is "
                   f"one, its model type may be newer than transformers {transformers.__version__}: "
                   "pip install -U transformers")
        elif os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            fix = "HF_HUB_OFFLINE is set: pass a local directory with --model, or unset HF_HUB_OFFLINE to download it"
        else:
            fix = ("check the hub id (or use an alias such as Qwen2.5-0.5B), pass a local directory with --model, "
                   "or connect to the internet")
        raise UserError(f"cannot load model {path!r} ({type(e).__name__}: {reason}): {fix}") from e

    if tokenizer.pad_token is None:  # batched generation needs a pad token; it is always masked out
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if tokenizer.pad_token is None:
            raise UserError(f"the tokenizer of {path!r} has no pad, eos or unk token: pick a model whose tokenizer has an eos token")
    tokenizer.padding_side = "left"  # generation appends on the right, so prompts must end flush right
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if gradient_checkpointing:  # recompute layer activations in backward: memory O(layers) -> O(1) per sequence
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # a training forward keeps no KV cache; generate() asks for one explicitly
    return model.to(device), tokenizer


# ----------------------------------------------------------------------------------------------- prompts

# The instruction used by the Qwen2.5-Math evaluations. "chat" is the user message inside the tokenizer's template;
# "chat-example" puts one worked example before it as an earlier turn (CHAT_EXAMPLE): a small Instruct model
# (SmolLM2-135M) then answers in a line and boxes its answer, where under "chat" alone it rambles past a short budget.
PROMPT_TEMPLATES = {
    "plain": "{problem}\nPlease reason step by step, and put your final answer within \\boxed{}.\n",
    "chat": "{problem}\nPlease reason step by step, and put your final answer within \\boxed{}.",
    "chat-example": "{problem}\nPlease reason step by step, and put your final answer within \\boxed{}.",
}
CHAT_EXAMPLE = ("What is 3 + 4?", "3 + 4 = 7, so the answer is \\boxed{7}.")  # (problem, the assistant's answer)


def thinking(flag: str | None) -> bool | None:
    """--thinking on / off / unset -> the chat template's enable_thinking: True / False / None (its own default)."""
    return None if flag is None else flag == "on"


def build_prompt(problem: str, tokenizer, template: str = "plain", thinking: bool | None = None) -> str:
    """The prompt text of one problem. thinking: Qwen3's switch, passed to the chat template as enable_thinking
    (False: the template opens an empty <think></think> block); None leaves the template's own default."""
    if template not in PROMPT_TEMPLATES:
        raise UserError(f"unknown prompt template {template!r}: use one of {', '.join(PROMPT_TEMPLATES)}")
    text = PROMPT_TEMPLATES[template].replace("{problem}", problem)
    if template == "plain":
        return text
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("this tokenizer has no chat template: use the plain prompt template (--template plain)")
    switch = {} if thinking is None else {"enable_thinking": thinking}  # templates ignore variables they do not use
    messages = [{"role": "user", "content": text}]
    if template == "chat-example":
        example = PROMPT_TEMPLATES[template].replace("{problem}", CHAT_EXAMPLE[0])
        messages = [{"role": "user", "content": example}, {"role": "assistant", "content": CHAT_EXAMPLE[1]}, *messages]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **switch)


# ----------------------------------------------------------------------------------------------- generation

def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template closes an assistant turn with (<|im_end|> in ChatML, <|eot_id|> in
    Llama 3), read off the template itself: render a turn, take the first special token after its content."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}],
                                             tokenize=False)
    except Exception:  # noqa: BLE001 -- a template that cannot render a turn has no end-of-turn token to offer
        return None
    after = text[text.rfind("2") + 1:]
    specials = sorted((after.find(t), t) for t in tokenizer.all_special_tokens + list(tokenizer.get_added_vocab())
                      if t and t in after)
    return tokenizer.convert_tokens_to_ids(specials[0][1]) if specials else None


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS, the generation config's, and the chat template's
    end-of-turn token. The last one matters for a base model's tokenizer (Qwen2.5 base: EOS <|endoftext|>) under
    --template chat: its answer ends with <|im_end|>, and without it generation would run on to the limit."""
    ids = model.generation_config.eos_token_id
    ids = set() if ids is None else {ids} if isinstance(ids, int) else set(ids)
    ids |= {i for i in (tokenizer.eos_token_id, end_of_turn_id(tokenizer)) if i is not None}
    return sorted(ids)


def _encode(tokenizer, texts: list[str]):
    """Tokenize a batch, left-padded. A chat template already starts with BOS (Llama), so BOS is not added twice."""
    add_special = tokenizer.bos_token is None or not texts[0].startswith(tokenizer.bos_token)
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special)


def kv_cache(model):
    """{kwarg: cache} for model.generate: HF's DynamicCache, but keys are stored in the values' dtype.

    Under bf16 autocast the keys leave RoPE in fp32 (the bf16 k_proj output times fp32 cos/sin: the residual
    stream is fp32) while the values are bf16, so HF's cache holds 6 bytes per key/value element pair instead of 4.
    Attention casts its inputs to bf16 under autocast anyway (scaled_dot_product_attention and matmul are on
    autocast's bf16 list), so a key rounded to bf16 once, when cached, gives bit-identical attention: the sampled
    distribution does not change (tests/test_rollout.py) and the cache shrinks by a third. Without autocast the
    values are fp32 and nothing changes. (transformers >= 5 calls the generate kwarg `cache`, before `past_key_values`.)
    """
    import inspect

    from transformers import DynamicCache

    class KeysAsValuesCache(DynamicCache):
        def update(self, key_states, value_states, *args, **kwargs):
            return super().update(key_states.to(value_states.dtype), value_states, *args, **kwargs)

    name = "cache" if "cache" in inspect.signature(model.prepare_inputs_for_generation).parameters else "past_key_values"
    return {name: KeysAsValuesCache()}


class SampledLogp:
    """A logits processor that records log pi(token) of each token at the moment it is sampled: the log-softmax of
    the raw logits / temperature (as completion_logprobs scores it; top-p's renormalisation left out, as there).
    generate() runs custom processors before its temperature and top-p warpers, so `scores` here are raw. At step t
    it sees the token chosen at step t - 1 as input_ids[:, -1]; finish() takes the last step's."""

    def __init__(self, temperature: float):
        self.temperature, self.prev, self.logps = temperature, None, []

    def __call__(self, input_ids, scores):  # [b, L], [b, V]
        if self.prev is not None:
            self.logps.append(self.prev.gather(1, input_ids[:, -1:]))  # [b, 1]
        self.prev = (scores.float() / self.temperature).log_softmax(-1)  # [b, V] fp32
        return scores

    def finish(self, completion_ids):  # [b, t] -> [b, t] fp32 on the CPU
        if self.prev is None:  # no step ran (no token generated, or a stand-in for generate in a test)
            return torch.zeros(completion_ids.shape)
        self.logps.append(self.prev.gather(1, completion_ids[:, -1:].to(self.prev.device)))
        return torch.cat(self.logps, 1).cpu()[:, :completion_ids.shape[1]]


@contextlib.contextmanager
def fp32_lm_head(model):
    """While generating, the lm_head computes fp32 logits also under bf16 autocast, as _chunk_logp_entropy does when
    scoring: the tokens are then sampled from the distribution that is scored as pi_old, not from a bf16 rounding
    of it (logits of 8-32 rounded to steps of 0.06-0.125). generate() asks for the last position only
    (logits_to_keep=1), so this costs one [b, V] fp32 product per step. Patched on the instance, removed after."""
    head = model.get_output_embeddings()
    head.forward = lambda h: linear32(h, head.weight, head.bias)
    try:
        yield
    finally:
        del head.forward


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], n: int, *, temperature: float = 1.0, top_p: float = 1.0,
             max_new_tokens: int = 256, batch_size: int = 64) -> dict:
    """Sample n completions of every prompt (rows i*n .. i*n+n-1 belong to prompt i); temperature 0 = greedy.
    With sampling, sample_logp [N, T] holds log pi(token) as each token was sampled (SampledLogp), so that the
    trainer can log how far the sampling policy is from the scored pi_old (TRL's and verl's vLLM diagnostic)."""
    from transformers import LogitsProcessorList
    eos_ids, pad_id = eos_token_ids(model, tokenizer), tokenizer.pad_token_id
    sampling = temperature > 0
    # Every knob set explicitly: generate() otherwise falls back to the checkpoint's generation_config
    # (Qwen-Instruct ships top_k=20, repetition_penalty=1.1) or to transformers' default top_k=50,
    # and the sampled policy would silently differ from the one completion_logprobs scores.
    knobs = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if sampling else dict(do_sample=False)
    rows = [p for p in prompts for _ in range(n)]
    was_training = model.training
    model.eval()
    prompt_ids, prompt_mask, completion_ids, sample_logp = [], [], [], []
    for start in range(0, len(rows), batch_size):
        enc = _encode(tokenizer, rows[start:start + batch_size])
        ids, mask = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)  # [b, p]
        recorder = SampledLogp(temperature) if sampling else None
        with fp32_lm_head(model):
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, use_cache=True,
                                 eos_token_id=eos_ids, pad_token_id=pad_id, repetition_penalty=1.0, **knobs,
                                 logits_processor=LogitsProcessorList([recorder] if recorder else []),
                                 **kv_cache(model))  # [b, p + t]
        prompt_ids.append(ids.cpu())
        prompt_mask.append(mask.cpu())
        completion_ids.append(out[:, ids.shape[1]:].cpu())  # [b, t]
        if recorder:
            sample_logp.append(recorder.finish(completion_ids[-1]))  # [b, t]
        del recorder, out  # the recorder's [b, V] buffer goes before the next call
    model.train(was_training)

    P = max(x.shape[1] for x in prompt_ids)
    T = max(x.shape[1] for x in completion_ids)
    prompt_ids = torch.cat([F.pad(x, (P - x.shape[1], 0), value=pad_id) for x in prompt_ids])  # [N, P] left-padded
    prompt_mask = torch.cat([F.pad(x, (P - x.shape[1], 0), value=0) for x in prompt_mask])  # [N, P]
    completion_ids = torch.cat([F.pad(x, (0, T - x.shape[1]), value=pad_id) for x in completion_ids])  # [N, T]

    # Mask by position: a token is kept unless an EOS came strictly before it. The first EOS itself is kept.
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids)).long()  # [N, T]
    eos_before = is_eos.cumsum(1) - is_eos  # [N, T] number of EOS strictly before each position
    completion_mask = (eos_before == 0).long()  # [N, T]
    texts = tokenizer.batch_decode([ids[m.bool()] for ids, m in zip(completion_ids, completion_mask)],
                                   skip_special_tokens=True)
    # [N, T] fp32, 0 where the mask is 0 (None for greedy decoding: no distribution was sampled)
    sample_logp = torch.cat([F.pad(x, (0, T - x.shape[1])) for x in sample_logp]) * completion_mask if sampling else None
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "texts": texts, "truncated": ~is_eos.bool().any(1),
            "sample_logp": sample_logp}


# ----------------------------------------------------------------------------------------------- scoring

CHUNK_ROWS = 512  # completion tokens per lm_head chunk: [512, 151936] fp32 logits = 0.3 GB at Qwen's vocabulary


# The lm_head's fp32 matmuls on CUDA: TF32 (fp32 range, inputs rounded to a 10-bit mantissa, fp32 accumulation)
# runs them on the tensor cores. With TF32 off (torch's default) the forward, its recompute and the two backward
# GEMMs of a [M, H] x [H, V] product run at plain fp32 rate, several times the whole bf16 decoder for Qwen2.5-0.5B
# (V = 151,936). The error TF32 adds to log pi is ~1e-3 against bf16's ~6e-2 (README, "The GPU path"); train.py's
# --lm-head-precision sets this. Only this matmul is affected: the flag is set around it, in forward and backward.
LM_HEAD_TF32 = True


@contextlib.contextmanager
def _tf32(enabled: bool):
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


class _Linear32(torch.autograd.Function):
    """h [M, H] @ weight [V, H]^T in fp32 with autocast off, TF32 or not (the flag is read when each GEMM is
    launched, so it is set in backward too, where autograd's own linear would run under the global setting)."""

    @staticmethod
    def forward(ctx, h, weight, tf32: bool):
        ctx.save_for_backward(h, weight)
        ctx.tf32 = tf32
        with torch.autocast(h.device.type, enabled=False), _tf32(tf32):
            return h @ weight.t()  # [M, V]

    @staticmethod
    def backward(ctx, grad):  # grad [M, V]
        h, weight = ctx.saved_tensors
        with torch.autocast(grad.device.type, enabled=False), _tf32(ctx.tf32):
            grad_h = grad @ weight if ctx.needs_input_grad[0] else None  # [M, H]
            grad_w = grad.t() @ h if ctx.needs_input_grad[1] else None  # [V, H]
        return grad_h, grad_w, None


def linear32(h, weight, bias=None):
    """The lm_head in fp32 (TF32 on CUDA when LM_HEAD_TF32), also under bf16 autocast -> fp32 logits [..., V]."""
    logits = _Linear32.apply(h.float().reshape(-1, h.shape[-1]), weight.float(), LM_HEAD_TF32)  # [M, V]
    logits = logits.reshape(*h.shape[:-1], -1)
    return logits if bias is None else logits + bias.float()


def _chunk_logp_entropy(h, tokens, weight, bias, temperature: float, with_entropy: bool):
    """h [M, H] final hidden states, tokens [M], lm_head weight [V, H] (bias [V] or None) -> log pi(tokens) [M]
    (differentiable), entropy [M] (detached) or None. Always in fp32, also under bf16 autocast (see below)."""
    # fp32 logits even under bf16 autocast: a bf16 logit of 8-32 is rounded to a step of 0.06-0.125, which the
    # log-softmax passes on to log pi -- ~6 % in the importance ratio, a third of PPO's clip range, and the clip,
    # ETR's bounds and ERC's mask would partly measure rounding noise. h is fp32 already (the residual stream of
    # fp32 weights under autocast is fp32); weight.float() is a no-op for fp32 weights, a copy for bf16 ones.
    # In-place ops where autograd allows them: the linear layer's backward does not need its output, so dividing
    # it in place by the temperature (softmax(logits / T) is the sampled distribution) saves one [M, V] buffer.
    with torch.autocast(h.device.type, enabled=False):
        logits = linear32(h, weight, bias).div_(temperature)  # [M, V] fp32
        lse = logits.logsumexp(-1)  # [M]
        logp = logits.gather(-1, tokens[:, None]).squeeze(-1) - lse  # [M]
        if not with_entropy:  # one softmax pass over [M, V] saved (twice in training: the checkpoint recomputes it)
            return logp, None
        with torch.no_grad():
            entropy = _entropy(logits.detach())  # [M]
    return logp, entropy


def _entropy(z):
    """z [M, V] fp32 logits -> H = -sum_v p_v log p_v [M], to ~1e-7 relative even for a near-deterministic token.

    The textbook H = logsumexp(z) - sum_v p_v z_v subtracts two numbers of the size of the top logit (20-30 for a
    confident LM) to get one of 1e-2 .. 1e-6: in fp32 its relative error is 7 % at H = 0.07 and 100 % at 4e-4
    (tests/test_rollout.py) -- noise as large as ERC's whole band (|H / H_old - 1| < 0.05) on exactly the tokens of a
    collapsing policy. Here every term is >= 0, so nothing cancels: with d = z - max(z) and s = the summed exp(d) of
    every token but the top one (summed without the top's 1, which would swallow it), logsumexp(z) - max = log1p(s),
    and H = sum_v p_v (log1p(s) - d_v) = (sum_{v != top} e^{d_v} (log1p(s) - d_v) + log1p(s)) / (1 + s)."""
    top = z.max(-1, keepdim=True)
    d = z - top.values  # [M, V] <= 0, exact near the top
    e = d.exp().scatter_(-1, top.indices, 0.0)  # [M, V] p_v (1 + s) for v != top; 0 at the top
    s = e.sum(-1)  # [M]
    log_1ps = s.log1p()  # [M] logsumexp(z) - max(z)
    return e.mul_(d.neg_().add_(log_1ps[:, None])).sum(-1).add_(log_1ps).div_(1 + s)  # [M]


def completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature: float = 1.0,
                        with_entropy: bool = True):
    """log pi(token) [B, T] and entropy [B, T] (or None) of each completion token, float32; 0 where completion_mask == 0.

    One forward pass over prompt + completion. Differentiable in the model's parameters when grad is enabled
    (training); then each lm_head chunk is recomputed in backward (torch.utils.checkpoint), so neither forward
    nor backward ever holds more than CHUNK_ROWS x V logits.
    """
    if temperature <= 0:
        raise ValueError("completion_logprobs needs temperature > 0 (greedy samples have no log-probabilities to train on)")
    device = model.device
    B, T = completion_ids.shape
    # Drop columns that are padding in every row (left of all prompts, right of all completions): it changes
    # nothing (causal attention, positions from the mask) and micro-batches of short sequences get cheaper.
    p0 = int(prompt_mask.any(0).long().argmax()) if prompt_mask.any() else prompt_mask.shape[1]
    t1 = int(completion_mask.any(0).nonzero().max()) + 1 if completion_mask.any() else 0
    input_ids = torch.cat([prompt_ids[:, p0:], completion_ids[:, :t1]], 1).to(device)  # [B, L]
    attention_mask = torch.cat([prompt_mask[:, p0:], completion_mask[:, :t1]], 1).to(device)  # [B, L]
    # Positions as generate() assigns them under left padding: counting real tokens only. Without this the
    # scores of a left-padded row would not be those of the distribution it was sampled from.
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)  # [B, L]
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False).last_hidden_state  # [B, L, H]
    P = input_ids.shape[1] - t1
    hidden = hidden[:, P - 1:P - 1 + t1]  # [B, t1, H]: the state at position j predicts token j + 1
    keep = completion_mask.to(device).bool()  # [B, T]
    h, tokens = hidden[keep[:, :t1]], completion_ids.to(device)[keep]  # [M, H], [M]

    lm_head = model.get_output_embeddings()
    logps, entropies = [torch.zeros(0, device=device)], [torch.zeros(0, device=device)]
    for i in range(0, h.shape[0], CHUNK_ROWS):
        args = (h[i:i + CHUNK_ROWS], tokens[i:i + CHUNK_ROWS], lm_head.weight, lm_head.bias, temperature, with_entropy)
        if torch.is_grad_enabled():
            logp, entropy = checkpoint(_chunk_logp_entropy, *args, use_reentrant=False)
        else:
            logp, entropy = _chunk_logp_entropy(*args)
        logps.append(logp)
        entropies.append(entropy)
    logp = torch.zeros(B, T, device=device).masked_scatter(keep, torch.cat(logps))  # [B, T]
    entropy = torch.zeros(B, T, device=device).masked_scatter(keep, torch.cat(entropies)) if with_entropy else None
    return logp, entropy


BATCH_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")  # what completion_logprobs takes


@torch.no_grad()
def score(model, batch: dict, micro_batch_size: int, temperature: float = 1.0, with_entropy: bool = True):
    """completion_logprobs over a generate() dict in micro-batches, without grad -> CPU float32 [N, T] (, [N, T])."""
    keys = BATCH_KEYS
    logps, entropies = [], []
    for i in range(0, batch["completion_ids"].shape[0], micro_batch_size):
        logp, entropy = completion_logprobs(model, *(batch[k][i:i + micro_batch_size] for k in keys),
                                            temperature=temperature, with_entropy=with_entropy)
        logps.append(logp.cpu())
        entropies.append(entropy.cpu() if with_entropy else None)
    return torch.cat(logps), (torch.cat(entropies) if with_entropy else None)
