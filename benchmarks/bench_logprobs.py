"""Peak memory and time of our log-prob + entropy scoring against a naive full log_softmax.

    python benchmarks/bench_logprobs.py                      # Qwen's vocabulary, batch 4 x 1024 tokens, CPU
    python benchmarks/bench_logprobs.py --no-grad-pass       # forward only (skips forward + backward)
    python benchmarks/bench_logprobs.py --autocast           # ours alone, under bf16 autocast (train.py on CUDA)

What is measured: rollout.completion_logprobs itself, the function train.py calls, on a stand-in model whose
base_model(...) returns a fixed random final hidden state [B, 1 + T, H] (H = 896, as Qwen2.5-0.5B) and whose
output embedding is a random [V, H] matrix (V = 151,936) -- so only the lm_head + log-prob + entropy part
differs between the two sides, which is the part this compares. The naive side is what most RL code does:
the full [B, T, V] fp32 logits, log_softmax over them, gather, entropy from the same [B, T, V] tensor.

Memory is the peak resident set size of the process over the call, minus the resident size just before it:
each (variant, pass) runs in a fresh subprocess, which allocates its inputs, resets the kernel's peak
counter (writing 5 to /proc/self/clear_refs resets VmHWM) and reads VmHWM after the call. tracemalloc would
not see torch's allocations. "fwd" runs without grad (rollout.score); "fwd+bwd" runs with grad on the hidden
state and the output matrix, then backward of the summed log-probs (train.py's update). The values of both
sides are compared with each other and with a float64 computation at the first REF_POSITIONS tokens of each row;
the target (<= 1e-5) is checked against float64, since the naive fp32 entropy -sum(p log p) is itself ~1e-5 off.
--autocast runs ours alone under torch.autocast("cpu", dtype=torch.bfloat16), as train.py runs it on CUDA: the
memory the fp32 lm_head chunk costs there, and the check that autocast does not round the log-probs.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VOCAB, HIDDEN, BATCH, SEQ = 151_936, 896, 4, 1024
REF_POSITIONS = 64  # completion tokens per row also computed in float64, to tell which side is off


def rss_kb(field: str) -> int:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (this benchmark needs Linux)")


def naive_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=1.0, with_entropy=True):
    """The textbook version: full fp32 logits and log_softmax over every position and the whole vocabulary."""
    import torch
    P = prompt_ids.shape[1]
    hidden = model.base_model().last_hidden_state[:, P - 1:-1]  # [B, T, H] the state at j predicts token j + 1
    logits = model.get_output_embeddings()(hidden).float() / temperature  # [B, T, V]
    logp_all = logits.log_softmax(-1)  # [B, T, V]
    logp = logp_all.gather(-1, completion_ids[..., None]).squeeze(-1) * completion_mask  # [B, T]
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1) * completion_mask  # [B, T]
    return logp, entropy


def make_inputs(grad: bool):
    """The same random inputs in every process (seed 0): final hidden states, lm_head, prompt and completion."""
    import torch
    torch.manual_seed(0)
    hidden = torch.randn(BATCH, 1 + SEQ, HIDDEN).requires_grad_(grad)  # [B, 1 + T, H] one prompt token, then T
    lm_head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
    lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, HIDDEN) * 0.05, requires_grad=grad)  # [V, H] logit std ~1.5
    prompt_ids = torch.zeros(BATCH, 1, dtype=torch.long)  # [B, 1]
    prompt_mask = torch.ones(BATCH, 1, dtype=torch.long)  # [B, 1]
    completion_ids = torch.randint(VOCAB, (BATCH, SEQ))  # [B, T]
    completion_mask = torch.ones(BATCH, SEQ, dtype=torch.long)  # [B, T]
    completion_mask[1, SEQ // 2:] = 0  # one shorter completion, so the masking is exercised too
    return hidden, lm_head, prompt_ids, prompt_mask, completion_ids, completion_mask


def float64_reference(positions: int):
    """log pi and entropy in float64 at the first `positions` completion tokens of every row -> [B, n], [B, n]."""
    import torch
    hidden, lm_head, _, _, completion_ids, _ = make_inputs(False)
    z = hidden[:, :positions].double() @ lm_head.weight.double().T  # [B, n, V]
    logp_all = z.log_softmax(-1)  # [B, n, V]
    logp = logp_all.gather(-1, completion_ids[:, :positions, None]).squeeze(-1)  # [B, n]
    return logp, -(logp_all.exp() * logp_all).sum(-1)


def worker(variant: str, grad: bool, repeats: int, out_file: str, autocast: bool):
    """One (variant, pass) in this fresh process: -> JSON with peak memory, times and the values."""
    import torch
    import rollout

    hidden, lm_head, prompt_ids, prompt_mask, completion_ids, completion_mask = make_inputs(grad)
    stand_in = SimpleNamespace(  # the three things completion_logprobs uses of a model
        device=torch.device("cpu"), base_model=lambda **kwargs: SimpleNamespace(last_hidden_state=hidden),
        get_output_embeddings=lambda: lm_head)
    fn = rollout.completion_logprobs if variant == "ours" else naive_logprobs
    args = (stand_in, prompt_ids, prompt_mask, completion_ids, completion_mask)

    peak, times = 0, []
    for _ in range(repeats):
        lm_head.weight.grad = hidden.grad = None
        base = rss_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        start = time.perf_counter()
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logp, entropy = fn(*args, temperature=1.0, with_entropy=True)
            if grad:
                logp.sum().backward()
        times.append(time.perf_counter() - start)
        peak = max(peak, rss_kb("VmHWM") - base)
        result = {"logp": logp.detach().tolist(), "entropy": entropy.tolist(),
                  "grad_h": None if not grad else hidden.grad.norm().item(),
                  "grad_w": None if not grad else lm_head.weight.grad.norm().item()}
        del logp, entropy
    Path(out_file).write_text(json.dumps({"peak_mb": peak / 1024, "seconds": statistics.median(times), **result}))


def measure(variant: str, grad: bool, repeats: int, autocast: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "result.json")
        subprocess.run([sys.executable, __file__, "--worker", variant, "--grad", str(int(grad)),
                        "--repeats", str(repeats), "--out", out_file] + ["--autocast"] * autocast, check=True)
        return json.loads(Path(out_file).read_text())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=1, help="timed calls per variant; memory is the max (default: 1)")
    p.add_argument("--no-grad-pass", action="store_true", help="skip the forward + backward measurement")
    p.add_argument("--autocast", action="store_true",
                   help="ours alone, under bf16 autocast: its peak memory and its error (no naive side)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--grad", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, bool(args.grad), args.repeats, args.out, args.autocast)

    import rollout
    import torch
    print(f"vocab {VOCAB:,}, hidden {HIDDEN}, batch {BATCH} x {SEQ} tokens, rollout.CHUNK_ROWS {rollout.CHUNK_ROWS}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}"
          + (", bf16 autocast" if args.autocast else ""))
    print("bench_logprobs: ~5 min on 2 CPU cores (up to a minute per measurement; the naive side needs ~10 GB of "
          "RAM): each line is printed as its measurement ends", file=sys.stderr, flush=True)
    print(f"{'pass':8} {'variant':6} {'peak MB':>9} {'seconds':>8}")
    ref_logp, ref_entropy = float64_reference(REF_POSITIONS)  # [B, n], [B, n]
    ok = True
    for grad in [False] + ([] if args.no_grad_pass else [True]):
        name = "fwd+bwd" if grad else "fwd"
        variants = ["ours"] if args.autocast else ["ours", "naive"]
        results = {v: measure(v, grad, args.repeats, args.autocast) for v in variants}
        for variant, r in results.items():
            logp, entropy = torch.tensor(r["logp"]), torch.tensor(r["entropy"])  # [B, T]
            r["d_ref"] = max((logp[:, :REF_POSITIONS] - ref_logp).abs().max().item(),
                             (entropy[:, :REF_POSITIONS] - ref_entropy).abs().max().item())
            print(f"{name:8} {variant:6} {r['peak_mb']:9.0f} {r['seconds']:8.2f}   max |diff| to float64 {r['d_ref']:.1e}")
        if args.autocast:
            ok &= results["ours"]["d_ref"] <= 1e-5
            continue
        ours, naive = results["ours"], results["naive"]
        d_logp = (torch.tensor(ours["logp"]) - torch.tensor(naive["logp"])).abs().max().item()
        d_ent = (torch.tensor(ours["entropy"]) - torch.tensor(naive["entropy"])).abs().max().item()
        mem_ratio, time_ratio = ours["peak_mb"] / naive["peak_mb"], ours["seconds"] / naive["seconds"]
        print(f"{name:8} ours/naive: peak memory {mem_ratio:.3f}x (target <= 0.3), time {time_ratio:.2f}x; "
              f"max |ours - naive|: log pi {d_logp:.1e}, entropy {d_ent:.1e}; ours to float64 {ours['d_ref']:.1e} "
              f"(target <= 1e-5)")
        if grad:
            g = max(abs(ours[k] - naive[k]) / abs(naive[k]) for k in ("grad_h", "grad_w"))
            print(f"{name:8} gradient norms wrt hidden state and output matrix: relative difference {g:.1e}")
            ok &= g <= 1e-4
        ok &= mem_ratio <= 0.3 and ours["d_ref"] <= 1e-5
    print("all targets met" if ok else "TARGET MISSED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
