"""Differential test of reward.py against Math-Verify (the field's standard verifier; never a dependency).

    python3 -m venv /tmp/venv-mv && /tmp/venv-mv/bin/pip install 'math-verify[antlr4_13_2]'
    python benchmarks/diff_mathverify.py [--mv-python /tmp/venv-mv/bin/python] [--data ../shared/data]

From every MATH-500, AIME24/25 and AMC23 gold answer it generates answer variants -- re-spellings, reorderings,
labelled forms, inequalities, several boxes, near misses, and the equal variants of another problem's answer; since
issue 29 also \\approx, ASCII relations, relations by their solution set, boxes joined by prose, ratios,
assignments, matrix arithmetic, the \\(..\\) fallback and sums, each with its adversarial near miss -- each
with the verdict it has by construction where the rewrite decides it (None where it does not), wraps each in a
completion, and scores it twice: with reward.math_reward in this process, and with Math-Verify's verify(parse(gold),
parse(completion)) in a subprocess of the venv's python that reads JSON lines (this same file, run with --oracle).
It prints the agreement per kind of variant and every disagreement (and the same for the hand-labelled PAIRS of
tests/test_reward.py); each one was judged by hand and the decided cases are kept, with the reason, in
tests/test_reward.py (MATH_VERIFY_CASES; the script also checks that Math-Verify still answers those as noted).
Exits 0 with a message when Math-Verify is not installed.
"""
import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LE, GE = "\\le", "\\ge"
sys.path.insert(0, str(REPO))


def oracle():
    """Math-Verify side: one JSON [gold, completion] per input line -> one line "1", "0" or "error"."""
    from math_verify import parse, verify
    for line in sys.stdin:
        gold, completion = json.loads(line)
        try:
            verdict = verify(parse(f"$\\boxed{{{gold}}}$"), parse(completion))
            print("1" if verdict else "0", flush=True)
        except Exception:  # Math-Verify's own bugs or timeouts: reported, not fatal
            print("error", flush=True)


def boxed(answer, prefix="so the answer is "):
    return f"{prefix}$\\boxed{{{answer}}}$."


def variants(gold):
    """(kind, completion, expected) for one gold answer; expected is None when the rewrite does not decide it."""
    g = gold.strip()
    out = []

    def add(kind, answer, expected, completion=None):
        out.append((kind, completion if completion is not None else boxed(answer), expected))

    add("fallback", None, True, completion=f"Final Answer: The final answer is ${g}$. I hope it is correct.")
    add("respell", f"\\displaystyle {g}", True)
    if "\\frac" in g:
        add("respell", g.replace("\\frac", "\\cfrac"), True)
        add("respell", g.replace("\\frac", "\\dfrac"), True)
    if " " in g:
        add("respell", g.replace(" ", ""), True)
    if "(" in g and "\\left" not in g:
        add("respell", g.replace("(", "\\left(").replace(")", "\\right)"), True)
    words = re.fullmatch(r"\\text\{([A-Za-z ]+)\}", g)
    if words:
        add("respell", f"\\textnormal{{{words.group(1)}}}", True)
        add("near miss", f"\\text{{{words.group(1)}s x}}", False)
    matrix = re.fullmatch(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", g, re.S)
    if matrix:
        cols = "c" * (matrix.group(1).split("\\\\")[0].count("&") + 1)
        add("respell", f"\\left[\\begin{{array}}{{{cols}}}{matrix.group(1)}\\end{{array}}\\right]", True)
        first_plus_one = re.sub(r"^(\s*[^&\\]+)", r"\1+1", matrix.group(1), count=1)
        add("near miss", f"\\begin{{pmatrix}}{first_plus_one}\\end{{pmatrix}}", False)
        rows = [[c.strip() for c in r.split("&")] for r in matrix.group(1).split("\\\\")]
        doubled, ones, less = (" \\\\ ".join(" & ".join(f(c) for c in r) for r in rows)
                               for f in (lambda c: f"2({c})", lambda c: "1", lambda c: f"{c} - 1"))
        add("matrix arithmetic", f"\\frac{{1}}{{2}} \\begin{{pmatrix}} {doubled} \\end{{pmatrix}}", True)
        add("matrix arithmetic", f"\\frac{{1}}{{3}} \\begin{{pmatrix}} {doubled} \\end{{pmatrix}}", False)
        for sign, expected in (("+", True), ("-", False)):
            add("matrix arithmetic", f"\\begin{{pmatrix}} {less} \\end{{pmatrix}} {sign} "
                f"\\begin{{pmatrix}} {ones} \\end{{pmatrix}}", expected)
    if re.fullmatch(r"-?\d+", g):
        n = int(g)
        add("labelled", f"x = {g}", True)
        add("labelled", f"AB = {g}", True)
        add("labelled", f"f(3) = {g}", True)
        add("labelled", f"2x = {g}", False)  # an equation, not a label: x = n/2
        add("fallback", None, True, completion=f"Final Answer: The largest $n$ is {g}.")
        add("fallback", None, True, completion=f"Answer: {g}")
        add("several boxes", None, True, completion=f"First \\boxed{{{n + 3}}}, and then the total is \\boxed{{{g}}}.")
        add("several boxes", None, False, completion=f"\\boxed{{{n + 3}}} or \\boxed{{{g}}}")
        add("several boxes", f"{g}, {n + 1}", False)
        add("near miss", str(n + 1), False)
        add("near miss", f"x \\le {g}", False)
        add("near miss", f"x \\ge {g}", False)  # a half-line is not a number
        add("ascii relation", f"x >= {g}", False)
        add("approx", f"x \\approx {g}", True)
        add("approx", f"x \\approx {n + 1}", False)
        add("fallback \\(..\\)", None, True, completion=f"The final answer is \\({g}\\). I hope it is correct.")
        add("fallback \\(..\\)", None, True, completion=f"The final answer is \\[ {g} \\]")
        add("boxes in prose", None, False, completion=f"\\boxed{{{g}}} \\quad \\text{{and}} \\quad \\boxed{{{n + 1}}}")
        add("boxes in prose", None, False, completion=f"\\boxed{{{n + 1}}} \\text{{ for part (a) and }} \\boxed{{{g}}}")
        if 1 <= n <= 1000:
            add("sum", f"\\sum_{{k=1}}^{{{n}}} 1", True)
            add("sum", f"\\sum_{{k=0}}^{{{n}}} 1", False)
        if abs(n) >= 1000:
            add("respell", f"{n:,}".replace(",", "{,}"), True)
            add("respell", f"{n:,}".replace(",", ",\\!"), True)
            add("near miss", f"{n:,}".replace(",", ".", 1), False)  # a decimal point: 1.000 = 1
            add("fallback \\(..\\)", None, True, completion=f"The final answer is ${n:,}$.")
    if g.count("=") == 1 and "," not in g:
        lhs, rhs = (x.strip() for x in g.split("="))
        add("equation", f"{rhs} = {lhs}", True)
        add("equation", f"2({lhs}) = 2({rhs})", True)
        add("near miss", f"{lhs} = -({rhs})", None)  # different unless rhs = 0
    choice = re.fullmatch(r"\\text\{\(?([A-E])\)?\}", g)
    if choice:
        add("respell", choice.group(1), True)
        add("respell", f"({choice.group(1)})", True)
        add("near miss", "(A)" if choice.group(1) != "A" else "(B)", False)
    tup = re.fullmatch(r"\(([^,()\[\]]+),([^,()\[\]]+)\)", g)
    if tup:
        a, b = tup.group(1).strip(), tup.group(2).strip()
        add("labelled", f"(p, q) = ({a}, {b})", True)
        add("respell", f"({a}; {b})", True)
        add("near miss", f"[{a}, {b}]", False)
        if a.replace(" ", "") != b.replace(" ", ""):
            add("near miss", f"({b}, {a})", False)
            add("near miss", f"(p, q) = ({b}, {a})", False)
    interval = re.fullmatch(r"(\(|\[)([^,]+),([^,]+)(\)|\])", g)
    if interval and "infty" in g:
        o, lo, hi, c = (x.strip() for x in interval.groups())
        if "infty" in hi:
            add("inequality", f"x {'>' if o == '(' else GE} {lo}", True)
            add("near miss", f"x {GE if o == '(' else '>'} {lo}", False)
            add("ascii relation", f"x {'>' if o == '(' else '>='} {lo}", True)
            add("ascii relation", f"x {'>=' if o == '(' else '>'} {lo}", False)
            add("solution set", f"-x {'<' if o == '(' else LE} -({lo})", True)
            add("solution set", f"-x {LE if o == '(' else '<'} -({lo})", False)  # only the endpoint differs
            add("solution set", f"x - ({lo}) {'>' if o == '(' else GE} 0", True)
        elif "infty" in lo:
            add("inequality", f"x {'<' if c == ')' else LE} {hi}", True)
            add("near miss", f"x {LE if c == ')' else '<'} {hi}", False)
            add("ascii relation", f"x {'<' if c == ')' else '<='} {hi}", True)
            add("solution set", f"2x {'<' if c == ')' else LE} 2({hi})", True)
            add("solution set", f"-x {'>' if c == ')' else GE} -({hi})", True)
            add("solution set", f"-x {GE if c == ')' else '>'} -({hi})", False)
    elif interval and all(re.fullmatch(r"-?\d+", x.strip()) for x in interval.groups()[1:3]):
        o, lo, hi, c = (x.strip() for x in interval.groups())
        a, b = int(lo), int(hi)
        rel = {"(": "<", "[": LE, ")": "<", "]": LE}
        if a < b:  # lower < upper: an interval, not a point
            add("inequality", f"{lo} {rel[o]} x {rel[c]} {hi}", True)
            add("inequality", f"x \\in {g}", True)
            add("near miss", f"{lo} {LE if o == '(' else '<'} x {rel[c]} {hi}", False)
        if a < b and o + c in ("()", "[]"):
            add("solution set", f"|2x - ({a + b})| {rel[o]} {b - a}", True)
            add("solution set", f"|2x - ({a + b})| {LE if o == '(' else '<'} {b - a}", False)
        if a != b and o + c == "()":  # two unknowns with distinct names: the ordered tuple
            add("assignment", f"p = {a}, q = {b}", True)
            add("assignment", f"p = {b}, q = {a}", False)
    union = re.fullmatch(r"\(-\\infty,\s*(-?\d+)\)\s*\\cup\s*\((-?\d+),\s*\\infty\)", g)
    if union and int(union.group(1)) < int(union.group(2)):
        add("solution set", f"(x - {union.group(1)})(x - {union.group(2)}) > 0", True)
        add("solution set", f"(x - {union.group(1)})(x - {union.group(2)}) {GE} 0", False)
    if "\\cup" in g and g.count("\\cup") == 1:
        left, right = (x.strip() for x in g.split("\\cup"))
        add("respell", f"{right} \\cup {left}", True)
    items = [x.strip() for x in g.split(",")]
    if len(items) > 1 and not re.search(r"[(\[{]|\\!|^\d{1,3}(,\d{3})+$", g):
        add("reorder", ", ".join(reversed(items)), True)
        add("respell", "\\{" + ", ".join(items) + "\\}", True)
        add("respell", "{" + ", ".join(items) + "}", True)
        add("respell", "; ".join(items), True)
        add("respell", " \\text{ or } ".join(items), True)
        add("respell", " or ".join(items), True)
        add("respell", ", ".join(items + items[:1]), True)  # a repeated element
        add("labelled", ", ".join(f"x = {x}" for x in items), True)
        add("several boxes", None, True, completion=" and ".join(f"$\\boxed{{{x}}}$" for x in items))
        add("several boxes", None, True, completion=", ".join(f"\\boxed{{{x}}}" for x in items))
        add("near miss", ", ".join(items[:-1]), False)
        add("near miss", items[0], False)
        add("boxes in prose", None, True,
            completion=" \\quad \\text{and} \\quad ".join(f"\\boxed{{{x}}}" for x in items))
        add("boxes in prose", None, True,
            completion=" and ".join(f"$(x_{i} = \\boxed{{{x}}})$" for i, x in enumerate(items, 1)))
        add("boxes in prose", None, False,
            completion=f"\\boxed{{{items[0]}}} \\text{{, and then the answer is }} \\boxed{{{items[1]}}}")
        add("assignment", ", \\quad ".join(f"x_{i} = {x}" for i, x in enumerate(items, 1)), True)
    if "=" not in g and "," not in g and "\\text" not in g and "matrix" not in g and "_" not in g \
            and not re.fullmatch(r"-?\d+", g):
        add("labelled", f"x = {g}", True)
        add("labelled", f"f(x) = {g}" if "x" in g else f"AB = {g}", True)
        add("near miss", f"{g} + 1", False)
        add("near miss", f"2({g})", False)
        if "+" in g:
            add("near miss", g.replace("+", "-", 1), None)  # a sign flip: usually a different value
        frac = re.fullmatch(r"\\frac\{(\d+)\}\{(\d+)\}", g)
        if frac:
            p, q = int(frac.group(1)), int(frac.group(2))
            for digits in (6, 10):  # a rounding is equal only when p/q has that few decimals
                add("decimal", f"{p / q:.{digits}f}", Fraction(f"{p / q:.{digits}f}") == Fraction(p, q))
            add("ratio", f"{p} : {q}", True)
            add("ratio", f"AB : CD = {p} : {q}", True)
            if p != q:
                add("ratio", f"{q} : {p}", False)
            add("approx", f"x = {g} \\approx {p / q:.2f}", True)  # the exact side is the answer
            add("approx", f"x \\approx {p / q:.2f}", Fraction(f"{p / q:.2f}") == Fraction(p, q))
    return out


def load_golds(data):
    golds = []
    for name in ("math500", "aime24", "aime25", "amc23"):
        path = data / f"{name}.jsonl"
        if not path.is_file():
            sys.exit(f"error: {path} not found; pass --data DIR holding math500/aime24/aime25/amc23.jsonl")
        golds += [(name, str(json.loads(line)["answer"])) for line in path.open() if line.strip()]
    return golds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mv-python", default="/tmp/venv-mv/bin/python",
                        help="a python that can import math_verify (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--show", type=int, default=4, help="examples printed per group of disagreements")
    parser.add_argument("--oracle", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.oracle:
        return oracle()
    probe = subprocess.run([args.mv_python, "-c", "import math_verify"], capture_output=True) \
        if Path(args.mv_python).exists() else None
    if probe is None or probe.returncode != 0:
        print(f"math-verify is not importable by {args.mv_python}: skipped (install it in a throw-away venv, "
              "see this file's docstring, or pass --mv-python)")
        return 0

    from reward import is_equiv, math_reward
    sys.path.insert(0, str(REPO / "tests"))
    from test_reward import MATH_VERIFY_CASES, PAIRS
    golds = load_golds(args.data)
    cases = [(name, gold, *v) for name, gold in golds for v in variants(gold)]
    # the equal variants of another problem's answer (the next one in the same file that is a different answer)
    # against this gold: every one must score 0
    for i, (name, gold) in enumerate(golds):
        other = next(g for n, g in golds[i + 1:] + golds[:i] if n == name and not is_equiv(g, gold))
        cases += [(name, gold, "other answer", c, False) for _, c, e in variants(other) if e]
    # the hand-labelled pairs of the tests, and the disagreements kept there (Math-Verify's verdict noted)
    cases += [("tests", gold, "test pairs", boxed(pred), expected) for gold, pred, expected in PAIRS]
    cases += [("tests", gold, "documented", completion, None) for gold, completion, *_ in MATH_VERIFY_CASES]
    print(f"diff_mathverify: {len(cases)} cases through Math-Verify, then ours (~1.5 min on 2 CPU cores)",
          file=sys.stderr, flush=True)
    proc = subprocess.run([args.mv_python, __file__, "--oracle"], text=True, capture_output=True,
                          input="".join(json.dumps([gold, c]) + "\n" for _, gold, _, c, _ in cases))
    theirs = proc.stdout.split()
    if len(theirs) != len(cases):
        sys.exit(f"error: Math-Verify answered {len(theirs)} of {len(cases)} cases: {proc.stderr[-500:]}")
    start = time.perf_counter()
    ours = ["1" if math_reward(c, gold) == 1.0 else "0" for _, gold, _, c, _ in cases]
    ours_s = time.perf_counter() - start

    print(f"{len(golds)} gold answers -> {len(cases)} variants; ours {ours_s:.1f} s in all")
    by_kind = defaultdict(Counter)
    disagreements = []
    for (name, gold, kind, completion, expected), o, t in zip(cases, ours, theirs):
        stats = by_kind[kind]
        stats["n"] += 1
        stats["agree"] += o == t
        if expected is not None:
            stats["labelled"] += 1
            stats["ours right"] += o == ("1" if expected else "0")
            stats["theirs right"] += t == ("1" if expected else "0")
        if o != t:
            disagreements.append((kind, name, gold, completion, expected, o, t))
    print(f"{'kind':<14} {'variants':>8} {'agree':>7} {'labelled':>9} {'ours right':>11} {'M-V right':>10}")
    for kind, s in sorted(by_kind.items()):
        print(f"{kind:<14} {s['n']:>8} {s['agree']:>7} {s['labelled']:>9} {s['ours right']:>11} "
              f"{s['theirs right']:>10}")
    total = Counter()
    for s in by_kind.values():
        total.update(s)
    print(f"{'all':<14} {total['n']:>8} {total['agree']:>7} {total['labelled']:>9} {total['ours right']:>11} "
          f"{total['theirs right']:>10}")
    n = len(MATH_VERIFY_CASES)
    stale = [c for t, c in zip(theirs[-n:], MATH_VERIFY_CASES) if (t == "1") != c[3]]
    print(f"\ntests/test_reward.py MATH_VERIFY_CASES: Math-Verify answers {n - len(stale)} of {n} as noted there"
          + "".join(f"\n  no longer: {c[:2]}" for c in stale))
    buckets = defaultdict(list)
    for kind, name, gold, completion, expected, o, t in disagreements:
        buckets[kind, o, t, expected].append((name, gold, completion))
    print(f"\n{len(disagreements)} disagreements in {len(buckets)} groups (kind, ours, Math-Verify, label by "
          f"construction); up to {args.show} examples each:")
    for (kind, o, t, expected), rows in sorted(buckets.items(), key=lambda kv: -len(kv[1])):
        print(f"  [{kind}] ours {o}, Math-Verify {t}, label {expected}: {len(rows)}")
        for name, gold, completion in rows[:args.show]:
            print(f"      {name} gold {gold!r}: {completion!r}")


if __name__ == "__main__":
    sys.exit(main())
