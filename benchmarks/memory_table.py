"""memory.estimate for every model alias at the Qwen defaults of train.py, with and without gradient checkpointing.

    python benchmarks/memory_table.py          # offline: the shapes below
    python benchmarks/memory_table.py --hub    # the same from each model's config.json on the Hub (needs internet)

The shapes are copied from each model's config.json on the Hugging Face Hub (hidden_size, intermediate_size,
num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, vocab_size, tie_word_embeddings);
--hub reads them from there instead. The -Instruct models have their base model's shape.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import Qwen2Config, Qwen3Config  # noqa: E402

import memory  # noqa: E402
import train  # noqa: E402

V = 151_936
USABLE = 78 * 2**30  # what an 80 GB H100 offers a process (torch.cuda.mem_get_info: ~78 GiB free of 79.2)
SHAPES = {  # name: (model type, hidden, MLP, layers, heads, KV heads, head dim, vocabulary, tied)
    "Qwen2.5-0.5B": ("qwen2", 896, 4864, 24, 14, 2, 64, V, True),
    "Qwen2.5-1.5B": ("qwen2", 1536, 8960, 28, 12, 2, 128, V, True),
    "Qwen2.5-Math-1.5B": ("qwen2", 1536, 8960, 28, 12, 2, 128, V, True),
    "Qwen2.5-3B": ("qwen2", 2048, 11008, 36, 16, 2, 128, V, True),
    "Qwen2.5-7B": ("qwen2", 3584, 18944, 28, 28, 4, 128, 152_064, False),
    "Qwen2.5-Math-7B": ("qwen2", 3584, 18944, 28, 28, 4, 128, 152_064, False),
    "Qwen3-0.6B-Base": ("qwen3", 1024, 3072, 28, 16, 8, 128, V, True),
    "Qwen3-1.7B-Base": ("qwen3", 2048, 6144, 28, 16, 8, 128, V, True),
    "Qwen3-4B-Base": ("qwen3", 2560, 9728, 36, 32, 8, 128, V, True),
}


def config_of(name: str):
    kind, h, i, layers, heads, kv_heads, head_dim, vocab, tied = SHAPES[name]
    return (Qwen2Config if kind == "qwen2" else Qwen3Config)(
        hidden_size=h, intermediate_size=i, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=head_dim, vocab_size=vocab, tie_word_embeddings=tied)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hub", action="store_true", help="read each config.json from the Hub instead of SHAPES")
    hub = p.parse_args().hub
    args = train.resolve_args(train.parse_args(["--model", "Qwen2.5-0.5B"]))  # the Qwen defaults
    print(f"train.py defaults: {args.prompts_per_step} x {args.group_size} rows, --micro-batch-size "
          f"{args.micro_batch_size}, --max-new-tokens {args.max_new_tokens}, prompts counted as "
          f"{memory.PROMPT_TOKENS} tokens; GiB")
    print("| model | parameters | weights + grads + AdamW + bf16 copies | training peak | with --gradient-checkpointing "
          "| generation, all rows in one call | fits one 80 GB GPU (~78 GiB usable)? |")
    print("|---|---|---|---|---|---|---|")
    for name in SHAPES:
        config = memory.load_config(name) if hub else config_of(name)
        est = {ckpt: memory.estimate(config, micro_batch_size=args.micro_batch_size,
                                     max_new_tokens=args.max_new_tokens,
                                     gen_rows=args.prompts_per_step * args.group_size, gradient_checkpointing=ckpt,
                                     kl_coef=0.0) for ckpt in (False, True)}
        P, parts = memory.n_params(config), est[False]["parts"]
        state = sum(parts[k] for k in ("weights (fp32)", "gradients (fp32)", "AdamW m, v (fp32)",
                                       "autocast bf16 weight copies"))
        need = {ckpt: max(e[phase] for phase in ("score", "train", "optimizer")) for ckpt, e in est.items()}  # = check
        verdict = "yes" if need[False] <= USABLE else "with --gradient-checkpointing" if need[True] <= USABLE else "no"
        print(f"| {name} | {P / 1e9:.2f} B | {state / 2**30:.1f} | {need[False] / 2**30:.1f} | "
              f"{need[True] / 2**30:.1f} | {est[False]['generate'] / 2**30:.1f} | {verdict} |")


if __name__ == "__main__":
    main()
