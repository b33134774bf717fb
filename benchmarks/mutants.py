"""Does the test suite catch the classic bugs? A catalogue of realistic mistakes, each applied to a copy of the repo.

Each mutant is one small source patch -- (file, exact old snippet, new snippet, the bug it models, the tests that
should catch it). For each, the runner copies the repository into a temporary directory, replaces the snippet,
runs those test files there (stopping at the first failure) and reports

    killed by <test>   the suite fails, as it should
    SURVIVED           the suite stays green with the bug in: a hole in the tests
    STALE              the old snippet is not in the file exactly once (the code changed since the mutant was
                       written): refresh the mutant; never counted as killed
    ERROR              pytest could not run (rc other than 0 or 1, or a timeout): look at the output it prints

Not run by CI (minutes). Tests run as `nice -n 10 env OMP_NUM_THREADS=1 python -m pytest -x ...`, without writing
bytecode (so no stale .pyc of a mutated file). The unmutated copy is run first on the same test selections: if it
fails, nothing is measured.

    python benchmarks/mutants.py                     # the whole catalogue
    python benchmarks/mutants.py --list              # names, files and the bug each models
    python benchmarks/mutants.py kl-swapped eos-dropped
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

ETR = ["tests/test_etr.py"]
MUTANTS = [
    # ---- etr.py: advantages
    dict(name="unbiased-std", file="etr.py", tests=ETR,
         bug="group std with Bessel's correction (torch's default, divide by G - 1) instead of the population std",
         old="std = r.std(dim=1, unbiased=False, keepdim=True)",
         new="std = r.std(dim=1, unbiased=True, keepdim=True)"),
    dict(name="batch-mean-baseline", file="etr.py", tests=ETR,
         bug="baseline = mean reward of the whole batch instead of the prompt's group",
         old="mean = r.mean(dim=1, keepdim=True)",
         new="mean = r.mean()"),
    dict(name="equal-rewards-not-zeroed", file="etr.py", tests=ETR,
         bug="a group of equal rewards trusts (r - mean) / (std + eps) to be 0: fp32 round-off / 1e-6 is not",
         old="adv = ((r - mean) / scale).masked_fill(flat, 0.0)",
         new="adv = (r - mean) / scale"),
    # ---- etr.py: ratio and surrogates
    dict(name="log-ratio-unclamped", file="etr.py", tests=ETR,
         bug="no clamp on log pi - log pi_old: exp overflows fp32 for a stale token, inf * 0 = NaN gradient",
         old="log_ratio = (logp.float() - old_logp.float()).clamp(-max_log_ratio, max_log_ratio)",
         new="log_ratio = logp.float() - old_logp.float()"),
    dict(name="torch-minimum", file="etr.py", tests=ETR,
         bug="the min of the PPO objective as torch.minimum: a ratio exactly on a bound gets half its gradient",
         old="loss_tok = -torch.where(clip_low | clip_high, clipped * adv, ratio * adv)",
         new="loss_tok = -torch.minimum(ratio * adv, clipped * adv)"),
    dict(name="clip-higher-ignored", file="etr.py", tests=ETR,
         bug="DAPO's clip-higher ignored: the upper bound uses eps_low",
         old="hi = 1 + torch.as_tensor(eps_high,",
         new="hi = 1 + torch.as_tensor(eps_low,"),
    dict(name="clip-ignores-sign-of-A", file="etr.py", tests=ETR,
         bug="clip without the min: every token outside [1 - eps, 1 + eps] loses its gradient, whatever the sign of A",
         old="return (adv < 0) & (ratio < lo), (adv > 0) & (ratio > hi)",
         new="return ratio < lo, ratio > hi"),
    dict(name="gppo-no-gradient", file="etr.py", tests=ETR,
         bug="GPPO's clipped tokens multiply A by the constant bound: right value, no gradient (plain PPO clip)",
         old="coef = torch.where(clip_high, hi * unit, torch.where(clip_low, lo * unit, ratio))",
         new="coef = torch.where(clip_high, hi, torch.where(clip_low, lo, ratio))"),
    dict(name="dual-clip-both-signs", file="etr.py", tests=ETR,
         bug="dual-clip caps tokens with A > 0 too (it is only for A < 0)",
         old="capped = (adv < 0) & (loss_tok > -c * adv)",
         new="capped = loss_tok > -c * adv"),
    # ---- etr.py: ETR and ERC
    dict(name="etr-std-for-variance", file="etr.py", tests=ETR,
         bug="ETR's macro term divides the std, not the variance, by sigma_max^2",
         old="group_std.float() ** 2 / var_max",
         new="group_std.float() / var_max"),
    dict(name="etr-a_max-forgotten", file="etr.py", tests=ETR,
         bug="ETR's micro term without the cap a_max on |A|",
         old="adv.float().abs().clamp(max=cfg.etr_a_max)",
         new="adv.float().abs()"),
    dict(name="erc-band-not-strict", file="etr.py", tests=ETR,
         bug="ERC keeps a token whose entropy ratio lies exactly on the band's edge (<= instead of <)",
         old="return (rho_h > 1 - beta_low) & (rho_h < 1 + beta_high)",
         new="return (rho_h >= 1 - beta_low) & (rho_h <= 1 + beta_high)"),
    dict(name="erc-dropped-zeroed", file="etr.py", tests=ETR,
         bug="ERC zeroes out-of-band tokens (their loss value is lost) instead of cutting only their gradient",
         old="clipped_surrogate(ratio, adv, cfg.eps_low, cfg.eps_high)\n"
             "    keep = erc_keep_mask(entropy, old_entropy, cfg.erc_beta_low, cfg.erc_beta_high)  # [B, T]  ERC modification\n"
             "    loss_tok = torch.where(keep, loss_tok, loss_tok.detach())",
         new="clipped_surrogate(ratio, adv, cfg.eps_low, cfg.eps_high)\n"
             "    keep = erc_keep_mask(entropy, old_entropy, cfg.erc_beta_low, cfg.erc_beta_high)  # [B, T]  ERC modification\n"
             "    loss_tok = loss_tok * keep"),
    # ---- etr.py: GSPO, CISPO, Clip-Cov / KL-Cov, the high-entropy mask
    dict(name="gspo-no-length-norm", file="etr.py", tests=ETR,
         bug="GSPO's ratio as the sequence likelihood ratio (the product of rho), not its 1/|o_i| power",
         old="return torch.exp(total / valid.sum(dim=1, keepdim=True).clamp(min=1))",
         new="return torch.exp(total)"),
    dict(name="gspo-token-no-stop-gradient", file="etr.py", tests=ETR,
         bug="GSPO-token without sg[s_i]: the gradient flows through s_i as well as through pi / sg(pi)",
         old="return seq_ratio.detach() * unit",
         new="return seq_ratio * unit"),
    dict(name="cispo-weight-not-detached", file="etr.py", tests=ETR,
         bug="CISPO's clipped weight keeps its gradient (no stop-gradient): clipped tokens lose theirs again",
         old="weight = ratio.clamp(lo, hi).detach()",
         new="weight = ratio.clamp(lo, hi)"),
    dict(name="cispo-lower-bound", file="etr.py", tests=ETR,
         bug="CISPO with a lower bound on the weight (verl's default clip_ratio_low 0.2), which the paper drops",
         old='"cispo": {"eps_low": 1.0,',
         new='"cispo": {"eps_low": 0.2,'),
    dict(name="cov-means-over-padding", file="etr.py", tests=ETR,
         bug="Cov's means of log pi and A taken over every position, padding included",
         old="lp_mean, a_mean = torch.where(valid, lp, zero).sum() / n, torch.where(valid, a, zero).sum() / n",
         new="lp_mean, a_mean = lp.mean(), a.mean()"),
    dict(name="clip-cov-no-upper-bound", file="etr.py", tests=ETR,
         bug="Clip-Cov chooses among every token with Cov > omega_low (omega_high forgotten)",
         old="(cov > cfg.clip_cov_lb) & (cov < cfg.clip_cov_ub)",
         new="(cov > cfg.clip_cov_lb)"),
    dict(name="kl-cov-penalty-signed", file="etr.py", tests=ETR,
         bug="KL-Cov's penalty beta * log rho (k1, can be negative) instead of beta * |log rho|",
         old="cfg.kl_cov_coef * torch.log(ratio).abs()",
         new="cfg.kl_cov_coef * torch.log(ratio)"),
    dict(name="entropy-quantile-flipped", file="etr.py", tests=ETR,
         bug="the high-entropy mask keeps the share 1 - rho (the rho-quantile as threshold), not the top rho",
         old="tau = torch.quantile(entropy.float()[valid], 1 - rho)",
         new="tau = torch.quantile(entropy.float()[valid], rho)"),
    dict(name="entropy-mask-shrinks-denominator", file="etr.py", tests=ETR,
         bug="dropped low-entropy tokens leave the token-mean's denominator (the paper keeps them in it, loss 0)",
         old="loss_tok = torch.where(entropy_keep, loss_tok, torch.zeros_like(loss_tok))",
         new="mask = mask.bool() & entropy_keep"),
    # ---- etr.py: KL and aggregation
    dict(name="kl-swapped", file="etr.py", tests=ETR,
         bug="KL direction swapped: k3 of KL(pi_ref || pi_theta) instead of KL(pi_theta || pi_ref)",
         old="log_r = (ref_logp.float() - logp.float())",
         new="log_r = (logp.float() - ref_logp.float())"),
    dict(name="kl-k1", file="etr.py", tests=ETR,
         bug="KL as the k1 estimator log(pi_theta / pi_ref) (can be negative) instead of GRPO's k3",
         old="return torch.exp(log_r) - log_r - 1",
         new="return -log_r"),
    dict(name="seq-mean-over-padding", file="etr.py", tests=ETR,
         bug="seq-mean divides each sequence by the padded length T instead of its own length |o_i|",
         old="masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)",
         new="masked.sum(dim=1) / mask.shape[1]"),
    dict(name="padding-counted", file="etr.py", tests=ETR,
         bug="the loss of padded positions is summed in (mask not applied)",
         old="masked = torch.where(mask, loss_tok, torch.zeros_like(loss_tok))",
         new="masked = loss_tok"),
    dict(name="drgrpo-batch-length", file="etr.py", tests=ETR,
         bug="Dr. GRPO's constant normaliser replaced by the batch's longest completion (length bias returns)",
         old="return masked.sum() / (num_seqs * max_len)",
         new="return masked.sum() / (num_seqs * mask.shape[1])"),
    # ---- train.py
    dict(name="micro-batch-normaliser", file="train.py", tests=["tests/test_train.py", "-k", "accumulation"],
         bug="each micro-batch normalised by its own token / sequence count, not the mini-batch's",
         old="num_tokens=num_tokens, num_seqs=num_seqs,",
         new="num_tokens=None, num_seqs=None,"),
    dict(name="pi-old-refreshed", file="train.py", tests=["tests/test_train.py", "-k", "accumulation or pi_old"],
         bug="pi_old re-read from the current policy at every update: the ratio stays 1, the clip never acts",
         old="first = epoch == 0 and k == 0 and fill_old",
         new="first = fill_old"),
    dict(name="batch-choices-per-micro-batch", file="train.py", tests=["tests/test_train.py", "-k", "accumulation"],
         bug="Clip-Cov's / KL-Cov's tokens and the entropy quantile taken per micro-batch, not per mini-batch",
         old="**{k: v[rows][:, :T].to(device) for k, v in choices.items()})",
         new=")"),
    # ---- rollout.py
    dict(name="eos-dropped", file="rollout.py", tests=["tests/test_rollout.py"],
         bug="the EOS token dropped from the completion mask: stopping is never rewarded or trained",
         old="completion_mask = (eos_before == 0).long()",
         new="completion_mask = (eos_before + is_eos == 0).long()"),
    dict(name="hidden-off-by-one", file="rollout.py", tests=["tests/test_rollout.py"],
         bug="hidden state j scored against token j instead of token j + 1",
         old="hidden = hidden[:, P - 1:P - 1 + t1]",
         new="hidden = hidden[:, P:P + t1]"),
    dict(name="temperature-forgotten", file="rollout.py", tests=["tests/test_rollout.py"],
         bug="log-probs of softmax(logits), not of softmax(logits / T) that was sampled",
         old="bias.float()).div_(temperature)  # [M, V]",
         new="bias.float())  # [M, V]"),
    dict(name="position-ids-ignored", file="rollout.py",
         tests=["tests/test_scoring_absolute_positions.py", "tests/test_rollout.py"],
         bug="scoring without position ids: left-padded rows get other positions than generate gave them",
         old="attention_mask=attention_mask, position_ids=position_ids,",
         new="attention_mask=attention_mask, position_ids=None,"),
    dict(name="hidden-top-k", file="rollout.py", tests=["tests/test_rollout.py"],
         bug="top_k not set: transformers samples with its default top-k 50, not the policy that is scored",
         old="knobs = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)",
         new="knobs = dict(do_sample=True, temperature=temperature, top_p=top_p)"),
    # ---- eval.py and reward.py
    dict(name="pass-at-k-biased", file="eval.py", tests=["tests/test_eval.py", "-k", "pass_at_k"],
         bug="pass@k as 1 - (1 - c/n)^k (sampling with replacement) instead of the unbiased estimator",
         old="return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))",
         new="return 1.0 - (1.0 - c / n) ** k"),
    dict(name="first-boxed-answer", file="reward.py", tests=["tests/test_reward.py", "-k", "extract_answer"],
         bug="the first \\boxed{} of a completion is graded instead of the last",
         old="answer, _ = _box_content(text, boxes[-1])",
         new="answer, _ = _box_content(text, boxes[0])"),
]


def copy_repo(dest: Path):
    """The files git tracks or would track (untracked, not ignored), as they are now; ../shared linked beside."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for name in listed:
        if (REPO / name).is_file():
            (dest / "repo" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / "repo" / name)
    if (REPO.parent / "shared").is_dir():  # the benchmark data the tests read as ../shared/data
        (dest / "shared").symlink_to(REPO.parent / "shared")
    return dest / "repo"


def run_tests(repo: Path, tests: list[str], timeout: int):
    """(rc, first failing test or the output's last line)."""
    cmd = ["nice", "-n", "10", "env", "OMP_NUM_THREADS=1", "PYTHONDONTWRITEBYTECODE=1", sys.executable, "-m",
           "pytest", "-x", "-q", "-p", "no:cacheprovider", "--tb=no", "-rfE", *tests]
    try:
        result = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout} s"
    lines = result.stdout.splitlines()
    failed = [line.split(" ", 1)[1].split(" - ")[0] for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return result.returncode, failed[0] if failed else (lines[-1] if lines else result.stderr.strip()[-200:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the catalogue and exit")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per test run")
    args = parser.parse_args(argv)
    by_name = {m["name"]: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        print(f"unknown mutant(s) {', '.join(unknown)}: choose from {', '.join(by_name)}", file=sys.stderr)
        return 2
    chosen = [by_name[n] for n in args.names] or MUTANTS
    if args.list:
        for m in chosen:
            print(f"{m['name']:26} {m['file']:10} {m['bug']}")
        return 0

    start = time.time()
    print(f"mutants: the unmutated code's test selections first (minutes), then {len(chosen)} mutant(s), each printed "
          "as it ends", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        repo = copy_repo(Path(tmp))
        selections = list(dict.fromkeys(tuple(m["tests"]) for m in chosen))
        for tests in selections:  # the unmutated code must pass what each mutant is judged by
            rc, first = run_tests(repo, list(tests), args.timeout)
            if rc != 0:
                print(f"the unmutated code fails {' '.join(tests)} ({first}): fix that first, nothing measured",
                      file=sys.stderr)
                return 1
        print(f"unmutated code passes all {len(selections)} test selections ({time.time() - start:.0f} s)\n", flush=True)
        print(f"{'mutant':26} {'file':10} result")
        rows = []
        for m in chosen:
            path = repo / m["file"]
            original = path.read_text()
            count = original.count(m["old"])
            if count != 1:
                result = f"STALE (old snippet found {count} times, not once)"
            else:
                path.write_text(original.replace(m["old"], m["new"]))
                rc, first = run_tests(repo, m["tests"], args.timeout)
                path.write_text(original)
                result = (f"killed by {first}" if rc == 1 else "SURVIVED" if rc == 0
                          else f"ERROR (rc {rc}: {first})")
            rows.append(result)
            print(f"{m['name']:26} {m['file']:10} {result}", flush=True)
    killed = sum(r.startswith("killed") for r in rows)
    counts = {kind: sum(r.startswith(kind) for r in rows) for kind in ("SURVIVED", "STALE", "ERROR")}
    print(f"\nkilled {killed} / {len(rows)}, survived {counts['SURVIVED']}, stale {counts['STALE']}, "
          f"errors {counts['ERROR']} ({time.time() - start:.0f} s)")
    return 0 if killed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
