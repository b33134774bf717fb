"""The reward: is the model's final answer the same mathematical answer as the reference?

    extract_answer(text)        -> str | None   the last \\boxed{...} (or a fallback line), else None
    is_equiv(pred, gold)        -> bool         are two final answers the same answer
    math_reward(completion, gold) -> float      1.0 when extract_answer(completion) is equivalent to gold, else 0.0

Top to bottom: extract -> normalise -> compare -> reward. The reward decides what the policy learns: a false
negative hides a correct answer, a false positive teaches the model to cheat. Model output is untrusted input, so
it never reaches eval/exec/sympify/parse_expr: latex.py (a whitelist parser; a reader may skip it) builds sympy
objects directly, bounds sizes before sympy evaluates anything, and answers "not equal" to anything outside the
whitelist. Symbolic work (simplification, solving inequalities, matrix arithmetic, sums) runs in a persistent
worker process that is killed and restarted when it exceeds the time limit, so a call never takes much more than
TIME_LIMIT seconds. is_equiv and math_reward never raise. The rulebook with examples, and where and why it
differs from Math-Verify's: docs/verifier.md; every rule has labelled cases in tests/test_reward.py.

Extraction (extract_answer)
    The content of the last \\boxed{...} or \\fbox{...} (nested braces balanced; \\{ \\} do not count), or
    \\boxed 5. An empty or unclosed last box (a truncated completion) is no answer: None. Earlier boxes join the
    last into one answer list when only a separator (",", ";", "and", "or") stands between them, possibly after
    "for part (a)" and before a name "y_2 =", once spacing, $, parentheses and \\text{..} are dropped
    (\\boxed{3} \\text{ for part (a) and } \\boxed{5} -> "3, 5"); a last box after other words stands alone
    (earlier boxes were intermediate results). Without any box: the last "final answer is X" or "Answer: X", X
    the $..$, \\(..\\) or \\[..\\] right after it, else the rest of the line up to ". " (of a sentence only what
    follows its first " is "/" are ": "The largest $n$ is 34." -> 34); otherwise None. No format bonus.

Equality rules (is_equiv), tried in this order: normalised strings equal -> exact rational comparison -> sympy
    - Cosmetics are ignored: $, \\left/\\right, spacing, \\dfrac/\\tfrac/\\cfrac, \\displaystyle, \\text{..}-like
      wrappers, a trailing period; >= <= != are \\ge \\le \\ne (one table, latex._SPELLING).
    - Numbers are exact rationals: 025 = 25, 1,000 = 1{,}000 = 1000 (whole answer, groups of three digits),
      5.0 = 5, 0.5 = \\frac12 = 1/2, 0.333 != 1/3; 1\\frac{4}{5} is the mixed number 9/5.
    - Degrees, percent and units are dropped: 90^\\circ = 90, 50\\% = 50 (!= 0.5), "5.4 \\text{ cents}" = 5.4.
    - Expressions (\\sqrt, \\pi, e, i, powers, products, !, \\binom, trig/log, |..|, \\sum/\\prod, case-sensitive
      letters, Greek) are equal when sympy proves a - b == 0 (sums by their closed forms) in the time limit;
      constants equal to 30 digits count unless one is rational (0.3333333333 != 1/3).
    - An approximation is not the answer: in "x = \\frac13 \\approx 0.33" the exact side counts, "x \\approx 11"
      is x = 11.
    - A labelled answer is its value: x = 5, (p,q) = (3,2), f(x) = x^2, AB = 4, |AB| = 1, \\frac{NO}{BO} = ..,
      \\angle ABC = 30, S_{ABC} : S = 7 : 32 (latex._LABEL), against a non-equation or the same label. 2x = 4
      and |x| = 3 are equations, not labels. Equations are equal when (l1 - r1) / (l2 - r2) is a non-zero constant.
    - Assignments to distinct unknowns are an ordered tuple: "k = 45, n = 2" = (45, 2) = "45, 2" = "n = 2,
      k = 45" != "2, 45"; a repeated cycle is a list of tuples: "p = 5, q = 2; p = 7, q = 2" = (5,2), (7,2).
      x_1 = 3, x_2 = 5 (one unknown) is a list of values.
    - Ratios a : b : .. compare term by term (7:32 != 14:64, != 32:7); a two-term ratio against a number is its
      quotient (7:32 = \\frac{7}{32}).
    - Inequalities that bound one letter or a function value f(x) are intervals (x > 3 = (3,\\infty), 0 < f(x)
      < 1 = (0,1), x \\ne 2 = (-\\infty,2) \\cup (2,\\infty), "x < -2 or x > 7" a union; 8 < x < -2 is empty).
      Other relations are equal side by side (a > b is b < a), or when they describe the same set of real numbers
      (latex.solution_set: one variable, algebraic): -x > -1 = x < 1, 1 \\le |z| \\le 2 = [-2,-1] \\cup [1,2].
    - (..) and [..] sequences are ordered with matching brackets (also intervals: [1,2) != [1,2]); unions are
      unordered. A bare list, \\{..\\} or {..} is an unordered list where a repeat adds nothing; ";", "or", "and"
      separate like "," (not "and" between inequalities); a bare list is no tuple ("1,2" != "(1,2)") and a
      one-element list equals its element. \\pm expands into two answers.
    - Matrices compare elementwise with the same shape; a one-row or one-column matrix also equals the tuple of
      its entries; sums, scalar multiples, products and small powers of matrices are evaluated first.
    - Base subscripts: 52_8 = 52_{8} = 52, != 52_9, != 42.
    - Words compare case-insensitively on letters and digits: \\text{Evelyn} = evelyn, \\text{(B)} = B (a whole
      \\text{..} with a letter and no digit, or plain text of letters, spaces and ( ) , . ' -).
"""
import atexit
import multiprocessing
import os
import random
import re
import threading
import time
from functools import lru_cache

import sympy

from latex import (MAX_ANSWER_LEN, NAME, ParseError, base_digits, braced, clean, in_order, label, matrix_form,
                   matrix_value, quotient, solution_set, to_sympy, value_tree, vector)

TIME_LIMIT = 0.8        # seconds: the budget of one is_equiv call for symbolic work (worker round trips included)


# --- Extract: the final answer of a completion -----------------------------------------------------------------

_BOX = re.compile(r"\\(?:boxed|fbox)")
_FALLBACK = re.compile(r"(?i)(?:final answer is:?|answer\s*:)[ \t]*")
# the subject of a sentence up to its first " is " / " are ": $..$ spans, or characters other than a newline or
# a full stop that ends the sentence
_SUBJECT = re.compile(r"(?:\$[^$]*\$|[^$\n.]|\.(?=\S))*?\s(?:is|are)\s+")
# what may stand between the boxes of one answer, once spacing, $, \\( \\), parentheses and \\text{..} wrappers
# are gone: a separator, after "for part (a)" and before "y_2 =" ("\\boxed{3} \\text{ for part (a) and } \\boxed{5}")
_BOX_PROSE = re.compile(r"\\text\s*\{|\\(?:quad|qquad|[,;:! ()\[\]])|[\s$(){}~]+")
_BOX_JOIN = re.compile(rf"(?i)(?:(?:for|in)\s*(?:part\s*)?\w{{1,3}}\s*)?(?:,|;|,?\s*\b(?:and|or)\b)\s*,?\s*"
                       rf"(?:{NAME}\s*=)?")


def _box_content(text, m):
    """(content, end) of the box whose command m matched; content "" for an empty or unclosed box."""
    i = m.end()
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        end = braced(text, i)
        return (text[i + 1:end - 1].strip(), end) if end is not None else ("", len(text))
    m2 = re.match(r"[^\s$]+", text[i:]) if i > m.end() else None  # \boxed 5: one token up to whitespace or $
    return (m2.group(0), i + m2.end()) if m2 else ("", i)


def extract_answer(text):
    """The final answer of a completion (rules in the module docstring), or None."""
    if not isinstance(text, str):
        return None
    boxes = list(_BOX.finditer(text))
    if boxes:
        answer, _ = _box_content(text, boxes[-1])
        if not answer:
            return None
        # boxes joined by nothing but ",", ";", "and", "or" are one answer list: \boxed{1} and \boxed{2} -> "1, 2"
        # (as Math-Verify does); a last box after other words is the answer alone
        parts, later = [answer], boxes[-1].start()
        for m in reversed(boxes[:-1]):
            content, end = _box_content(text, m)
            if not content or not _BOX_JOIN.fullmatch(_BOX_PROSE.sub(" ", text[end:later]).strip()):
                break
            parts.append(content)
            later = m.start()
        return ", ".join(reversed(parts))
    hits = list(_FALLBACK.finditer(text))
    if not hits:
        return None
    rest = text[hits[-1].end():]
    subject = _SUBJECT.match(rest)  # "Final Answer: The largest $n$ is 34." -> "34."
    rest = rest[subject.end():] if subject else rest
    # the math right after it: $..$ (\$ inside is a dollar sign: $\$18.90$), \(..\) or \[..\]; else up to ". "
    m = re.match(r"\$+((?:\\\$|[^$])*)\$|\\\((.*?)\\\)|\\\[(.*?)\\\]", rest, re.S)
    if m:
        rest = next(g for g in m.groups() if g is not None)
    else:
        rest = re.split(r"\n|\. |\.$", rest, maxsplit=1)[0].strip("$")
    answer = rest.strip().rstrip(".").strip()
    return answer or None


# --- Normalise: an answer -> its normalised string and value tree (latex.py) -----------------------------------

@lru_cache(maxsize=8192)
def _parse(answer):
    """answer -> (normalised string, is_word, word form, value tree or None); cached: golds repeat a lot.
    latex.clean drops the cosmetics (one spelling table, \\text{..} wrappers, units); latex.value_tree parses."""
    s, is_word = clean(answer)
    key, word = re.sub(r"\s+", "", s), re.sub(r"[^a-z0-9]", "", s.lower())
    if is_word:
        return key, True, word, None
    try:
        return key, False, word, value_tree(s)
    except (ParseError, RecursionError):
        return key, False, word, None


# --- Compare: two value trees; expressions through sympy, proofs in the worker ---------------------------------

def is_equiv(pred, gold):
    """True when pred and gold are the same mathematical answer (rules in the module docstring). Never raises."""
    deadline = time.monotonic() + TIME_LIMIT
    try:
        if pred is None or gold is None:
            return False
        pred, gold = str(pred), str(gold)
        if pred.strip() == gold.strip():
            return True
        if len(pred) > MAX_ANSWER_LEN or len(gold) > MAX_ANSWER_LEN:
            return False
        kp, is_word_p, wp, vp = _parse(pred)
        kg, is_word_g, wg, vg = _parse(gold)
        if kp == kg:  # normalised strings equal
            return True
        if is_word_p or is_word_g:
            return wp == wg
        if vp is None or vg is None:
            return False
        return bool(_equal(vp, vg, deadline))
    except Exception:  # ParseError, RecursionError, TypeError from odd structures, MemoryError, ...
        return False


def _equal(p, g, deadline):
    if time.monotonic() > deadline:
        return False
    kp, kg = p[0], g[0]
    lp = label(p[1]) if kp == "eq" else None
    lg = label(g[1]) if kg == "eq" else None
    if lp and (kg != "eq" or lp == lg):
        return _equal(value_tree(p[2]), g if kg != "eq" else value_tree(g[2]), deadline)  # x = 5 against 5
    if lg and kp != "eq":
        return _equal(p, value_tree(g[2]), deadline)
    if "assign" in (kp, kg):  # k = 45, n = 2: by name against the same names, else in order
        if kp == kg and sorted(p[1]) == sorted(g[1]):
            return all(_equal(v, g[2][g[1].index(name)], deadline) for name, v in zip(p[1], p[2]))
        ps, gs = in_order(p), in_order(g)
        return len(ps) == len(gs) > 1 and all(_equal(x, y, deadline) for x, y in zip(ps, gs))
    if (kp == "seq" and p[1] == ":") != (kg == "seq" and g[1] == ":"):  # 7 : 32 against 7/32: the quotient
        p, g = quotient(p), quotient(g)
        kp, kg = p[0], g[0]
    if "rel" in (kp, kg) and {kp, kg} <= {"rel", "seq", "union"}:  # -x > -1 = x < 1: the same set of numbers
        if kp == kg and p[1] == g[1] and all(_equal(x, y, deadline) for x, y in zip(p[2], g[2])):
            return True
        return _ask_worker(("sets", p, g), deadline)
    if "matexpr" in (kp, kg):  # A + B against its value
        a, b = matrix_form(p), matrix_form(g)
        return a is not None and b is not None and _ask_worker(("matrix", a, b), deadline)
    if (kp == "set") != (kg == "set"):  # an answer and a list of answers: {3} = 3, 3, 3 = 3
        return _same_set(p[1] if kp == "set" else [p], g[1] if kg == "set" else [g], deadline)
    if {kp, kg} == {"matrix", "seq"}:  # a one-row or one-column matrix against the tuple of its entries
        p, g = vector(p), vector(g)
        return p is not None and g is not None and _equal(p, g, deadline)
    if "base" in (kp, kg):  # 52_8 = 52 (the digits), != 52_9
        (dp, bp), (dg, bg) = base_digits(p), base_digits(g)
        return dp is not None and dp == dg and (bp is None or bg is None or bp == bg)
    if kp != kg:
        return False
    if kp == "expr":
        return _expr_equal(p[1], g[1], deadline)
    if kp == "eq":
        try:
            if _expr_equal(p[1], g[1], deadline) and _expr_equal(p[2], g[2], deadline):
                return True
            return _ask_worker(("eq", (p[1], p[2]), (g[1], g[2])), deadline)
        except ParseError:  # (p, q) = (3, 2) against (q, p) = (2, 3): different labels, and no expressions
            return False
    if kp == "seq":
        return p[1:3] == g[1:3] and len(p[3]) == len(g[3]) and all(
            _equal(x, y, deadline) for x, y in zip(p[3], g[3]))
    if kp in ("set", "union"):
        return _same_set(p[1], g[1], deadline)
    if kp == "matrix":
        return len(p[1]) == len(g[1]) and len(p[1][0]) == len(g[1][0]) and all(
            _equal(x, y, deadline) for rx, ry in zip(p[1], g[1]) for x, y in zip(rx, ry))
    return False


def _expr_equal(a_src, b_src, deadline):
    a, b = to_sympy(a_src), to_sympy(b_src)
    if a == b:
        return True
    if a.is_Rational and b.is_Rational:
        return False  # exact: 0.333 != 1/3
    if a.is_number and b.is_number and (a.has(sympy.oo, -sympy.oo) or b.has(sympy.oo, -sympy.oo)):
        return False
    return _ask_worker(("expr", a_src, b_src), deadline)


def _same_set(ps, gs, deadline):
    """Unordered, and a repeat adds nothing (3, 5, 7, 7 = 3, 5, 7): each element equals one of the other side."""
    matched = set()
    for i, p in enumerate(ps):  # every p equals some g, the same position tried first (lists often agree) ...
        j = next((j for j in (*range(i, len(gs)), *range(min(i, len(gs)))) if _equal(p, gs[j], deadline)), None)
        if j is None:
            return False
        matched.add(j)
    # ... and every g not matched yet equals some p
    return all(any(_equal(p, g, deadline) for p in ps) for j, g in enumerate(gs) if j not in matched)


def _numeric_points(symbols, n=3):
    rng = random.Random(0)
    return [{s: sympy.Rational(rng.randint(11, 97), rng.randint(7, 31)) for s in symbols} for _ in range(n)]


def _close(a, b, digits=30):
    """Numerically equal to `digits` digits (relative), or None when it cannot be evaluated to a finite number.
    sympy Floats, not Python floats: values like (x+y+z)^{1000} at a random point overflow a double."""
    d = sympy.N(a - b, digits)
    if not d.is_number or d.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
        return None
    size = [sympy.N(sympy.Abs(v), 15) for v in (d, a, b)]
    return bool(size[0] <= max(1, size[1], size[2]) * sympy.Float(10) ** (2 - digits))


def _symbolic_equal(a, b):
    """a == b for sympy expressions: a cheap numeric refutation first, then expand / simplify as proof."""
    if a.has(sympy.Sum, sympy.Product) or b.has(sympy.Sum, sympy.Product):  # their closed forms, where sympy has them
        a, b = a.doit(), b.doit()
    d = a - b
    if d == 0:
        return True
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    # no numeric refutation of a sum that has no closed form: its limits at a random point mean nothing
    for point in [] if d.has(sympy.Sum, sympy.Product) else _numeric_points(symbols) if symbols else [{}]:
        try:
            close = _close(a.subs(point), b.subs(point))
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            close = None
        if close is False:
            return False
    if sympy.expand(d) == 0 or sympy.simplify(d) == 0:
        return True
    # constants equal to 30 digits count, unless one is rational: then only a proof counts (0.3333333333 != 1/3)
    return not symbols and not (a.is_Rational or b.is_Rational) and bool(_close(a, b))


def _proportional(p, q):
    """p = 0 and q = 0 are the same equation: p / q simplifies to a non-zero constant."""
    if p == 0 or q == 0:
        return p == q
    symbols = sorted(p.free_symbols | q.free_symbols, key=str)
    ratios = [complex(sympy.N((p / q).subs(point), 20)) for point in _numeric_points(symbols)]
    if max(abs(z - ratios[0]) for z in ratios) > 1e-9 * (1 + abs(ratios[0])):
        return False  # the ratio is not constant: different equations
    r = sympy.simplify(p / q)
    return bool(r.is_number and r != 0 and not r.has(sympy.zoo, sympy.nan))


# --- The worker: symbolic work under a hard time limit, killed and restarted on timeout ------------------------

def _worker_task(task):
    op, a_src, b_src = task
    if op == "expr":
        return _symbolic_equal(to_sympy(a_src), to_sympy(b_src))
    if op == "sets":
        a, b = solution_set(a_src), solution_set(b_src)
        return a == b or sympy.Complement(a, b) == sympy.Complement(b, a) == sympy.S.EmptySet
    if op == "matrix":
        a, b = matrix_value(a_src), matrix_value(b_src)
        return a.shape == b.shape and all(_symbolic_equal(x, y) for x, y in zip(a, b))
    (l1, r1), (l2, r2) = a_src, b_src
    return _proportional(to_sympy(l1) - to_sympy(r1), to_sympy(l2) - to_sympy(r2))


def _worker_loop(conn):
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        try:
            result = bool(_worker_task(task))
        except Exception:
            result = False
        conn.send(result)


_worker = {"proc": None, "conn": None, "pid": None}
_worker_lock = threading.Lock()


def _stop_worker():
    proc = _worker["proc"]
    if proc is not None and _worker["pid"] == os.getpid():
        proc.kill()
        proc.join(timeout=1)
        _worker["conn"].close()
    _worker.update(proc=None, conn=None, pid=None)


def _ask_worker(task, deadline):
    """The worker's verdict on task, or False when it does not answer before the deadline (it is then killed).

    Starting a worker is not charged to the deadline: the first start imports sympy's simplification modules in
    this process (~0.3 s, once) so that every later fork, restarts included, begins warm."""
    with _worker_lock:
        if _worker["pid"] != os.getpid():  # none yet, or inherited through a fork: start our own
            started = time.monotonic()
            x = sympy.Symbol("x")
            sympy.simplify(sympy.cos(x) ** 2 + sympy.sin(x) ** 2 - 1)  # cached after the first time
            _worker.update(proc=None, conn=None, pid=None)
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_loop, args=(child,), daemon=True)
            proc.start()
            child.close()
            _worker.update(proc=proc, conn=parent, pid=os.getpid())
            deadline += time.monotonic() - started
        conn = _worker["conn"]
        try:
            conn.send(task)
            if conn.poll(max(0.0, deadline - time.monotonic())):
                return bool(conn.recv())
        except (EOFError, OSError):
            pass
        _stop_worker()  # too slow (or dead): kill it; the next call starts a fresh one
        return False


atexit.register(_stop_worker)


# --- Reward ----------------------------------------------------------------------------------------------------

def math_reward(completion, gold):
    """1.0 when the completion's extracted final answer is equivalent to gold, else 0.0. No format bonus."""
    try:
        answer = extract_answer(completion)
        return 1.0 if answer is not None and is_equiv(answer, gold) else 0.0
    except Exception:
        return 0.0
