"""bounds.py -- our whole reading of ETR in one figure: the clip bounds of a correct and of a wrong answer against
the pass rate of its group.

    python benchmarks/bounds.py                        # prints the table; with matplotlib also writes bounds.png
    python benchmarks/bounds.py --group-size 8 --out docs/bounds.png

For a group of G answers of which k are correct (0/1 rewards, pass rate p = k / G), every correct answer has the
same advantage A > 0 and every wrong one the same A < 0 (etr.group_advantages, GRPO's group std). Their clip
ranges eps_low,i and eps_high,i come from etr.etr_bounds itself, with the default etr settings of
etr.make_config("etr"). k = 0 and k = G are left out: such a group has A = 0 and no gradient whatever its bounds.

What the figure shows, read from the formula (etr.etr_bounds' docstring):
- the macro term (1 - beta) + beta * 4 p (1 - p) is the same for both answers and symmetric in p <-> 1 - p, largest
  at p = 1/2;
- the micro term 1 + alpha * min(|A|, a_max) is large for a rare answer: the one correct answer of a hard group
  (|A| = sqrt((1 - p) / p)) and the one wrong answer of an easy group, capped at a_max;
- so a correct answer at pass rate p gets exactly the bounds of a wrong answer at 1 - p, and GRPO's fixed
  eps = 0.2 is the line both would be on with alpha = beta = 0.
"""
import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import etr  # noqa: E402
import plot  # noqa: E402  (benchmarks/plot.py, beside this file: save_figure)


def bounds_by_pass_rate(group_size: int = 16, cfg: etr.LossConfig | None = None) -> list[dict]:
    """One row per k = 1 .. G-1 correct answers: the pass rate p, and for the correct (A > 0) and the wrong (A < 0)
    answers the advantage and eps_low,i / eps_high,i from etr.etr_bounds."""
    cfg = cfg or etr.make_config("etr")
    G = group_size
    ks = torch.arange(1, G)                                                     # [K]
    rewards = (torch.arange(G)[None, :] < ks[:, None]).float()                  # [K, G]  k ones, then zeros
    adv, group_std = etr.group_advantages(rewards.reshape(-1), G)              # [K*G], [K*G]
    eps_low, eps_high = (e.view(-1, G) for e in etr.etr_bounds(adv, group_std, cfg))  # [K, G] each
    adv = adv.view(-1, G)                                                       # [K, G]
    rows = []
    for i, k in enumerate(ks.tolist()):  # column 0 is a correct answer, column G-1 a wrong one
        rows.append({"k": k, "p": k / G,
                     "adv_correct": adv[i, 0].item(), "eps_low_correct": eps_low[i, 0].item(),
                     "eps_high_correct": eps_high[i, 0].item(),
                     "adv_wrong": adv[i, -1].item(), "eps_low_wrong": eps_low[i, -1].item(),
                     "eps_high_wrong": eps_high[i, -1].item()})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| k | p = k/G | A (correct) | eps_low | eps_high | A (wrong) | eps_low | eps_high |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['k']} | {r['p']:.3f} | {r['adv_correct']:+.3f} | {r['eps_low_correct']:.3f} | "
                     f"{r['eps_high_correct']:.3f} | {r['adv_wrong']:+.3f} | {r['eps_low_wrong']:.3f} | "
                     f"{r['eps_high_wrong']:.3f} |")
    return "\n".join(lines)


def draw(rows: list[dict], cfg: etr.LossConfig, group_size: int, out: Path):
    """Left: eps_low,i and eps_high,i against p; right: the trust region [1 - eps_low,i, 1 + eps_high,i] of rho."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    p = [r["p"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for answer, color in (("correct", "tab:green"), ("wrong", "tab:red")):
        left.plot(p, [r[f"eps_low_{answer}"] for r in rows], "o-", color=color, label=f"eps_low,i ({answer}, A "
                  f"{'>' if answer == 'correct' else '<'} 0)")
        left.plot(p, [r[f"eps_high_{answer}"] for r in rows], "x--", color=color, label=f"eps_high,i ({answer})")
        right.fill_between(p, [1 - r[f"eps_low_{answer}"] for r in rows], [1 + r[f"eps_high_{answer}"] for r in rows],
                           color=color, alpha=0.25, label=f"{answer} answers")
    for ax, values, label in ((left, [cfg.eps_low, cfg.eps_high], "GRPO eps"),
                              (right, [1 - cfg.eps_low, 1 + cfg.eps_high], "GRPO [1 - eps, 1 + eps]")):
        for i, v in enumerate(values):
            ax.axhline(v, color="black", lw=1, ls=":", label=label if i == 0 else None)
        ax.set_xlabel(f"pass rate of the group p = k / {group_size}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_title("ETR clip ranges (etr.etr_bounds)")
    right.set_title("trust region of rho = pi_theta / pi_old")
    fig.suptitle(f"ETR, our reading: alpha {cfg.etr_alpha}, a_max {cfg.etr_a_max}, beta {cfg.etr_beta}, "
                 f"eps {cfg.eps_low} / {cfg.eps_high}, clamped to [{cfg.etr_eps_min}, {cfg.etr_eps_max}]", fontsize=10)
    plot.save_figure(fig, out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--group-size", type=int, default=16,
                   help="G (default: 16; the toy samples 8 per problem: --group-size 8)")
    p.add_argument("--out", type=Path, default=Path("bounds.png"), help="the figure (default: bounds.png)")
    args = p.parse_args(argv)
    if args.group_size < 2:
        p.error("--group-size must be >= 2: with one answer there is no pass rate between 0 and 1")
    cfg = etr.make_config("etr")
    rows = bounds_by_pass_rate(args.group_size, cfg)
    print(table(rows))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("no figure: `pip install matplotlib` is needed for plots")
        return
    draw(rows, cfg, args.group_size, args.out)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
