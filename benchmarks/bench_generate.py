"""One generate call of k*n rows against k calls of n rows, and the KV cache's bytes per token under autocast.

    python benchmarks/bench_generate.py                                   # Qwen2.5-0.5B shape, random weights, CPU
    python benchmarks/bench_generate.py --device cuda --rows 128 --max-new-tokens 1024   # the GPU question

train.py generates a step's rows in one call when their KV cache fits (memory.gen_batch_size); before, it made
calls of --gen-batch-size 128 rows. Both variants here go through rollout.generate (the code train.py runs) with the
same weights, the same k*n prompts (toy problems, "plain" template) and exactly --max-new-tokens new tokens per row
(min_new_tokens = max_new_tokens: EOS is never sampled, so the work is fixed). Dtype as in train.py: fp32 weights,
bf16 autocast on CUDA, plain fp32 on CPU. The variants alternate in one process, one round after another, after one
warm-up round; the medians are reported, and their ratio.

The KV cache part runs a short generate under bf16 autocast (CUDA's, or CPU's on CPU) twice: with transformers'
own cache and with rollout.kv_cache, and prints the cache's bytes per token of each, the formula of
memory.kv_bytes_per_token, and whether every logit was the same.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import memory  # noqa: E402
import rollout  # noqa: E402
import toy  # noqa: E402
from bench_step import load, model_path, sync  # noqa: E402


def timed_generate(model, tokenizer, prompts, batch_size, max_new_tokens) -> float:
    sync(model.device)
    t0 = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=model.device.type == "cuda"):
        batch = rollout.generate(model, tokenizer, prompts, 1, temperature=1.0, max_new_tokens=max_new_tokens,
                                 batch_size=batch_size)
    sync(model.device)
    assert (batch["completion_mask"].sum(1) == max_new_tokens).all()  # fixed work on both sides
    return time.perf_counter() - t0


def kv_bytes(model, tokenizer, prompts, max_new_tokens):
    """Under bf16 autocast: (bytes per cached token with HF's cache, with rollout.kv_cache, identical logits?)."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    outs = []
    for cache in ({}, rollout.kv_cache(model)):
        with torch.autocast(model.device.type, dtype=torch.bfloat16):
            outs.append(model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True,
                                       return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id, **cache))
    per_token = []
    for out in outs:
        cache = dict(out.items()).get("cache", dict(out.items()).get("past_key_values"))
        tensors = [t for layer in cache.layers for t in (layer.keys, layer.values)]
        per_token.append(sum(t.nbytes for t in tensors) / (tensors[0].shape[0] * tensors[0].shape[2]))
    same = all(torch.equal(a, b) for a, b in zip(outs[0].logits, outs[1].logits))
    return per_token[0], per_token[1], same


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="random-qwen2.5-0.5b", help="random-qwen2.5-0.5b (built once), toy, or a model")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rows", type=int, default=2, help="n: rows per call of the many-calls variant (default: 2)")
    p.add_argument("--calls", type=int, default=4, help="k: calls of n rows, against one call of k*n (default: 4)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round (default: 3)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    model, tokenizer = load(model_path(a.model), a.device, a.max_new_tokens)
    prompts = [rollout.build_prompt(q["problem"], tokenizer) for q in toy.toy_problems(a.rows * a.calls, seed=3)]
    print(f"bench_generate: a warm-up round, then {a.rounds}, each printed as it ends (on a CPU, minutes per round for "
          "the Qwen shape)", file=sys.stderr, flush=True)
    times = {"many": [], "one": []}
    for r in range(a.rounds + 1):
        many = timed_generate(model, tokenizer, prompts, a.rows, a.max_new_tokens)
        one = timed_generate(model, tokenizer, prompts, a.rows * a.calls, a.max_new_tokens)
        print(f"round {r}{' (warm-up)' if r == 0 else ''}: {a.calls} calls of {a.rows} rows {many:.2f} s, "
              f"1 call of {a.rows * a.calls} rows {one:.2f} s")
        if r:
            times["many"].append(many)
            times["one"].append(one)
    many, one = statistics.median(times["many"]), statistics.median(times["one"])
    print(f"median over {a.rounds} rounds: {a.calls} x {a.rows} rows {many:.2f} s, 1 x {a.rows * a.calls} rows "
          f"{one:.2f} s: one call takes {one / many:.2f}x the time of {a.calls} ({many / one:.2f}x faster); "
          f"{a.max_new_tokens} new tokens per row, {a.device}, {torch.get_num_threads()} threads")

    hf, ours, same = kv_bytes(model, tokenizer, prompts[:2], 4)
    print(f"KV cache under bf16 autocast: transformers' cache {hf:,.0f} bytes per token (fp32 keys), "
          f"rollout.kv_cache {ours:,.0f} ({ours / hf:.3f}x; formula memory.kv_bytes_per_token "
          f"{memory.kv_bytes_per_token(model.config):,}); every logit identical: {same}")


if __name__ == "__main__":
    main()
