"""The offline toy: a tiny Qwen2 model that learns terse arithmetic word problems, so everything runs with no download.

`load_model("toy")` calls build_toy(), which builds the model once and caches it; from then on it is a directory
like any Hugging Face checkpoint and goes through `from_pretrained`. The recipe:

- Tokenizer: one token per character (printable ASCII and newline) plus one special token, <|endoftext|>, used
  as both EOS and pad -- as in the Qwen2.5 base models, so the pad == eos case is the one exercised everywhere.
  Built with the `tokenizers` package (a byte-level BPE without merges, so that it survives being reloaded as
  Qwen2Tokenizer) and wrapped as a transformers PreTrainedTokenizerFast.
- Task: "Ann has 7 pens and gets 8 more. How many pens?" with worked answer "7+8=15. \\boxed{15}" (or a
  subtraction). One-digit operands: a 3-layer model learns the format and copying within seconds, the sums
  more slowly. (With operands up to 29 it stays below 10 % sampled accuracy for over 1,000 steps.)
- Model: Qwen2Config with 3 layers, hidden size 128.
- Pre-training: a short supervised run (cross-entropy on the worked answer and its EOS, prompts built with
  rollout.build_prompt(..., "plain") exactly as train.py builds them). It is deliberately stopped early: the
  model knows the format and mostly the arithmetic, but sampling at temperature 1 is right only part of the
  time -- the headroom that RL should visibly close.

The cache directory is named after a hash of this file and of the plain prompt template, so a changed recipe
rebuilds instead of loading a stale model. The build is deterministic (fixed seeds, caller's RNG untouched).
"""
import hashlib
import os
import random
import shutil
import string
from pathlib import Path

import torch

from rollout import PROMPT_TEMPLATES, build_prompt

EOS = "<|endoftext|>"
INSTRUCTION = PROMPT_TEMPLATES["plain"].replace("{problem}", "")  # the text the plain template adds to a problem
CHARS = string.printable[:-5] + "\n"  # digits, letters, punctuation, space, newline (no \t \r \x0b \x0c)

# Model and pre-training recipe.
N_LAYERS, HIDDEN, N_HEADS = 3, 128, 4
PRETRAIN_STEPS, PRETRAIN_BATCH, PRETRAIN_LR, SEED = 225, 32, 3e-3, 1234

MAX_OPERAND = 9  # operands are 1..MAX_OPERAND: the task's difficulty
NAMES = ["Ann", "Bob", "Eve", "Max", "Kim", "Sam", "Zoe", "Tom"]
ITEMS = ["pens", "eggs", "cups", "toys", "hats", "keys"]


def _toy_problem(rng: random.Random) -> tuple[str, str, int]:
    """-> (problem, worked solution ending in \\boxed{answer}, answer). One step: a + b or a - b, operands 1..MAX_OPERAND."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(1, MAX_OPERAND), rng.randint(1, MAX_OPERAND)
    if rng.random() < 0.5:
        problem, solution, answer = f"{name} has {a} {item} and gets {b} more.", f"{a}+{b}={a + b}.", a + b
    else:
        a, b = max(a, b), min(a, b)
        problem, solution, answer = f"{name} has {a} {item} and gives away {b}.", f"{a}-{b}={a - b}.", a - b
    return f"{problem} How many {item}?", f"{solution} \\boxed{{{answer}}}", answer


def toy_problems(n: int, seed: int) -> list[dict]:
    """n problems {"id", "problem", "answer"}; the same (n, seed) always gives the same list."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        problem, _, answer = _toy_problem(rng)
        out.append({"id": f"toy-{seed}-{i}", "problem": problem, "answer": str(answer)})
    return out


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet (the one Qwen's tokenizer uses): byte -> printable unicode character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    moved = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(moved)}}


def make_tokenizer():
    """Character-level fast tokenizer: every character of CHARS is one token; EOS doubles as pad.

    It is a byte-level BPE with no merges, i.e. Qwen's own tokenizer design with a 96-character vocabulary.
    That matters: AutoTokenizer loads any model_type=qwen2 directory as Qwen2Tokenizer, which re-applies
    Qwen's byte-level pre-tokenizer -- a plain character-level tokenizer would lose its spaces on reload.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    to_unicode = _byte_to_unicode()
    vocab = {EOS: 0, **{to_unicode[ord(ch)]: i + 1 for i, ch in enumerate(CHARS)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOS, special=True)])
    tok.add_tokens([AddedToken(INSTRUCTION, normalized=False)])  # the fixed instruction: one token, not 70
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, padding_side="left")


def make_model(vocab_size: int, n_layers: int = N_LAYERS):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                         num_hidden_layers=n_layers, num_attention_heads=N_HEADS, num_key_value_heads=N_HEADS,
                         max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=None,
                         eos_token_id=0, pad_token_id=0)
    return Qwen2ForCausalLM(config)


def _pretrain(model, tokenizer):
    """Supervised pre-training on worked answers: loss on the completion tokens and the final EOS only."""
    rng = random.Random(SEED)
    # Denormal floats (tiny Adam moments) make CPU matmuls ~10x slower after a few hundred steps: flush them.
    torch.set_flush_denormal(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.0)
    model.train()
    for step in range(PRETRAIN_STEPS):
        for group in optimizer.param_groups:  # linear warm-up over the first 10% of steps, then constant
            group["lr"] = PRETRAIN_LR * min(1.0, (step + 1) / (0.1 * PRETRAIN_STEPS))
        prompts, answers = [], []
        for _ in range(PRETRAIN_BATCH):
            problem, solution, _ = _toy_problem(rng)
            prompts.append(build_prompt(problem, tokenizer, "plain"))
            answers.append(solution + EOS)
        p = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        c = tokenizer(answers, add_special_tokens=False)["input_ids"]
        L = max(len(x) + len(y) for x, y in zip(p, c))
        ids = torch.zeros(PRETRAIN_BATCH, L, dtype=torch.long)  # [B, L] right-padded with EOS (= pad)
        labels = torch.full((PRETRAIN_BATCH, L), -100)  # [B, L] -100 = ignored by the loss
        for i, (x, y) in enumerate(zip(p, c)):
            ids[i, :len(x) + len(y)] = torch.tensor(x + y)
            labels[i, len(x):len(x) + len(y)] = torch.tensor(y)
        loss = model(input_ids=ids, labels=labels).loss  # HF shifts labels by one inside
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def default_cache_dir() -> Path:
    return Path(os.environ.get("ETR_CACHE", Path.home() / ".cache" / "etr"))


def build_toy(cache_dir: str | Path | None = None, force: bool = False) -> Path:
    """Build (once) and return the toy's directory, loadable with from_pretrained."""
    recipe = Path(__file__).read_bytes() + PROMPT_TEMPLATES["plain"].encode()
    out = Path(cache_dir or default_cache_dir()) / f"toy-{hashlib.sha256(recipe).hexdigest()[:12]}"
    if out.is_dir() and not force:
        return out
    tokenizer = make_tokenizer()
    with torch.random.fork_rng():  # deterministic, and the caller's RNG state is left as it was
        torch.manual_seed(SEED)
        model = make_model(len(tokenizer))
        _pretrain(model, tokenizer)
    # Write to a temporary directory, then rename: an interrupted build never leaves a half-written model.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if force:
        shutil.rmtree(out, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:  # another process finished the same build first
        shutil.rmtree(tmp, ignore_errors=True)
    return out
