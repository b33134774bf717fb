"""The reward: is the model's final answer the same mathematical answer as the reference?

    extract_answer(text)        -> str | None   the last \\boxed{...} (or a fallback line), else None
    is_equiv(pred, gold)        -> bool         are two final answers the same answer
    math_reward(completion, gold) -> float      1.0 when extract_answer(completion) is equivalent to gold, else 0.0

The reward decides what the policy learns: a false negative hides a correct answer, a false positive teaches the
model to cheat. Model output is untrusted input, so this module never calls eval/exec/sympify/parse_expr on it.
LaTeX goes through a whitelist tokenizer and a small recursive-descent parser that builds sympy objects directly
(sympy.Integer, Rational, Symbol, sqrt, sin, ...); anything outside the whitelist is "not equal". Input length,
nesting depth and number sizes are bounded *before* sympy evaluates anything (9^{9^{9^9}} or (10^{10})! are refused
by estimating the result's bit length from the operands). Symbolic simplification runs in a persistent worker
process that is killed and restarted when it exceeds the time limit, so a call never takes much more than
TIME_LIMIT seconds. is_equiv and math_reward never raise.

Extraction (extract_answer)
    The content of the last \\boxed{...} or \\fbox{...} with nested braces balanced (\\{ and \\} do not count);
    also \\boxed 5. An empty or unclosed last box (a truncated completion) is no answer: None. Boxes joined by
    nothing but ",", ";", "and", "or" form one answer list (\\boxed{1} and \\boxed{2} -> "1, 2"); a last box
    after other words stands alone (earlier boxes were intermediate results). Without any box the fallback is the
    last "final answer is X" or Minerva-style "Answer: X" (X = the $...$ right after it, else the rest of the line
    up to ". "; of a sentence only what follows its first " is " or " are ": "The largest $n$ is 34." -> 34);
    otherwise None. There is no format bonus: the reward is 1.0 or 0.0.

Equality rules (is_equiv), tried in this order: normalised strings equal -> exact rational comparison -> sympy
    - Cosmetics are ignored: $, \\left/\\right, spacing commands, \\dfrac/\\tfrac/\\cfrac (= \\frac), \\displaystyle,
      \\text{..}/\\textnormal{..}/\\mbox{..}/\\mathrm{..} wrappers, a trailing period (the table _SPELLING).
    - Numbers are exact rationals: 025 = 25, 1,000 = 1{,}000 = 1000 (whole answer only, groups of three digits),
      5.0 = 5, 0.5 = 1/2 = \\frac12 = 1/2; 0.333 != 1/3 (a decimal equals a fraction only when exactly equal).
      "1\\frac{4}{5}" (an integer then a fraction of integer literals) is the mixed number 9/5.
    - Degrees, percent and units are dropped: 90^\\circ = 90, 50\\% = 50, "5.4 \\text{ cents}" = 5.4 (a trailing
      \\text{..} of words, or trailing plain words after a space, with an optional ^2/^3); so 50\\% != 0.5.
    - Expressions: \\sqrt, \\sqrt[n], \\pi, e (Euler's number), i (imaginary unit), powers, \\cdot, \\times, /,
      implicit multiplication (3\\sqrt{13}, 2x, (a+5)(b+2)), !, \\binom, trig/log functions, single-letter
      variables (case-sensitive: R != r) and Greek letters. Two expressions are equal when sympy proves
      a - b == 0 (expand, then simplify) within the time limit. Constants that agree to 30 digits also count as
      equal unless one of them is a rational number (then only a proof counts, so 0.3333333333 != 1/3).
    - A labelled answer is its value: "x = 5" = 5, "(p,q) = (3,2)" = (3,2), "f(x) = x^2" = x^2, "AB = 4",
      "|AB| = 1", "\\frac{NO}{BO} = \\frac13", "\\angle ABC = 30" -- a left side that is a letter (a_1), a tuple of
      letters, f(x) or f(3), a run of letters, |AB|, \\frac of letter runs, \\angle or \\overline of letters (the
      table _LABEL), against a non-equation or the same label. "2x = 4" is an equation, not a label: != 4; so is
      "|x| = 3" (x = -3 too).
      "x \\in [a,b]" = [a,b]. Other equations are equal when (lhs1 - rhs1) / (lhs2 - rhs2) is a non-zero
      constant (y = 2x+3 = 2x - y = -3).
    - Inequalities (\\le \\leq \\ge \\geq < > \\neq, chains) that bound one letter are intervals (the letter is
      the middle of a chain, or the one side that is a single letter):
      -2 \\le x \\le 7 = x \\in [-2,7] = [-2,7], 0 < x < 1 = (0,1), x > 3 = (3,\\infty),
      x \\neq 2 = (-\\infty,2) \\cup (2,\\infty); x \\le 5 != x < 5. A chain with lower > upper (8 < x < -2) is
      empty and no interval. "x < -2 or x > 7" is the union of two intervals. Other relations compare side by
      side with the same operators (a > b is b < a).
    - Parenthesised/bracketed sequences are ordered: (1,2) != (2,1), and the brackets must match, which also makes
      intervals work: [1,2) != [1,2], (-\\infty, 2) = (-\\infty,2). A union of intervals (\\cup) is unordered.
      A bare list "3, 5, 7", a set \\{3,5,7\\} or {3,5,7} are unordered answer lists, and a repeat adds nothing:
      7,5,3 = \\{3,5,7\\} = 3,5,7,7; but a bare list is not a tuple: "1,2" != "(1,2)". ";", " or " and " and "
      separate answers like "," ((0;0;0) = (0,0,0), "3 or 5" = 3,5), except "and" between inequalities (an
      intersection). A one-element set or list equals its element.
    - \\pm expands into two answers: 1 \\pm \\sqrt{19} = "1+\\sqrt{19}, 1-\\sqrt{19}" (a bare, unordered list).
    - Matrices (pmatrix, bmatrix, an array in brackets) compare elementwise with the same shape; a one-column or
      one-row matrix also equals the ordered tuple of its entries.
    - Base subscripts: 52_8 = 52_{8} = 52 (the digits; the question asked for base 8), but 52_8 != 52_9 and
      52_8 != 42.
    - Words compare case-insensitively on letters and digits only: \\text{Evelyn} = evelyn, \\text{(B)} = B.
      An answer is a word when it is a whole \\text{..} containing a letter and no digit, or plain text with a run
      of two or more letters and nothing but letters, spaces and ( ) , . ' -.

Where we decide differently from Math-Verify (the field's standard verifier) on purpose; each case is in
tests/test_reward.py with its reason:
    - Decimals are exact: 0.333333 != 1/3 (Math-Verify rounds to 6 digits and accepts it; a rounded value is not
      the answer, and an RL policy would learn to stop computing at 6 digits).
    - No decimal comma: 3,5 and 3{,}5 are the list 3, 5, never 3.5 (in MATH a comma separates answers or groups
      of three digits; Math-Verify 0.9.0 agrees, and we keep it so).
    - A chain a = b = c is refused: x = 2+3 = 5 != 5 (Math-Verify accepts it). The chain asserts b = c as well,
      which we do not grade; the answer must be one value.
    - An equation is not a label: 2x = 4 != 4, x + y = 5 != 5, |x| = 3 != 3 (Math-Verify compares any right
      side).
    - A later box after other words wins alone: "first \\boxed{12}, then the total is \\boxed{9}" = 9 (Math-Verify
      joins the boxes and answers 12, 9).
    - An inequality equals an interval: 0 < x < 1 = (0,1), x > 2 = (2,\\infty) (Math-Verify: only for some forms).
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

TIME_LIMIT = 0.8        # seconds: the budget of one is_equiv call for symbolic work (worker round trips included)
MAX_ANSWER_LEN = 1000   # characters of one final answer; longer ones are "not equal" unless identical
MAX_DEPTH = 60          # nesting of brackets / recursive parser calls
MAX_NUM_DIGITS = 200    # characters of one number literal
MAX_BITS = 1 << 15      # largest rational (numerator or denominator) a power may produce, in bits (~9,900 digits)
MAX_EXP = 1000          # largest |exponent| on a non-rational base, largest n in n! and \binom{n}{k}


class ParseError(ValueError):
    """The answer is outside the whitelist or the bounds: it is equal to nothing (but an identical string)."""


# ---------------------------------------------------------------------------------------------------------------
# The interface: extract_answer, is_equiv, math_reward
# ---------------------------------------------------------------------------------------------------------------

_BOX = re.compile(r"\\(?:boxed|fbox)")
_FALLBACK = re.compile(r"(?i)(?:final answer is|answer\s*:)[ \t]*")
# the subject of a sentence up to its first " is " / " are ": $..$ spans, or characters other than a newline or
# a full stop that ends the sentence
_SUBJECT = re.compile(r"(?:\$[^$]*\$|[^$\n.]|\.(?=\S))*?\s(?:is|are)\s+")
_BOX_JOIN = re.compile(r"[\s$]*(?:,|;|,?\s*\b(?:and|or)\b)[\s$]*")


def _braced(text, start):
    """Index just past the '}' matching text[start] == '{', or None when unbalanced. \\{ and \\} do not count."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _box_content(text, m):
    """(content, end) of the box whose command m matched; content "" for an empty or unclosed box."""
    i = m.end()
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        end = _braced(text, i)
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
            if not content or not _BOX_JOIN.fullmatch(text, end, later):
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
    if not rest.startswith("$"):
        rest = re.split(r"\n|\. |\.$", rest, maxsplit=1)[0]
    if rest.startswith("$"):
        m = re.match(r"\$+((?:\\\$|[^$])*)\$", rest)  # \$ inside is a dollar sign: $\$18.90$
        rest = m.group(1) if m else rest.strip("$")
    answer = rest.strip().rstrip(".").strip()
    return answer or None


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


def math_reward(completion, gold):
    """1.0 when the completion's extracted final answer is equivalent to gold, else 0.0. No format bonus."""
    try:
        answer = extract_answer(completion)
        return 1.0 if answer is not None and is_equiv(answer, gold) else 0.0
    except Exception:
        return 0.0


# ===============================================================================================================
# The parser. A reader of the RL loop may skip everything below: the three functions above are the whole
# interface, and the module docstring states every rule they apply. Below: normalisation (one spelling table),
# the structure of an answer (lists, tuples, intervals, relations, labels), a whitelist expression parser that
# builds sympy objects, the time-limited symbolic worker, and the equality of two parsed answers.
# ===============================================================================================================


# ---------------------------------------------------------------------------------------------------------------
# Normalisation: LaTeX string -> cleaned string (whitespace kept for the tokenizer)
# ---------------------------------------------------------------------------------------------------------------

# One table, LaTeX spelling -> the one spelling the parser knows; " " drops a cosmetic. A command matches only as a
# whole word (\le is not the start of \left).
_SPELLING = {
    **dict.fromkeys(["$", "\\$", "~", "\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\>",
                     "\\ ", "\\quad", "\\qquad", "\\%", "%", "\\circ", "\\degree", "°"], " "),
    "\\\\": "\\\\",  # a matrix row break stays (listed so that "\\," is not read as "\" + "\,")
    "{,}": ",",  # the braced thousands separator: 14{,}916 (as in MATH's own solutions)
    **dict.fromkeys(["\\dfrac", "\\tfrac", "\\cfrac"], "\\frac"), **dict.fromkeys(["\\dbinom", "\\tbinom"], "\\binom"),
    **dict.fromkeys(["\\textnormal", "\\textbf", "\\textrm", "\\textit", "\\mbox", "\\mathrm", "\\mathbf",
                     "\\mathit", "\\operatorname"], "\\text"),
    **dict.fromkeys(["\\le", "\\leq", "\\leqslant", "⩽"], "≤"),
    **dict.fromkeys(["\\ge", "\\geq", "\\geqslant", "⩾"], "≥"),
    "\\lt": "<", "\\gt": ">", "\\ne": "≠", "\\neq": "≠",
    "\u2212": "-", "×": "\\times ", "·": "\\cdot ", "π": "\\pi ", "∞": "\\infty ", "√": "\\sqrt ",
}
_SPELLING_RE = re.compile("|".join(re.escape(k) + ("(?![a-zA-Z])" if k[1:].isalpha() else "")
                                   for k in sorted(_SPELLING, key=len, reverse=True)))
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")
_WRAPPER = re.compile(r"\\text\s*\{")
_RELATION = re.compile(r"[<>≤≥≠]")
_UNIT_TAIL = re.compile(r"\s+[A-Za-z]{2,}(?:\s+[A-Za-z]+)*(?:\s*\^\s*\{?[23]\}?)?$")
_WORDS = re.compile(r"[A-Za-z()\s.,'\-]+")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_MATRIX = re.compile(r"[(\[]?\s*\\begin\{([pbBvV]?matrix|array)\}(?:\{[lcr|\s]*\})?(.*)\\end\{\1\}\s*[)\]]?", re.S)
# a name on the left of "=": x, a_1, (p, q), f(x), f(3), AB, |AB|, \frac{NO}{BO}, \angle ABC -- no operator
_NAME = r"[A-Za-z](?:_\{?\w+\}?)?"  # x, a_1, a_{12}
_LABEL = re.compile(rf"{_NAME}|\(\s*{_NAME}(?:\s*,\s*{_NAME})+\s*\)"  # x, (p, q)
                    r"|[A-Za-z]\([\w.\s,]*\)"  # f(x), f(3), g(x, y)
                    r"|[A-Za-z]{2,}|\|[A-Za-z]{2,}\||\\frac\{[A-Za-z]+\}\{[A-Za-z]+\}"  # AB, |AB|, \frac{NO}{BO}
                    r"|(?:m\s*)?\\(?:angle|overline)\s*\{?\s*[A-Za-z]+\s*\}?")  # \angle ABC, m\angle A, \overline{AB}
_VAR_IN = re.compile(r"[A-Za-z]\s*\\in\s*")
_BASE = re.compile(r"([0-9A-Za-z]+)_\{?(\d{1,2})\}?")


def _unwrap_text(s):
    """Replace \\text{..}-like wrappers by their content; a trailing wrapper of words (a unit) is dropped.

    Returns (string, whole) where whole is True when the entire answer was one wrapper."""
    m = _WRAPPER.match(s)
    if m:
        end = _braced(s, m.end() - 1)
        if end == len(s):
            return s[m.end():-1].strip(), True
    out, i = [], 0
    for m in _WRAPPER.finditer(s):
        if m.start() < i:
            continue
        end = _braced(s, m.end() - 1)
        if end is None:
            raise ParseError("unbalanced \\text")
        content = s[m.end():end - 1]
        tail = re.match(r"\s*(?:\^\s*\{?[23]\}?)?\s*$", s[end:])
        if tail and re.fullmatch(r"[A-Za-z\s./]*[A-Za-z][A-Za-z\s./]*", content) and s[:m.start()].strip():
            out.append(s[i:m.start()])  # a trailing unit: "864 \mbox{ inches}^2" -> "864"
            i = len(s)
            break
        if re.fullmatch(r"\s*(?:and|or)\s*", content):
            content = ","
        out.append(s[i:m.start()] + " " + content + " ")
        i = end
    out.append(s[i:])
    return "".join(out).strip(), False


@lru_cache(maxsize=8192)
def _clean(s):
    """Cosmetic normalisation; returns (cleaned string, is_word). Raises ParseError when out of bounds."""
    if len(s) > MAX_ANSWER_LEN:
        raise ParseError("answer too long")
    s = re.sub(r",\\!\s*", ",", s)  # 11,\! 111 -> 11,111
    s = _SPELLING_RE.sub(lambda m: _SPELLING[m.group(0)], _DEGREES.sub(" ", s))
    s, whole = _unwrap_text(s.strip())
    s = s.strip().rstrip(".").strip()
    if whole:
        return s, bool(re.search(r"[A-Za-z]", s)) and not re.search(r"\d", s)
    if _WORDS.fullmatch(s) and re.search(r"[A-Za-z]{2}", s):
        return s, True
    m = _UNIT_TAIL.search(s)
    if m and re.search(r"\d", s[:m.start()]):
        s = s[:m.start()].strip()  # "5 cents", "12 square units"
    # separators between answers: "3 or 5", "(0;0;0)"; "and" too, unless between relations (x > 1 and x < 3
    # is an intersection, not a list)
    s = re.sub(r"\s+or\s+|;" if _RELATION.search(s) else r"\s+(?:or|and)\s+|;", ",", s)
    return s, False


# ---------------------------------------------------------------------------------------------------------------
# Structure: cleaned string -> value tree of ("expr", src) | ("eq", lhs, rhs) | ("seq", open, close, [values]) |
# ("set", [values]) | ("union", [values]) | ("rel", ops, [values]) | ("matrix", [[src]]) | ("base", digits, base)
# ---------------------------------------------------------------------------------------------------------------

def _split_top(s, *seps, keep=False):
    """Split s at the separators outside any bracket (\\{ \\} count as brackets); ParseError when too deep.
    keep=True returns (parts, the separators found)."""
    parts, found, depth, start, i = [], [], 0, 0, 0
    firsts = {x[0] for x in seps}
    while i < len(s):
        sep = next((x for x in seps if s.startswith(x, i)), None) if depth == 0 and s[i] in firsts else None
        if sep:
            parts.append(s[start:i])
            found.append(sep)
            i += len(sep)
            start = i
            continue
        c = s[i]
        if c == "\\" and s[i + 1:i + 2] in ("{", "}"):
            c = s[i + 1]
            i += 1
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if depth > MAX_DEPTH:
            raise ParseError("nested too deeply")
        i += 1
    parts.append(s[start:])
    return (parts, found) if keep else parts


def _enclosing(s):
    """(open, close, inner) when s is one bracketed group whose first bracket closes at the end, else None."""
    if s.startswith("\\{") and s.endswith("\\}"):
        o, c, inner = "{", "}", s[2:-2]
    elif s[:1] == "{" and s[-1:] == "}" and len(_split_top(s[1:-1], ",")) > 1:  # {-2021, 2021}: a plain-brace set
        o, c, inner = "{", "}", s[1:-1]
    elif s[:1] in "([" and s[-1:] in ")]":
        o, c, inner = s[0], s[-1], s[1:-1]
    elif s.startswith("\\langle") and s.endswith("\\rangle"):
        o, c, inner = "(", ")", s[7:-7]
    else:
        return None
    depth = 0
    for j, ch in enumerate(inner):  # the opening bracket must not close before the end: (a+5)(b+2) is no group
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            return None
    return (o, c, inner) if depth == 0 else None


def _expand_pm(s):
    """1 \\pm \\sqrt{19} -> ["1 + \\sqrt{19}", "1 - \\sqrt{19}"]; every \\pm takes the same sign, \\mp the other."""
    if "\\pm" not in s and "\\mp" not in s:
        return [s]
    return [s.replace("\\pm", a).replace("\\mp", b) for a, b in (("+", "-"), ("-", "+"))]


def _value(s, depth=0):
    """Cleaned answer -> value tree: matrix, thousands-separated number, union, bracketed group, bare list (of
    inequalities: a union), an inequality (an interval or a relation), base subscript, equation, or else an
    expression (kept as source text; _sympy parses it when it is compared)."""
    s = s.strip()
    if depth > MAX_DEPTH:
        raise ParseError("nested too deeply")
    if not s:
        raise ParseError("empty")
    m = _MATRIX.fullmatch(s)
    if m:
        rows = [r for r in (row.strip() for row in m.group(2).split("\\\\")) if r]
        cells = [[c.strip() for c in row.split("&")] for row in rows]
        if not cells or len({len(r) for r in cells}) != 1:
            raise ParseError("ragged matrix")
        return ("matrix", [[_value(c, depth + 1) for c in row] for row in cells])
    if _THOUSANDS.fullmatch(s):
        return ("expr", s.replace(",", ""))
    m = _VAR_IN.match(s)
    s = s[m.end():] if m else s  # x \in [-2,7] -> [-2,7]
    parts = _split_top(s, "\\cup")
    if len(parts) > 1:
        return ("union", [_value(p, depth + 1) for p in parts])
    group = _enclosing(s)
    if group:
        o, c, inner = group
        items = _split_top(inner, ",")
        if o == "{":
            return _set([v for p in items for v in _pm_values(p, depth)])
        if len(items) > 1:
            return ("seq", o, c, [_value(p, depth + 1) for p in items])
    items = _split_top(s, ",")
    if len(items) > 1 and all(_RELATION.search(p) for p in items):  # x < -2, x > 7 (from "or"): a union
        return ("union", [_value(p, depth + 1) for p in items])
    if len(items) > 1 or "\\pm" in s or "\\mp" in s:
        return _set([v for p in items for v in _pm_values(p, depth)])
    relation = _relation(s, depth) if _RELATION.search(s) else None
    if relation:
        return relation
    m = _BASE.fullmatch(s)
    if m and re.search(r"\d", m.group(1)) and 2 <= int(m.group(2)) <= 36:
        return ("base", m.group(1).lstrip("0") or "0", int(m.group(2)))
    sides = _split_top(s, "=")
    if len(sides) == 2:
        return ("eq", sides[0].strip(), sides[1].strip())
    if len(sides) > 2:
        raise ParseError("chained equation")
    return ("expr", s)


_FLIP = {">": "<", "≥": "≤"}


def _relation(s, depth):
    """An inequality or a chain of them -> an interval when it bounds one letter (-2 ≤ x ≤ 7 = [-2,7],
    x > 3 = (3, \\infty), x ≠ 2 = (-\\infty, 2) ∪ (2, \\infty)), else ("rel", ops, values); None when there is
    no relation at the top."""
    parts, ops = _split_top(s, "<", ">", "≤", "≥", "≠", keep=True)
    if not ops:
        return None
    if all(o in ">≥" for o in ops):  # a > b ≥ c  ->  c ≤ b < a
        parts, ops = parts[::-1], [_FLIP[o] for o in reversed(ops)]
    parts = [p.strip() for p in parts]
    if any(not p for p in parts):
        raise ParseError("relation without a side")
    var = [bool(re.fullmatch(_NAME, p)) for p in parts]
    bracket = {"<": ("(", ")"), "≤": ("[", "]")}
    if len(parts) == 3 and var[1] and all(o in "<≤" for o in ops) and _ordered(*parts[::2]):
        lo, hi = _value(parts[0], depth + 1), _value(parts[2], depth + 1)
        return ("seq", bracket[ops[0]][0], bracket[ops[1]][1], [lo, hi])
    if len(parts) == 2 and var in ([True, False], [False, True]):
        a = _value(parts[var[0]], depth + 1)  # the side that is not the letter
        low, high = ("expr", "-\\infty"), ("expr", "\\infty")
        if ops[0] == "≠":  # x ≠ a -> (-\infty, a) ∪ (a, \infty)
            return ("union", [("seq", "(", ")", [low, a]), ("seq", "(", ")", [a, high])])
        if var[0]:  # x < a -> (-\infty, a)
            return ("seq", "(", bracket[ops[0]][1], [low, a])
        return ("seq", bracket[ops[0]][0], ")", [a, high])
    return ("rel", tuple(ops), [_value(p, depth + 1) for p in parts])


def _ordered(lo, hi):
    """False when lo < hi is false for two numbers: 8 < x < -2 is empty, not the point (8, -2)."""
    a, b = _sympy(lo), _sympy(hi)
    if not (a.is_number and b.is_number):
        return True
    d = sympy.N(b - a, 15)  # a fixed precision, not sympy's open-ended a < b: this runs outside the worker
    return bool(d.is_extended_real and d > 0)


def _set(values):
    """An unordered answer list; identical elements are kept once (they would only be compared again)."""
    return ("set", list({repr(v): v for v in values}.values()))


def _pm_values(p, depth):
    return [_value(q, depth + 1) for q in _expand_pm(p.strip()) if q.strip()]


@lru_cache(maxsize=8192)
def _parse(answer):
    """answer -> (normalised string, is_word, word form, value tree or None); cached: golds repeat a lot."""
    s, is_word = _clean(answer)
    key, word = re.sub(r"\s+", "", s), re.sub(r"[^a-z0-9]", "", s.lower())
    if is_word:
        return key, True, word, None
    try:
        return key, False, word, _value(s)
    except (ParseError, RecursionError):
        return key, False, word, None


# ---------------------------------------------------------------------------------------------------------------
# Expressions: whitelist tokenizer + recursive-descent parser building sympy objects
# ---------------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|(\\[A-Za-z]+)|([A-Za-z])|([-+*/^_(){}\[\]!]))")
_FUNCS = {"sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec,
          "csc": sympy.csc, "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan,
          "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh, "ln": sympy.log, "log": sympy.log,
          "exp": sympy.exp}
_GREEK = set("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta kappa lambda mu nu xi rho sigma "
             "tau phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma Phi Psi Omega".split())
_CONSTS = {"pi": sympy.pi, "infty": sympy.oo, "e": sympy.E, "i": sympy.I}
_TIMES = {"*", "\\cdot", "\\times", "\\ast"}
_DIVIDE = {"/", "\\div"}


def _tokenize(s):
    tokens, i = [], 0
    s = s.rstrip()
    while i < len(s):
        m = _TOKEN.match(s, i)
        if not m:
            raise ParseError(f"unexpected character {s[i]!r}")
        num, cmd, letter, op = m.groups()
        if num is not None:
            if len(num) > MAX_NUM_DIGITS:
                raise ParseError("number literal too long")
            tokens.append(("num", num))
        elif cmd is not None:
            name = cmd[1:]
            if not (name in _FUNCS or name in _GREEK or name in ("pi", "infty", "frac", "sqrt", "binom")
                    or cmd in _TIMES or cmd in _DIVIDE):
                raise ParseError(f"command {cmd} is not whitelisted")
            tokens.append(("cmd", cmd))
        elif letter is not None:
            tokens.append(("letter", letter))
        else:
            tokens.append(("op", op))
        i = m.end()
    return tokens


def _number(text):
    if "." in text:
        whole, frac = text.split(".")
        return sympy.Rational(int(whole or "0") * 10 ** len(frac) + int(frac or "0"), 10 ** len(frac))
    return sympy.Integer(int(text))


def _bits(r):
    return max(abs(r.p).bit_length(), r.q.bit_length())


def _pow(base, exp):
    """base**exp, refused before sympy evaluates it when the result would be huge (9^{9^{9^9}})."""
    trivial = base.is_Rational and abs(base) in (0, 1)
    if exp.is_Rational and not trivial:
        if base.is_Rational and _bits(base) * abs(exp.p) > MAX_BITS * exp.q:
            raise ParseError("power too large")
        if not base.is_Rational and abs(exp) > MAX_EXP:
            raise ParseError("exponent too large")
    elif exp.is_number and not trivial:
        size = abs(complex(exp.evalf(15)))
        if not size < (MAX_BITS if base.is_Rational else MAX_EXP):
            raise ParseError("exponent too large")
    return sympy.Pow(base, exp)


def _factorial(n):
    if n.is_Integer and 0 <= n <= MAX_EXP:
        return sympy.factorial(n)
    if n.free_symbols and not n.is_number:
        return sympy.factorial(n)
    raise ParseError("factorial out of range")


def _binom(n, k):
    if (n.is_Integer and 0 <= n <= MAX_EXP * 5) or (n.free_symbols and k.is_Integer and 0 <= k <= 50):
        return sympy.binomial(n, k)
    raise ParseError("binomial out of range")


class _Parser:
    """Recursive descent over the token list; grammar (highest binding last):
        expr   := term (('+' | '-') term)*
        term   := ('+' | '-')* factor ((op factor) | factor)*        op in * \\cdot \\times / \\div; no op = implicit
        factor := atom ('^' arg)* '!'*
        atom   := number | letter ['_' arg] | \\pi | \\infty | greek | '(' expr ')' | '[' expr ']' | '{' expr '}'
                | \\frac arg arg | \\sqrt ['[' expr ']'] arg | \\binom arg arg | func ['^' arg] ['_' arg] (group | factor+)
        arg    := '{' expr '}' | '(' expr ')' | one digit | atom           (\\frac12, \\sqrt2, x^2)
    """

    def __init__(self, tokens):
        self.tokens, self.pos, self.depth = tokens, 0, 0

    def peek(self, offset=0):
        j = self.pos + offset
        return self.tokens[j] if j < len(self.tokens) else (None, None)

    def take(self, kind=None, value=None):
        tok = self.peek()
        if tok[0] is None or (kind and tok[0] != kind) or (value and tok[1] != value):
            raise ParseError(f"expected {value or kind}, got {tok[1]}")
        self.pos += 1
        return tok

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("nested too deeply")

    def parse(self):
        e = self.expr()
        if self.pos != len(self.tokens):
            raise ParseError(f"unexpected {self.peek()[1]}")
        return e

    def expr(self):
        self.enter()
        e = self.term()
        while self.peek() in (("op", "+"), ("op", "-")):
            sign = self.take()[1]
            t = self.term()
            e = e + t if sign == "+" else e - t
        self.depth -= 1
        return e

    def starts_factor(self):
        kind, value = self.peek()
        return kind in ("num", "letter") or value == "(" or value == "{" or (
            kind == "cmd" and value not in _TIMES and value not in _DIVIDE)

    def term(self):
        negative = False
        while self.peek() in (("op", "+"), ("op", "-")):
            negative ^= self.take()[1] == "-"
        start = self.pos
        e = self.factor()
        first_is_int = self.pos == start + 1 and e.is_Integer  # one integer literal, for mixed numbers
        count = 1
        while True:
            kind, value = self.peek()
            if value in _TIMES or value in _DIVIDE:
                self.take()
                f = self.factor()
                e = e * f if value in _TIMES else e * _pow(f, sympy.Integer(-1))
            elif self.starts_factor():
                if kind == "num":
                    raise ParseError("two numbers side by side")
                start = self.pos
                f = self.factor()
                literal = all(t[0] == "num" or t[1] in "{}" for t in self.tokens[start + 1:self.pos])
                if count == 1 and first_is_int and value == "\\frac" and literal and f.is_Rational:
                    e = e + f  # mixed number 1\frac{4}{5} = 9/5
                else:
                    e = e * f
            else:
                break
            count += 1
        return -e if negative else e

    def factor(self):
        e = self.atom()
        while self.peek() == ("op", "^"):
            self.take()
            e = _pow(e, self.arg(signed=True))
        while self.peek() == ("op", "!"):
            self.take()
            e = _factorial(e)
        return e

    def group(self, close):
        self.take()
        e = self.expr()
        self.take("op", close)
        return e

    def arg(self, signed=False):
        kind, value = self.peek()
        if value == "{":
            return self.group("}")
        if value == "(":
            return self.group(")")
        if signed and value in ("-", "+"):
            self.take()
            a = self.arg()
            return -a if value == "-" else a
        if kind == "num" and len(value) > 1 and "." not in value:
            self.tokens[self.pos:self.pos + 1] = [("num", value[0]), ("num", value[1:])]  # \frac12 -> 1, 2
        return self.atom()

    def atom(self):
        self.enter()
        kind, value = self.take()
        if kind == "num":
            e = _number(value)
        elif kind == "letter":
            e = _CONSTS.get(value) if value in ("e", "i") else sympy.Symbol(value)
            if self.peek() == ("op", "_"):
                self.take()
                sub = self.arg()
                if not (sub.is_Integer or sub.is_Symbol):
                    raise ParseError("subscript must be a number or a letter")
                e = sympy.Symbol(f"{value}_{sub}")
        elif kind == "op" and value in ("(", "[", "{"):
            self.pos -= 1
            e = self.group({"(": ")", "[": "]", "{": "}"}[value])
        elif kind == "cmd":
            e = self.command(value[1:])
        else:
            raise ParseError(f"unexpected {value}")
        self.depth -= 1
        return e

    def command(self, name):
        if name in ("pi", "infty"):
            return _CONSTS[name]
        if name in _GREEK:
            return sympy.Symbol(name)
        if name == "frac":
            num, den = self.arg(), self.arg()
            return num * _pow(den, sympy.Integer(-1))
        if name == "binom":
            return _binom(self.arg(), self.arg())
        if name == "sqrt":
            index = self.group("]") if self.peek() == ("op", "[") else sympy.Integer(2)
            if not (index.is_Integer and 2 <= index <= MAX_EXP):
                raise ParseError("bad root index")
            return _pow(self.arg(), 1 / index)
        power, base = None, None
        while self.peek() in (("op", "^"), ("op", "_")):
            if self.take()[1] == "^":
                power = self.arg(signed=True)
            else:
                base = self.arg()
        if self.peek()[1] in ("(", "{"):
            x = self.arg()
        else:  # \sin 2x, \cot x: the product of the factors that follow, up to an operator or a function
            x = self.factor()
            while self.starts_factor() and self.peek()[1][1:] not in _FUNCS:
                x = x * self.factor()
        if name == "log" and base is not None:
            f = sympy.log(x, base)
        elif name == "exp":
            f = _pow(sympy.E, x)
        else:
            f = _FUNCS[name](x)
        return _pow(f, power) if power is not None else f


@lru_cache(maxsize=8192)
def _sympy(src):
    """Expression source -> sympy expression; ParseError when outside the whitelist or the bounds."""
    e = _Parser(_tokenize(src)).parse()
    if e.has(sympy.zoo, sympy.nan):
        raise ParseError("undefined value")
    return e


# ---------------------------------------------------------------------------------------------------------------
# Symbolic comparison under a hard time limit: a persistent worker process, killed and restarted on timeout
# ---------------------------------------------------------------------------------------------------------------

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
    d = a - b
    if d == 0:
        return True
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    for point in _numeric_points(symbols) if symbols else [{}]:
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


def _worker_task(task):
    op, a_src, b_src = task
    if op == "expr":
        return _symbolic_equal(_sympy(a_src), _sympy(b_src))
    (l1, r1), (l2, r2) = a_src, b_src
    return _proportional(_sympy(l1) - _sympy(r1), _sympy(l2) - _sympy(r2))


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


# ---------------------------------------------------------------------------------------------------------------
# Equality of value trees
# ---------------------------------------------------------------------------------------------------------------

def _expr_equal(a_src, b_src, deadline):
    a, b = _sympy(a_src), _sympy(b_src)
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


@lru_cache(maxsize=8192)
def _label(lhs):
    """The left side of an equation without spaces when it is a name ("x", "(p, q)", "f(x)", "AB", "|AB|",
    "\\frac{NO}{BO}"): the equation is then a labelled answer. None otherwise."""
    return re.sub(r"\s+", "", lhs) if _LABEL.fullmatch(lhs.strip()) else None


def _equal(p, g, deadline):
    if time.monotonic() > deadline:
        return False
    kp, kg = p[0], g[0]
    lp = _label(p[1]) if kp == "eq" else None
    lg = _label(g[1]) if kg == "eq" else None
    if lp and (kg != "eq" or lp == lg):
        return _equal(_value(p[2]), g if kg != "eq" else _value(g[2]), deadline)  # x = 5 against 5
    if lg and kp != "eq":
        return _equal(p, _value(g[2]), deadline)
    if (kp == "set") != (kg == "set"):  # an answer and a list of answers: {3} = 3, 3, 3 = 3
        return _same_set(p[1] if kp == "set" else [p], g[1] if kg == "set" else [g], deadline)
    if kp == "matrix" and kg == "seq" and g[1:3] == ("(", ")"):
        return _vector(p) is not None and _equal(_vector(p), g, deadline)
    if kg == "matrix" and kp == "seq" and p[1:3] == ("(", ")"):
        return _vector(g) is not None and _equal(p, _vector(g), deadline)
    if kp == "base" or kg == "base":
        return _base_equal(p, g)
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
    if kp == "rel":
        return p[1] == g[1] and all(_equal(x, y, deadline) for x, y in zip(p[2], g[2]))
    if kp == "seq":
        return p[1:3] == g[1:3] and len(p[3]) == len(g[3]) and all(
            _equal(x, y, deadline) for x, y in zip(p[3], g[3]))
    if kp in ("set", "union"):
        return _same_set(p[1], g[1], deadline)
    if kp == "matrix":
        return len(p[1]) == len(g[1]) and len(p[1][0]) == len(g[1][0]) and all(
            _equal(x, y, deadline) for rx, ry in zip(p[1], g[1]) for x, y in zip(rx, ry))
    return False


def _vector(m):
    """A one-row or one-column matrix as the ordered tuple of its entries; None for a full matrix."""
    rows = m[1]
    if len(rows) == 1 or len(rows[0]) == 1:
        return ("seq", "(", ")", [x for row in rows for x in row])
    return None


def _base_equal(p, g):
    def digits(v):
        if v[0] == "base":
            return v[1], v[2]
        if v[0] == "expr" and re.fullmatch(r"[0-9]+", v[1].strip()):
            return v[1].strip().lstrip("0") or "0", None
        return None, None
    (dp, bp), (dg, bg) = digits(p), digits(g)
    return dp is not None and dp == dg and (bp is None or bg is None or bp == bg)
