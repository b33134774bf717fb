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

Gradient accumulation is exact: every loss takes the *optimizer mini-batch's* token and sequence counts
(num_tokens, num_seqs), so the losses of its micro-batches add up to the loss of the whole mini-batch.
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
# 5. KL to a reference policy, and aggregation over tokens
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
# 6. Settings and the algorithms
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


def finish(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, extra=None, *, num_tokens=None,
           num_seqs=None, ref_logp=None, group_std=None, entropy=None, old_entropy=None):
    """What every algorithm does last: dual-clip, KL penalty, aggregation, metrics.

    Metrics are detached and additive over micro-batches like the loss (each a token mean divided by the
    mini-batch's num_tokens), except keys ending in _max, which combine by max. `extra` maps further
    metric names to per-token values [B, T] to average the same way. Batch tensors an algorithm does
    not use (group_std, entropy, ...) are accepted and ignored, so every algorithm takes the same batch
    (and a misspelt keyword is an error, not a silently wrong normaliser).
    """
    if cfg.dual_clip is not None:
        loss_tok, capped = dual_clip(loss_tok, adv, cfg.dual_clip)
        clip_high = clip_high | capped                                 # the cap cuts rho from above
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
# batch = num_tokens, num_seqs (of the optimizer mini-batch), ref_logp [B, T] (when kl_coef > 0), and what
# ETR (group_std [B]) or ERC (entropy [B, T] of pi_theta, old_entropy [B, T] of pi_old) need.

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
    return finish(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, {"erc_masked_frac": ~keep}, **batch)


def erc_gppo_loss(logp, old_logp, adv, mask, cfg, *, entropy, old_entropy, **batch):
    """ERC on top of GPPO's gradient-preserving surrogate."""
    adv = adv.float()[:, None]                                         # [B, 1]
    ratio = importance_ratio(logp, old_logp, cfg.max_log_ratio)        # [B, T]
    loss_tok, clip_low, clip_high = gppo_surrogate(logp, ratio, adv, cfg.eps_low, cfg.eps_high)
    keep = erc_keep_mask(entropy, old_entropy, cfg.erc_beta_low, cfg.erc_beta_high)  # [B, T]  ERC modification
    loss_tok = torch.where(keep, loss_tok, loss_tok.detach())          # [B, T]  dropped: same value, no gradient
    return finish(loss_tok, ratio, clip_low, clip_high, logp, adv, mask, cfg, {"erc_masked_frac": ~keep}, **batch)


# --algo name -> loss function, and the settings in which the algorithm differs from LossConfig's defaults
ALGOS = {
    "grpo": grpo_loss,
    "dapo": grpo_loss,
    "drgrpo": grpo_loss,
    "gppo": gppo_loss,
    "etr": etr_loss,
    "erc-dapo": erc_dapo_loss,
    "erc-gppo": erc_gppo_loss,
}
ALGO_DEFAULTS = {
    "grpo": {},
    "dapo": {"eps_high": 0.28, "loss_agg": "token-mean"},             # DAPO clip-higher + token-level loss
    "drgrpo": {"adv_std": "none", "loss_agg": "drgrpo"},              # Dr. GRPO modifications 1 and 2
    "gppo": {"loss_agg": "token-mean"},
    "etr": {},                                                        # GRPO's settings: alpha = beta = 0 is GRPO
    "erc-dapo": {"eps_high": 0.28, "loss_agg": "token-mean", "dual_clip": 10.0},  # the ERC authors' code
    "erc-gppo": {"loss_agg": "token-mean", "dual_clip": 10.0},                    # applies dual-clip to both
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
    return LossConfig(**settings)
