"""etr.py -- the policy losses of RL with verifiable rewards, one short function per idea.

Copy any function into your own code: this file needs torch and the standard library only.

Notation (shared with the papers):
    q            a prompt; its G sampled responses o_1..o_G form a *group* (contiguous rows here)
    r_i          scalar reward of response o_i (1.0 = verified correct, 0.0 = wrong)
    A_i  (adv)   group-relative advantage of o_i, broadcast to every token of o_i
    pi_theta     the policy being trained; pi_old the policy that sampled the responses
    rho_t        importance ratio pi_theta(o_t | q, o_<t) / pi_old(o_t | q, o_<t)
    eps_low/high lower / upper clip range: rho is kept in [1 - eps_low, 1 + eps_high]

Every algorithm is the PPO clipped surrogate, changed in one place:

    grpo      fixed bounds (0.2, 0.2), sequence-mean          DeepSeekMath, arXiv 2402.03300, eq. (3)
    dapo      clip-higher (0.2, 0.28), token-mean             DAPO, arXiv 2503.14476, Sec. 3.1 and 3.3
    drgrpo    no std in A, sum / (B * max_len)                Dr. GRPO, arXiv 2503.20783, Sec. 3.1
    gppo      clipped tokens keep a bounded gradient          Klear-Reasoner, arXiv 2508.07629, GPPO
    etr       bounds that stretch per sample and per group    ETR, arXiv 2601.03723 (OUR READING, see etr_bounds)
    erc-dapo  DAPO + tokens whose entropy ratio leaves        ERC, arXiv 2512.05591
              (1 - beta_low, 1 + beta_high) get no gradient
    erc-gppo  GPPO + the same entropy-ratio mask
              (both ERC variants with dual-clip c = 10, as the authors ran them)
    gspo      one ratio per sequence, s_i = (pi_theta / pi_old)^(1 / |o_i|), clipped   GSPO, arXiv 2507.18071, eq. (5)-(7)
    gspo-token  the same value and gradient, written per token                       GSPO eq. (13)-(14)
    cispo     clip the IS weight, stop its gradient, every token keeps one            MiniMax-M1, arXiv 2506.13585, eq. (4)-(5)
    clip-cov  a few tokens of large cov(log pi, A) lose their gradient              arXiv 2505.22617, Sec. 4
    kl-cov    the tokens of largest cov(log pi, A) get a KL penalty                 arXiv 2505.22617, Sec. 4
    and, with any of them, top_entropy_quantile < 1: only the batch's highest-entropy tokens keep their loss
              ("Beyond the 80/20 rule", arXiv 2506.01939)

Gradient accumulation is exact: every loss takes the *optimizer mini-batch's* token and sequence counts
(num_tokens, num_seqs), so the losses of its micro-batches add up to the loss of the whole mini-batch. The token
choices that are statistics of a whole batch (Clip-Cov, KL-Cov, the high-entropy mask) come the same way: from
batch_choices over the mini-batch, handed to each micro-batch (a loss called on its own computes them itself).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch


# --------------------------------------------------------------------------------------------------
# 1. Advantages
# --------------------------------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, group_size: int, std_mode: str = "group", eps: float = 1e-6):
    """Group-relative advantages (GRPO, arXiv 2402.03300, Sec. 4.1.2, outcome supervision).

        A_i = (r_i - mean_q) / (std + eps)        mean_q, std_q over the G responses of prompt q

    std_mode: "group" -> std_q of the prompt's group (GRPO); "batch" -> one std over all rewards of the
    batch; "none" -> no division at all (Dr. GRPO, arXiv 2503.20783, Sec. 3.1: the std term up-weights
    prompts that are too easy or too hard).

    std is the *population* std (divide by G, not G - 1): it describes the group itself, and only then
    is sigma_q^2 <= (r_max - r_min)^2 / 4 (= 1/4 for 0/1 rewards), the bound ETR's macro term divides by;
    the unbiased estimate breaks it (G = 2, rewards {0, 1}: 1/2 > 1/4).

    A group whose rewards are all equal teaches nothing: its advantages are exactly 0 (never NaN).
    Returns adv [B] and group_std [B] (sigma_q of each sample's group, what ETR needs).
    """
    if rewards.dim() != 1 or group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, "
                         f"got shape {tuple(rewards.shape)}")
    r = rewards.float().view(-1, group_size)                           # [Q, G]
    mean = r.mean(dim=1, keepdim=True)                                 # [Q, 1]  mean_q
    flat = (r.max(dim=1, keepdim=True).values == r.min(dim=1, keepdim=True).values)  # [Q, 1]
    std = r.std(dim=1, unbiased=False, keepdim=True).masked_fill(flat, 0.0)          # [Q, 1]  sigma_q
    if std_mode == "group":
        scale = std + eps                                              # [Q, 1]
    elif std_mode == "batch":
        scale = r.std(unbiased=False) + eps                            # []
    elif std_mode == "none":
        scale = torch.ones_like(std)                                   # Dr. GRPO modification 1
    else:
        raise ValueError(f"std_mode must be 'group', 'batch' or 'none', got {std_mode!r}")
    adv = ((r - mean) / scale).masked_fill(flat, 0.0)                  # [Q, G]
    return adv.reshape(-1), std.expand_as(r).reshape(-1)               # [B], [B]


# --------------------------------------------------------------------------------------------------
# 2. Importance ratio and the surrogates
# --------------------------------------------------------------------------------------------------
def importance_ratio(logp: torch.Tensor, old_logp: torch.Tensor, max_log_ratio: float = 20.0):
    """rho_t = exp(log pi_theta - log pi_old), in fp32.

    The log-ratio is clamped to +-max_log_ratio so that one stale token cannot overflow exp (e^20 is
    already far outside any clip range); a clamped token gets no gradient through rho.
    """
    log_ratio = (logp.float() - old_logp.float()).clamp(-max_log_ratio, max_log_ratio)  # [B, T]
    return torch.exp(log_ratio)                                                          # [B, T]


def clip_bounds(ratio, eps_low, eps_high):
    """1 - eps_low and 1 + eps_high as tensors on ratio's device (eps: floats or [B, 1] per-sample bounds)."""
    lo = 1 - torch.as_tensor(eps_low, dtype=ratio.dtype, device=ratio.device)
    hi = 1 + torch.as_tensor(eps_high, dtype=ratio.dtype, device=ratio.device)
    return lo, hi


def clip_masks(ratio, adv, lo, hi):
    """Tokens whose gradient the PPO clip cuts, per side: A < 0 below 1 - eps_low, A > 0 above 1 + eps_high."""
    return (adv < 0) & (ratio < lo), (adv > 0) & (ratio > hi)          # [B, T], [B, T]


def clipped_surrogate(ratio, adv, eps_low, eps_high):
    """PPO clipped surrogate, per token (GRPO eq. 3; DAPO Sec. 3.1 "clip-higher" takes eps_high > eps_low):

        l_t = -min(rho_t * A, clip(rho_t, 1 - eps_low, 1 + eps_high) * A)

    ratio [B, T]; adv [B, 1]; eps_low / eps_high floats or [B, 1] tensors (per-sample bounds, ETR).
    A clipped token has zero gradient. Returns l [B, T] and the clip masks (low, high). The min is written as
    a choice of branch: torch.minimum would halve the gradient of a tie (rho exactly on a bound).
    """
    lo, hi = clip_bounds(ratio, eps_low, eps_high)
    clip_low, clip_high = clip_masks(ratio, adv, lo, hi)               # [B, T], [B, T]
    clipped = torch.minimum(torch.maximum(ratio, lo), hi)              # [B, T]  clip(rho, 1-eps_low, 1+eps_high)
    loss_tok = -torch.where(clip_low | clip_high, clipped * adv, ratio * adv)  # [B, T]  -min(rho A, clip(rho) A)
    return loss_tok, clip_low, clip_high


def gppo_surrogate(logp, ratio, adv, eps_low, eps_high):
    """GPPO, gradient-preserving clip (Klear-Reasoner, arXiv 2508.07629).

    Same value as clipped_surrogate, but a clipped token keeps a bounded gradient:
        d l_t / d log pi = -F * A,   F = 1 + eps_high   if A > 0 and rho > 1 + eps_high
                                     F = 1 - eps_low    if A < 0 and rho < 1 - eps_low
                                     F = rho            otherwise
    Written with rho / sg(rho) = exp(log pi - sg(log pi)): value 1, gradient d log pi -- so the clipped
    branch is (1 + eps_high) * rho / sg(rho) * A. sg = stop-gradient (.detach()).
    """
    lo, hi = clip_bounds(ratio, eps_low, eps_high)
    clip_low, clip_high = clip_masks(ratio, adv, lo, hi)
    unit = torch.exp(logp.float() - logp.float().detach())             # [B, T]  rho / sg(rho): 1, grad d log pi
    coef = torch.where(clip_high, hi * unit, torch.where(clip_low, lo * unit, ratio))  # [B, T]  F
    return -coef * adv, clip_low, clip_high                            # [B, T]


def dual_clip(loss_tok, adv, c: float):
    """Dual-clip PPO (Ye et al., arXiv 1912.09729): for A < 0 the loss is capped at -c * A.

    Without it a negative-advantage token with a huge ratio has an unbounded loss; capped tokens get no
    gradient. Returns the capped loss [B, T] and the mask of capped tokens.
    """
    capped = (adv < 0) & (loss_tok > -c * adv)                         # [B, T]
    return torch.where(capped, (-c * adv).expand_as(loss_tok), loss_tok), capped


# --------------------------------------------------------------------------------------------------
# 3. ETR: elastic trust regions (arXiv 2601.03723) -- OUR READING of the abstract
# --------------------------------------------------------------------------------------------------
def etr_bounds(adv, group_std, cfg):
    """Per-sample clip bounds, widened or narrowed by two elasticities.

    The paper's equations are not public to us; its abstract names a micro level (advantage magnitude)
    and a macro level (the group's reward variance). This is the form we implement:

        micro  m_i = 1 + alpha * min(|A_i|, a_max)
        macro  M_q = (1 - beta) + beta * sigma_q^2 / sigma_max^2,  sigma_max^2 = (r_max - r_min)^2 / 4
        eps_low,i  = clamp(eps_low  * m_i * M_q, eps_min, eps_max)
        eps_high,i = clamp(eps_high * m_i * M_q, eps_min, eps_max)

    Intent: a rare success in a hard group has a large |A| and gets a wider region (learn more from it);
    groups near a 50 % pass rate have the largest variance and so the largest budget; the many small-|A|
    failures of a hard group get a tighter one. alpha = beta = 0 gives eps_low / eps_high unchanged:
    exactly GRPO, as long as eps_min <= eps <= eps_max.
    adv [B], group_std [B] -> eps_low_i [B], eps_high_i [B].
    """
    m = 1 + cfg.etr_alpha * adv.float().abs().clamp(max=cfg.etr_a_max)         # [B]  micro elasticity
    var_max = (cfg.reward_max - cfg.reward_min) ** 2 / 4
    M = (1 - cfg.etr_beta) + cfg.etr_beta * group_std.float() ** 2 / var_max  # [B]  macro elasticity
    eps_low = (cfg.eps_low * m * M).clamp(cfg.etr_eps_min, cfg.etr_eps_max)    # [B]
    eps_high = (cfg.eps_high * m * M).clamp(cfg.etr_eps_min, cfg.etr_eps_max)  # [B]
    return eps_low, eps_high


# --------------------------------------------------------------------------------------------------
# 4. ERC: entropy ratio clipping (arXiv 2512.05591; semantics of the authors' released code)
# --------------------------------------------------------------------------------------------------
def erc_keep_mask(entropy, old_entropy, beta_low: float, beta_high: float):
    """Keep token t iff 1 - beta_low < rho^H_t < 1 + beta_high (strict), where

        rho^H_t = (H_theta,t + 1e-8) / (H_old,t + 1e-8),   H = full-vocabulary entropy at position t.

    No condition on the sign of A. A dropped token keeps its loss value but gets no gradient, and it
    still counts in the token-mean denominator (the caller does `where(keep, l, l.detach())`).
    """
    rho_h = (entropy.float() + 1e-8) / (old_entropy.float() + 1e-8)    # [B, T]
    return (rho_h > 1 - beta_low) & (rho_h < 1 + beta_high)            # [B, T]


# --------------------------------------------------------------------------------------------------
# 5. GSPO: one importance ratio per sequence (arXiv 2507.18071)
# --------------------------------------------------------------------------------------------------
# Sections 5-8 are the clip family: the other answers to "how should the trust region look" (docs/clip-family.md).
# A first reading of GRPO, ETR and ERC may skip them: sections 1-4 and 9-10 need none of it but high_entropy_mask,
# which finish() applies only when top_entropy_quantile < 1.
def sequence_ratio(logp, old_logp, mask, max_log_ratio: float = 20.0):
    """GSPO's sequence-level importance ratio, the geometric mean of the token ratios (GSPO eq. 7):

        s_i = (pi_theta(o_i | q) / pi_old(o_i | q)) ^ (1 / |o_i|) = exp((1 / |o_i|) sum_t log rho_t)

    Each token's log-ratio is clamped to +-max_log_ratio first, as in importance_ratio. Returns s [B, 1].
    """
    valid = mask.bool()
    log_ratio = (logp.float() - old_logp.float()).clamp(-max_log_ratio, max_log_ratio)       # [B, T]
    total = torch.where(valid, log_ratio, torch.zeros_like(log_ratio)).sum(dim=1, keepdim=True)  # [B, 1]
    return torch.exp(total / valid.sum(dim=1, keepdim=True).clamp(min=1))                   # [B, 1]  s_i


def gspo_token_ratio(logp, seq_ratio):
    """GSPO-token's ratio (GSPO eq. 14): the value of s_i on every token, the gradient of that token's log pi:

        s_i,t = sg[s_i] * pi_theta(o_i,t) / sg[pi_theta(o_i,t)]

    With one advantage per sequence GSPO-token has GSPO's value and gradient (GSPO Sec. 4.3); it exists for
    per-token advantages. logp [B, T], seq_ratio [B, 1] -> [B, T].
    """
    unit = torch.exp(logp.float() - logp.float().detach())             # [B, T]  pi / sg(pi): 1, grad d log pi
    return seq_ratio.detach() * unit                                   # [B, T]  s_i,t


# --------------------------------------------------------------------------------------------------
# 6. CISPO: clip the importance-sampling weight, not the update (MiniMax-M1, arXiv 2506.13585)
# --------------------------------------------------------------------------------------------------
def cispo_surrogate(logp, ratio, adv, eps_low, eps_high):
    """CISPO, per token (MiniMax-M1 eq. 4 and 5):

        l_t = -sg(r_hat_t) * A * log pi_theta(o_t),   r_hat_t = clip(rho_t, 1 - eps_low^IS, 1 + eps_high^IS)

    The weight is clipped whatever the sign of A, and it carries no gradient: every token keeps the gradient
    -r_hat_t * A of its log pi (REINFORCE with a truncated importance weight); no token is dropped, unlike PPO's
    clip. Returns l [B, T] and the masks of weights clipped from below and from above.
    """
    lo, hi = clip_bounds(ratio, eps_low, eps_high)
    weight = ratio.clamp(lo, hi).detach()                              # [B, T]  sg(r_hat)
    return -weight * adv * logp.float(), ratio < lo, ratio > hi        # [B, T]


# --------------------------------------------------------------------------------------------------
# 7. Clip-Cov and KL-Cov: act on the tokens of largest cov(log pi, A) (arXiv 2505.22617, Sec. 4)
# --------------------------------------------------------------------------------------------------
def token_covariance(logp, adv, mask):
    """Each token's term of the covariance between log-probability and advantage over the batch's N valid tokens:

        Cov(y_t) = (log pi_theta(y_t) - mean_N log pi_theta) * (A_t - mean_N A)

    A large positive value marks a token whose update lowers the policy's entropy most (the paper's Sec. 3).
    It only chooses tokens: no gradient. logp [B, T], adv [B], mask [B, T] -> [B, T].
    """
    valid = mask.bool()
    n = valid.sum().clamp(min=1)
    lp = logp.detach().float()                                         # [B, T]
    a = adv.float()[:, None].expand_as(lp)                             # [B, T]  A_t = A_i on every token of o_i
    zero = torch.zeros_like(lp)
    lp_mean, a_mean = torch.where(valid, lp, zero).sum() / n, torch.where(valid, a, zero).sum() / n
    return (lp - lp_mean) * (a - a_mean)                               # [B, T]


def random_tokens(candidates, count: int):
    """`count` of the True positions of candidates [B, T], drawn uniformly without replacement (all of them if
    fewer), as a mask [B, T]. Order and draw as the authors' code: row-major, torch.randperm on torch's global RNG."""
    where = candidates.flatten().nonzero().squeeze(1)                  # [n]  row-major positions
    chosen = where[torch.randperm(len(where))[:count].to(where.device)]  # [<= count]
    return torch.zeros_like(candidates.flatten()).index_fill(0, chosen, True).view_as(candidates)  # [B, T]


def clip_cov_tokens(logp, old_logp, adv, mask, cfg):
    """Clip-Cov's I_clip: floor(r N) tokens (at least 1), drawn uniformly from those with
    omega_low < Cov(y_t) < omega_high (token_covariance), r = clip_cov_ratio. As in the authors' code, a token
    PPO's clip already cuts is no candidate. -> mask [B, T]."""
    ratio = importance_ratio(logp.detach(), old_logp, cfg.max_log_ratio)  # [B, T]
    clip_low, clip_high = clip_masks(ratio, adv.float()[:, None], *clip_bounds(ratio, cfg.eps_low, cfg.eps_high))
    cov = token_covariance(logp, adv, mask)                            # [B, T]
    candidates = mask.bool() & ~clip_low & ~clip_high & (cov > cfg.clip_cov_lb) & (cov < cfg.clip_cov_ub)  # [B, T]
    return random_tokens(candidates, max(int(cfg.clip_cov_ratio * int(mask.sum())), 1))


def kl_cov_tokens(logp, old_logp, adv, mask, cfg):
    """KL-Cov's I_KL: the floor(k N) valid tokens (at least 1) of largest Cov(y_t), k = kl_cov_ratio. -> mask [B, T]."""
    valid = mask.bool()
    cov = torch.where(valid, token_covariance(logp, adv, mask), torch.full_like(logp, -torch.inf, dtype=torch.float))
    count = min(max(int(cfg.kl_cov_ratio * int(valid.sum())), 1), int(valid.sum()))
    top = cov.flatten().topk(count).indices                            # [count]
    return torch.zeros_like(valid.flatten()).index_fill(0, top, True).view_as(valid)  # [B, T]


# --------------------------------------------------------------------------------------------------
# 8. Only the high-entropy tokens ("Beyond the 80/20 rule", arXiv 2506.01939), with any loss
# --------------------------------------------------------------------------------------------------
def high_entropy_mask(entropy, mask, rho: float):
    """Keep token t iff H_t >= tau_rho, the (1 - rho)-quantile of the batch's token entropies (torch.quantile,
    linear interpolation): the share rho of the tokens with the highest entropy (the paper's "forking" tokens,
    rho = 20 %) keep their loss; the others count in the denominator with a loss of 0 (the paper's indicator
    I[H_t >= tau_rho] inside the DAPO objective). entropy [B, T] of the current policy -> mask [B, T]."""
    valid = mask.bool()
    if not valid.any():
        return valid
    tau = torch.quantile(entropy.float()[valid], 1 - rho)              # []  tau_rho
    return valid & (entropy.float() >= tau)                            # [B, T]


# --------------------------------------------------------------------------------------------------
# 9. KL to a reference policy, and aggregation over tokens
# --------------------------------------------------------------------------------------------------
def kl_k3(logp, ref_logp, max_log_ratio: float = 20.0):
    """Per-token KL(pi_theta || pi_ref), the unbiased, non-negative k3 estimator (GRPO eq. 4):

        D_t = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1
    """
    log_r = (ref_logp.float() - logp.float()).clamp(-max_log_ratio, max_log_ratio)  # [B, T]
    return torch.exp(log_r) - log_r - 1                                              # [B, T]


def aggregate(loss_tok, mask, mode: str, num_tokens=None, num_seqs=None, max_len: int = 0):
    """Reduce per-token losses l [B, T] to the scalar that is differentiated.

        token-mean  sum_i sum_t l_it / N_tokens                      (DAPO Sec. 3.3: long answers count per token)
        seq-mean    (1 / N_seqs) sum_i (1 / |o_i|) sum_t l_it         (GRPO eq. 3: every answer weighs the same)
        drgrpo      sum_i sum_t l_it / (N_seqs * max_len)              (Dr. GRPO modification 2: a constant, no length bias)

    N_tokens and N_seqs are counts of the whole optimizer mini-batch (default: this call's), so the
    losses of its micro-batches add up exactly to the mini-batch loss. max_len is the generation
    budget (max new tokens), a constant.
    """
    mask = mask.bool()
    num_tokens = mask.sum() if num_tokens is None else num_tokens
    num_seqs = mask.shape[0] if num_seqs is None else num_seqs
    masked = torch.where(mask, loss_tok, torch.zeros_like(loss_tok))   # [B, T]  where, not *: 0 * inf = nan
    if mode == "token-mean":
        return masked.sum() / num_tokens
    if mode == "seq-mean":
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum() / num_seqs
    if mode == "drgrpo":
        if max_len <= 0:
            raise ValueError("loss_agg='drgrpo' needs max_len > 0: set it to the generation budget (max new tokens)")
        return masked.sum() / (num_seqs * max_len)
    raise ValueError(f"loss_agg must be 'token-mean', 'seq-mean' or 'drgrpo', got {mode!r}")


# --------------------------------------------------------------------------------------------------
# 10. Settings and the algorithms
# --------------------------------------------------------------------------------------------------
@dataclass
class LossConfig:
    eps_low: float = 0.2            # lower clip range: rho >= 1 - eps_low
    eps_high: float = 0.2           # upper clip range: rho <= 1 + eps_high
    dual_clip: float | None = None  # c of dual-clip PPO (None = off); ERC's authors used 10
    loss_agg: str = "seq-mean"      # "token-mean" | "seq-mean" | "drgrpo"
    max_len: int = 0                # Dr. GRPO's constant normaliser (= max new tokens)
    adv_std: str = "group"          # std in the advantage: "group" | "batch" | "none"
    kl_coef: float = 0.0            # beta of the KL penalty to a reference policy (0 = no reference)
    max_log_ratio: float = 20.0     # safety clamp of log rho
    # ETR (our reading, see etr_bounds). Defaults are ours, not the paper's.
    etr_alpha: float = 0.5          # micro elasticity per unit |A|
    etr_a_max: float = 3.0          # |A| beyond this widens no further
    etr_beta: float = 0.5           # weight of the macro (group variance) term
    etr_eps_min: float = 0.05       # the bounds never go below ...
    etr_eps_max: float = 0.5        # ... or above these
    reward_min: float = 0.0         # reward range, for sigma_max^2 = (r_max - r_min)^2 / 4
    reward_max: float = 1.0
    # ERC
    erc_beta_low: float = 0.05      # keep a token iff 1 - beta_low < H_theta / H_old < 1 + beta_high
    erc_beta_high: float = 0.05
    # Clip-Cov / KL-Cov (arXiv 2505.22617, Sec. 5: the values of its Qwen2.5-7B runs)
    clip_cov_ratio: float = 2e-4    # r: share of the batch's tokens whose gradient Clip-Cov removes
    clip_cov_lb: float = 1.0        # omega_low < Cov < omega_high: the tokens Clip-Cov may choose
    clip_cov_ub: float = 5.0
    kl_cov_ratio: float = 2e-3      # k: share of the tokens (largest Cov) KL-Cov penalises (its 32B runs: 2e-4)
    kl_cov_coef: float = 1.0        # beta of KL-Cov's penalty beta * |log rho_t|
    # "Beyond the 80/20 rule" (arXiv 2506.01939), with any algorithm
    top_entropy_quantile: float = 1.0  # rho: only this share of the batch's tokens, highest entropy first, keeps
                                       # its loss (1 = all tokens; the paper: 0.2)


def finish(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, extra=None, *, num_tokens=None,
           num_seqs=None, ref_logp=None, group_std=None, entropy=None, old_entropy=None, entropy_keep=None,
           cov_select=None):
    """What every algorithm does last: dual-clip, the high-entropy mask, KL penalty, aggregation, metrics.

    With cfg.top_entropy_quantile < 1 only the tokens of entropy_keep [B, T] keep their loss (the mask of the
    whole mini-batch, from batch_choices; if None, high_entropy_mask of this call's `entropy`, the current
    policy's token entropies).

    Metrics are detached and additive over micro-batches like the loss (each a token mean divided by the
    mini-batch's num_tokens), except keys ending in _max, which combine by max. `extra` maps further
    metric names to per-token values [B, T] to average the same way. Batch tensors an algorithm does
    not use (group_std, entropy, ...) are accepted and ignored, so every algorithm takes the same batch
    (and a misspelt keyword is an error, not a silently wrong normaliser).
    """
    if cfg.dual_clip is not None:
        loss_tok, capped = dual_clip(loss_tok, adv, cfg.dual_clip)
        clip_high = clip_high | capped                                 # the cap cuts rho from above
    if cfg.top_entropy_quantile < 1:
        if entropy_keep is None:
            if entropy is None:
                raise ValueError("top_entropy_quantile < 1 needs entropy= (the current policy's token entropies) "
                                 "or entropy_keep= (etr.batch_choices)")
            entropy_keep = high_entropy_mask(entropy, mask, cfg.top_entropy_quantile)  # [B, T]
        loss_tok = torch.where(entropy_keep, loss_tok, torch.zeros_like(loss_tok))  # 80/20: I[H_t >= tau_rho] * l_t
        extra = {**(extra or {}), "entropy_kept_frac": entropy_keep}
    if cfg.kl_coef:
        if ref_logp is None:
            raise ValueError("kl_coef > 0 needs ref_logp= (the reference policy's log-probs) or kl_coef=0")
        kl = kl_k3(logp, ref_logp, cfg.max_log_ratio)                  # [B, T]
        loss_tok = loss_tok + cfg.kl_coef * kl                         # GRPO eq. 3: - beta * D_KL inside the mean
    loss = aggregate(loss_tok, mask, cfg.loss_agg, num_tokens, num_seqs, cfg.max_len)

    mask = mask.bool()
    n = mask.sum() if num_tokens is None else num_tokens

    def token_mean(x):  # sum over this call's valid tokens / the mini-batch's token count
        return torch.where(mask, x.float(), torch.zeros_like(ratio)).detach().sum() / n

    log_ratio = torch.log(ratio.detach())
    metrics = {
        "clip_frac_low": token_mean(clip_low),
        "clip_frac_high": token_mean(clip_high),
        "ratio_max": torch.where(mask, ratio.detach(), torch.zeros_like(ratio)).max(),
        "approx_kl": token_mean(ratio.detach() - 1 - log_ratio),       # k3 estimate of KL(pi_old || pi_theta)
    }
    if cfg.kl_coef:
        metrics["kl"] = token_mean(kl)
    for name, value in (extra or {}).items():
        metrics[name] = token_mean(value.expand_as(ratio))
    return loss, metrics


# Every algorithm: (logp [B, T] with grad, old_logp [B, T], adv [B], mask [B, T], cfg, **batch) -> (loss, metrics),
# batch = num_tokens, num_seqs (of the optimizer mini-batch), ref_logp [B, T] (when kl_coef > 0), what ETR
# (group_std [B]) or ERC (entropy [B, T] of pi_theta, old_entropy [B, T] of pi_old) need, and the mini-batch's
# token choices of batch_choices (cov_select [B, T], entropy_keep [B, T]).

def grpo_loss(logp, old_logp, adv, mask, cfg, **batch):
    """GRPO's clipped surrogate with fixed bounds; DAPO and Dr. GRPO are this loss with other settings."""
    adv = adv.float()[:, None]                                         # [B, 1]  one A per response, on all its tokens
    ratio = importance_ratio(logp, old_logp, cfg.max_log_ratio)        # [B, T]
    loss_tok, clip_low, clip_high = clipped_surrogate(ratio, adv, cfg.eps_low, cfg.eps_high)
    return finish(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, **batch)


def gppo_loss(logp, old_logp, adv, mask, cfg, **batch):
    """GPPO: the clip keeps its value but passes a bounded gradient (gppo_surrogate)."""
    adv = adv.float()[:, None]                                         # [B, 1]
    ratio = importance_ratio(logp, old_logp, cfg.max_log_ratio)        # [B, T]
    loss_tok, clip_low, clip_high = gppo_surrogate(logp, ratio, adv, cfg.eps_low, cfg.eps_high)  # GPPO modification
    return finish(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, **batch)


def etr_loss(logp, old_logp, adv, mask, cfg, *, group_std, **batch):
    """ETR: GRPO's clipped surrogate with per-sample elastic bounds (etr_bounds, our reading)."""
    eps_low, eps_high = etr_bounds(adv, group_std, cfg)                # [B], [B]  ETR modification
    eps_low, eps_high = eps_low[:, None], eps_high[:, None]            # [B, 1], [B, 1]
    adv = adv.float()[:, None]                                         # [B, 1]
    ratio = importance_ratio(logp, old_logp, cfg.max_log_ratio)        # [B, T]
    loss_tok, clip_low, clip_high = clipped_surrogate(ratio, adv, eps_low, eps_high)
    extra = {"etr_eps_low_mean": eps_low, "etr_eps_high_mean": eps_high}
    return finish(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, extra, **batch)


def erc_dapo_loss(logp, old_logp, adv, mask, cfg, *, entropy, old_entropy, **batch):
    """ERC on top of DAPO's clip-higher surrogate."""
    adv = adv.float()[:, None]                                         # [B, 1]
    ratio = importance_ratio(logp, old_logp, cfg.max_log_ratio)        # [B, T]
    loss_tok, clip_low, clip_high = clipped_surrogate(ratio, adv, cfg.eps_low, cfg.eps_high)
    keep = erc_keep_mask(entropy, old_entropy, cfg.erc_beta_low, cfg.erc_beta_high)  # [B, T]  ERC modification
    loss_tok = torch.where(keep, loss_tok, loss_tok.detach())          # [B, T]  dropped: same value, no gradient
    return finish(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, {"erc_masked_frac": ~keep},
                  entropy=entropy, **batch)


def erc_gppo_loss(logp, old_logp, adv, mask, cfg, *, entropy, old_entropy, **batch):
    """ERC on top of GPPO's gradient-preserving surrogate."""
    adv = adv.float()[:, None]                                         # [B, 1]
    ratio = importance_ratio(logp, old_logp, cfg.max_log_ratio)        # [B, T]
    loss_tok, clip_low, clip_high = gppo_surrogate(logp, ratio, adv, cfg.eps_low, cfg.eps_high)
    keep = erc_keep_mask(entropy, old_entropy, cfg.erc_beta_low, cfg.erc_beta_high)  # [B, T]  ERC modification
    loss_tok = torch.where(keep, loss_tok, loss_tok.detach())          # [B, T]  dropped: same value, no gradient
    return finish(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, {"erc_masked_frac": ~keep},
                  entropy=entropy, **batch)


def gspo_loss(logp, old_logp, adv, mask, cfg, **batch):
    """GSPO (eq. 5): l_i = -min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i), one value per sequence,
    (1 / G) sum_i l_i = seq-mean. A clipped sequence has no gradient at all."""
    adv = adv.float()[:, None]                                         # [B, 1]
    s = sequence_ratio(logp, old_logp, mask, cfg.max_log_ratio)        # [B, 1]  GSPO eq. 7
    loss_seq, clip_low, clip_high = clipped_surrogate(s, adv, cfg.eps_low, cfg.eps_high)  # [B, 1]  GSPO eq. 5
    size = logp.shape                                                  # on every token of o_i, for aggregate
    return finish(loss_seq.expand(size), s.expand(size), clip_low.expand(size), clip_high.expand(size), logp, adv,
                  mask, cfg, **batch)


def gspo_token_loss(logp, old_logp, adv, mask, cfg, **batch):
    """GSPO-token (eq. 13): PPO's clip of the token ratio s_i,t (gspo_token_ratio), then seq-mean."""
    adv = adv.float()[:, None]                                         # [B, 1]
    ratio = gspo_token_ratio(logp, sequence_ratio(logp, old_logp, mask, cfg.max_log_ratio))  # [B, T]  eq. 14
    loss_tok, clip_low, clip_high = clipped_surrogate(ratio, adv, cfg.eps_low, cfg.eps_high)
    return finish(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, **batch)


def cispo_loss(logp, old_logp, adv, mask, cfg, **batch):
    """CISPO (MiniMax-M1 eq. 4): cispo_surrogate, then token-mean (the paper's 1 / sum_i |o_i|)."""
    adv = adv.float()[:, None]                                         # [B, 1]
    ratio = importance_ratio(logp, old_logp, cfg.max_log_ratio)        # [B, T]
    loss_tok, clip_low, clip_high = cispo_surrogate(logp, ratio, adv, cfg.eps_low, cfg.eps_high)  # CISPO modification
    return finish(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, **batch)


def clip_cov_loss(logp, old_logp, adv, mask, cfg, *, cov_select=None, **batch):
    """Clip-Cov: the clipped surrogate, and the tokens of I_clip (clip_cov_tokens; cov_select = the mini-batch's)
    get loss 0 and no gradient (the authors' code multiplies their loss by 0)."""
    if cov_select is None:
        cov_select = clip_cov_tokens(logp, old_logp, adv, mask, cfg)   # [B, T]  I_clip of this call
    adv = adv.float()[:, None]                                         # [B, 1]
    ratio = importance_ratio(logp, old_logp, cfg.max_log_ratio)        # [B, T]
    loss_tok, clip_low, clip_high = clipped_surrogate(ratio, adv, cfg.eps_low, cfg.eps_high)
    loss_tok = torch.where(cov_select, torch.zeros_like(loss_tok), loss_tok)  # [B, T]  Clip-Cov modification
    return finish(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, {"cov_selected_frac": cov_select},
                  **batch)


def kl_cov_loss(logp, old_logp, adv, mask, cfg, *, cov_select=None, **batch):
    """KL-Cov: the unclipped surrogate -rho_t A, plus beta |log rho_t| on the tokens of I_KL (kl_cov_tokens;
    cov_select = the mini-batch's). No PPO clip at all (eps_low / eps_high are not used)."""
    if cov_select is None:
        cov_select = kl_cov_tokens(logp, old_logp, adv, mask, cfg)     # [B, T]  I_KL of this call
    adv = adv.float()[:, None]                                         # [B, 1]
    ratio = importance_ratio(logp, old_logp, cfg.max_log_ratio)        # [B, T]
    penalty = torch.where(cov_select, cfg.kl_cov_coef * torch.log(ratio).abs(), torch.zeros_like(ratio))  # [B, T]
    never = torch.zeros_like(cov_select)                               # [B, T]  nothing is clipped
    return finish(-ratio * adv + penalty, ratio, never, never, logp, adv, mask, cfg,
                  {"cov_selected_frac": cov_select}, **batch)


def batch_choices(algo: str, cfg, logp, old_logp, adv, mask, entropy=None) -> dict:
    """The token choices that are statistics of a whole batch, as keyword arguments of the loss: Clip-Cov's or
    KL-Cov's tokens (cov_select [B, T]) and the high-entropy mask (entropy_keep [B, T], when top_entropy_quantile
    < 1). train.py calls it once per optimizer mini-batch with the current policy's log pi and entropy from a
    no-grad pass, and hands each micro-batch its rows: the choice, and so the gradient, do not depend on the
    micro-batch size. Empty when the algorithm needs none (not in COV_TOKENS, top_entropy_quantile = 1)."""
    choices = {}
    if algo in COV_TOKENS:
        choices["cov_select"] = COV_TOKENS[algo](logp, old_logp, adv, mask, cfg)
    if cfg.top_entropy_quantile < 1:
        choices["entropy_keep"] = high_entropy_mask(entropy, mask, cfg.top_entropy_quantile)
    return choices


# --algo name -> loss function, and the settings in which the algorithm differs from LossConfig's defaults
ALGOS = {
    "grpo": grpo_loss,
    "dapo": grpo_loss,
    "drgrpo": grpo_loss,
    "gppo": gppo_loss,
    "etr": etr_loss,
    "erc-dapo": erc_dapo_loss,
    "erc-gppo": erc_gppo_loss,
    "gspo": gspo_loss,
    "gspo-token": gspo_token_loss,
    "cispo": cispo_loss,
    "clip-cov": clip_cov_loss,
    "kl-cov": kl_cov_loss,
}
COV_TOKENS = {"clip-cov": clip_cov_tokens, "kl-cov": kl_cov_tokens}  # algorithms whose tokens batch_choices picks
ALGO_DEFAULTS = {
    "grpo": {},
    "dapo": {"eps_high": 0.28, "loss_agg": "token-mean"},             # DAPO clip-higher + token-level loss
    "drgrpo": {"adv_std": "none", "loss_agg": "drgrpo"},              # Dr. GRPO modifications 1 and 2
    "gppo": {"loss_agg": "token-mean"},
    "etr": {},                                                        # GRPO's settings: alpha = beta = 0 is GRPO
    "erc-dapo": {"eps_high": 0.28, "loss_agg": "token-mean", "dual_clip": 10.0},  # the ERC authors' code
    "erc-gppo": {"loss_agg": "token-mean", "dual_clip": 10.0},                    # applies dual-clip to both
    "gspo": {"eps_low": 3e-4, "eps_high": 4e-4},                      # GSPO Sec. 5.1; seq-mean is eq. 5's 1 / G
    "gspo-token": {"eps_low": 3e-4, "eps_high": 4e-4},
    # CISPO: no lower bound on the weight (MiniMax-M1 Sec. 3.1: eps_low^IS "a large value"; 1 - 1 = 0 < rho);
    # the paper gives no eps_high^IS: 1 + 4 = 5 is TRL's recommended cap (from ScaleRL, arXiv 2510.13786)
    "cispo": {"eps_low": 1.0, "eps_high": 4.0, "loss_agg": "token-mean"},
    "clip-cov": {"eps_low": 1.0, "eps_high": 1.0, "loss_agg": "token-mean"},  # the authors' recipe 7b_clip_cov.sh
    "kl-cov": {"loss_agg": "token-mean"},                                     # (the authors' recipes)
}


def make_config(algo: str, **overrides) -> LossConfig:
    """The algorithm's defaults, then every override that is not None (e.g. unset command-line flags)."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}: choose one of {', '.join(ALGOS)}")
    known = {f.name for f in fields(LossConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown loss settings {sorted(unknown)}: choose from {sorted(known)}")
    settings = {**ALGO_DEFAULTS[algo], **{k: v for k, v in overrides.items() if v is not None}}
    for key in ("eps_low", "eps_high", "erc_beta_low", "erc_beta_high"):  # 0 would clip / mask every token
        if key in settings and settings[key] <= 0:
            raise ValueError(f"{key} must be > 0, got {settings[key]}")
    if settings.get("reward_max", 1.0) <= settings.get("reward_min", 0.0):  # sigma_max^2 = 0: ETR divides by it
        raise ValueError(f"reward_max must be > reward_min, got {settings.get('reward_max', 1.0)} <= "
                         f"{settings.get('reward_min', 0.0)}")
    if settings.get("dual_clip") is not None and settings["dual_clip"] <= 1:  # c <= 1 caps every A < 0 token
        raise ValueError(f"dual_clip must be > 1 (Ye et al. 2019), got {settings['dual_clip']}: leave it unset to turn it off")
    if settings.get("dual_clip") is not None and algo == "cispo":  # its loss value -sg(w) A log pi is no surrogate
        raise ValueError("dual_clip caps a clipped surrogate; cispo's loss is -sg(w) A log pi: leave dual_clip unset")
    for key, low, high in (("clip_cov_ratio", 0, 1), ("kl_cov_ratio", 0, 1), ("top_entropy_quantile", 0, 1)):
        if key in settings and not low < settings[key] <= high:  # 0 would still choose 1 token / keep the top one
            raise ValueError(f"{key} must be in ({low}, {high}], got {settings[key]}")
    if settings.get("clip_cov_lb", 1.0) >= settings.get("clip_cov_ub", 5.0):  # an empty band: Clip-Cov is PPO
        raise ValueError(f"clip_cov_lb must be < clip_cov_ub, got {settings.get('clip_cov_lb', 1.0)} >= "
                         f"{settings.get('clip_cov_ub', 5.0)}")
    return LossConfig(**settings)
