"""Throughput and worst-case latency of reward.is_equiv.

    python benchmarks/bench_reward.py [path/to/math500.jsonl]

For every MATH-500 gold answer it builds rewritten variants programmatically, some equivalent (\\dfrac for \\frac,
a trailing unit, 5.0 for 5, 025 for 25, "x = ..." in front, spaces removed, a reversed unordered list) and some
not (the answer + 1, times 10, a swapped tuple, a flipped interval end), then times is_equiv(variant, gold) over
all of them, with the parse caches cleared first (cold) and again with them warm (a gold answer is compared with
many samples in RL training). Every verdict is checked against the variant's label. Finally it times the hostile
inputs of tests/test_reward.py and reports the slowest call. Default data path: ../shared/data/math500.jsonl.
"""
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import sympy  # noqa: E402

import latex  # noqa: E402
import reward  # noqa: E402
from reward import is_equiv  # noqa: E402


def variants(gold):
    """(variant, expected) pairs for one gold answer; only rewrites whose verdict is known by construction."""
    g = gold.strip()
    out = []
    if "\\frac" in g:
        out.append((g.replace("\\frac", "\\dfrac"), True))
    if " " in g:
        out.append((g.replace(" ", ""), True))
    out.append((f"${g}$", True))
    if re.fullmatch(r"-?\d+", g):
        n = int(g)
        out += [(f"{g}.0", True), (f"0{g}" if n >= 0 else g, True), (f"{g} \\text{{ units}}", True),
                (f"x = {g}", True), (str(n + 1), False), (str(n * 10 + 1), False)]
        if abs(n) >= 1000:
            out.append((f"{n:,}", True))
    elif re.fullmatch(r"\(([^,()]+),([^,()]+)\)", g):
        a, b = g[1:-1].split(",")
        if a.replace(" ", "") != b.replace(" ", ""):
            out.append((f"({b},{a})", False))
        out.append((f"[{a},{b})", False))
    elif re.fullmatch(r"[^,]+(,[^,]+)+", g) and not re.search(r"[(\[{]|\\!|,\d{3}", g):
        out.append((",".join(reversed(g.split(","))), True))
    elif "=" not in g and "," not in g and "\\text" not in g and "matrix" not in g and "_" not in g:
        out += [(f"{g} + 1", False), (f"x = {g}", True), (f"2({g})", False)]
    return out


def timed(pairs):
    latencies, wrong = [], []
    for pred, gold, expected in pairs:
        start = time.perf_counter()
        verdict = is_equiv(pred, gold)
        latencies.append(time.perf_counter() - start)
        if verdict is not expected:
            wrong.append((gold, pred, expected))
    return latencies, wrong


def report(name, latencies):
    total = sum(latencies)
    print(f"{name:<34} n={len(latencies):5d}  {len(latencies) / total:8.0f} verifications/s  "
          f"median {1e6 * statistics.median(latencies):7.0f} us  max {1e3 * max(latencies):7.1f} ms")


def main():
    print(f"python {sys.version.split()[0]}, sympy {sympy.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} (1 min) at start")
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data" / "math500.jsonl"
    if not path.is_file():
        sys.exit(f"error: {path} not found; pass the path of a MATH-500 JSONL file (key 'answer')")
    golds = [json.loads(line)["answer"] for line in path.open() if line.strip()]
    pairs = [(v, g, e) for g in golds for v, e in variants(g)]
    pos = [p for p in pairs if p[2]]
    neg = [p for p in pairs if not p[2]]
    print(f"{len(golds)} gold answers from {path}; {len(pos)} equivalent and {len(neg)} non-equivalent pairs")

    for warm in (False, True):
        if not warm:  # empty every cache, sympy's own included, and start a fresh worker process (untimed)
            for cached in (latex.clean, reward._parse, latex.to_sympy):
                cached.cache_clear()
            sympy.core.cache.clear_cache()
            reward._stop_worker()
            is_equiv("\\cot x", "\\frac{\\cos x}{\\sin x}")
            latex.to_sympy.cache_clear()
        tag = "warm caches" if warm else "cold caches"
        lat_pos, wrong_pos = timed(pos)
        lat_neg, wrong_neg = timed(neg)
        report(f"equivalent ({tag})", lat_pos)
        report(f"non-equivalent ({tag})", lat_neg)
        report(f"all ({tag})", lat_pos + lat_neg)
    for gold, pred, expected in wrong_pos + wrong_neg:
        print(f"  wrong verdict: gold {gold!r} pred {pred!r} expected {expected}")

    from test_reward import HOSTILE, HOSTILE_GOLDS
    worst, worst_case = 0.0, None
    for hostile in HOSTILE:
        for gold in HOSTILE_GOLDS:
            for pred, g in ((hostile, gold), (gold, hostile), (hostile, hostile + " ")):
                start = time.perf_counter()
                is_equiv(pred, g)
                reward.math_reward(f"\\boxed{{{pred}}}", g)
                elapsed = time.perf_counter() - start
                if elapsed > worst:
                    worst, worst_case = elapsed, (pred[:40], g[:40])
    print(f"hostile inputs: {len(HOSTILE)} x {len(HOSTILE_GOLDS)} golds x 3; worst case {1e3 * worst:.1f} ms "
          f"(is_equiv + math_reward) on {worst_case}")


if __name__ == "__main__":
    main()
