"""The whitelist LaTeX parser behind reward.py. A reader of the RL loop may skip this module.

What it does: it turns one final answer into a normalised string and a value tree (lists, tuples, intervals,
relations, equations, assignments, ratios, matrices and matrix expressions, bases) whose expressions become sympy
objects, built token by token.
Why it exists: model output is untrusted, so it never reaches eval/exec/sympify/parse_expr: a whitelist tokenizer
and a small recursive-descent parser build sympy objects directly (sympy.Integer, Rational, Symbol, sqrt, sin, ...),
and anything outside the whitelist or the bounds raises ParseError, which reward.py reads as "equal to nothing".

The bounds hold *before* sympy evaluates anything: answer length, nesting depth, the digits of a number literal,
and the size of a power (9^{9^{9^9}} or (10^{10})! are refused by estimating the result's bit length from the
operands), sums and products with numeric limits have at most MAX_EXP terms. reward.py states the rules of
equality and runs the symbolic comparisons in a time-limited worker, where the builders below that solve or
evaluate (solution_set, matrix_value) run; a sum from to_sympy stays unevaluated until the worker asks for it.

    clean(answer)      -> (cleaned string, is_word)   cosmetics dropped (one spelling table), \\text{..} unwrapped
    value_tree(clean)  -> ("expr", src) | ("eq", lhs, rhs) | ("seq", open, close, [values]) | ("set", [values])
                          | ("union", [values]) | ("rel", ops, [values]) | ("matrix", [[value]])
                          | ("base", digits, base) | ("assign", names, [values]) | ("matexpr", skeleton, grids)
                          (a ratio a : b is ("seq", ":", ":", [values]))
    to_sympy(src)      -> a sympy expression of the whitelisted LaTeX src
    label(lhs)         -> the left side of an equation without spaces when it is a name (x, f(x), AB), else None
    solution_set(tree) -> the sympy set of reals an interval, union or one-variable relation describes (worker)
    matrix_form(tree), matrix_value(form) -> a matrix (expression) as (skeleton, grids), and its value (worker)
    quotient, vector, in_order, base_digits -> views of a tree that reward.py compares
"""
import re
from functools import lru_cache

import sympy

MAX_ANSWER_LEN = 1000   # characters of one final answer; longer ones are "not equal" unless identical
MAX_DEPTH = 60          # nesting of brackets / recursive parser calls
MAX_NUM_DIGITS = 200    # characters of one number literal
MAX_BITS = 1 << 15      # largest rational (numerator or denominator) a power may produce, in bits (~9,900 digits)
MAX_EXP = 1000          # largest |exponent| on a non-rational base, largest n in n! and \binom{n}{k}
MAX_DEGREE = 20         # largest sum of |exponents| in a relation solved for its set of numbers (x^{999} > 2: refused)


class ParseError(ValueError):
    """The answer is outside the whitelist or the bounds: it is equal to nothing (but an identical string)."""


# ---------------------------------------------------------------------------------------------------------------
# Normalisation: LaTeX string -> cleaned string (whitespace kept for the tokenizer)
# ---------------------------------------------------------------------------------------------------------------

# One table, LaTeX spelling -> the one spelling the parser knows; " " drops a cosmetic. A command matches only as a
# whole word (\le is not the start of \left).
_SPELLING = {
    **dict.fromkeys(["$", "\\$", "~", "\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\>",
                     "\\ ", "\\quad", "\\qquad", "\\%", "%", "\\circ", "\\degree", "°", "\\limits"], " "),
    "\\\\": "\\\\",  # a matrix row break stays (listed so that "\\," is not read as "\" + "\,")
    "{,}": ",",  # the braced thousands separator: 14{,}916 (as in MATH's own solutions)
    **dict.fromkeys(["\\dfrac", "\\tfrac", "\\cfrac"], "\\frac"), **dict.fromkeys(["\\dbinom", "\\tbinom"], "\\binom"),
    **dict.fromkeys(["\\textnormal", "\\textbf", "\\textrm", "\\textit", "\\mbox", "\\mathrm", "\\mathbf",
                     "\\mathit", "\\operatorname"], "\\text"),
    **dict.fromkeys(["\\le", "\\leq", "\\leqslant", "⩽"], "≤"),
    **dict.fromkeys(["\\ge", "\\geq", "\\geqslant", "⩾"], "≥"),
    "\\lt": "<", "\\gt": ">", "\\ne": "≠", "\\neq": "≠", "<=": "≤", ">=": "≥", "!=": "≠", "\\approx": "≈",
    **dict.fromkeys(["\\lvert", "\\rvert", "\\vert"], "|"),
    "\u2212": "-", "×": "\\times ", "·": "\\cdot ", "π": "\\pi ", "∞": "\\infty ", "√": "\\sqrt ",
}
_SPELLING_RE = re.compile("|".join(re.escape(k) + ("(?![a-zA-Z])" if k[1:].isalpha() else "")
                                   for k in sorted(_SPELLING, key=len, reverse=True)))
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")
_WRAPPER = re.compile(r"\\text\s*\{")
RELATION = re.compile(r"[<>≤≥≠]")
_UNIT_TAIL = re.compile(r"\s+[A-Za-z]{2,}(?:\s+[A-Za-z]+)*(?:\s*\^\s*\{?[23]\}?)?$")
_WORDS = re.compile(r"[A-Za-z()\s.,'\-]+")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_CELLS = r"((?:(?!\\(?:begin|end)\{).)*)"  # a matrix's content: never another \begin or \end
_MATRIX = re.compile(r"[(\[]?\s*\\begin\{([pbBvV]?matrix|array)\}(?:\{[lcr|\s]*\})?" + _CELLS + r"\\end\{\1\}\s*[)\]]?",
                     re.S)
# a matrix inside an expression: pmatrix / bmatrix, or an array in brackets (a vmatrix is a determinant: refused)
_MATRIX_IN = re.compile(r"\\begin\{([pbB]?matrix)\}" + _CELLS + r"\\end\{\1\}"
                        r"|\[\s*\\begin\{array\}(?:\{[lcr|\s]*\})?" + _CELLS + r"\\end\{array\}\s*\]", re.S)
MAX_MATRICES = 8        # matrices in one matrix expression, each at most MAX_MATRIX_SIDE rows and columns
MAX_MATRIX_SIDE = 10
# a name on the left of "=": x, a_1, (p, q), f(x), f(3), AB, |AB|, \frac{NO}{BO}, \angle ABC -- no operator
NAME = r"[A-Za-z](?:_\{?\w+\}?)?"  # x, a_1, a_{12}
_PART = rf"(?:{NAME}|[A-Za-z]{{2,}}|\[[A-Za-z]+\])"  # a term of a ratio: S_{{ABC}}, AB, [ABC]
_LABEL = re.compile(rf"{NAME}|\(\s*{NAME}(?:\s*,\s*{NAME})+\s*\)"  # x, (p, q)
                    rf"|{_PART}(?:\s*:\s*{_PART})+"  # S_{{ABC}} : S, V_1 : V_2
                    r"|[A-Za-z]\([\w.\s,]*\)"  # f(x), f(3), g(x, y)
                    r"|[A-Za-z]{2,}|\|[A-Za-z]{2,}\||\\frac\{[A-Za-z]+\}\{[A-Za-z]+\}"  # AB, |AB|, \frac{NO}{BO}
                    r"|(?:m\s*)?\\(?:angle|overline)\s*\{?\s*[A-Za-z]+\s*\}?")  # \angle ABC, m\angle A, \overline{AB}
_BOUNDED = re.compile(rf"{NAME}|[A-Za-z]\(\s*[A-Za-z]\s*\)")  # what a relation bounds: x, a_1, f(x)
_VAR_IN = re.compile(r"[A-Za-z]\s*\\in\s*")
_BASE = re.compile(r"([0-9A-Za-z]+)_\{?(\d{1,2})\}?")


def braced(text, start):
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


def _unwrap_text(s):
    """Replace \\text{..}-like wrappers by their content; a trailing wrapper of words (a unit) is dropped.

    Returns (string, whole) where whole is True when the entire answer was one wrapper."""
    m = _WRAPPER.match(s)
    if m:
        end = braced(s, m.end() - 1)
        if end == len(s):
            return s[m.end():-1].strip(), True
    out, i = [], 0
    for m in _WRAPPER.finditer(s):
        if m.start() < i:
            continue
        end = braced(s, m.end() - 1)
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
def clean(s):
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
    s = re.sub(r"\s+or\s+|;" if RELATION.search(s) else r"\s+(?:or|and)\s+|;", ",", s)
    return s, False


@lru_cache(maxsize=8192)
def label(lhs):
    """The left side of an equation without spaces when it is a name ("x", "(p, q)", "f(x)", "AB", "|AB|",
    "\\frac{NO}{BO}"): the equation is then a labelled answer. None otherwise."""
    return re.sub(r"\s+", "", lhs) if _LABEL.fullmatch(lhs.strip()) else None


# ---------------------------------------------------------------------------------------------------------------
# Structure: cleaned string -> value tree of ("expr", src) | ("eq", lhs, rhs) | ("seq", open, close, [values]) |
# ("set", [values]) | ("union", [values]) | ("rel", ops, [values]) | ("matrix", [[src]]) | ("base", digits, base) |
# ("assign", names, [values]) | ("matexpr", skeleton, grids)
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


def value_tree(s, depth=0):
    """Cleaned answer -> value tree: matrix, thousands-separated number, union, bracketed group, bare list (of
    inequalities: a union), an inequality (an interval or a relation), base subscript, equation, or else an
    expression (kept as source text; to_sympy parses it when it is compared)."""
    s = s.strip()
    if depth > MAX_DEPTH:
        raise ParseError("nested too deeply")
    if not s:
        raise ParseError("empty")
    m = _MATRIX.fullmatch(s)
    if m:
        return ("matrix", [[value_tree(c, depth + 1) for c in row] for row in _grid(m.group(2))])
    if _THOUSANDS.fullmatch(s):
        return ("expr", s.replace(",", ""))
    m = _VAR_IN.match(s)
    s = s[m.end():] if m else s  # x \in [-2,7] -> [-2,7]
    parts = _split_top(s, "\\cup")
    if len(parts) > 1:
        return ("union", [value_tree(p, depth + 1) for p in parts])
    group = _enclosing(s)
    if group:
        o, c, inner = group
        items = _split_top(inner, ",")
        if o == "{":
            return _set([v for p in items for v in _pm_values(p, depth)])
        if len(items) > 1:
            return ("seq", o, c, [value_tree(p, depth + 1) for p in items])
    items = _split_top(s, ",")
    if len(items) > 1 and all(RELATION.search(p) for p in items):  # x < -2, x > 7 (from "or"): a union
        return ("union", [value_tree(p, depth + 1) for p in items])
    assigned = _assignments(items, depth) if len(items) > 1 else None
    if assigned:
        return assigned
    if len(items) > 1 or "\\pm" in s or "\\mp" in s:
        return _set([v for p in items for v in _pm_values(p, depth)])
    approx = _split_top(s, "≈") if "≈" in s else [s]
    if len(approx) > 1:  # the exact side is the answer: x = 1/3 ≈ 0.33 -> x = 1/3, x ≈ 11 -> x = 11
        exact = approx[0].strip()
        return ("eq", exact, approx[1].strip()) if label(exact) else value_tree(exact, depth + 1)
    if "\\begin{" in s:
        return _matrix_expr(s)
    relation = _relation(s, depth) if RELATION.search(s) else None
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
    ratio = _split_top(s, ":") if ":" in s else [s]
    if len(ratio) > 1:  # 7 : 32, an ordered sequence (against a number: the quotient, see quotient())
        return ("seq", ":", ":", [value_tree(p, depth + 1) for p in ratio])
    return ("expr", s)


def vector(v):
    """A one-row or one-column matrix as the ordered tuple of its entries; a (..) tuple itself; else None."""
    if v[0] == "seq":
        return v if v[1:3] == ("(", ")") else None
    rows = v[1]
    return ("seq", "(", ")", [x for row in rows for x in row]) if len(rows) == 1 or len(rows[0]) == 1 else None


def in_order(v):
    """The values of an assignment, a bare list or a (..) tuple in the order written; [] for anything else."""
    if v[0] == "seq":
        return v[3] if v[1:3] == ("(", ")") else []
    return {"assign": v[2:3], "set": v[1:2]}.get(v[0], [[]])[0]


def base_digits(v):
    """(digits, base) of 52_8; (digits, None) of a plain integer; (None, None) of anything else."""
    if v[0] == "base":
        return v[1], v[2]
    if v[0] == "expr" and re.fullmatch(r"[0-9]+", v[1].strip()):
        return v[1].strip().lstrip("0") or "0", None
    return None, None


def quotient(v):
    """A two-term ratio a : b as the expression a / b; anything else unchanged."""
    if v[0] == "seq" and v[1] == ":" and len(v[3]) == 2 and all(x[0] == "expr" for x in v[3]):
        return ("expr", f"({v[3][0][1]})/({v[3][1][1]})")
    return v


def _assignments(items, depth):
    """p = 5, q = 2 -> ("assign", (p, q), [5, 2]), a tuple whose names say which value is which; a cycle repeated
    (p = 5, q = 2; p = 7, q = 2) -> a set of such tuples. None unless every item assigns a value to a name and the
    names are distinct unknowns repeating in one cycle: x = 1, x = 2 and x_1 = 1, x_2 = 2 are lists of values."""
    sides = [_split_top(p, "=") for p in items]
    names = [label(x[0]) if len(x) == 2 else None for x in sides]
    if not all(names) or any(n[0] == "(" for n in names):
        return None
    cycle = tuple(dict.fromkeys(names))
    k = len(cycle)
    if k < 2 or len(names) % k or names != list(cycle) * (len(names) // k) \
            or len({re.sub(r"_.*", "", n) for n in cycle}) < k:
        return None
    groups = [("assign", cycle, [value_tree(x[1], depth + 1) for x in sides[i:i + k]])
              for i in range(0, len(sides), k)]
    return groups[0] if len(groups) == 1 else _set(groups)


def _matrix_expr(s):
    """Arithmetic on matrices (A + B, \\frac15 A, A B, A^2) -> ("matexpr", skeleton, grids): each matrix is replaced
    by a placeholder \\mtxA, \\mtxB, ... in the skeleton, and its cells are kept as source. The worker evaluates it
    (matrix_value); here only its shape is checked."""
    grids, pieces, i = [], [], 0
    for m in _MATRIX_IN.finditer(s):
        if len(grids) == MAX_MATRICES:
            raise ParseError("too many matrices")
        grid = _grid(m.group(2) if m.group(1) else m.group(3))
        if len(grid) > MAX_MATRIX_SIDE or len(grid[0]) > MAX_MATRIX_SIDE:
            raise ParseError("matrix too large for arithmetic")
        pieces.append(f"{s[i:m.start()]} \\mtx{chr(65 + len(grids))} ")
        grids.append(tuple(map(tuple, grid)))
        i = m.end()
    skeleton = "".join(pieces) + s[i:]
    if not grids or "\\begin" in skeleton or "\\end" in skeleton:
        raise ParseError("not a matrix expression")
    _Parser(_tokenize(skeleton, matrices=True)).parse()  # the arithmetic around the matrices is whitelisted too
    return ("matexpr", skeleton, tuple(grids))


def _grid(content):
    """The cells of a matrix's content (rows split at \\\\, cells at &); ParseError when ragged."""
    rows = [r for r in (row.strip() for row in content.split("\\\\")) if r]
    cells = [[c.strip() for c in row.split("&")] for row in rows]
    if not cells or len({len(r) for r in cells}) != 1:
        raise ParseError("ragged matrix")
    return cells


def matrix_form(v):
    """A matrix or matrix expression value -> (skeleton, grids) for matrix_value; None for anything else."""
    if v[0] == "matexpr":
        return v[1], v[2]
    if v[0] == "matrix" and all(c[0] == "expr" for row in v[1] for c in row):
        return "\\mtxA", (tuple(tuple(c[1] for c in row) for row in v[1]),)
    return None


def matrix_value(form):
    """(skeleton, grids) -> a sympy matrix: sums, scalar multiples, products and small powers of the matrices.
    Runs in reward.py's time-limited worker."""
    skeleton, grids = form
    if any(len(g) > MAX_MATRIX_SIDE or len(g[0]) > MAX_MATRIX_SIDE for g in grids):
        raise ParseError("matrix too large for arithmetic")
    mats = {f"mtx{chr(65 + i)}": sympy.ImmutableMatrix([[to_sympy(c) for c in row] for row in grid])
            for i, grid in enumerate(grids)}

    def value(e):
        if e.is_Symbol and e.name in mats:
            return mats[e.name]
        if not any(x.name in mats for x in e.free_symbols):
            return e  # a scalar
        if e.is_Add or e.is_Mul:
            args = [value(a) for a in e.args]  # a product keeps the order of its matrices
            out = args[0]
            for a in args[1:]:
                out = out + a if e.is_Add else out * a
            return out
        if e.is_Pow and e.exp.is_Integer and 1 <= e.exp <= 20:
            return value(e.base) ** int(e.exp)
        raise ParseError("not matrix arithmetic")

    result = value(_Parser(_tokenize(skeleton, matrices=True)).parse())
    if not isinstance(result, sympy.MatrixBase):
        raise ParseError("not a matrix")
    return result


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
    var = [bool(_BOUNDED.fullmatch(p)) for p in parts]
    bracket = {"<": ("(", ")"), "≤": ("[", "]")}
    if len(parts) == 3 and var[1] and all(o in "<≤" for o in ops) and _ordered(*parts[::2]):
        lo, hi = value_tree(parts[0], depth + 1), value_tree(parts[2], depth + 1)
        return ("seq", bracket[ops[0]][0], bracket[ops[1]][1], [lo, hi])
    if len(parts) == 2 and var in ([True, False], [False, True]):
        a = value_tree(parts[var[0]], depth + 1)  # the side that is not the letter
        low, high = ("expr", "-\\infty"), ("expr", "\\infty")
        if ops[0] == "≠":  # x ≠ a -> (-\infty, a) ∪ (a, \infty)
            return ("union", [("seq", "(", ")", [low, a]), ("seq", "(", ")", [a, high])])
        if var[0]:  # x < a -> (-\infty, a)
            return ("seq", "(", bracket[ops[0]][1], [low, a])
        return ("seq", bracket[ops[0]][0], ")", [a, high])
    return ("rel", tuple(ops), [value_tree(p, depth + 1) for p in parts])


def _ordered(lo, hi):
    """False when lo < hi is false for two numbers: 8 < x < -2 is empty, not the point (8, -2)."""
    a, b = to_sympy(lo), to_sympy(hi)
    if not (a.is_number and b.is_number) or a.has(*_LIMITS) or b.has(*_LIMITS):
        return True
    d = sympy.N(b - a, 15)  # a fixed precision, not sympy's open-ended a < b: this runs outside the worker
    return bool(d.is_extended_real and d > 0)


_ALGEBRAIC = (sympy.Add, sympy.Mul, sympy.Pow, sympy.Abs, sympy.Symbol, sympy.Number, sympy.NumberSymbol)


def solution_set(v):
    """An interval, a union or a relation in one variable -> the sympy set of real numbers it describes:
    -x > -1 -> (-oo, 1), 1 ≤ |z| ≤ 3/2 -> [-3/2, -1] ∪ [1, 3/2]. Only relations built from + - * /, |..|, powers
    x^n (the |n| adding up to at most MAX_DEGREE) and c^{ax+b} (c > 0, small a and b), a chain of at most three
    sides: sympy's solver is wrong on periodic functions (sin x > 0 is not (0, pi)) and slow on high degrees.
    ParseError for anything else. Runs in reward.py's time-limited worker."""
    if v[0] == "union":
        return sympy.Union(*[solution_set(x) for x in v[1]])
    if v[0] == "seq" and v[1] in "([" and v[2] in ")]" and len(v[3]) == 2:
        lo, hi = (to_sympy(x[1]) if x[0] == "expr" else None for x in v[3])
        if lo is None or hi is None or not (lo.is_extended_real and hi.is_extended_real and bool(lo < hi)):
            raise ParseError("not an interval")
        return sympy.Interval(lo, hi, v[1] == "(", v[2] == ")")
    if v[0] != "rel" or len(v[2]) > 3 or any(x[0] != "expr" for x in v[2]):
        raise ParseError("not a set of real numbers")
    sides = [to_sympy(x[1]) for x in v[2]]
    symbols = set().union(*(e.free_symbols for e in sides))
    nodes = [a for e in sides for a in sympy.preorder_traversal(e)]
    if len(symbols) != 1 or any(not isinstance(a, _ALGEBRAIC) for a in nodes) \
            or sum(abs(a.exp) for a in nodes if a.is_Pow and a.exp.is_Rational) > MAX_DEGREE \
            or any(a.is_Pow and not (a.exp.is_Rational or a.base.is_positive and _small(a.exp)) for a in nodes):
        raise ParseError("not a relation in one variable of low degree")
    var, x = symbols.pop(), sympy.Dummy("x", real=True)
    sides = [e.subs(var, x) for e in sides]
    ops = {"<": sympy.Lt, "≤": sympy.Le, ">": sympy.Gt, "≥": sympy.Ge, "≠": sympy.Ne}
    result = sympy.S.Reals
    for a, op, b in zip(sides, v[1], sides[1:]):
        part = sympy.solveset(ops[op](a, b), x, sympy.S.Reals)
        if part.has(sympy.ConditionSet):
            raise ParseError("not solved")
        result = result.intersect(part)
    return result


def _small(e):
    """No power in e and every number in it at most MAX_DEGREE: the exponent of 2^{3x+1}, not of 10^{10^{10} x}."""
    return not e.has(sympy.Pow) and all(abs(a) <= MAX_DEGREE for a in sympy.preorder_traversal(e) if a.is_Number)


def _set(values):
    """An unordered answer list; identical elements are kept once (they would only be compared again)."""
    return ("set", list({repr(v): v for v in values}.values()))


def _pm_values(p, depth):
    return [value_tree(q, depth + 1) for q in _expand_pm(p.strip()) if q.strip()]


# ---------------------------------------------------------------------------------------------------------------
# Expressions: whitelist tokenizer + recursive-descent parser building sympy objects
# ---------------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|(\\[A-Za-z]+)|([A-Za-z])|([-+*/^_(){}\[\]!=|]))")
_FUNCS = {"sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec,
          "csc": sympy.csc, "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan,
          "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh, "ln": sympy.log, "log": sympy.log,
          "exp": sympy.exp}
_GREEK = set("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta kappa lambda mu nu xi rho sigma "
             "tau phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma Phi Psi Omega".split())
_CONSTS = {"pi": sympy.pi, "infty": sympy.oo, "e": sympy.E, "i": sympy.I}
_TIMES = {"*", "\\cdot", "\\times", "\\ast"}
_DIVIDE = {"/", "\\div"}
_LIMITS = (sympy.Sum, sympy.Product)


def _tokenize(s, matrices=False):
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
            if not (name in _FUNCS or name in _GREEK or name in ("pi", "infty", "frac", "sqrt", "binom", "sum", "prod")
                    or cmd in _TIMES or cmd in _DIVIDE or (matrices and re.fullmatch(r"mtx[A-H]", name))):
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
    elif exp.has(*_LIMITS):
        raise ParseError("a sum in an exponent")  # evaluating it here could take long
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
                | '|' expr '|'
                | \\frac arg arg | \\sqrt ['[' expr ']'] arg | \\binom arg arg | func ['^' arg] ['_' arg] (group | factor+)
                | (\\sum | \\prod) '_' '{' letter '=' expr '}' '^' arg term    (limits in either order; unevaluated)
                | \\mtxA .. \\mtxH    (a matrix placeholder, only in matrix expressions: a non-commuting symbol)
        arg    := '{' expr '}' | '(' expr ')' | one digit | atom           (\\frac12, \\sqrt2, x^2)
    """

    def __init__(self, tokens):
        self.tokens, self.pos, self.depth, self.bound, self.bars = tokens, 0, 0, [], 0

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
        return kind in ("num", "letter") or value == "(" or value == "{" or (value == "|" and not self.bars) or (
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
            e = _CONSTS[value] if value in ("e", "i") and value not in self.bound else sympy.Symbol(value)
            if self.peek() == ("op", "_"):
                self.take()
                sub = self.arg()
                if not (sub.is_Integer or sub.is_Symbol):
                    raise ParseError("subscript must be a number or a letter")
                e = sympy.Symbol(f"{value}_{sub}")
        elif kind == "op" and value in ("(", "[", "{"):
            self.pos -= 1
            e = self.group({"(": ")", "[": "]", "{": "}"}[value])
        elif value == "|":  # |x - 1|; inside the bars a "|" closes, it starts no factor
            self.bars += 1
            e = sympy.Abs(self.expr())
            self.bars -= 1
            self.take("op", "|")
        elif kind == "cmd":
            e = self.command(value[1:])
        else:
            raise ParseError(f"unexpected {value}")
        self.depth -= 1
        return e

    def command(self, name):
        if name in ("pi", "infty"):
            return _CONSTS[name]
        if name.startswith("mtx"):
            return sympy.Symbol(name, commutative=False)
        if name in ("sum", "prod"):
            limits = {}
            while self.peek() in (("op", "_"), ("op", "^")) and self.peek()[1] not in limits:
                if self.take()[1] == "^":
                    limits["^"] = self.arg()
                else:  # _{k=1}
                    self.take("op", "{")
                    var = self.take("letter")[1]
                    self.take("op", "=")
                    limits["_"] = self.expr()
                    self.take("op", "}")
            span = limits["^"] - limits["_"] if len(limits) == 2 else None
            if span is None or (span.is_number and not (span.is_Integer and -1 <= span <= MAX_EXP)):
                raise ParseError("a sum needs both limits, at most MAX_EXP terms apart when they are numbers")
            self.bound.append(var)  # the index is a variable in the body, even i or e
            body = self.term()
            self.bound.pop()
            return (sympy.Sum if name == "sum" else sympy.Product)(body, (sympy.Symbol(var), limits["_"], limits["^"]))
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
def to_sympy(src):
    """Expression source -> sympy expression; ParseError when outside the whitelist or the bounds."""
    e = _Parser(_tokenize(src)).parse()
    if e.has(sympy.zoo, sympy.nan):
        raise ParseError("undefined value")
    return e
