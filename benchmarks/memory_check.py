"""memory.py against what train.py's phases really allocate, measured on the CPU at tiny shapes (no GPU needed).

    python benchmarks/memory_check.py          # Qwen2.5-, Qwen3- and Llama-shaped random models: 15-35 s on 2 cores

Each shape runs one step of train.py's own code -- rollout.generate, then train.train_step (ETR, 4 mini-batches of
2 micro-batches of 4 rows) with fused AdamW, as on CUDA -- under bf16 autocast on the CPU (train.autocast patched to
torch.autocast("cpu", dtype=torch.bfloat16): what train.py does on CUDA), with prompts of 8 to 32 tokens, so that
every forward pass carries a left-padding attention mask, and AdamW's moments already allocated, as after a first
step (one update with zero gradients makes them). rollout.CHUNK_ROWS is 64 here, so that a micro-batch's 256
completion tokens take 4 lm_head chunks, as a real one's 4 x 1,024 take 8 of 512. Then three more measurements: a
generate call whose peak is the end of decoding, not the prefill (prompts of 1 to 4 tokens, 96 new tokens); the
training step again with gradient checkpointing; one optimizer step of torch's foreach AdamW (what memory.estimate's
fused_adamw=False counts).

How a phase is measured: it runs under torch.profiler with profile_memory=True, which records every allocation and
free of the CPU allocator (+bytes / -bytes, in time order); their running sum is the live-bytes curve since the
phase began, and its largest value is the phase's peak above its start. What was live when the phase began and sits
in GPU memory on CUDA (weights, AdamW moments, gradients if any: counted from the tensors themselves) is added:
measured = held + peak. A free of a block allocated before the phase is not reported (the profiler does not know its
size; it says so on stderr once), which can only raise the measurement. One intra-op thread, so that every
allocation is made on the thread the profiler watches.
What cannot exist on the CPU is left out of the comparison: memory.SLACK (the CUDA context, cuBLAS workspaces,
allocator fragmentation) is subtracted from every estimate. What the CPU measures but a GPU would not hold -- the
token ids, masks and log-probs train.py keeps on the CPU, tens of KB here -- is left in: it only lowers the ratio.

Printed per shape and phase: the estimate (memory.estimate - SLACK), the measurement and their ratio (the target: 1.00
to 1.15, never below 1), then the same for the part above the phase's start (the estimate minus what it counts as held
then: weights and AdamW moments, and gradients in the optimizer step; its autocast copies, which are freed before the
step, make that ratio large there).
"""
import argparse
import contextlib
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import etr  # noqa: E402
import gpu_check  # noqa: E402 -- its word-level tokenizer and prompts of random lengths
import memory  # noqa: E402
import rollout  # noqa: E402
import train  # noqa: E402

COMMON = dict(num_hidden_layers=2, vocab_size=1024, bos_token_id=1023, eos_token_id=1023, max_position_embeddings=512)
SHAPES = {  # tiny models with the heads' layout of the real ones
    # Qwen2.5-0.5B: 14 heads over 2 KV heads (7 per KV head), q/k/v biases, MLP 5.4 x hidden, tied embedding
    "Qwen2.5": ("Qwen2", dict(hidden_size=224, intermediate_size=1216, num_attention_heads=14, num_key_value_heads=2)),
    # Qwen3-0.6B: heads x head_dim = 2 x hidden, 2 heads per KV head, q/k RMSNorms, MLP 3 x hidden, tied embedding
    "Qwen3": ("Qwen3", dict(hidden_size=128, intermediate_size=384, num_attention_heads=8, num_key_value_heads=4,
                            head_dim=32, tie_word_embeddings=True)),
    # Llama 3: 4 heads per KV head, no biases, MLP 3.5 x hidden, untied lm_head
    "Llama": ("Llama", dict(hidden_size=128, intermediate_size=448, num_attention_heads=8, num_key_value_heads=2,
                            tie_word_embeddings=False)),
}
# The rows of the table: memory.PHASES, then the three extra measurements (module docstring)
PHASES = (*memory.PHASES, "generate, decode-bound", "train, checkpointing", "optimizer, foreach")
CHUNK_ROWS = 64


def make_model(name: str):
    import transformers

    kind, shape = SHAPES[name]
    config = getattr(transformers, kind + "Config")(**COMMON, **shape)
    torch.manual_seed(0)
    model = getattr(transformers, kind + "ForCausalLM")(config)
    model.generation_config.pad_token_id = model.generation_config.eos_token_id = config.eos_token_id
    return model


def held_bytes(model, optimizer) -> int:
    """What sits in GPU memory between phases: weights, their gradients, the optimizer's state (distinct storages)."""
    params = list(model.parameters())
    tensors = params + [p.grad for p in params if p.grad is not None]
    tensors += [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def peak_above_start(prof) -> int:
    """The largest running sum of the CPU allocator's +/- events of a profiled region (0 if it only freed)."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    running = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):  # stable: ties keep the recorded order
        running += e.nbytes()
        peak = max(peak, running)
    return peak


class Meter:
    """phase(name), as train.train_step calls it: the phase that ends gets its peak; the one that begins is profiled
    ("end": none). A phase that runs several times (train, optimizer: once per mini-batch) keeps its largest peak."""

    def __init__(self, held):
        self.held, self.prof, self.name, self.measured, self.above = held, None, None, {}, {}

    def __call__(self, name):
        if self.prof is not None:
            self.prof.__exit__(None, None, None)
            above = peak_above_start(self.prof)
            if self.start + above > self.measured.get(self.name, -1):
                self.measured[self.name], self.above[self.name] = self.start + above, above
        self.prof, self.name = None, name
        if name != "end":
            self.start = self.held()
            self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self.prof.__enter__()


@contextlib.contextmanager
def cpu_as_cuda():
    """train.py's CUDA settings on the CPU: bf16 autocast (train.autocast is a no-op on the CPU), CHUNK_ROWS; and one
    intra-op thread (module docstring)."""
    saved = train.autocast, rollout.CHUNK_ROWS, torch.get_num_threads()
    train.autocast = lambda device: torch.autocast(device.type, dtype=torch.bfloat16)
    rollout.CHUNK_ROWS = CHUNK_ROWS
    torch.set_num_threads(1)
    try:
        yield
    finally:
        train.autocast, rollout.CHUNK_ROWS = saved[:2]
        torch.set_num_threads(saved[2])


def generate(model, tokenizer, texts, group_size, top_p, max_new_tokens, phase):
    """train.py's step 2, measured as the phase "generate" (phase: a Meter, or nothing)."""
    model.eval()
    phase("generate")
    with train.autocast(model.device):
        batch = rollout.generate(model, tokenizer, texts, group_size, top_p=top_p, max_new_tokens=max_new_tokens,
                                 batch_size=len(texts) * group_size)
    phase("end")
    assert batch["prompt_mask"].eq(0).any(), "no padding: the attention mask would not be exercised"
    return batch


def measure(name: str, *, prompts: int = 4, group_size: int = 8, prompt_tokens: int = 32, max_new_tokens: int = 64,
            micro_batch_size: int = 4, short_prompts: int = 4, long_completions: int = 96, top_p: float = 1.0,
            log=lambda s: None) -> dict:
    """The tiny `name` model through the measurements of the module docstring.
    -> {phase: {"estimate", "measured", "est_above", "above"}} in bytes, the estimates without SLACK."""
    model = make_model(name)
    tokenizer = gpu_check.word_tokenizer(model.config.vocab_size, model.config.eos_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01, fused=True)  # train.py on CUDA
    cfg = etr.make_config("etr", max_len=max_new_tokens)
    rows = prompts * group_size
    meter = Meter(lambda: held_bytes(model, optimizer))
    step = dict(cfg=cfg, algo="etr", epochs=1, mini_batches=4, micro_batch_size=micro_batch_size, max_grad_norm=1.0,
                temperature=1.0)
    with cpu_as_cuda():
        for p in model.parameters():  # AdamW's moments, as a run has them after its first step: a zero update
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        texts = gpu_check.prompts_of(tokenizer, prompts, prompt_tokens, seed=0)
        longest = max(len(ids) for ids in tokenizer(texts)["input_ids"])
        batch = generate(model, tokenizer, texts, group_size, top_p, max_new_tokens, meter)
        rewards = torch.randint(0, 2, (rows,), generator=torch.Generator().manual_seed(0)).float()  # [N]
        adv, group_std = etr.group_advantages(rewards, group_size)  # [N], [N]
        batch.update(adv=adv, group_std=group_std)
        rollout_batch = dict(batch)  # train_step adds pi_old to batch; the checkpointing step starts afresh
        model.train()
        train.train_step(model, optimizer, batch, phase=meter, **step)
        log(f"  {name}: generate, score, train, optimizer measured")

        texts = gpu_check.prompts_of(tokenizer, prompts, short_prompts, seed=2)
        short = max(len(ids) for ids in tokenizer(texts)["input_ids"])
        generate(model, tokenizer, texts, group_size, top_p, long_completions,
                 lambda phase: meter(phase if phase == "end" else "generate, decode-bound"))
        log(f"  {name}: decode-bound generate measured")

        with warnings.catch_warnings():  # transformers 5 renamed it; rollout.load_model calls it by the old name
            warnings.simplefilter("ignore", FutureWarning)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.train()  # HF checkpoints only in train mode
            train.train_step(model, optimizer, rollout_batch, **step,  # its training phases alone are measured
                             phase=lambda phase: meter("train, checkpointing" if phase == "train" else "end"))
            model.gradient_checkpointing_disable()
        log(f"  {name}: step with gradient checkpointing measured")

        foreach = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01, foreach=True)
        foreach.load_state_dict(optimizer.state_dict())
        for group in foreach.param_groups:  # load_state_dict brought the fused optimizer's settings along
            group.update(fused=None, foreach=True)
        del optimizer
        for p in model.parameters():
            p.grad = torch.randn_like(p)  # as after a training phase
        meter.held = lambda: held_bytes(model, foreach)
        meter("optimizer, foreach")
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)  # as train_step's optimizer phase
        foreach.step()
        meter("end")

        settings = dict(micro_batch_size=micro_batch_size, gen_rows=rows, kl_coef=0.0, top_p=top_p)
        run = dict(max_new_tokens=max_new_tokens, prompt_tokens=longest, **settings)
        estimates = {"": memory.estimate(model.config, gradient_checkpointing=False, **run),
                     "decode-bound": memory.estimate(model.config, max_new_tokens=long_completions, prompt_tokens=short,
                                                     gradient_checkpointing=False, **settings),
                     "checkpointing": memory.estimate(model.config, gradient_checkpointing=True, **run),
                     "foreach": memory.estimate(model.config, gradient_checkpointing=False, fused_adamw=False, **run)}
    P = memory.n_params(model.config)
    out = {}
    for phase in PHASES:
        base, _, variant = phase.partition(", ")
        estimate = estimates[variant][base] - memory.SLACK
        held = 12 * P + 4 * P * (base == "optimizer")  # weights, AdamW m and v (+ gradients)
        out[phase] = {"estimate": estimate, "measured": meter.measured[phase], "est_above": estimate - held,
                      "above": meter.above[phase]}
    return out


def table(results: dict) -> str:
    lines = [f"{'shape':<8} {'phase':<23} {'estimate KiB':>12} {'measured KiB':>12} {'ratio':>6}   "
             f"{'above start: estimate':>21} {'measured':>9} {'ratio':>6}"]
    for name, phases in results.items():
        for phase, r in phases.items():
            lines.append(f"{name:<8} {phase:<23} {r['estimate'] / 1024:12,.0f} {r['measured'] / 1024:12,.0f} "
                         f"{r['estimate'] / r['measured']:6.3f}   {r['est_above'] / 1024:21,.0f} "
                         f"{r['above'] / 1024:9,.0f} {r['est_above'] / max(r['above'], 1):6.3g}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--top-p", type=float, default=1.0, help="generate's top-p (< 1 adds the sort's buffers)")
    a = p.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log(f"memory_check: torch {torch.__version__}, CPU under bf16 autocast; memory.SLACK "
        f"({memory.SLACK / memory.GiB:.1f} GiB: CUDA context, workspaces) left out of every estimate")
    results = {}
    for name in a.shapes:
        t0 = time.perf_counter()
        results[name] = measure(name, top_p=a.top_p, log=log)
        log(f"{name}: {time.perf_counter() - t0:.1f} s")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
