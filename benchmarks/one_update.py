"""one_update.py -- one real update, token by token: the ratio rho against the advantage A with the clip bounds, the
clipped tokens marked, and for ERC the entropy ratio against rho with the masked tokens marked.

    python benchmarks/one_update.py                                  # regime offpolicy, step 30 -> runs/one_update/
    python benchmarks/one_update.py --step 60 --algos grpo etr --figure docs/one_update.png
    python benchmarks/one_update.py --regime default --out runs/one_update-default

1. A saved batch, so that the picture is reproducible: `train.py --model toy --algo <source> --steps <step>` runs
   with the --regime's flags (benchmarks/compare.py's REGIMES) and any other flag given here, into
   <out>/<source>-run. What the update of its last step starts from is saved to <out>/batch.pt: the rollout batch
   (completions, rewards, advantages, group std), the weights and the AdamW state before the update, and torch's
   RNG state (it draws the mini-batch shuffle). train.py is not changed for this: its train_step is wrapped while
   train.run runs. A second call with the same settings reuses batch.pt.
2. The update replayed with each of --algos on that same batch, from the same weights and optimizer state, by
   train.train_step itself; while it runs, the loss function and etr.finish are wrapped to record what the loss
   saw per token: rho, A, the clip masks (dual-clip caps counted as clipped above, as in the metrics), the bounds
   (per sample for ETR: etr_bounds' eps_low,i / eps_high,i) and for ERC the entropy ratio H_theta / H_old and its
   mask. The replay of the source algorithm reproduces the run's own logged metrics of that step (printed; tested).
3. A table per algorithm for the --update-th update of the step (default -1: the last, the most off-policy; the
   first one has rho = 1 exactly), the token data in <out>/tokens.pt and, with matplotlib, the figure.
"""
import argparse
import contextlib
import copy
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import compare  # noqa: E402  (benchmarks/compare.py, beside this file: REGIMES and other_settings)
import etr  # noqa: E402
import plot  # noqa: E402  (save_figure)
import rollout  # noqa: E402
import train  # noqa: E402

METRICS = ("loss", "clip_frac_low", "clip_frac_high", "ratio_max", "approx_kl", "grad_norm")  # replay vs the log


def dump_batch(flags: list[str], path: Path) -> dict:
    """Run `train.py flags` and save what the update of its last step starts from (see the docstring) to path."""
    saved = {}
    train_step = train.train_step

    def saving(model, optimizer, batch, cfg, **kwargs):  # the last call wins: the last step's
        saved.update(batch=copy.deepcopy(batch), model=copy.deepcopy(model.state_dict()),
                     optimizer=copy.deepcopy(optimizer.state_dict()), rng=torch.get_rng_state(), kwargs=kwargs)
        return train_step(model, optimizer, batch, cfg, **kwargs)

    args = train.parse_args(flags)
    train.train_step = saving
    try:
        result = train.run(args)  # resolves args in place
    finally:
        train.train_step = train_step
    if not saved:
        raise SystemExit("error: no update was trained (every group had equal rewards?): pass another --step")
    dump = {**saved, "args": vars(args), "logged": result["history"][-1]}
    torch.save(dump, path)
    return dump


@contextlib.contextmanager
def recording(calls: list, algo: str, optimizer):
    """While inside: every call of etr.ALGOS[algo] appends a dict to calls with the update it belongs to (counted
    by the optimizer's steps: an update skipped for a non-finite loss would merge with the next) and what the loss
    saw (adv, mask, entropies; from etr.finish: ratio, clip masks, per-token extras)."""
    loss_fn, finish = etr.ALGOS[algo], etr.finish
    update = [0]
    hook = optimizer.register_step_post_hook(lambda *_: update.__setitem__(0, update[0] + 1))

    def loss_recorded(logp, old_logp, adv, mask, cfg, **batch):
        calls.append({"update": update[0], "adv": adv.detach().float().cpu(), "mask": mask.bool().cpu(),
                      **{k: batch[k].detach().float().cpu() for k in ("entropy", "old_entropy")
                         if batch.get(k) is not None}})
        return loss_fn(logp, old_logp, adv, mask, cfg, **batch)

    def finish_recorded(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, extra=None, **batch):
        capped = etr.dual_clip(loss_tok, adv, cfg.dual_clip)[1] if cfg.dual_clip is not None else clip_high
        calls[-1].update(ratio=ratio.detach().cpu(), clip_low=clip_low.cpu(), clip_high=(clip_high | capped).cpu(),
                         extra={k: v.detach().cpu() for k, v in (extra or {}).items()})
        return finish(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, extra, **batch)

    etr.ALGOS[algo], etr.finish = loss_recorded, finish_recorded
    try:
        yield
    finally:
        etr.ALGOS[algo], etr.finish = loss_fn, finish
        hook.remove()


def token_table(calls: list, cfg: etr.LossConfig) -> dict[str, torch.Tensor]:
    """The recorded calls as flat per-token columns [n] over the valid (mask) tokens: update, sample (a running
    index of the rows the loss saw), adv, rho, eps_low, eps_high, clip_low, clip_high, and for ERC rho_h (the
    entropy ratio as etr.erc_keep_mask computes it; nan otherwise) and erc_masked. Float columns are fp32, the
    dtype the loss computes rho, the bounds and the entropy ratio in (also under bf16 autocast on CUDA)."""
    cols = {k: [] for k in ("update", "sample", "adv", "rho", "eps_low", "eps_high", "clip_low", "clip_high",
                            "rho_h", "erc_masked")}
    rows = 0
    for c in calls:
        mask = c["mask"]                                                      # [m, T]
        m, T = mask.shape
        flat = lambda x: torch.as_tensor(x).expand(m, T)[mask]  # noqa: E731  [m, T] or [m, 1] or [] -> [n]
        cols["update"].append(flat(c["update"]))
        cols["sample"].append(flat(rows + torch.arange(m)[:, None]))
        cols["adv"].append(flat(c["adv"][:, None]))
        cols["rho"].append(flat(c["ratio"]))
        cols["eps_low"].append(flat(c["extra"].get("etr_eps_low_mean", torch.tensor(cfg.eps_low))))  # ETR: [m, 1]
        cols["eps_high"].append(flat(c["extra"].get("etr_eps_high_mean", torch.tensor(cfg.eps_high))))
        cols["clip_low"].append(flat(c["clip_low"]))
        cols["clip_high"].append(flat(c["clip_high"]))
        erc = "erc_masked_frac" in c["extra"]
        cols["rho_h"].append(flat((c["entropy"] + 1e-8) / (c["old_entropy"] + 1e-8) if erc else torch.tensor(math.nan)))
        cols["erc_masked"].append(flat(c["extra"]["erc_masked_frac"].bool() if erc else torch.tensor(False)))
        rows += m
    return {k: torch.cat(v) for k, v in cols.items()}


def replay(dump: dict, algo: str) -> tuple[dict, dict[str, torch.Tensor], etr.LossConfig]:
    """The saved step's update trained with `algo` by train.train_step: (its metrics, its token_table, the loss
    config: the algorithm's defaults and the run's loss flags)."""
    args = argparse.Namespace(**{**dump["args"], "algo": algo})
    cfg = train.loss_config(args)
    torch.set_flush_denormal(True)  # as train.run: the same arithmetic as the run that saved the batch
    model, _ = rollout.load_model(args.model)
    model.float().load_state_dict(dump["model"])  # fp32 weights, as train.run keeps them
    model.train(args.gradient_checkpointing)
    optimizer = torch.optim.AdamW(model.parameters())
    optimizer.load_state_dict(dump["optimizer"])  # the run's lr, betas, weight decay and Adam moments
    torch.set_rng_state(dump["rng"])  # the mini-batch shuffle of the run
    calls = []
    with recording(calls, algo, optimizer):
        metrics = train.train_step(model, optimizer, copy.deepcopy(dump["batch"]), cfg,
                                   **{**dump["kwargs"], "algo": algo})
    return metrics, token_table(calls, cfg), cfg


def summary(tokens: dict, update: int) -> dict:
    """The numbers of one update: tokens, fractions clipped below / above, rho's range, ERC's masked fraction."""
    sel = tokens["update"] == update                                          # [n]
    frac = lambda x: x[sel].float().mean().item()  # noqa: E731
    return {"tokens": int(sel.sum()), "clip_low": frac(tokens["clip_low"]), "clip_high": frac(tokens["clip_high"]),
            "rho_min": tokens["rho"][sel].min().item(), "rho_max": tokens["rho"][sel].max().item(),
            "eps_low": (tokens["eps_low"][sel].min().item(), tokens["eps_low"][sel].max().item()),
            "eps_high": (tokens["eps_high"][sel].min().item(), tokens["eps_high"][sel].max().item()),
            "erc_masked": frac(tokens["erc_masked"])}


def draw(tokens_by_algo: dict, update: int, cfgs: dict, out: Path, title: str):
    """Per algorithm: rho against A per token, jittered, the bound of each sample on the side of its A as a short line,
    clipped tokens marked; per ERC algorithm a second panel: the entropy ratio against rho, masked tokens marked."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    panels = [(a, "rho") for a in tokens_by_algo] + [(a, "erc") for a, t in tokens_by_algo.items()
                                                     if not t["rho_h"].isnan().all()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5.5), squeeze=False)
    jitter = torch.Generator().manual_seed(0)
    for ax, (algo, kind) in zip(axes[0], panels):
        t = {k: v[tokens_by_algo[algo]["update"] == update] for k, v in tokens_by_algo[algo].items()}  # [n] each
        clipped = t["clip_low"] | t["clip_high"]
        if kind == "rho":
            x = t["adv"] + 0.08 * (torch.rand(len(t["adv"]), generator=jitter) - 0.5)  # tokens of a sample share A
            ax.scatter(x[~clipped], t["rho"][~clipped], s=3, color="0.6", label="kept")
            ax.scatter(x[t["clip_low"]], t["rho"][t["clip_low"]], s=12, marker="x", color="tab:blue",
                       label=f"clipped: A < 0, rho < 1 - eps_low ({t['clip_low'].float().mean():.1%})")
            ax.scatter(x[t["clip_high"]], t["rho"][t["clip_high"]], s=12, marker="x", color="tab:red",
                       label=f"clipped: A > 0, rho > 1 + eps_high ({t['clip_high'].float().mean():.1%})")
            first = {}  # one bound line per sample
            for i, s in enumerate(t["sample"].tolist()):
                first.setdefault(s, i)
            idx = torch.tensor(list(first.values()))
            a, bound = t["adv"][idx], torch.where(t["adv"][idx] > 0, 1 + t["eps_high"][idx], 1 - t["eps_low"][idx])
            ax.hlines(bound[a != 0], a[a != 0] - 0.06, a[a != 0] + 0.06, color="black", lw=1,  # A = 0: no gradient
                      label="the bound that binds: 1 + eps_high,i (A > 0), 1 - eps_low,i (A < 0)")
            ax.set_xlabel("advantage A (jittered)")
            ax.set_ylabel("rho = pi_theta / pi_old")
            ax.set_title(f"{algo}: rho vs A, bounds per sample")
        else:
            cfg = cfgs[algo]
            masked = t["erc_masked"]
            rho_h = t["rho_h"].clamp(1e-2, 1e2)  # log axis: the +-5 % band is visible beside ratios of 0 and 13
            ax.scatter(t["rho"][~masked], rho_h[~masked], s=3, color="0.6", label="kept")
            ax.scatter(t["rho"][masked], rho_h[masked], s=12, marker="x", color="tab:orange",
                       label=f"masked: no gradient ({masked.float().mean():.1%})")
            for v in (1 - cfg.erc_beta_low, 1 + cfg.erc_beta_high):
                ax.axhline(v, color="black", lw=1)
            ax.set_xlabel("rho = pi_theta / pi_old")
            ax.set_yscale("log")
            ax.set_ylabel("entropy ratio H_theta / H_old (log; clamped to [0.01, 100])")
            ax.set_title(f"{algo}: entropy ratio vs rho")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below: never over the points
    fig.suptitle(title, fontsize=10)
    plot.save_figure(fig, out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                epilog="Other flags are passed to the train.py run (python train.py --help).")
    p.add_argument("--regime", default="offpolicy", choices=list(compare.REGIMES),
                   help="benchmarks/compare.py's train.py flags (default: offpolicy)")
    p.add_argument("--step", type=int, default=30, help="the step whose update is shown (default: 30)")
    p.add_argument("--source", default="grpo", choices=list(etr.ALGOS),
                   help="the algorithm trained up to --step (default: grpo)")
    p.add_argument("--algos", nargs="+", default=["grpo", "etr", "erc-dapo"], choices=list(etr.ALGOS),
                   help="the algorithms that replay the update (default: grpo etr erc-dapo)")
    p.add_argument("--update", type=int, default=-1,
                   help="which update of the step: 0 = the first (rho = 1), -1 = the last (default: -1)")
    p.add_argument("--out", type=Path, default=Path("runs/one_update"), help="default: runs/one_update")
    p.add_argument("--figure", type=Path, help="the figure (default: <out>/one_update.png)")
    args, extra = p.parse_known_args(argv)
    run = args.out / f"{args.source}-run"
    flags = ["--model", "toy", "--algo", args.source, "--steps", str(args.step), "--out", str(run),
             *compare.REGIMES[args.regime], *extra]
    try:
        resolved = train.resolve_args(train.parse_args(flags))
    except rollout.UserError as e:
        raise SystemExit(f"error: {e}")
    updates = resolved.mini_batches * resolved.epochs
    if not -updates <= args.update < updates:
        raise SystemExit(f"error: --update {args.update}: a step has {updates} updates (--mini-batches x --epochs); "
                         f"pass 0 .. {updates - 1} or -1 for the last")

    path = args.out / "batch.pt"
    if path.is_file() and not (differ := compare.other_settings(run, flags)) and compare.last_step(run) == args.step:
        dump = torch.load(path, weights_only=False)
        print(f"{path}: reused (step {args.step} of {run})")
    elif path.is_file():
        raise SystemExit(f"error: {path} was saved with other settings ({'; '.join(differ) or 'another --step'}): "
                         f"pass another --out or delete it")
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        dump = dump_batch(flags, path)
        print(f"{path}: the batch of step {args.step} of {run}")

    update = args.update % updates
    tokens, cfgs = {}, {}
    print(f"\nupdate {update + 1} of {updates} of step {args.step} ({args.regime} regime: "
          f"{' '.join(compare.REGIMES[args.regime] + extra) or 'toy defaults'}), replayed per algorithm:\n")
    print("| algo | tokens | clipped, A < 0 | clipped, A > 0 | rho min | rho max | eps_low | eps_high | ERC masked |")
    print("|---|---|---|---|---|---|---|---|---|")
    span = lambda lo, hi: f"{lo:.3f}" if lo == hi else f"{lo:.3f} .. {hi:.3f}"  # noqa: E731
    for algo in args.algos:
        metrics, tokens[algo], cfgs[algo] = replay(dump, algo)
        s = summary(tokens[algo], update)
        print(f"| {algo} | {s['tokens']} | {s['clip_low']:.2%} | {s['clip_high']:.2%} | {s['rho_min']:.3f} | "
              f"{s['rho_max']:.3f} | {span(*s['eps_low'])} | {span(*s['eps_high'])} | "
              + (f"{s['erc_masked']:.2%} |" if algo.startswith("erc") else "- |"))
        if algo == args.source:
            worst = max(abs(metrics[k] - dump["logged"][k]) for k in METRICS)
            check = (f"\nThe replay of {algo} against its run's metrics.jsonl, step {args.step}: max |difference| "
                     f"over {', '.join(METRICS)} = {worst:.2e}")
    print(check if args.source in args.algos else "")
    torch.save({"update": update, "step": args.step, "tokens": tokens}, args.out / "tokens.pt")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("no figure: `pip install matplotlib` is needed for plots")
        return
    figure = args.figure or args.out / "one_update.png"
    draw(tokens, update, cfgs, figure, f"update {update + 1} of {updates} of step {args.step}, batch of a "
         f"{args.source} run ({args.regime} regime), replayed by each algorithm from the same weights")
    print(f"figure: {figure}")


if __name__ == "__main__":
    main()
