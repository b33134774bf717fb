"""The single-GPU path, measured on a GPU in one command with nothing to download.

    python benchmarks/gpu_check.py --out gpu_check.json    # Qwen2.5-0.5B's shape, 3 steps: ~3 min on one H200
    python benchmarks/gpu_check.py --tiny                  # the same code at a tiny shape, on any CPU (a test runs it)

The model is randomly initialised from Qwen2.5-0.5B's config.json (benchmarks/qwen2.5-0.5b.json, as the Hub
ships it), with its tied embedding scaled up so that the logits reach a trained model's range (|z| up to ~20-30;
at the initialiser's scale they stay below 3, and bf16 would round them too finely to show anything). The tokenizer
is a word-level one of the same vocabulary size, built in memory. Untrained, the model almost never samples EOS:
every completion runs to --max-new-tokens, the worst case for memory. Rewards are coin flips (the loss needs
non-zero advantages). Everything else is train.py's own code: rollout.generate, train.train_step (ETR, 4
mini-batches of 4-sequence micro-batches), fused AdamW, bf16 autocast, the fp32 (TF32) lm_head.

Printed, and written as JSON with --out:
1. peak memory per phase (generate, score, train, optimizer): torch.cuda.max_memory_allocated and _reserved,
   reset as each phase begins, against memory.estimate for the same settings (estimate / reserved >= 1: never short);
2. the time of a step, split into the same phases (steps after the first: the first one warms up the kernels);
3. the lm_head alone, one chunk of rollout.CHUNK_ROWS tokens: forward + backward time in fp32, TF32 and bf16, and
   each one's largest log pi error against fp64 on the model's own hidden states;
4. the sampling gap |log pi when sampled - scored log pi_old| (max, mean): train.py's fp32 lm_head in generate,
   and autocast's bf16 one (before the fix), on the same prompts and seed.
"""
import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import etr  # noqa: E402
import memory  # noqa: E402
import rollout  # noqa: E402
import train  # noqa: E402

CONFIG = Path(__file__).with_name("qwen2.5-0.5b.json")
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=1000, bos_token_id=999, eos_token_id=999, max_position_embeddings=512)
EMBED_SCALE = 8.0  # logits' std ~0.6 at init -> ~5, largest ~20-30 over the vocabulary: a trained model's range


def make_model_and_tokenizer(tiny: bool, device):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**{**json.loads(CONFIG.read_text()), **(TINY if tiny else {})})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(EMBED_SCALE)  # tied: the lm_head too
    model.to(device)
    model.generation_config.pad_token_id = model.generation_config.eos_token_id = config.eos_token_id
    return model, word_tokenizer(config.vocab_size, config.eos_token_id)


def word_tokenizer(vocab_size: int, eos_id: int):
    """Words w0 .. w{vocab_size - 1}, one token each, whitespace-split; w{eos_id} is EOS and pad, left padding."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab_size)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=f"w{eos_id}", pad_token=f"w{eos_id}")
    tokenizer.padding_side = "left"
    return tokenizer


class Phases:
    """phase(name): the time and the peak memory since the previous call go to the previous phase."""

    def __init__(self, device):
        self.device, self.seconds, self.allocated, self.reserved, self.name = device, {}, {}, {}, None

    def __call__(self, name):
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self.name:
            self.seconds[self.name] = self.seconds.get(self.name, 0.0) + now - self.t0
            if cuda:
                for store, value in ((self.allocated, torch.cuda.max_memory_allocated()),
                                     (self.reserved, torch.cuda.max_memory_reserved())):
                    store[self.name] = max(store.get(self.name, 0), value)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        self.name, self.t0 = (None if name == "end" else name), now


def prompts_of(tokenizer, n: int, max_tokens: int, seed: int) -> list[str]:
    """n prompts of random words, max_tokens // 4 .. max_tokens long (the padding of real prompts)."""
    g = torch.Generator().manual_seed(seed)
    V = len(tokenizer)
    lengths = torch.randint(max(1, max_tokens // 4), max_tokens + 1, (n,), generator=g).tolist()
    lengths[0] = max_tokens  # the longest, as the estimate assumes
    return [" ".join(f"w{i}" for i in torch.randint(1, V - 1, (k,), generator=g).tolist()) for k in lengths]


def gemm_tflops(device, n: int = 8192, repeats: int = 10) -> float:
    """The calibration of this machine: an n x n x n bf16 matrix product's rate (after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ a
    torch.cuda.synchronize()
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e12


def lm_head_check(model, batch, device, repeats: int) -> dict:
    """fwd + bwd time of one lm_head chunk and its log pi error against fp64, in fp32 / TF32 / bf16."""
    M = rollout.CHUNK_ROWS
    keep = batch["completion_mask"].bool()
    with torch.no_grad(), train.autocast(device):
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)[:8].to(device)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)[:8].to(device)
        h = model.base_model(input_ids=ids, attention_mask=mask,
                             position_ids=(mask.cumsum(1) - 1).clamp(min=0)).last_hidden_state
    P = batch["prompt_ids"].shape[1]
    h = h[:, P - 1:-1][keep[:8].to(device)][:M].float()  # [M, H] fp32, the residual stream under autocast
    tokens = batch["completion_ids"][:8].to(device)[keep[:8].to(device)][:M]  # [M]
    W = model.get_output_embeddings().weight.detach()  # [V, H] fp32
    exact = (h.double() @ W.double().T).log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1)  # [M]
    out = {"rows": h.shape[0], "largest_logit": (h.double() @ W.double().T).abs().max().item()}

    def run(kind):
        hh, WW = h.clone().requires_grad_(), W.clone().requires_grad_()
        rollout.LM_HEAD_TF32 = kind == "tf32"
        if kind == "bf16":  # what autocast does with the lm_head: bf16 inputs, bf16 logits
            with torch.autocast(device.type, dtype=torch.bfloat16):
                logits = F.linear(hh, WW)
        else:
            logits = rollout.linear32(hh, WW)
        logp = logits.float().log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1)
        logp.sum().backward()
        return logp.detach()

    for kind in ("fp32", "tf32", "bf16"):
        logp = run(kind)  # warm-up, and the values
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            run(kind)
        if device.type == "cuda":
            torch.cuda.synchronize()
        out[kind] = {"ms_fwd_bwd": 1e3 * (time.perf_counter() - t0) / repeats,
                     "logp_err_max": (logp.double() - exact).abs().max().item()}
    rollout.LM_HEAD_TF32 = True
    return out


def sampling_gap(model, tokenizer, prompts, max_new_tokens: int, device, bf16_head: bool) -> dict:
    """|sampled log pi - scored log pi_old| over the completion tokens, with generate's lm_head in fp32 or bf16."""
    torch.manual_seed(1)
    with (contextlib.nullcontext() if not bf16_head else
          _patched(rollout, "fp32_lm_head", lambda m: contextlib.nullcontext())), train.autocast(device):
        batch = rollout.generate(model, tokenizer, prompts, 2, max_new_tokens=max_new_tokens, batch_size=len(prompts) * 2)
        logp, _ = rollout.score(model, batch, 4, with_entropy=False)
    gap = (batch["sample_logp"] - logp)[batch["completion_mask"].bool()].abs()
    return {"max": gap.max().item(), "mean": gap.mean().item()}


@contextlib.contextmanager
def _patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a 2-layer, 1,000-word model: the code path on any CPU")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompts", type=int, help="prompts per step (default: 16; tiny 2)")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, help="longest prompt (default: 256; tiny 12)")
    p.add_argument("--max-new-tokens", type=int, help="(default: 1024; tiny 8)")
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--lm-head-repeats", type=int, help="timed repeats of the lm_head chunk (default: 20; tiny 1)")
    p.add_argument("--out", help="write the results here as JSON")
    a = p.parse_args(argv)
    small = dict(prompts=2, prompt_tokens=12, max_new_tokens=8, lm_head_repeats=1)
    large = dict(prompts=16, prompt_tokens=256, max_new_tokens=1024, lm_head_repeats=20)
    for key, value in (small if a.tiny else large).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"gpu_check: {'tiny' if a.tiny else 'Qwen2.5-0.5B'}-shaped random model on {device} "
          f"({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), torch {torch.__version__}",
          file=sys.stderr)
    calibration = gemm_tflops(device) if device.type == "cuda" else None
    model, tokenizer = make_model_and_tokenizer(a.tiny, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01, fused=device.type == "cuda")
    cfg = etr.make_config("etr", max_len=a.max_new_tokens)
    rows = a.prompts * a.group_size
    phases, steps = Phases(device), []
    for step in range(a.steps):
        prompts = prompts_of(tokenizer, a.prompts, a.prompt_tokens, seed=step)
        phases.seconds.clear()
        t0 = time.perf_counter()
        model.eval()
        gen_rows = memory.gen_batch_size(model, rows, a.prompt_tokens, a.max_new_tokens)
        phases("generate")
        with train.autocast(device):
            batch = rollout.generate(model, tokenizer, prompts, a.group_size, max_new_tokens=a.max_new_tokens,
                                     batch_size=gen_rows)
        phases("end")
        rewards = torch.randint(0, 2, (rows,), generator=torch.Generator().manual_seed(step)).float()  # [N]
        adv, group_std = etr.group_advantages(rewards, a.group_size)  # [N], [N]
        batch.update(adv=adv, group_std=group_std)
        model.train()
        m = train.train_step(model, optimizer, batch, cfg, algo="etr", epochs=1, mini_batches=4,
                             micro_batch_size=a.micro_batch_size, max_grad_norm=1.0, temperature=1.0, phase=phases)
        wall = time.perf_counter() - t0
        steps.append({"wall": wall, "seconds": dict(phases.seconds), "gen_rows": gen_rows,
                      "completion_tokens": int(batch["completion_mask"].sum()), "truncated_frac":
                      batch["truncated"].float().mean().item(), "sample_logp_gap_max": m.get("sample_logp_gap_max"),
                      "sample_logp_gap_mean": m.get("sample_logp_gap_mean"), "loss": m["loss"]})
        print(f"step {step + 1}: {wall:.1f} s (" + ", ".join(f"{k} {v:.2f}" for k, v in phases.seconds.items())
              + f"), sampling gap max {m.get('sample_logp_gap_max', float('nan')):.2e}", file=sys.stderr)

    prompt_tokens = max(len(ids) for ids in tokenizer(prompts)["input_ids"])
    est = memory.estimate(model.config, micro_batch_size=a.micro_batch_size, max_new_tokens=a.max_new_tokens,
                          gen_rows=steps[-1]["gen_rows"], gradient_checkpointing=False, kl_coef=0.0,
                          prompt_tokens=prompt_tokens, fused_adamw=device.type == "cuda")
    GiB = memory.GiB
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "bf16_gemm_tflops": calibration, "shape": "tiny" if a.tiny else "Qwen2.5-0.5B", "rows": rows, "prompt_tokens": prompt_tokens,
              "max_new_tokens": a.max_new_tokens, "micro_batch_size": a.micro_batch_size, "steps": steps,
              "memory": {ph: {"estimate_gib": est[ph] / GiB,
                              "allocated_gib": phases.allocated.get(ph, 0) / GiB or None,
                              "reserved_gib": phases.reserved.get(ph, 0) / GiB or None} for ph in memory.PHASES}}
    later = steps[1:] or steps
    result["seconds_per_step"] = {ph: sum(s["seconds"].get(ph, 0) for s in later) / len(later)
                                  for ph in memory.PHASES}
    save = (lambda: Path(a.out).write_text(json.dumps(result, indent=2) + "\n")) if a.out else (lambda: None)
    save()  # what is measured so far survives a failure below
    result["lm_head"] = lm_head_check(model, batch, device, a.lm_head_repeats)
    save()
    gap_prompts = prompts_of(tokenizer, 8, a.prompt_tokens, seed=99)
    gap_tokens = min(a.max_new_tokens, 256)
    result["sampling_gap"] = {"fp32_lm_head": sampling_gap(model, tokenizer, gap_prompts, gap_tokens, device, False),
                              "bf16_lm_head": sampling_gap(model, tokenizer, gap_prompts, gap_tokens, device, True)}
    save()
    print(report(result))
    return result


def report(r: dict) -> str:
    lines = [f"{r['shape']} on {r['device']} (torch {r['torch']}, bf16 GEMM {r['bf16_gemm_tflops'] or 0:.0f} TFLOP/s): {r['rows']} rows, prompts <= {r['prompt_tokens']} "
             f"tokens, {r['max_new_tokens']} new tokens, micro-batch {r['micro_batch_size']}",
             f"{'phase':<10} {'s/step':>7} {'estimate GiB':>13} {'allocated':>10} {'reserved':>9} {'est/res':>8}"]
    for ph, mem in r["memory"].items():
        res = mem["reserved_gib"]
        lines.append(f"{ph:<10} {r['seconds_per_step'][ph]:7.2f} {mem['estimate_gib']:13.2f} "
                     f"{mem['allocated_gib'] or float('nan'):10.2f} {res or float('nan'):9.2f} "
                     f"{mem['estimate_gib'] / res if res else float('nan'):8.2f}")
    head = r["lm_head"]
    lines.append(f"lm_head, {head['rows']} tokens x V (largest |logit| {head['largest_logit']:.1f}): " + "; ".join(
        f"{k} {head[k]['ms_fwd_bwd']:.2f} ms fwd+bwd, log pi error {head[k]['logp_err_max']:.1e}"
        for k in ("fp32", "tf32", "bf16")))
    gap = r["sampling_gap"]
    lines.append("sampling gap |log pi sampled - log pi_old|: " + "; ".join(
        f"{k} max {v['max']:.2e} mean {v['mean']:.2e}" for k, v in gap.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
