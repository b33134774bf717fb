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
- Pre-training: supervised (cross-entropy on the worked answer and its EOS, prompts built with
  rollout.build_prompt(..., "plain") exactly as train.py builds them), stopped on a measured criterion, not a
  step count: the sampled accuracy at temperature 1 on CHECK_PROBLEMS held-out problems (one sample each,
  common random numbers: the same sampling seed at every check). Pre-training stops as soon as it reaches
  TARGET_ACCURACY (or at PRETRAIN_MAX_STEPS). Why not a fixed step count: the learning curve is steep where we
  want to stop, so a fixed count turns the tiny rounding differences between CPUs into a different starting
  model (the first 10 RL steps averaged 0.42 reward on one machine, 0.17 on another). A measured stop lands every
  machine, and every ETR_TOY_SEED, in the same band: the model knows the format and mostly the arithmetic,
  but sampling at temperature 1 is right only ~45 % of the time -- the headroom RL should visibly close.
  Why 0.45 and not lower: RL at temperature 1 mostly sharpens what pre-training half-knows. Stopped at 0.35,
  200 RL steps of 8 x 16 samples gained +0.23 to +0.34 over five seeds; at 0.45, +0.36 and +0.38 on the two
  seeds that gained least from 0.35 (docs/toy.md). The task stays one-digit: operands 1..7 (77 facts
  instead of 126) did not learn faster from a 0.45 start (seed 4: +0.24 / +0.27 against +0.30 / +0.28).
  (The probability of writing exactly the worked answer, a noise-free teacher-forced quantity, was tried
  first: it tracks the accuracy, but a third of the correct samples are not the worked answer -- "9+6=16.
  \\boxed{15}": the box is predicted from the problem, not from the sum -- and that share varies by seed.)
  What the build reached is written to pretrain.json beside the weights.

ETR_TOY_SEED=N picks the pre-training seed (initial weights and data order; default 1234), a stand-in for a
different CPU. The cache directory is named after a hash of everything that changes the result: this file
(the recipe), rollout.py, reward.py and latex.py (the criterion samples and grades with them), the plain prompt
template, the seed, and the torch and transformers versions. A changed recipe rebuilds instead of loading a stale model.
The build is deterministic on one machine (fixed seeds, the caller's RNG untouched).
"""
import hashlib
import json
import os
import random
import shutil
import string
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import rollout
from rollout import PROMPT_TEMPLATES, build_prompt, default_cache_dir

EOS = "<|endoftext|>"
INSTRUCTION = PROMPT_TEMPLATES["plain"].replace("{problem}", "")  # the text the plain template adds to a problem
CHARS = string.printable[:-5] + "\n"  # digits, letters, punctuation, space, newline (no \t \r \x0b \x0c)

# Model and pre-training recipe.
N_LAYERS, HIDDEN, N_HEADS = 3, 128, 4
PRETRAIN_BATCH, PRETRAIN_LR, WARMUP_STEPS, MAX_GRAD_NORM = 32, 3e-3, 20, 1.0
TARGET_ACCURACY = 0.45  # stop once the held-out sampled accuracy at temperature 1 reaches this
PRETRAIN_MAX_STEPS = 1000  # the cap, if the target is never reached (reached after ~210-230 steps)
# 1,024 held-out problems, one sample each (RL draws seed 0, eval 10_000): one draw per problem gives the
# smallest standard error for a fixed number of samples (~0.015 at 0.4), since problems differ far more than samples.
CHECK_PROBLEMS, CHECK_SAMPLES, CHECK_SEED = 1024, 1, 5_000
CHECK_EVERY, CHECK_BELOW_LOSS = 2, 0.15  # check every 2nd step, once the step's training loss is below 0.15
DEFAULT_SEED = 1234

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


def toy_seed() -> int:
    """The pre-training seed: $ETR_TOY_SEED, or DEFAULT_SEED."""
    value = os.environ.get("ETR_TOY_SEED", "").strip()
    if not value:
        return DEFAULT_SEED
    try:
        return int(value)
    except ValueError:
        raise rollout.UserError(f"ETR_TOY_SEED={value!r} is not an integer: set it to a whole number "
                        f"(e.g. ETR_TOY_SEED=1) or unset it for the default {DEFAULT_SEED}") from None


def _supervised_batch(tokenizer, problems: list[tuple]):
    """(prompt + worked answer + EOS) rows, right-padded -> ids [B, L], labels [B, L] (-100 outside the answer)."""
    p = tokenizer([build_prompt(q, tokenizer, "plain") for q, _, _ in problems], add_special_tokens=False)["input_ids"]
    c = tokenizer([s + EOS for _, s, _ in problems], add_special_tokens=False)["input_ids"]
    L = max(len(x) + len(y) for x, y in zip(p, c))
    ids = torch.zeros(len(problems), L, dtype=torch.long)  # [B, L] right-padded with EOS (= pad)
    labels = torch.full((len(problems), L), -100)  # [B, L] -100 = ignored by the loss
    for i, (x, y) in enumerate(zip(p, c)):
        ids[i, :len(x) + len(y)] = torch.tensor(x + y)
        labels[i, len(x):len(x) + len(y)] = torch.tensor(y)
    return ids, labels


def sampled_accuracy(model, tokenizer, problems: list[tuple], n: int = CHECK_SAMPLES, seed: int = CHECK_SEED) -> float:
    """Fraction of n samples per problem (temperature 1, as RL samples) that the reward verifies, drawn with a
    fixed seed: two calls on the same model agree exactly, and the caller's RNG is left as it was."""
    from reward import math_reward

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        batch = rollout.generate(model, tokenizer, [build_prompt(q, tokenizer, "plain") for q, _, _ in problems], n,
                                 temperature=1.0, max_new_tokens=32, batch_size=len(problems) * n)
    rewards = [math_reward(text, str(problems[i // n][2])) for i, text in enumerate(batch["texts"])]
    return sum(rewards) / len(rewards)


def _pretrain(model, tokenizer, seed: int, target: float = TARGET_ACCURACY, max_steps: int = PRETRAIN_MAX_STEPS,
              criterion=sampled_accuracy) -> dict:
    """Supervised pre-training on worked answers (loss on the completion tokens and the final EOS only) until
    criterion(model, tokenizer, held-out problems) >= target, or max_steps. A check samples 1,024 completions
    (seconds), so it runs only every CHECK_EVERY-th step and only once the step's own training loss (free) is
    below CHECK_BELOW_LOSS nats per token: in every seed we tried the accuracy is ~0.1 at loss 0.4 and ~0.3 at
    loss 0.13, so no check is wasted on a model that cannot be there yet. -> what it reached."""
    rng = random.Random(seed)
    check_rng = random.Random(CHECK_SEED)
    held_out = [_toy_problem(check_rng) for _ in range(CHECK_PROBLEMS)]
    # Denormal floats (tiny Adam moments) make CPU matmuls ~10x slower after a few hundred steps: flush them.
    torch.set_flush_denormal(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.0)
    step, accuracy = 0, criterion(model, tokenizer, held_out)
    model.train()
    # on stderr, so that a caller's stdout (train.py's and eval.py's results) stays clean; no total: it stops on
    # the measurement, usually after ~200-280 of the max_steps
    bar = tqdm(desc=f"toy pre-training (stops at sampled accuracy {target})", unit="step", file=sys.stderr,
               disable=accuracy >= target)
    while accuracy < target and step < max_steps:
        for group in optimizer.param_groups:  # linear warm-up, then constant
            group["lr"] = PRETRAIN_LR * min(1.0, (step + 1) / WARMUP_STEPS)
        ids, labels = _supervised_batch(tokenizer, [_toy_problem(rng) for _ in range(PRETRAIN_BATCH)])
        loss = model(input_ids=ids, labels=labels).loss  # HF shifts labels by one inside
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)  # lr 3e-3 spikes without it
        optimizer.step()
        step += 1
        if (step % CHECK_EVERY == 0 and loss.item() < CHECK_BELOW_LOSS) or step == max_steps:
            accuracy = criterion(model, tokenizer, held_out)  # generate() switches to eval mode and back
        bar.set_postfix(loss=f"{loss.item():.3f}", accuracy=f"{accuracy:.3f}", refresh=False)
        bar.update(1)
    bar.close()
    model.eval()
    return {"seed": seed, "steps": step, "sampled_accuracy": round(accuracy, 4), "target": target,
            "stopped_by": "target" if accuracy >= target else "step cap"}


def cache_key(seed: int) -> str:
    """Hash of everything that changes the built toy: the recipe (this file), the code it runs (rollout.py samples
    and prompts for the criterion, reward.py and its parser latex.py grade it), the prompt template, the seed, and
    the torch and transformers versions (their kernels round differently)."""
    import transformers

    here = Path(__file__).resolve().parent
    parts = [(here / name).read_bytes() for name in ("toy.py", "rollout.py", "reward.py", "latex.py")]
    parts += [PROMPT_TEMPLATES["plain"].encode(), str(seed).encode(), torch.__version__.encode(),
              transformers.__version__.encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:12]


def build_toy(cache_dir: str | Path | None = None, force: bool = False) -> Path:
    """Build (once) and return the toy's directory, loadable with from_pretrained."""
    seed = toy_seed()
    out = Path(cache_dir or default_cache_dir()) / f"toy-{cache_key(seed)}"
    if out.is_dir() and not force:
        return out
    print(f"toy: building the offline toy model, once: pre-training on CPU until its sampled accuracy reaches "
          f"{TARGET_ACCURACY}, about 2-4 minutes on 2 cores; cached in {out}", file=sys.stderr, flush=True)
    tokenizer = make_tokenizer()
    t0 = time.perf_counter()
    with torch.random.fork_rng():  # deterministic, and the caller's RNG state is left as it was
        torch.manual_seed(seed)
        model = make_model(len(tokenizer))
        report = _pretrain(model, tokenizer, seed)
    report["seconds"] = round(time.perf_counter() - t0, 1)  # the only entry that differs between machines
    if report["stopped_by"] != "target":
        print(f"toy: pre-training stopped at the cap ({report['steps']} steps) with sampled accuracy "
              f"{report['sampled_accuracy']} < target {report['target']}", file=sys.stderr)
    # Write to a temporary directory, then rename: an interrupted build never leaves a half-written model.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "pretrain.json").write_text(json.dumps(report, indent=2) + "\n")
    if force:
        shutil.rmtree(out, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:  # another process finished the same build first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


rollout.BUILT_MODELS["toy"] = build_toy  # rollout.load_model("toy") builds (once) and loads it
