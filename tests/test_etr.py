"""Tests of etr.py: hand-computed values, analytic gradients, invariances.

They also grade any module with etr.py's API (a student's hand-in, see tests/make_assignment.py):

    ETR_MODULE=path/to/student_etr.py python -m pytest -q tests/test_etr.py

Every check names the row of the README's "Losses: equation <-> code" table that it grades, so a failure is
one line: the function, its equation, what was compared, expected against got (conftest.py shows one line
per failure in this grader mode).
"""
import ast
import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest
import torch


def load_etr():
    """etr.py, or the module at $ETR_MODULE (grader mode): one line and exit 2 if it cannot be imported."""
    path = os.environ.get("ETR_MODULE")
    if not path:
        import etr
        return etr
    if not Path(path).is_file():
        pytest.exit(f"ETR_MODULE={path}: no such file; point it at a copy of etr.py", returncode=2)
    spec = importlib.util.spec_from_file_location("etr_graded", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["etr_graded"] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a student's syntax or import error: one line, not a traceback
        pytest.exit(f"ETR_MODULE={path} does not import: {type(e).__name__}: {e}", returncode=2)
    return module


etr = load_etr()
ALGOS = list(etr.ALGOS)

# The README's "Losses: equation <-> code" rows, by the function that implements them.
ROWS = {
    "group_advantages": "A_i = (r_i - mean_q) / (sigma_q + eps), sigma_q the population std",
    "importance_ratio": "rho_t = exp(log pi_theta - log pi_old), log-ratio clamped to +-20",
    "clipped_surrogate": "l_t = -min(rho_t A, clip(rho_t, 1 - eps_low, 1 + eps_high) A)",
    "gppo_surrogate": "GPPO: d l_t / d log pi = -F A, F = the bound where PPO clips, else rho",
    "dual_clip": "dual-clip: for A < 0, l_t <= -c A",
    "etr_bounds": "eps_i = clamp(eps m_i M_q, eps_min, eps_max), m_i = 1 + alpha min(|A_i|, a_max), "
                  "M_q = (1 - beta) + beta sigma_q^2 / sigma_max^2",
    "erc_keep_mask": "keep token iff 1 - beta_low < (H_theta + 1e-8) / (H_old + 1e-8) < 1 + beta_high",
    "kl_k3": "D_KL = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1 (k3)",
    "aggregate": "token-mean sum l / N_tok; seq-mean (1/N_seq) sum_i (1/|o_i|) sum_t l; "
                 "drgrpo sum l / (N_seq max_len); N of the whole mini-batch",
    "grpo_loss": "GRPO / DAPO / Dr. GRPO = clipped_surrogate, then aggregate",
    "gppo_loss": "GPPO = gppo_surrogate, then aggregate",
    "etr_loss": "ETR = clipped_surrogate with the etr_bounds of each sample, then aggregate",
    "erc_dapo_loss": "ERC-DAPO = clipped_surrogate, no gradient where erc_keep_mask is False, then aggregate",
    "erc_gppo_loss": "ERC-GPPO = gppo_surrogate, no gradient where erc_keep_mask is False, then aggregate",
    "sequence_ratio": "GSPO: s_i = exp((1/|o_i|) sum_t log rho_t)",
    "gspo_token_ratio": "GSPO-token: s_i,t = sg[s_i] pi_theta / sg[pi_theta]",
    "gspo_loss": "GSPO = clipped_surrogate of s_i on every token of o_i, then seq-mean",
    "gspo_token_loss": "GSPO-token = clipped_surrogate of s_i,t, then seq-mean",
    "cispo_surrogate": "CISPO: l_t = -sg(clip(rho_t, 1 - eps_low, 1 + eps_high)) A log pi_theta",
    "cispo_loss": "CISPO = cispo_surrogate, then token-mean",
    "token_covariance": "Cov(y_t) = (log pi(y_t) - mean log pi) (A_t - mean A) over the batch's valid tokens",
    "clip_cov_tokens": "I_clip: max(1, floor(r N)) tokens drawn among omega_low < Cov < omega_high, not PPO-clipped",
    "kl_cov_tokens": "I_KL: the max(1, floor(k N)) tokens of largest Cov",
    "clip_cov_loss": "Clip-Cov = clipped_surrogate, loss 0 on I_clip, then aggregate",
    "kl_cov_loss": "KL-Cov = -rho_t A + beta |log rho_t| on I_KL, then aggregate",
    "high_entropy_mask": "keep token iff H_t >= tau_rho, the (1 - rho)-quantile of the batch's entropies",
    "batch_choices": "the mini-batch's cov_select and entropy_keep, handed to every micro-batch",
    "make_config": "--algo name -> function and its settings",
}


def fmt(t):
    """A number, a bool or a small tensor on one line, 5 significant digits."""
    if t.dim():
        return "[" + ", ".join(fmt(row) for row in t) + "]"
    return str(bool(t)) if t.dtype == torch.bool else f"{t.item():.5g}"


def check(got, expected, fn, what, *, atol=1e-6, rtol=1e-5, exact=False):
    """Fail with one line: fn's README row, what was compared, expected against got (the first difference
    of a large tensor). exact: bit for bit."""
    __tracebackhide__ = True  # the failure points at the test's line, not at this helper
    got, expected = torch.as_tensor(got).detach().cpu(), torch.as_tensor(expected).detach().cpu()
    if got.shape != expected.shape:
        bad = f"expected shape {list(expected.shape)}, got {list(got.shape)}"
    else:
        g, e = got.double(), expected.double()
        ok = (g == e) if exact else torch.isclose(g, e, rtol=rtol, atol=atol)
        if ok.all():
            return
        if g.numel() <= 8:
            bad = f"expected {fmt(expected)}, got {fmt(got)}"
        else:
            at = tuple((~ok).nonzero()[0].tolist())
            bad = (f"at {list(at)} expected {fmt(expected[at])}, got {fmt(got[at])} "
                   f"({int((~ok).sum())} of {g.numel()} differ)")
    raise AssertionError(f"{fn} (README: {ROWS[fn]}): {what}: {bad}")


def loss_name(algo):
    return etr.ALGOS[algo].__name__


# ---------------------------------------------------------------------------------------------
# A fixed batch: two responses, A = +1 and A = -1, each with tokens below, inside and above
# the clip range. Response 0 has a 4th token (uneven lengths); response 1 is padded there.
# ---------------------------------------------------------------------------------------------
RATIOS = [[0.5, 1.0, 1.5, 1.0],
          [0.5, 1.0, 1.5, 7.0]]   # the 7.0 sits on a padded position: it must not matter
ADV = [1.0, -1.0]
MASK = [[1, 1, 1, 1],
        [1, 1, 1, 0]]


def fixed_batch():
    old_logp = torch.full((2, 4), -1.0)
    logp = (old_logp + torch.tensor(RATIOS).log()).requires_grad_(True)
    return logp, old_logp, torch.tensor(ADV), torch.tensor(MASK)


def run(algo, logp, old_logp, adv, mask, entropy=None, old_entropy=None, group_std=None, ref_logp=None, **cfg):
    cfg = etr.make_config(algo, **cfg)
    if entropy is None:  # equal entropies: ERC masks nothing
        entropy = old_entropy = torch.ones_like(old_logp)
    if group_std is None:
        group_std = torch.full_like(adv, 0.5)
    loss, metrics = etr.ALGOS[algo](logp, old_logp, adv, mask, cfg, group_std=group_std,
                                    entropy=entropy, old_entropy=old_entropy, ref_logp=ref_logp)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.item(), grad, {k: v.item() for k, v in metrics.items()}


# Per-token losses l_t = -min(rho A, clip(rho) A), worked by hand.
# A = +1, eps 0.2/0.2: rho 0.5 -> -0.5, 1.0 -> -1.0, 1.5 -> -1.2 (clipped high), 1.0 -> -1.0
# A = -1:              rho 0.5 -> +0.8 (clipped low), 1.0 -> +1.0, 1.5 -> +1.5
# With eps_high = 0.28 (DAPO): the A = +1, rho = 1.5 token gives -1.28 instead.
L_GRPO = [[-0.5, -1.0, -1.2, -1.0], [0.8, 1.0, 1.5]]
L_DAPO = [[-0.5, -1.0, -1.28, -1.0], [0.8, 1.0, 1.5]]


def token_mean(rows):
    return sum(map(sum, rows)) / sum(map(len, rows))


def seq_mean(rows):
    return sum(sum(r) / len(r) for r in rows) / len(rows)


EXPECTED_LOSS = {
    "grpo": seq_mean(L_GRPO),                   # (-3.7/4 + 3.3/3) / 2
    "dapo": token_mean(L_DAPO),                 # -0.48 / 7
    "gppo": token_mean(L_GRPO),                 # GPPO has PPO's forward value
    "drgrpo": sum(map(sum, L_GRPO)) / (2 * 16),  # max_len = 16 below; A unchanged (given)
    # ETR, sigma = 0.5 (M = 1), |A| = 1 (m = 1.5): eps = 0.3 on both sides for both responses
    "etr": ((-0.5 - 1.0 - 1.3 - 1.0) / 4 + (0.7 + 1.0 + 1.5) / 3) / 2,
    "erc-dapo": token_mean(L_DAPO),             # equal entropies: nothing dropped
    "erc-gppo": token_mean(L_GRPO),             # dual-clip c = 10 does not bind at rho <= 1.5
    # GSPO, eps 3e-4 / 4e-4: s_0 = 0.75^(1/4) = 0.9306 (A = +1: inside), s_1 = 0.75^(1/3) = 0.9086 (A = -1:
    # below 1 - 3e-4, clipped to 0.9997); one loss per sequence, (1/G) sum_i
    "gspo": (-0.75 ** 0.25 + (1 - 3e-4)) / 2,
    "gspo-token": (-0.75 ** 0.25 + (1 - 3e-4)) / 2,
    # CISPO, no weight clipped (bounds 0 and 5): -rho A log pi with log pi = -1 + log rho; the first three tokens
    # of the two responses cancel, response 0's fourth token leaves -1 * 1 * (-1) = 1
    "cispo": 1 / 7,
    # Clip-Cov, its PPO clip at (0, 2) binds nowhere and no token's Cov lies in (1, 5): token mean of -rho A
    "clip-cov": (-(0.5 + 1.0 + 1.5 + 1.0) + (0.5 + 1.0 + 1.5)) / 7,
    # KL-Cov: the same unclipped surrogate, + beta |log rho| = log 2 on its one token (largest Cov: response 1's
    # first, rho 0.5; Cov by hand in test_token_covariance_by_hand)
    "kl-cov": (-1 + math.log(2)) / 7,
}
SEQ_RATIO = [0.75 ** (1 / 4), 0.75 ** (1 / 3)]  # GSPO's s_i of the fixed batch: (0.5 * 1 * 1.5 * 1)^(1/4), (0.5 * 1 * 1.5)^(1/3)


@pytest.mark.parametrize("algo", ALGOS)
def test_forward_values_by_hand(algo):
    loss, _, metrics = run(algo, *fixed_batch(), max_len=16)
    check(loss, EXPECTED_LOSS[algo], loss_name(algo), f"{algo} loss of the fixed batch (rho 0.5 / 1 / 1.5, A = +-1, lengths 4 and 3)")
    ratio_max, what = (SEQ_RATIO[0], "the largest s_i") if algo.startswith("gspo") else (1.5, "the padded rho = 7 must not count")
    check(metrics["ratio_max"], ratio_max, loss_name(algo), f"{algo} metric ratio_max ({what})")


def analytic_grad(algo, cfg, n):
    """d loss / d logp per token: -F * A / N, F = rho inside, 0 where PPO clips, the bound for GPPO, clip(rho)
    whatever the sign of A for CISPO, rho everywhere for KL-Cov (no clip) and the unclipped s_i for GSPO (N is then
    N_seq |o_i|: s_i's gradient spreads over o_i's tokens). KL-Cov adds beta sign(log rho) / N on its chosen token."""
    grad = torch.zeros(2, 4)
    lo, hi = 1 - cfg.eps_low, 1 + cfg.eps_high
    for i, a in enumerate(ADV):
        for t in range(4):
            if not MASK[i][t]:
                continue
            rho = SEQ_RATIO[i] if algo.startswith("gspo") else RATIOS[i][t]
            high, low = a > 0 and rho > hi, a < 0 and rho < lo
            if "gppo" in algo:
                f = hi if high else lo if low else rho
            elif algo == "cispo":
                f = min(max(rho, lo), hi)
            elif algo == "kl-cov":
                f = rho
            else:
                f = 0.0 if (high or low) else rho
            grad[i, t] = -f * a / n[i]
    if algo == "kl-cov":  # its one chosen token: response 1's first (rho 0.5), d beta |log rho| / d log pi = -beta
        grad[1, 0] += cfg.kl_cov_coef * math.copysign(1.0, math.log(RATIOS[1][0])) / n[1]
    return grad


@pytest.mark.parametrize("algo", ALGOS)
def test_gradients_match_analytic(algo):
    cfg = etr.make_config(algo)
    if algo == "etr":  # alpha = beta = 0 keeps the bounds fixed; ETR's own bounds are tested below
        overrides = dict(etr_alpha=0.0, etr_beta=0.0)
    else:
        overrides = {}
    _, grad, _ = run(algo, *fixed_batch(), max_len=16, **overrides)
    lengths = [4, 3]
    if cfg.loss_agg == "token-mean":
        n = [7, 7]
    elif cfg.loss_agg == "seq-mean":
        n = [2 * length for length in lengths]
    else:
        n = [2 * 16, 2 * 16]
    expected = analytic_grad(algo, cfg, n)
    check(grad, expected, loss_name(algo), f"{algo} d loss / d log pi [2, 4] of the fixed batch (-F A / N per token)",
          rtol=1e-5, atol=1e-7)


def test_clip_fractions_per_side():
    _, _, m = run("grpo", *fixed_batch())
    # one clipped-high token (A > 0, rho 1.5) and one clipped-low token (A < 0, rho 0.5) out of 7
    check(m["clip_frac_high"], 1 / 7, "clipped_surrogate", "grpo clip_frac_high (A > 0 above 1 + eps_high)")
    check(m["clip_frac_low"], 1 / 7, "clipped_surrogate", "grpo clip_frac_low (A < 0 below 1 - eps_low)")
    _, _, m = run("dapo", *fixed_batch())
    check(m["clip_frac_high"], 1 / 7, "clipped_surrogate", "dapo clip_frac_high (1.5 > 1.28 still clipped)")
    # approx KL(old || new) = mean of rho - 1 - log rho over valid tokens
    vals = [r - 1 - math.log(r) for row, mrow in zip(RATIOS, MASK) for r, k in zip(row, mrow) if k]
    check(m["approx_kl"], sum(vals) / 7, "grpo_loss", "dapo metric approx_kl = token mean of rho - 1 - log rho")


def test_dual_clip_caps_negative_advantage_loss():
    old_logp = torch.zeros(1, 3)
    logp = torch.tensor([[math.log(2.0), math.log(4.0), math.log(0.5)]], requires_grad=True)
    adv, mask = torch.tensor([-1.0]), torch.ones(1, 3)
    loss, grad, m = run("grpo", logp, old_logp, adv, mask, dual_clip=3.0, loss_agg="token-mean")
    # rho 2 -> 2 (inside the cap, gradient rho*|A|/N); rho 4 -> capped at c|A| = 3, no gradient;
    # rho 0.5 -> clipped low at 0.8, no gradient
    what = "A = -1, rho 2 / 4 / 0.5, c = 3"
    check(loss, (2.0 + 3.0 + 0.8) / 3, "dual_clip", f"token-mean loss, {what}")
    check(grad, [[2.0 / 3, 0.0, 0.0]], "dual_clip", f"d loss / d log pi, {what}")
    check(m["clip_frac_high"], 1 / 3, "dual_clip", f"clip_frac_high counts the capped token, {what}")
    # positive advantages are never capped
    loss, grad, _ = run("grpo", logp, old_logp, -adv, mask, dual_clip=3.0, loss_agg="token-mean")
    check(loss, -(1.2 + 1.2 + 0.5) / 3, "dual_clip", "token-mean loss, A = +1 (never capped), rho 2 / 4 / 0.5, c = 3")


def test_kl_penalty_k3_value_and_gradient():
    logp = torch.tensor([[math.log(0.5), math.log(0.25)]], requires_grad=True)
    ref = torch.tensor([[math.log(0.25), math.log(0.25)]])
    cfg = etr.make_config("dapo", kl_coef=0.1)
    loss, m = etr.grpo_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 2), cfg, ref_logp=ref)
    # A = 0: only the KL term. D = r - log r - 1 with r = ref/pi: r = 0.5 -> 0.5 + log 2 - 1; r = 1 -> 0
    d = 0.5 + math.log(2) - 1
    what = "pi_theta 0.5 / 0.25, pi_ref 0.25 / 0.25, A = 0, beta 0.1, token-mean"
    check(loss, 0.1 * d / 2, "kl_k3", f"loss = beta * mean D_KL, {what}")
    check(m["kl"], d / 2, "kl_k3", f"metric kl, {what}")
    (grad,) = torch.autograd.grad(loss, logp)
    # dD/dlogp = -r + 1
    check(grad, [[0.1 * (1 - 0.5) / 2, 0.0]], "kl_k3", f"d loss / d log pi = beta (1 - pi_ref/pi_theta) / N, {what}")


# ---------------------------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------------------------
def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv, std = etr.group_advantages(rewards, 4, eps=0.0)
    s = math.sqrt(0.25 * 0.75)  # population std of {1, 0, 0, 0}
    fn, groups = "group_advantages", "rewards {1, 0, 0, 0}, {1, 1, 1, 1}"
    check(adv[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]) / s, fn, f"A of group {{1, 0, 0, 0}} (std over G, not G - 1)")
    check(adv[4:], torch.zeros(4), fn, "A of a group with equal rewards (exactly 0, never NaN)", exact=True)
    check(std, [s] * 4 + [0.0] * 4, fn, f"group_std, {groups}")
    adv, _ = etr.group_advantages(rewards, 4, std_mode="none")
    check(adv, [0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0], fn, f"A with std_mode='none' (Dr. GRPO), {groups}")
    adv, _ = etr.group_advantages(rewards, 4, std_mode="batch", eps=0.0)
    batch_std = math.sqrt(5 / 8 * 3 / 8)
    check(adv[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]) / batch_std, fn, f"A with std_mode='batch', {groups}")
    # a non-0/1 constant group also gives exactly 0 (mean of 0.7s is not exactly 0.7 in fp32)
    adv, std = etr.group_advantages(torch.full((3,), 0.7), 3)
    check(adv, torch.zeros(3), fn, "A of the group {0.7, 0.7, 0.7} (exactly 0)", exact=True)
    check(std, torch.zeros(3), fn, "group_std of the group {0.7, 0.7, 0.7} (exactly 0)", exact=True)
    with pytest.raises(ValueError, match="multiple of group_size"):
        etr.group_advantages(torch.ones(5), 4)


# ---------------------------------------------------------------------------------------------
# ETR
# ---------------------------------------------------------------------------------------------
def test_etr_forward_by_hand():
    # group {1, 0, 0, 0}: sigma^2 = 3/16, A = sqrt(3) (success), -1/sqrt(3) (failures)
    adv, std = etr.group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, eps=0.0)
    cfg = etr.make_config("etr")  # alpha 0.5, beta 0.5, a_max 3
    eps_low, eps_high = etr.etr_bounds(adv, std, cfg)
    M = 0.5 + 0.5 * (3 / 16) / 0.25
    expected = [0.2 * (1 + 0.5 * math.sqrt(3)) * M] + [0.2 * (1 + 0.5 / math.sqrt(3)) * M] * 3
    what = "group {1, 0, 0, 0}, alpha 0.5, beta 0.5"
    check(eps_low, expected, "etr_bounds", f"eps_low_i, {what}")
    check(eps_high, expected, "etr_bounds", f"eps_high_i, {what}")
    # the success token at rho = 1.3 is inside its widened region (eps = 0.327) -> l = -1.3 * A;
    # a failure token at rho = 0.75 is below 1 - 0.2255 -> clipped to 0.7745
    old_logp = torch.zeros(4, 1)
    logp = torch.tensor([[math.log(1.3)], [math.log(0.75)], [0.0], [0.0]], requires_grad=True)
    loss, grad, m = run("etr", logp, old_logp, adv, torch.ones(4, 1), group_std=std)
    a_s, a_f = math.sqrt(3), -1 / math.sqrt(3)
    per_seq = [-1.3 * a_s, -(1 - expected[1]) * a_f, -a_f, -a_f]
    what += ", rho 1.3 / 0.75 / 1 / 1"
    check(loss, sum(per_seq) / 4, "etr_loss", f"loss, {what}")
    check(grad, [[-1.3 * a_s / 4], [0.0], [-a_f / 4], [-a_f / 4]], "etr_loss", f"d loss / d log pi, {what}")
    check(m["etr_eps_low_mean"], sum(expected) / 4, "etr_loss", f"metric etr_eps_low_mean, {what}", rtol=1e-6)


def test_etr_with_alpha_beta_zero_is_exactly_grpo():
    torch.manual_seed(0)
    B, T, G = 8, 6, 4
    old_logp = -torch.rand(B, T) * 3
    logp = (old_logp + 0.4 * torch.randn(B, T)).requires_grad_(True)
    adv, std = etr.group_advantages(torch.randint(0, 2, (B,)).float(), G)
    mask = (torch.rand(B, T) > 0.2).long()
    for agg in ["token-mean", "seq-mean", "drgrpo"]:
        loss_g, grad_g, m_g = run("grpo", logp, old_logp, adv, mask, loss_agg=agg, max_len=T)
        loss_e, grad_e, m_e = run("etr", logp, old_logp, adv, mask, group_std=std, loss_agg=agg, max_len=T,
                                  etr_alpha=0.0, etr_beta=0.0)
        what = f"alpha = beta = 0 must be GRPO bit for bit ({agg})"
        check(loss_e, loss_g, "etr_loss", f"loss, {what}", exact=True)
        check(grad_e, grad_g, "etr_loss", f"d loss / d log pi, {what}", exact=True)
        for k in m_g:
            check(m_e[k], m_g[k], "etr_loss", f"metric {k}, {what}", exact=True)


def test_etr_bounds_monotone_in_abs_adv_and_clamped():
    cfg = etr.make_config("etr")
    adv = torch.linspace(-6, 6, 241)
    eps_low, eps_high = etr.etr_bounds(adv, torch.full_like(adv, 0.5), cfg)
    order = adv.abs().argsort()
    shrinks = int((eps_low[order].diff() < 0).sum() + (eps_high[order].diff() < 0).sum())
    check(shrinks, 0, "etr_bounds", "number of places where eps shrinks as |A| grows (-6 .. 6)")
    check(eps_low[order][-1] > eps_low[order][0], True, "etr_bounds", "eps at |A| = 6 wider than at A = 0")
    # micro elasticity stops at a_max: |A| = 6 widens no more than |A| = a_max = 3 (eps_max out of the way)
    roomy = etr.make_config("etr", etr_eps_max=10.0)
    lo, _ = etr.etr_bounds(torch.tensor([3.0, -6.0]), torch.full((2,), 0.5), roomy)
    check(lo[1], lo[0], "etr_bounds", "eps_low at |A| = 6 must equal eps_low at |A| = a_max = 3")
    # clamps: huge alpha hits eps_max, beta = 1 with zero variance hits eps_min
    wide = etr.make_config("etr", etr_alpha=100.0, etr_a_max=100.0)
    check(etr.etr_bounds(adv, torch.full_like(adv, 0.5), wide)[1].max(), wide.etr_eps_max, "etr_bounds",
          "largest eps_high with alpha = 100 (clamped to eps_max)")
    narrow = etr.make_config("etr", etr_beta=1.0)
    lo, hi = etr.etr_bounds(torch.zeros(3), torch.zeros(3), narrow)
    check(lo, [narrow.etr_eps_min] * 3, "etr_bounds", "eps_low with beta = 1, sigma = 0 (clamped to eps_min)")
    check(hi, [narrow.etr_eps_min] * 3, "etr_bounds", "eps_high with beta = 1, sigma = 0 (clamped to eps_min)")


def test_etr_macro_term_peaks_at_half_pass_rate_and_is_symmetric():
    G = 8
    cfg = etr.make_config("etr", etr_alpha=0.0)  # isolate the macro term
    M = []
    for k in range(G + 1):  # k successes out of G
        rewards = torch.tensor([1.0] * k + [0.0] * (G - k))
        _, std = etr.group_advantages(rewards, G)
        M.append(etr.etr_bounds(torch.zeros(1), std[:1], cfg)[1].item())
    # hand values: sigma^2 = k (G - k) / G^2, eps = 0.2 (0.5 + 0.5 sigma^2 / (1/4))
    expected = [0.2 * (0.5 + 0.5 * (k * (G - k) / G ** 2) / 0.25) for k in range(G + 1)]
    check(M, expected, "etr_bounds", "eps_high for k = 0 .. 8 successes of 8 (alpha 0, beta 0.5)")
    check(M.index(max(M)), G // 2, "etr_bounds", "k at which eps_high peaks (half pass rate)")
    check(M, M[::-1], "etr_bounds", "eps_high for k successes against G - k successes (symmetric)")


# ---------------------------------------------------------------------------------------------
# ERC
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["erc-dapo", "erc-gppo"])
def test_erc_masks_out_of_band_tokens_strictly(algo):
    old_logp = torch.zeros(1, 6)
    logp = torch.tensor([[0.05, -0.05, 0.02, 0.0, 0.1, -0.1]], requires_grad=True)
    adv, mask = torch.tensor([1.0]), torch.ones(1, 6)
    old_entropy = torch.ones(1, 6)
    # beta = 0.5 makes the band edges exact in fp32: 0.5 and 1.5 lie ON the edge -> dropped (strict)
    entropy = torch.tensor([[0.4, 0.5, 0.51, 1.0, 1.49, 1.5]])
    keep = torch.tensor([[False, False, True, True, True, False]])
    loss, grad, m = run(algo, logp, old_logp, adv, mask, entropy=entropy, old_entropy=old_entropy,
                        erc_beta_low=0.5, erc_beta_high=0.5)
    what = f"{algo}, H_theta / H_old = 0.4 / 0.5 / 0.51 / 1 / 1.49 / 1.5, beta 0.5"
    check(etr.erc_keep_mask(entropy, old_entropy, 0.5, 0.5), keep, "erc_keep_mask", f"keep mask, {what}", exact=True)
    check(grad != 0, keep, loss_name(algo), f"tokens with a gradient, {what}", exact=True)
    ratio = logp.detach().exp()
    check(grad[keep], -ratio[keep] / 6, loss_name(algo), f"gradient of kept tokens (-rho A / N, N counts all 6), {what}")
    check(loss, (-ratio).mean(), loss_name(algo), f"loss (dropped tokens keep their value), {what}", rtol=1e-6)
    check(m["erc_masked_frac"], 3 / 6, loss_name(algo), f"metric erc_masked_frac, {what}")


def test_erc_equal_entropies_mask_nothing_and_ignores_sign_of_adv():
    torch.manual_seed(1)
    ent = torch.rand(4, 5) * 3
    keep = etr.erc_keep_mask(ent, ent.clone(), 0.05, 0.05)
    check(keep.sum(), 20, "erc_keep_mask", "kept tokens of 20 with equal entropies")
    keep = etr.erc_keep_mask(ent * 1.2, ent, 0.05, 0.05)
    check(keep.sum(), 0, "erc_keep_mask", "kept tokens of 20 with H_theta = 1.2 H_old, beta 0.05")
    old_logp = torch.zeros(2, 1)
    logp = torch.zeros(2, 1, requires_grad=True)
    _, grad, _ = run("erc-dapo", logp, old_logp, torch.tensor([1.0, -1.0]), torch.ones(2, 1),
                     entropy=torch.full((2, 1), 2.0), old_entropy=torch.ones(2, 1))
    check(grad, torch.zeros(2, 1), "erc_dapo_loss", "gradient of tokens with H_theta = 2 H_old, A = +1 and -1 "
          "(dropped for either sign)", exact=True)


# ---------------------------------------------------------------------------------------------
# GSPO, CISPO, Clip-Cov / KL-Cov, high-entropy tokens
# ---------------------------------------------------------------------------------------------
def test_sequence_ratio_by_hand():
    logp, old_logp, _, mask = fixed_batch()
    check(etr.sequence_ratio(logp, old_logp, mask), [[SEQ_RATIO[0]], [SEQ_RATIO[1]]], "sequence_ratio",
          "s_i of the fixed batch: geometric mean of rho over the valid tokens (the padded rho = 7 must not count)")
    # the geometric mean, not the product (pi_theta(o_i) / pi_old(o_i) = 0.75) nor the arithmetic mean (1.0)
    check(etr.sequence_ratio(torch.log(torch.tensor([[2.0, 8.0]])), torch.zeros(1, 2), torch.ones(1, 2)), [[4.0]],
          "sequence_ratio", "s_i of rho = 2, 8: sqrt(2 * 8) = 4")


def test_gspo_on_one_token_responses_is_grpo():
    """GSPO Sec. 4: with |o_i| = 1, s_i is rho of the one token: GSPO with GRPO's clip range is GRPO (value and
    gradient). With longer responses it is not."""
    g = torch.Generator().manual_seed(3)
    old_logp = -torch.rand(8, 1, generator=g) * 3
    logp = old_logp + 0.4 * torch.randn(8, 1, generator=g)            # ratios on both sides of 0.8 / 1.2
    adv, mask = torch.randn(8, generator=g), torch.ones(8, 1)
    loss_g, grad_g, m_g = run("grpo", logp.requires_grad_(True), old_logp, adv, mask)
    for algo in ["gspo", "gspo-token"]:
        loss_s, grad_s, m_s = run(algo, logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.2)
        what = f"{algo} with eps 0.2 / 0.2 on one-token responses against grpo"
        check(m_g["clip_frac_low"] + m_g["clip_frac_high"] > 0, True, loss_name(algo), f"the clip binds, {what}")
        check(loss_s, loss_g, loss_name(algo), f"loss, {what}", atol=1e-7, rtol=1e-6)
        check(grad_s, grad_g, loss_name(algo), f"d loss / d log pi, {what}", atol=1e-7, rtol=1e-6)
        for k in m_g:
            check(m_s[k], m_g[k], loss_name(algo), f"metric {k}, {what}", atol=1e-7, rtol=1e-6)
    b = random_batch()
    loss_g, _, _ = run("grpo", b["logp"].requires_grad_(True), b["old_logp"], b["adv"], b["mask"])
    loss_s, _, _ = run("gspo", b["logp"], b["old_logp"], b["adv"], b["mask"], eps_low=0.2, eps_high=0.2)
    check(abs(loss_s - loss_g) > 1e-3, True, "gspo_loss", "GSPO differs from GRPO on responses of 1-9 tokens")


def test_gspo_token_has_gspos_value_and_gradient():
    """GSPO Sec. 4.3: with one advantage per response, GSPO-token is GSPO numerically (value and gradient)."""
    b = random_batch()
    for eps in [(3e-4, 4e-4), (0.2, 0.2)]:  # the paper's clip range (most sequences clipped), and a wide one
        loss_s, grad_s, m_s = run("gspo", b["logp"].clone().requires_grad_(True), b["old_logp"], b["adv"], b["mask"],
                                  eps_low=eps[0], eps_high=eps[1])
        loss_t, grad_t, m_t = run("gspo-token", b["logp"].clone().requires_grad_(True), b["old_logp"], b["adv"],
                                  b["mask"], eps_low=eps[0], eps_high=eps[1])
        what = f"gspo-token against gspo, random ragged batch, eps {eps}"
        check(loss_t, loss_s, "gspo_token_loss", f"loss, {what}", atol=1e-7, rtol=1e-6)
        check(grad_t, grad_s, "gspo_token_loss", f"d loss / d log pi [7, 9], {what}", atol=1e-7, rtol=1e-6)
        for k in m_s:
            check(m_t[k], m_s[k], "gspo_token_loss", f"metric {k}, {what}", atol=1e-7, rtol=1e-6)


def test_cispo_clips_the_weight_whatever_the_sign_and_keeps_every_gradient():
    """MiniMax-M1 eq. 4-5 with eps 0.2 / 0.2 on the fixed batch: every token keeps the gradient -clip(rho) A / N --
    also response 0's rho = 0.5 (A > 0) gets 0.8 (GPPO: 0.5) and response 1's rho = 1.5 (A < 0) 1.2 (GPPO: 1.5)."""
    loss, grad, m = run("cispo", *fixed_batch(), eps_low=0.2, eps_high=0.2)
    w = [[0.8, 1.0, 1.2, 1.0], [0.8, 1.0, 1.2, 0.0]]  # clip(rho, 0.8, 1.2); 0 on the padded position
    expected = torch.tensor([[-x / 7 for x in w[0]], [x / 7 for x in w[1]]])  # -w A / N, A = +1 and -1
    what = "cispo, eps 0.2 / 0.2, fixed batch"
    check(grad, expected, "cispo_surrogate", f"d loss / d log pi = -clip(rho) A / N, {what}")
    check(m["clip_frac_low"], 2 / 7, "cispo_surrogate", f"clip_frac_low (rho 0.5 of both responses), {what}")
    check(m["clip_frac_high"], 2 / 7, "cispo_surrogate", f"clip_frac_high (rho 1.5 of both responses), {what}")
    log_pi = [-1 + math.log(r) for r in RATIOS[0]]
    value = (sum(-x * lp for x, lp in zip(w[0], log_pi)) + sum(x * lp for x, lp in zip(w[1], log_pi))) / 7
    check(loss, value, "cispo_surrogate", f"loss = token mean of -sg(w) A log pi, {what}")


def test_cispo_inside_its_bounds_has_grpos_gradient():
    """MiniMax-M1 Sec. 3.1: where no weight is clipped, CISPO's gradient is the policy gradient of PPO / GRPO
    (-rho A per token; the values differ: CISPO's is -rho A log pi)."""
    b = random_batch()
    logp = (b["old_logp"] + 0.05 * torch.randn(7, 9, generator=torch.Generator().manual_seed(5))).requires_grad_(True)
    _, grad_c, m = run("cispo", logp, b["old_logp"], b["adv"], b["mask"], eps_low=0.2, eps_high=0.2)
    _, grad_g, _ = run("dapo", logp, b["old_logp"], b["adv"], b["mask"], eps_low=0.2, eps_high=0.2)
    what = "ratios within 0.85-1.15, eps 0.2, token-mean, random ragged batch"
    check(m["clip_frac_low"] + m["clip_frac_high"], 0.0, "cispo_surrogate", f"clipped weights, {what}")
    check(grad_c, grad_g, "cispo_loss", f"d loss / d log pi against GRPO's (dapo, token-mean), {what}")


def test_token_covariance_by_hand():
    logp, _, adv, mask = fixed_batch()
    lp = [-1 + math.log(r) for r in RATIOS[0]]  # log pi of response 0; response 1 has its first three
    lp_mean, a_mean = (sum(lp) + sum(lp[:3])) / 7, (4 - 3) / 7
    expected = [[(x - lp_mean) * (1 - a_mean) for x in lp], [(x - lp_mean) * (-1 - a_mean) for x in lp[:3]] + [0.0]]
    cov = etr.token_covariance(logp, adv, mask)
    check(cov * mask, expected, "token_covariance", "Cov of the fixed batch (means over its 7 valid tokens)")
    check(cov.requires_grad, False, "token_covariance", "Cov carries no gradient (it only chooses tokens)")
    check(cov[1].argmax(), 0, "token_covariance", "largest Cov of the fixed batch: response 1's first token (0.698)")


def cov_batch():
    """Four tokens of A = +1 and four of A = -1; Cov = (log pi - mean) * (A - 0) = +-(log pi + 1.5)."""
    old_logp = torch.tensor([[-3.0, -2.0, -1.0, 0.0], [-3.0, -2.0, -1.0, 0.0]])  # [2, 4] mean -1.5
    logp = old_logp.clone().requires_grad_(True)                                # rho = 1 everywhere
    return logp, old_logp, torch.tensor([1.0, -1.0]), torch.ones(2, 4)


def test_clip_cov_draws_from_the_band_and_zeroes_its_tokens():
    """Cov of cov_batch: A = +1: -1.5, -0.5, 0.5, 1.5; A = -1: 1.5, 0.5, -0.5, -1.5. Band (0.4, 1.6): four
    candidates; r = 0.25 of 8 tokens: 2 drawn, uniformly (torch.randperm, the authors' draw), with loss 0 and
    no gradient; a candidate PPO's clip cuts is never drawn."""
    logp, old_logp, adv, mask = cov_batch()
    cfg = etr.make_config("clip-cov", clip_cov_ratio=0.25, clip_cov_lb=0.4, clip_cov_ub=1.6)
    band = torch.tensor([[False, False, True, True], [True, True, False, False]])
    seen = torch.zeros(2, 4)
    for seed in range(40):
        torch.manual_seed(seed)
        chosen = etr.clip_cov_tokens(logp, old_logp, adv, mask, cfg)
        torch.manual_seed(seed)
        order = band.flatten().nonzero().squeeze(1)[torch.randperm(4)[:2]]  # the draw, by hand
        check(chosen.flatten().nonzero().squeeze(1).sort().values, order.sort().values, "clip_cov_tokens",
              f"the 2 tokens drawn with seed {seed}: the first 2 of torch.randperm(4) over the 4 candidates (row-major)")
        seen += chosen
    check(seen > 0, band, "clip_cov_tokens", "tokens chosen over 40 draws: every candidate, only candidates", exact=True)
    narrow = etr.make_config("clip-cov", clip_cov_ratio=1.0, clip_cov_lb=0.4, clip_cov_ub=1.0)  # r N = 8: all of them
    check(etr.clip_cov_tokens(logp, old_logp, adv, mask, narrow), (band & (etr.token_covariance(logp, adv, mask) < 1)),
          "clip_cov_tokens", "band (0.4, 1.0), r = 1: the two tokens of Cov 0.5 (1.5 is above omega_high)", exact=True)
    torch.manual_seed(0)
    loss, grad, m = run("clip-cov", logp, old_logp, adv, mask, clip_cov_ratio=0.25, clip_cov_lb=0.4, clip_cov_ub=1.6)
    torch.manual_seed(0)
    chosen = etr.clip_cov_tokens(logp, old_logp, adv, mask, cfg)
    what = "rho = 1, A = +-1, r = 0.25 of 8 tokens, token-mean"
    check(grad[chosen], torch.zeros(2), "clip_cov_loss", f"gradient of the 2 drawn tokens, {what}", exact=True)
    check(grad[~chosen], -adv[:, None].expand(2, 4)[~chosen] / 8, "clip_cov_loss", f"gradient of the others, {what}")
    check(loss, (-adv[:, None].expand(2, 4))[~chosen].sum() / 8, "clip_cov_loss", f"loss (drawn tokens: 0), {what}")
    check(m["cov_selected_frac"], 2 / 8, "clip_cov_loss", f"metric cov_selected_frac, {what}")
    # rho = 0.5 on the tokens of A = -1: below PPO's 1 - eps_low = 0.8, clipped; every token in the band (0, 9)
    low = old_logp + torch.tensor([[0.0] * 4, [math.log(0.5)] * 4])
    cut = etr.make_config("clip-cov", eps_low=0.2, eps_high=0.2, clip_cov_ratio=1.0, clip_cov_lb=0.0, clip_cov_ub=9.0)
    chosen = etr.clip_cov_tokens(low, old_logp, adv, mask, cut)
    check(chosen[1].any(), False, "clip_cov_tokens", "tokens PPO's clip cuts (A < 0, rho 0.5 < 0.8) are never drawn")


def test_clip_cov_without_candidates_is_the_clipped_surrogate():
    """An empty band (no token with omega_low < Cov < omega_high): Clip-Cov is the PPO clip with its eps, bit for bit."""
    b = random_batch()
    logp = b["logp"].requires_grad_(True)
    loss_g, grad_g, m_g = run("dapo", logp, b["old_logp"], b["adv"], b["mask"], eps_low=0.2, eps_high=0.2)
    loss_c, grad_c, m_c = run("clip-cov", logp, b["old_logp"], b["adv"], b["mask"], eps_low=0.2, eps_high=0.2,
                              clip_cov_lb=100.0, clip_cov_ub=101.0)
    what = "Clip-Cov with the band (100, 101) against dapo with eps 0.2 / 0.2"
    check(m_c["cov_selected_frac"], 0.0, "clip_cov_loss", f"tokens chosen, {what}")
    check(loss_c, loss_g, "clip_cov_loss", f"loss, {what}", exact=True)
    check(grad_c, grad_g, "clip_cov_loss", f"d loss / d log pi, {what}", exact=True)


def test_kl_cov_penalises_the_top_k_covariance_tokens():
    """cov_batch with rho = 1.5 on response 0's last token: log pi = -3, -2, -1, 0.405 and -3, -2, -1, 0 (mean
    -1.449), Cov = -1.55, -0.55, 0.45, 1.85 and 1.55, 0.55, -0.45, -1.45. KL-Cov, k = 0.25 of 8 tokens: the 2 of
    largest Cov (1.85 and 1.55) get + beta |log rho| (log 1.5 and 0); no PPO clip anywhere."""
    _, old_logp, adv, mask = cov_batch()
    rho = torch.tensor([[1.0, 1.0, 1.0, 1.5], [1.0, 1.0, 1.0, 1.0]])
    logp = (old_logp + rho.log()).requires_grad_(True)
    top = torch.tensor([[False, False, False, True], [True, False, False, False]])
    cfg = etr.make_config("kl-cov", kl_cov_ratio=0.25, kl_cov_coef=0.5)
    check(etr.kl_cov_tokens(logp, old_logp, adv, mask, cfg), top, "kl_cov_tokens", "the 2 tokens of largest Cov",
          exact=True)
    loss, grad, m = run("kl-cov", logp, old_logp, adv, mask, kl_cov_ratio=0.25, kl_cov_coef=0.5)
    what = "rho 1.5 on one token of A = +1, k = 0.25, beta 0.5, token-mean"
    check(loss, ((-rho * adv[:, None]).sum() + 0.5 * math.log(1.5)) / 8, "kl_cov_loss", f"loss, {what}")
    # d beta |log rho| / d log pi = beta sign(log rho): +0.5 on the rho = 1.5 token, 0 at rho = 1
    expected = -rho * adv[:, None] / 8
    expected[0, 3] += 0.5 / 8
    check(grad, expected, "kl_cov_loss", f"d loss / d log pi, {what}")
    check(m["cov_selected_frac"], 2 / 8, "kl_cov_loss", f"metric cov_selected_frac, {what}")
    check(m["clip_frac_low"] + m["clip_frac_high"], 0.0, "kl_cov_loss", f"clipped tokens (KL-Cov has no clip), {what}")


def test_kl_cov_on_policy_is_grpo():
    """At rho = 1 (the first update of a batch) |log rho| = 0 with gradient 0: KL-Cov is GRPO (token-mean)."""
    b = random_batch()
    logp = b["old_logp"].clone().requires_grad_(True)
    loss_g, grad_g, _ = run("dapo", logp, b["old_logp"], b["adv"], b["mask"])
    loss_k, grad_k, m = run("kl-cov", logp, b["old_logp"], b["adv"], b["mask"], kl_cov_ratio=0.5)
    check(m["cov_selected_frac"] > 0.4, True, "kl_cov_loss", "KL-Cov chose half the tokens")
    check(loss_k, loss_g, "kl_cov_loss", "loss at rho = 1 against dapo's", exact=True)
    check(grad_k, grad_g, "kl_cov_loss", "d loss / d log pi at rho = 1 against dapo's", exact=True)


def test_high_entropy_mask_by_hand():
    entropy = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 99.0], [6.0, 7.0, 8.0, 9.0, 10.0, 99.0]])  # 99: padding
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]])
    # the 0.8-quantile of 1..10 (linear interpolation): 1 + 0.8 * 9 = 8.2 -> keep 9 and 10 (the top 20 %)
    keep = torch.zeros(2, 6, dtype=torch.bool)
    keep[1, 3:5] = True
    check(etr.high_entropy_mask(entropy, mask, 0.2), keep, "high_entropy_mask", "rho 0.2 of entropies 1..10",
          exact=True)
    check(etr.high_entropy_mask(entropy, mask, 1.0), mask.bool(), "high_entropy_mask", "rho 1: every valid token",
          exact=True)
    check(etr.high_entropy_mask(entropy, mask, 0.5).sum(), 5, "high_entropy_mask", "rho 0.5 of 1..10: 6..10",
          exact=True)


@pytest.mark.parametrize("algo", ALGOS)
def test_top_entropy_quantile_keeps_only_the_high_entropy_tokens(algo):
    """Any algorithm with top_entropy_quantile = 0.3: a dropped token has loss 0 (it still counts in the
    denominator) and, but for GSPO's sequence ratio, no gradient; a kept token keeps its gradient. GSPO's loss
    of a sequence is counted on its kept tokens only, and its gradient reaches all tokens of the sequence through s_i."""
    b = random_batch()
    logp = b["logp"].requires_grad_(True)
    kw = dict(group_std=b["group_std"], old_entropy=b["old_entropy"], max_len=12, entropy=b["entropy"])
    _, grad_all, _ = run(algo, logp, b["old_logp"], b["adv"], b["mask"], **kw)
    loss, grad, m = run(algo, logp, b["old_logp"], b["adv"], b["mask"], top_entropy_quantile=0.3, **kw)
    keep = etr.high_entropy_mask(b["entropy"], b["mask"], 0.3)
    what = f"{algo}, top_entropy_quantile 0.3, random ragged batch"
    check(m["entropy_kept_frac"], keep.sum() / b["mask"].sum(), "high_entropy_mask", f"entropy_kept_frac, {what}")
    n = int(b["mask"].sum())  # 35: tau lies between the 24th and 25th smallest (0.7 * 34 = 23.8): 11 kept
    check(keep.sum(), n - math.ceil(0.7 * (n - 1)), "high_entropy_mask", f"kept tokens, {what}")
    if algo == "gspo":
        s = etr.sequence_ratio(b["logp"], b["old_logp"], b["mask"])[:, 0]
        lo, hi = 1 - 3e-4, 1 + 4e-4
        per_seq = -torch.minimum(s * b["adv"], s.clamp(lo, hi) * b["adv"])
        kept = keep.sum(1) / b["mask"].sum(1)
        check(loss, (kept * per_seq).sum() / 7, "gspo_loss", f"loss = (1/N) sum_i (kept_i / |o_i|) l_i, {what}")
        return
    check(grad[~keep], torch.zeros(int((~keep).sum())), loss_name(algo), f"gradient of dropped tokens, {what}",
          exact=True)
    check(grad[keep], grad_all[keep], loss_name(algo), f"gradient of kept tokens against no mask, {what}")


@pytest.mark.parametrize("algo, settings, source", [
    ("gspo", dict(eps_low=3e-4, eps_high=4e-4, loss_agg="seq-mean", adv_std="group"), "GSPO Sec. 5.1, eq. 5-6"),
    ("gspo-token", dict(eps_low=3e-4, eps_high=4e-4, loss_agg="seq-mean"), "GSPO Sec. 5.1, eq. 13"),
    ("cispo", dict(eps_low=1.0, eps_high=4.0, loss_agg="token-mean", dual_clip=None),
     "MiniMax-M1 Sec. 3.1 (no lower bound), eq. 4 (1 / sum |o_i|); cap 5 from TRL / ScaleRL"),
    ("clip-cov", dict(clip_cov_ratio=2e-4, clip_cov_lb=1.0, clip_cov_ub=5.0, eps_low=1.0, eps_high=1.0,
                      loss_agg="token-mean"), "arXiv 2505.22617, recipe 7b_clip_cov.sh"),
    ("kl-cov", dict(kl_cov_ratio=2e-3, kl_cov_coef=1.0, loss_agg="token-mean"), "arXiv 2505.22617, recipe 7b_kl_cov.sh"),
    ("grpo", dict(top_entropy_quantile=1.0), "the 80/20 mask is off unless asked for"),
])
def test_defaults_are_the_papers(algo, settings, source):
    cfg = etr.make_config(algo)
    got = {k: getattr(cfg, k) for k in settings}
    check(got == settings, True, "make_config", f"{algo} defaults ({source}): expected {settings}, got {got}")


def test_batch_choices_are_what_each_algorithm_needs():
    b = random_batch()
    args = (b["logp"], b["old_logp"], b["adv"], b["mask"], b["entropy"])
    check(len(etr.batch_choices("grpo", etr.make_config("grpo"), *args)), 0, "batch_choices", "grpo: no choices")
    for algo in ["clip-cov", "kl-cov"]:
        got = etr.batch_choices(algo, etr.make_config(algo), *args)
        check(sorted(got) == ["cov_select"], True, "batch_choices", f"{algo}: only cov_select, got {sorted(got)}")
    got = etr.batch_choices("cispo", etr.make_config("cispo", top_entropy_quantile=0.2), *args)
    check(got["entropy_keep"], etr.high_entropy_mask(b["entropy"], b["mask"], 0.2), "batch_choices",
          "cispo with top_entropy_quantile 0.2: the high-entropy mask", exact=True)
    with pytest.raises(ValueError, match="entropy"):  # the mask needs the current policy's entropies
        etr.grpo_loss(b["logp"], b["old_logp"], b["adv"], b["mask"], etr.make_config("grpo", top_entropy_quantile=0.2))


# ---------------------------------------------------------------------------------------------
# Gradient accumulation is exact
# ---------------------------------------------------------------------------------------------
def random_batch(B=7, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([9, 2, 5, 7, 1, 3, 8])[:B]
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()          # [B, T] uneven lengths
    old_logp = -torch.rand(B, T, generator=g) * 4
    logp = old_logp + 0.5 * torch.randn(B, T, generator=g)                # ratios on both sides of the clip
    adv = torch.randn(B, generator=g)
    group_std = torch.rand(B, generator=g) * 0.5
    old_entropy = torch.rand(B, T, generator=g) + 0.5
    entropy = old_entropy * (1 + 0.1 * torch.randn(B, T, generator=g))    # some tokens out of ERC's band
    ref_logp = old_logp + 0.1 * torch.randn(B, T, generator=g)
    return dict(logp=logp, old_logp=old_logp, adv=adv, mask=mask, group_std=group_std, entropy=entropy,
                old_entropy=old_entropy, ref_logp=ref_logp)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean", "drgrpo"])
@pytest.mark.parametrize("quantile", [1.0, 0.3])
def test_accumulation_equals_full_batch(algo, agg, quantile):
    """The micro-batches get the mini-batch's counts and its token choices (batch_choices: Clip-Cov's and KL-Cov's
    tokens, the high-entropy mask; r = k = 0.2 so that they choose several tokens)."""
    b = random_batch()
    cfg = etr.make_config(algo, loss_agg=agg, max_len=12, kl_coef=0.05, top_entropy_quantile=quantile,
                          clip_cov_ratio=0.2, clip_cov_lb=0.1, kl_cov_ratio=0.2)
    fn = etr.ALGOS[algo]
    B = b["mask"].shape[0]
    num_tokens, num_seqs = b["mask"].sum(), B
    torch.manual_seed(0)  # Clip-Cov's draw
    b.update(etr.batch_choices(algo, cfg, b["logp"], b["old_logp"], b["adv"], b["mask"], b["entropy"]))

    def loss_of(rows, logp):
        sub = {k: v[rows] for k, v in b.items() if k != "logp"}
        t_max = int(sub["mask"].sum(1).max())          # trim padding like the training loop does
        sub = {k: v[:, :t_max] if v.dim() == 2 else v for k, v in sub.items()}
        return fn(logp[rows][:, :t_max], sub.pop("old_logp"), sub.pop("adv"), sub.pop("mask"), cfg,
                  num_tokens=num_tokens, num_seqs=num_seqs, **sub)

    full_logp = b["logp"].clone().requires_grad_(True)
    full_loss, full_m = loss_of(torch.arange(B), full_logp)
    full_loss.backward()
    for k in [2, 3, 4]:
        logp = b["logp"].clone().requires_grad_(True)
        total, summed = 0.0, {}
        for rows in torch.arange(B).tensor_split(k):  # uneven chunk sizes
            loss, m = loss_of(rows, logp)
            loss.backward()
            total += loss.item()
            for name, v in m.items():
                summed[name] = max(summed.get(name, v), v) if name.endswith("_max") else summed.get(name, 0) + v
        what = f"{algo}, {agg}, top_entropy_quantile {quantile}: sum over {k} micro-batches against the whole batch"
        check(total, full_loss, "aggregate", f"loss, {what}", atol=1e-6, rtol=0)
        check(logp.grad, full_logp.grad, "aggregate", f"d loss / d log pi [7, 9], {what}", atol=1e-6, rtol=0)
        for name, v in full_m.items():
            check(summed[name], v, "aggregate", f"metric {name}, {what}", atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# Robustness and copyability
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ALGOS)
def test_extreme_log_ratios_stay_finite(algo):
    """Log-ratios of +-100 (a token pi_old found all but impossible, and the reverse): exp(100) overflows
    fp32 (max ~3.4e38 = e^88.7), so only the +-20 clamps of importance_ratio and kl_k3 keep loss, gradient
    and metrics finite."""
    old_logp = torch.tensor([[-100.0, 0.0]] * 4)
    logp = torch.tensor([[0.0, -100.0]] * 4, requires_grad=True)     # rho = e^100 and e^-100
    ref_logp = torch.zeros(4, 2)                                      # pi_ref / pi_theta = 1 and e^100
    adv = torch.tensor([2.0, -2.0, 1.0, -1.0])
    for dual in [None, 10.0] if algo != "cispo" else [None]:  # make_config refuses dual-clip for CISPO
        loss, grad, m = run(algo, logp, old_logp, adv, torch.ones(4, 2), group_std=torch.full((4,), 0.5),
                            dual_clip=dual, max_len=4, kl_coef=0.1, ref_logp=ref_logp,
                            entropy=torch.full((4, 2), 1e-12), old_entropy=torch.full((4, 2), 5.0))
        what = f"{algo}, dual-clip {dual}, log-ratios +-100 to pi_old and to pi_ref"
        check(math.isfinite(loss), True, "importance_ratio", f"loss is finite, {what}")
        check(torch.isfinite(grad).all(), True, "importance_ratio", f"d loss / d log pi is finite, {what}")
        for name, value in m.items():
            check(math.isfinite(value), True, "kl_k3" if name == "kl" else "importance_ratio",
                  f"metric {name} is finite, {what}")


def test_unknown_algo_and_setting_are_clear_errors():
    with pytest.raises(ValueError, match="unknown algo 'ppo'"):
        etr.make_config("ppo")
    with pytest.raises(ValueError, match="unknown loss settings"):
        etr.make_config("grpo", eps_hi=0.3)
    b = random_batch()
    with pytest.raises(ValueError, match="max_len"):
        etr.grpo_loss(b["logp"], b["old_logp"], b["adv"], b["mask"], etr.make_config("drgrpo"))
    with pytest.raises(ValueError, match="ref_logp"):
        etr.grpo_loss(b["logp"], b["old_logp"], b["adv"], b["mask"], etr.make_config("grpo", kl_coef=0.1))
    with pytest.raises(TypeError, match="num_token"):
        etr.grpo_loss(b["logp"], b["old_logp"], b["adv"], b["mask"], etr.make_config("grpo"), num_token=5)
    with pytest.raises(TypeError, match="group_std"):
        etr.etr_loss(b["logp"], b["old_logp"], b["adv"], b["mask"], etr.make_config("etr"))


@pytest.mark.parametrize("setting, value", [("eps_low", 0.0), ("eps_high", -0.1), ("erc_beta_low", 0.0),
                                            ("erc_beta_high", 0.0), ("dual_clip", 1.0), ("dual_clip", 0.0),
                                            ("reward_max", 0.0), ("clip_cov_ratio", 0.0), ("kl_cov_ratio", 1.5),
                                            ("top_entropy_quantile", 0.0), ("top_entropy_quantile", 1.2),
                                            ("clip_cov_lb", 5.0)])
def test_settings_that_would_silently_stop_learning_are_refused(setting, value):
    # eps = 0 clips every token once rho moves; beta = 0 masks every token (strict band); dual-clip c <= 1 caps
    # (and so zeroes the gradient of) every token with A < 0; reward_max <= reward_min makes ETR divide by 0.
    # Each is an error naming the setting.
    with pytest.raises(ValueError, match=setting):
        etr.make_config("erc-dapo", **{setting: value})
    with pytest.raises(ValueError, match="dual_clip"):  # it caps a surrogate's value; CISPO's is -sg(w) A log pi
        etr.make_config("cispo", dual_clip=10.0)


def test_ratio_exactly_on_a_clip_bound_keeps_the_whole_gradient():
    """A tie (rho == 1 + eps_high, A > 0; rho == 1 - eps_low, A < 0) is inside the trust region: the
    gradient is -A, not the half that min() would give it (the first update's tokens all have rho == 1)."""
    adv = torch.tensor([[1.5], [-2.0], [0.5], [-1.0]])  # [B, 1]
    ratio = torch.tensor([[1.0], [1.0], [1.25], [0.75]], requires_grad=True)  # [B, 1] every one on a bound
    eps = torch.tensor([[0.0], [0.0], [0.25], [0.25]])  # [B, 1] exactly representable bounds
    loss, low, high = etr.clipped_surrogate(ratio, adv, eps, eps)
    loss.sum().backward()
    what = "rho exactly on a bound (1 + 0, 1 - 0, 1.25, 0.75), A 1.5 / -2 / 0.5 / -1"
    check(low | high, torch.zeros(4, 1, dtype=torch.bool), "clipped_surrogate", f"clip masks, {what}", exact=True)
    check(ratio.grad, -adv, "clipped_surrogate", f"d l / d rho (the whole -A, not half of it), {what}", exact=True)
    check(loss, -ratio.detach() * adv, "clipped_surrogate", f"l, {what}", exact=True)


def test_etr_py_imports_only_torch_and_stdlib():
    tree = ast.parse(Path(etr.__file__).read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "etr.py must not import from the project"
            mods.add(node.module.split(".")[0])
    assert mods - {"torch"} <= set(sys.stdlib_module_names), mods
