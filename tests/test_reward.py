"""Tests for reward.py: labelled answer pairs, extraction, the benchmark gold answers, and hostile inputs.

Every label below was written by hand from the rules in reward.py's docstring, not copied from the code's output.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from benchmarks import diff_mathverify
from conftest import REPO
from reward import extract_answer, is_equiv, math_reward

MATRIX_2X2 = "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"


def pm(*rows):
    return "\\begin{pmatrix} " + " \\\\ ".join(rows) + " \\end{pmatrix}"


# (gold, prediction, expected)
PAIRS = [
    # integers: leading zeros, thousands separators, trailing .0
    ("25", "025", True), ("025", "25", True), ("0", "000", True), ("1000", "1,000", True),
    ("10080", "10,\\!080", True), ("11,\\! 111,\\! 111,\\! 100", "11111111100", True), ("58,500", "58500", True),
    ("5", "5.0", True), ("5", "5.00", True), ("-4", "-4.0", True), ("10", "100", False), ("3", "3.5", False),
    ("1000", "100", False), ("25", "52", False), ("-5", "5", False), ("12", "1,2", False),
    # fractions and decimals (exact only)
    ("\\frac{1}{2}", "0.5", True), ("\\frac12", "\\frac{1}{2}", True), ("\\dfrac{1}{2}", "1/2", True),
    ("\\tfrac{3}{4}", "\\frac 34", True), ("\\frac9{19}", "9/19", True), ("\\frac43", "\\frac{4}{3}", True),
    ("\\frac{1}{3}", "0.333", False), ("\\frac{1}{3}", "0.3333333333", False), ("\\frac{1}{3}", "\\frac{2}{6}", True),
    ("\\dfrac{33}{100}", "0.33", True), ("\\dfrac{17}{50}", "0.34", True), (".35625", "\\frac{57}{160}", True),
    (".0000672", "6.72 \\times 10^{-5}", True), ("0.15", ".15", True), ("3.21", "3.2", False),
    ("\\frac{2}{3}", "\\frac{3}{2}", False), ("-\\frac{3}{8}", "\\frac{-3}{8}", True), ("-\\frac{3}{8}", "\\frac{3}{8}", False),
    ("1\\frac{4}{5}", "\\frac{9}{5}", True), ("137 \\frac{1}{2}", "137.5", True), ("1\\frac{4}{5}", "\\frac{4}{5}", False),
    ("\\frac{1997}{2}", "998.5", True), ("4.5", "\\frac{9}{2}", True), ("4.5", "4.6", False),
    # radicals, pi, powers, products
    ("3\\sqrt{13}", "3 \\sqrt {13}", True), ("3\\sqrt{13}", "\\sqrt{117}", True), ("3\\sqrt{13}", "3\\sqrt{12}", False),
    ("11\\sqrt2", "11\\sqrt{2}", True), ("2\\sqrt{5}", "\\sqrt{20}", True), ("2\\sqrt{5}", "\\sqrt{10}", False),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", True), ("\\frac{\\sqrt{3}}{3}", "\\sqrt{3}", False),
    ("\\frac{3\\sqrt{3}}{4}", "\\frac34\\sqrt3", True), ("12\\pi", "12 \\cdot \\pi", True), ("12\\pi", "12", False),
    ("8 \\pi", "8\\times\\pi", True), ("\\frac{20000}{\\pi}", "20000/\\pi", True), ("\\pi", "3.14", False),
    ("\\pi", "3.14159265358979323846264338327950288", False), ("2^{10}", "1024", True), ("2^{10}", "1000", False),
    ("\\sqrt[3]{8}", "2", True), ("8^{1/3}", "2", True), ("6\\sqrt{2}", "\\sqrt{72}", True),
    ("1+2\\sqrt{3}", "2\\sqrt3+1", True), ("1+2\\sqrt{3}", "1-2\\sqrt3", False), ("18+2\\pi", "2(9+\\pi)", True),
    ("11 \\sqrt{5} + 11", "11(\\sqrt5+1)", True), ("\\sqrt{2}+\\sqrt{3}", "\\sqrt{5+2\\sqrt{6}}", True),
    ("\\log_2 8", "3", True), ("\\ln(e^2)", "2", True), ("1-\\frac{1}{e}", "1+\\frac{1}{e}", False),
    ("1-1/e", "\\frac{e-1}{e}", True), ("5!", "120", True), ("\\binom{5}{2}", "10", True),
    # complex numbers
    ("6 - 5i", "6-5i", True), ("6 - 5i", "-5i+6", True), ("6 - 5i", "6+5i", False), ("1+2i", "2i+1", True),
    ("-2 + 7i", "7i-2", True), ("1 - 12i", "1-12i", True), ("6+9i", "6+9", False), ("i", "\\sqrt{-1}", True),
    # degrees, percent, units, money
    ("90^\\circ", "90", True), ("90", "90^{\\circ}", True), ("30^\\circ", "30°", True), ("75^\\circ", "57", False),
    ("50\\%", "50", True), ("50", "50\\%", True), ("50\\%", "0.5", False), ("5.4 \\text{ cents}", "5.4", True),
    ("864 \\mbox{ inches}^2", "864", True), ("15\\mbox{ cm}^2", "15 cm^2", True), ("15\\mbox{ cm}^2", "16", False),
    ("\\frac{270}7\\text{ degrees}", "\\frac{270}{7}", True), ("\\$18.90", "18.9", True), ("\\$32,\\!348", "32348", True),
    ("\\$36", "36 dollars", True), ("\\$36", "\\$35", False),
    # equations and "x = 5"
    ("x=5", "5", True), ("5", "x = 5", True), ("x=5", "x=-5", False), ("y = 2x + 3", "2x+3", True),
    ("y = 2x + 3", "y=3+2x", True), ("y = 2x + 3", "2x - y = -3", True), ("y = 2x + 3", "y = 2x - 3", False),
    ("y = -2x", "2x + y = 0", True), ("5x - 7y + 11z + 4 = 0", "-10x+14y-22z-8=0", True),
    ("5x - 7y + 11z + 4 = 0", "5x - 7y + 11z - 4 = 0", False), ("k=2", "2", True),
    # \left( \right), ordered tuples and coordinates
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True), ("(1,2)", "(2,1)", False),
    ("(-1,6)", "(-1, 6)", True), ("(-1,6)", "(6,-1)", False), ("(1,-16,-4,43)", "(1,-16,-4,43)", True),
    ("(1,-16,-4,43)", "(1,-16,43,-4)", False), ("\\left( \\frac{3}{2}, -13 \\right)", "(1.5,-13)", True),
    ("(6,31,-1)", "(6,31)", False), ("(2,4)", "2,4", False), ("(15,-29)", "(15,-29.0)", True),
    # unordered answer lists and sets
    ("3, 5, 7", "7,5,3", True), ("3, 5, 7", "3,5", False), ("3, 5, 7", "\\{3,5,7\\}", True), ("-2,1", "1,-2", True),
    ("1,-2", "1,2", False), ("\\{1\\pm\\sqrt{5},-2\\}", "-2, 1-\\sqrt5, 1+\\sqrt5", True),
    ("\\{1\\pm\\sqrt{5},-2\\}", "1+\\sqrt5, 1-\\sqrt5", False), ("3, 5, 7", "3, 5, 7, 7", True), ("2", "\\{2\\}", True),
    ("x=1, x=2", "2, 1", True),
    # \pm
    ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}", True), ("3 \\pm 2 \\sqrt{2}", "3-2\\sqrt{2},3+2\\sqrt2", True),
    ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}", False), ("3 \\pm 2 \\sqrt{2}", "3 \\pm \\sqrt{8}", True),
    # intervals
    ("[1,2)", "[1,2]", False), ("[1,2)", "[1, 2)", True), ("(-\\infty, 0]", "(-\\infty,0]", True),
    ("(-\\infty, 0]", "(-\\infty,0)", False), ("(2,\\infty)", "(2, \\infty)", True), ("(2,\\infty)", "[2,\\infty)", False),
    ("(-\\infty, 2) \\cup (3, \\infty)", "(3,\\infty)\\cup(-\\infty,2)", True),
    ("(-\\infty, 2) \\cup (3, \\infty)", "(-\\infty,2]\\cup(3,\\infty)", False), ("x \\in [-2,7]", "[-2,7]", True),
    ("\\left(\\frac{3}{5},\\frac{8}{3}\\right]", "(0.6, 8/3]", True), ("(3,4]", "(3,4)", False),
    ("\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]", "[\\pi^2/8, 5\\pi^2/4]", True),
    ("(-\\sqrt{3}, \\sqrt{3})", "(-\\sqrt3,\\sqrt3)", True),
    # matrices
    ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", "\\begin{bmatrix} -1 & 0 \\\\ 0 & -1 \\end{bmatrix}", True),
    ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", "\\begin{pmatrix} -1 & 0 \\\\ 0 & 1 \\end{pmatrix}", False),
    ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", "\\begin{pmatrix} 0 & -1 \\\\ -1 & 0 \\end{pmatrix}", False),
    ("\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", "\\begin{pmatrix} 0.2 \\\\ -3.6 \\end{pmatrix}", True),
    ("\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", "(\\frac15, -\\frac{18}{5})", True),
    ("\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", "\\begin{pmatrix} 1/5 & -18/5 \\end{pmatrix}", False),
    ("\\begin{pmatrix} -7 \\\\ 16 \\\\ 5 \\end{pmatrix}", "\\begin{pmatrix} -7 \\\\ 5 \\\\ 16 \\end{pmatrix}", False),
    # base subscripts
    ("52_8", "52", True), ("52_8", "52_{8}", True), ("52_8", "42", False), ("52_8", "52_9", False),
    ("4210_{5}", "4210_5", True), ("2516_8", "2516", True), ("2516_8", "2561_8", False),
    # words
    ("\\text{Evelyn}", "Evelyn", True), ("\\text{Evelyn}", "evelyn", True), ("\\text{Evelyn}", "\\text{Navin}", False),
    ("\\text{east}", "East", True), ("\\text{east}", "west", False), ("\\text{(B)}", "B", True),
    ("\\text{(B)}", "(B)", True), ("\\text{(B)}", "\\text{(C)}", False), ("\\text{ellipse}", "\\textbf{Ellipse}", True),
    ("\\text{even}", "odd", False),
    # expressions equal after simplification; case matters for variables
    ("p - q", "-q+p", True), ("p - q", "q - p", False), ("x^3+3x-6", "3x+x^3-6", True),
    ("(a+5)(b+2)", "ab+2a+5b+10", True), ("(a+5)(b+2)", "(a+2)(b+5)", False), ("6r^2-4r-24", "2(3r^2-2r-12)", True),
    ("3R^2", "3r^2", False), ("5r^5", "5 r^{5}", True), ("2k+2", "2(k+1)", True), ("8n^2 + 4n + 1", "8n^2+4n-1", False),
    ("x^5 - x^4 + x^3 - x^2 + x - 1", "(x-1)(x^4+x^2+1)", True), ("\\cot x", "\\frac{\\cos x}{\\sin x}", True),
    ("\\cot x", "\\tan x", False), ("\\frac{11+9a}{20}", "\\frac{11}{20}+\\frac{9a}{20}", True),
    ("-13x+3", "3-13x", True), ("15x - 80", "5(3x-16)", True), ("x^2-1", "(x-1)(x+2)", False),
    ("\\sin^2 x + \\cos^2 x", "1", True), ("2\\sin x \\cos x", "\\sin(2x)", True),
    # inequalities and relations; a bounded letter is an interval
    ("x \\in [-2,7]", "-2 \\le x \\le 7", True), ("[-2,7]", "-2 \\leq x \\leq 7", True), ("(0,1)", "0 < x < 1", True),
    ("(0,1)", "0 \\lt x \\lt 1", True), ("(0,1]", "0 < x \\le 1", True), ("(0,1)", "0 \\le x < 1", False),
    ("[-2,7]", "-2 \\le x < 7", False), ("(-\\infty, 5]", "x \\le 5", True), ("(-\\infty, 5)", "x \\le 5", False),
    ("x \\le 5", "x < 5", False), ("x \\geq 3", "x \\ge 3", True), ("x \\geq 3", "x > 3", False),
    ("x > 3", "3 < x", True),
    ("5 \\ge x", "x \\le 5", True), ("(3, \\infty)", "x > 3", True), ("[3, \\infty)", "x > 3", False),
    ("x \\ge 3", "x \\le 3", False), ("x < 5", "5", False), ("x \\neq 2", "x \\ne 2", True),
    ("x \\neq 2", "x \\neq -2", False),
    ("(-\\infty, 2) \\cup (2, \\infty)", "x \\neq 2", True), ("(-\\infty, 2) \\cup (2, \\infty)", "x \\ne 3", False),
    ("(8,-2)", "8 < x < -2", False), ("(-\\infty,-2) \\cup (7,\\infty)", "x < -2 \\text{ or } x > 7", True),
    ("(-\\infty,-2) \\cup (7,\\infty)", "x < -2 or x \\ge 7", False), ("(1,3)", "x > 1 and x < 3", False),
    ("2x < 6", "2x<6", True), ("2x < 6", "x < 3", True), ("2x < 6", "2x \\le 6", False), ("2x < 6", "6 > 2x", True),
    ("a \\le b \\le c", "c \\ge b \\ge a", True),
    ("a \\le b \\le c", "a \\le b < c", False), ("[a,b]", "(a,b)", False), ("[a,b]", "a \\le x \\le b", True),
    ("[a,b]", "a < x \\le b", False),
    ("(1,5)", "1 < 2x < 5", False), ("(-\\infty, 3) \\cup (1, \\infty)", "x > 1 and x < 3", False),
    # labelled answers: a name on the left is dropped, an equation on the left is not
    ("(3,2)", "(p,q) = (3,2)", True), ("(3,2)", "(p, q) = (2, 3)", False), ("(p,q) = (3,2)", "(p,q)=(3.0, 2)", True),
    ("(5,8),(8,5)", "(x, y) = (5, 8) \\text{ and } (8, 5)", True), ("(5,8),(8,5)", "(x, y) = (5, 8) and (8, 5)", True),
    ("(5,8),(8,5)", "(x, y) = (5, 8)", False), ("x^2", "f(x) = x^2", True), ("x^2", "f(x) = x^3", False),
    ("9", "f(3) = 9", True), ("4", "AB = 4", True), ("4", "AB = 5", False), ("1", "|AB| = 1", True),
    ("\\frac{1}{3}", "\\frac{NO}{BO} = \\frac{1}{3}", True), ("\\frac{1}{3}", "\\frac{NO}{BO} = 3", False),
    ("3", "|x| = 3", False), ("30", "\\angle ABC = 30^\\circ", True), ("(1,2,3)", "(a, b, c) = (1, 2, 3)", True),
    ("(1,2,3)", "(a, b, c) = (1, 3, 2)", False),
    ("4", "2x = 4", False), ("5", "x + y = 5", False), ("6", "x(x+1) = 6", False), ("y = 2x+3", "y = 3 + 2x", True),
    ("5", "x = 2 + 3 = 5", False),
    # LaTeX spellings
    ("14916", "14{,}916", True), ("14916", "14{,}915", False), ("3.5", "3{,}5", False),
    ("\\frac{1}{2}", "\\cfrac{1}{2}", True),
    ("\\text{east}", "\\textnormal{east}", True),
    (MATRIX_2X2, "\\left[\\begin{array}{cc} 1 & 2 \\\\ 3 & 4 \\end{array}\\right]", True),
    (MATRIX_2X2, "\\left[\\begin{array}{cc} 1 & 2 \\\\ 4 & 3 \\end{array}\\right]", False),
    ("\\{-2021, 2021\\}", "{-2021, 2021}", True), ("\\{-2021, 2021\\}", "{-2021, 2020}", False),
    ("(0,0,0)", "(0;0;0)", True),
    ("(0,0,0)", "(0;0;1)", False), ("-12, -11", "-12;-11", True), ("3, 5", "3 or 5", True),
    ("3, 5", "3 \\text{ or } 5", True),
    ("3, 5", "x = 3 or x = 5", True), ("3, 5", "3 and 5", True), ("3", "3 or 5", False),
    # a repeat adds nothing to an answer list or set; a list is never one of its candidates
    ("\\{1, 2\\}", "\\{1, 2, 2\\}", True), ("3", "3, 3", True), ("3", "3, 5", False), ("3, 5", "3, 3", False),
    # issue 29: ASCII relation operators; \approx: the exact side is the answer, the approximation need not match
    ("x \\ge 5", "x >= 5", True), ("[5, \\infty)", "x >= 5", True), ("x \\ge 5", "x > 5", False),
    ("x \\le 5", "x <= 5", True), ("x \\le 5", "x >= 5", False), ("x \\neq 2", "x != 2", True),
    ("x \\neq 2", "x != -2", False), ("11", "x \\approx 11", True), ("12", "x \\approx 11", False),
    ("\\frac13", "x = \\frac13 \\approx 0.33", True), ("\\frac13", "x \\approx 0.33", False),
    ("0.33", "\\frac13 \\approx 0.33", False), ("2\\sqrt2", "2\\sqrt{2} ≈ 2.83", True),
    # relations by their set of solutions (one variable, real line)
    ("x < 1", "-x > -1", True), ("x > 1", "-x > -1", False), ("(-\\infty, 1)", "-x > -1", True),
    ("(-\\infty, 1]", "-x > -1", False), ("x \\le 1", "-x \\ge -1", True), ("(0, 1)", "0 < f(x) < 1", True),
    ("[0, 1)", "0 < f(x) < 1", False), ("[-\\frac32, -1] \\cup [1, \\frac32]", "1 \\le |z| \\le \\frac32", True),
    ("[-\\frac32, -1) \\cup [1, \\frac32]", "1 \\le |z| \\le \\frac32", False),
    ("[1, \\frac32]", "1 \\le |z| \\le 3/2", False),
    ("(-2, 2)", "x^2 < 4", True), ("[-2, 2]", "x^2 < 4", False), ("(-\\infty, -2) \\cup (2, \\infty)", "|x| > 2", True),
    ("(-\\infty, -2] \\cup (2, \\infty)", "|x| > 2", False), ("x \\ne 2", "x^2 - 4x + 4 > 0", True),
    ("(\\frac12, \\frac52)", "1 < 2x < 5", True), ("(-\\infty, 0) \\cup (1, \\infty)", "\\frac1x < 1", True),
    ("x > 1", "\\frac{1}{x} < 1", False), ("x > 2", "2^x > 4", True), ("(0, \\pi)", "\\sin x > 0", False),
    ("x^2 < 4", "y^2 < 4", True), ("a < x < b", "(a, b)", True), ("x > a", "x > b", False),
    # labelled ratios; a two-term ratio against a number is its quotient, against a ratio term by term
    ("7:32", "S_{ABC} : S = 7 : 32", True), ("7:32", "32:7", False), ("7:32", "S_{ABC} : S = 32 : 7", False),
    ("11:21", "V_1 : V_2 = 11 : 21", True), ("\\frac{7}{32}", "7:32", True), ("\\frac{32}{7}", "7 : 32", False),
    ("7:32", "14:64", False), ("1:2:3", "1 : 2 : 3", True), ("1:2:3", "1:3:2", False), ("7:32", "7 : 32 : 1", False),
    # assignments: distinct unknowns form an ordered tuple, a repeated cycle of them a set of tuples
    ("(5,2),(7,2)", "p = 5, q = 2; p = 7, q = 2", True), ("(5,2),(7,2)", "p = 5, q = 2; p = 2, q = 7", False),
    ("(5,2),(7,2)", "p = 5, q = 2", False), ("(5,2),(7,2)", "(7,2) \\text{ or } (5,2)", True),
    ("k = 45, n = 2", "45, 2", True), ("k = 45, n = 2", "2, 45", False), ("k = 45, n = 2", "n = 2, k = 45", True),
    ("k = 45, n = 2", "k = 2, n = 45", False), ("k = 45, n = 2", "(45, 2)", True), ("k = 45, n = 2", "(2, 45)", False),
    ("k = 45, n = 2", "(k, n) = (45, 2)", True), ("k = 45, n = 2", "45", False), ("x_1 = 3, x_2 = 5", "5, 3", True),
    ("x_1 = 3, \\quad x_2 = 5", "3, 5", True), ("x_1 = 3, x_2 = 5", "3, 4", False),
    # matrix arithmetic against its value
    (pm("2 & 2", "3 & 5"), f"{MATRIX_2X2} + {pm('1 & 0', '0 & 1')}", True),
    (pm("2 & 2", "3 & 4"), f"{MATRIX_2X2} + {pm('1 & 0', '0 & 1')}", False),
    (pm("2 & 1", "4 & 3"), MATRIX_2X2 + pm("0 & 1", "1 & 0"), True),
    (pm("3 & 4", "1 & 2"), MATRIX_2X2 + pm("0 & 1", "1 & 0"), False),
    (pm("3/5 & 4/5", "4/5 & -3/5"), "\\frac15 " + pm("3 & 4", "4 & -3"), True),
    (pm("3/5 & 4/5", "4/5 & 3/5"), "\\frac15 " + pm("3 & 4", "4 & -3"), False),
    (pm("7 & 10", "15 & 22"), MATRIX_2X2 + "^2", True),
    (MATRIX_2X2, "2" + MATRIX_2X2 + " - " + MATRIX_2X2, True), (MATRIX_2X2, MATRIX_2X2 + " + " + MATRIX_2X2, False),
    (pm("3", "7"), MATRIX_2X2 + pm("1", "1"), True), ("11", pm("1", "2") + pm("3", "4"), False),
    # sums and products: equal up to the order of factors, or to their closed form
    ("\\frac{n(n+1)}{2}", "\\sum_{k=1}^{n} k", True), ("\\frac{n(n-1)}{2}", "\\sum_{k=1}^{n} k", False),
    ("\\sum_{k=1}^{n} \\frac{1}{k(k+1)}", "\\sum_{k=1}^{n} \\frac{1}{(k+1)k}", True),
    ("\\sum_{k=1}^{n} k", "\\sum_{k=1}^{n} k^2", False), ("\\prod_{k=1}^{n} (k+1)", "\\prod_{k=1}^{n} (1+k)", True),
    ("\\sum_{k=1}^{n} 2k", "2\\sum_{i=1}^{n} i", True), ("\\sum_{k=1}^{n} k", "\\sum_{k=2}^{n} k", False),
    ("\\sum_{k=1}^{n} \\frac{1}{k}", "\\sum_{k=1}^{n} \\frac{1}{k+1}", False), ("\\sum_{i=1}^{3} i", "6", True),
]


@pytest.mark.parametrize("gold, pred, expected", PAIRS)
def test_labelled_pairs(gold, pred, expected):
    assert is_equiv(pred, gold) is expected
    assert is_equiv(gold, pred) is expected  # the rules are symmetric


def test_enough_labelled_pairs():
    assert len(PAIRS) >= 120 and sum(not e for _, _, e in PAIRS) >= 40


def test_math_reward_boxes_and_scores():
    assert math_reward("We get $x=3$, so \\boxed{\\frac{1}{2}}.", "0.5") == 1.0
    assert math_reward("We get \\boxed{0.333}.", "\\frac13") == 0.0
    assert math_reward("no box and no answer line", "5") == 0.0
    assert math_reward(None, "5") == 0.0
    # several boxes: together the answer, but never a list of candidates against one of them
    assert math_reward("\\boxed{1} and \\boxed{2} and \\boxed{3}", "\\{1,2,3\\}") == 1.0
    assert math_reward("\\boxed{3} or \\boxed{5}", "3") == 0.0
    assert math_reward("$\\boxed{3}$, $\\boxed{5}$", "5") == 0.0
    assert math_reward("we get \\boxed{3} first, so the answer is \\boxed{5}", "5") == 1.0
    # two boxes joined by prose are one answer: never one of them alone
    two = "\\boxed{3} \\text{ for part (a) and } \\boxed{5}"
    assert [math_reward(two, g) for g in ("3, 5", "5, 3", "3", "5", "3, 4")] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert math_reward("The final answer is $10,455$.", "10455") == 1.0
    assert math_reward("The final answer is \\((-6, 10)\\).", "(-6,10)") == 1.0
    assert math_reward("The final answer is \\((-6, 10)\\).", "(10,-6)") == 0.0


# extraction: (text, expected answer)
EXTRACTION = [
    ("so \\boxed{5}.", "5"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("nested \\boxed{\\frac{\\sqrt{3}}{\\left(2\\right)}} end", "\\frac{\\sqrt{3}}{\\left(2\\right)}"),
    ("first \\boxed{1} then \\boxed{2} and finally \\boxed{3}.", "3"),
    ("The value \\boxed{7} is in the middle of the text, followed by more words.", "7"),
    ("set \\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("escaped brace \\boxed{\\}5}", "\\}5"),
    ("\\fbox{42}", "42"),
    ("\\boxed 5 is the answer", "5"),
    ("$\\boxed{ x = 2 }$", "x = 2"),
    ("\\boxed{\\text{(B)}}", "\\text{(B)}"),
    ("no box here, just words", None),
    ("empty \\boxed{}", None),
    ("empty \\boxed{   }", None),
    ("unbalanced \\boxed{\\frac{1}{2}", None),
    ("earlier \\boxed{4} but the last is cut \\boxed{5", None),
    ("", None),
    ("The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
    ("Final Answer: The final answer is 12. I hope it is correct.", "12"),
    ("Working...\nAnswer: 17\n", "17"),
    ("the final answer is (1, 2)", "(1, 2)"),
    ("a box beats the line: the final answer is 3 but \\boxed{4}", "4"),
    # boxes joined by nothing but , ; and or are one answer list; after other words the last box stands alone
    ("\\boxed{1} and \\boxed{2} and \\boxed{3}", "1, 2, 3"),
    ("$\\boxed{-1}$, $\\boxed{4}$.", "-1, 4"),
    ("\\boxed{3} or \\boxed{5}", "3, 5"),
    ("\\boxed{1}; \\boxed{2}", "1, 2"),
    ("First \\boxed{12}, and then the total is \\boxed{9}.", "9"),
    ("\\boxed{1} \\boxed{2}", "2"),
    ("\\boxed{} and \\boxed{2}", "2"),
    # ... and by a little prose that ends in a separator (issue 29)
    ("\\boxed{3} \\quad \\text{and} \\quad \\boxed{5}", "3, 5"),
    ("\\boxed{3} \\text{ for part (a) and } \\boxed{5} \\text{ for part (b)}", "3, 5"),
    ("$(y_1 = \\boxed{3})$ and $(y_2 = \\boxed{5})$", "3, 5"),
    ("k = \\boxed{45}, n = \\boxed{2}", "45, 2"),
    ("\\boxed{12}, so x = \\boxed{9}", "9"),
    ("\\boxed{12} and hence \\boxed{9}", "9"),
    # the fallback takes the math of a sentence, not the sentence
    ("Final Answer: The largest $n$ is 34.", "34"),
    ("Answer: The smallest value is $\\frac{1}{2}$. I hope", "\\frac{1}{2}"),
    ("Final Answer: $x = 5$", "x = 5"),
    ("Answer: $x$ is $5$.", "5"),
    ("Final Answer: The value of $3.5x$ is 7. It is correct.", "7"),
    ("Final Answer: The final answer is $\\$18.90$. I hope it is correct.", "\\$18.90"),
    # the math inside \\(..\\) and \\[..\\] too (issue 29)
    ("The final answer is $10,455$.", "10,455"),
    ("The final answer is \\((-6, 10)\\).", "(-6, 10)"),
    ("The final answer is \\(10,455\\). I hope it is correct.", "10,455"),
    ("The final answer is \\[ \\frac{3}{4} \\]", "\\frac{3}{4}"),
    ("Final Answer: The largest \\(n\\) is \\(34\\).", "34"),
    ("Therefore, the final answer is: $5$", "5"),
]


@pytest.mark.parametrize("text, expected", EXTRACTION)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# Disagreements with Math-Verify 0.9.0 found by benchmarks/diff_mathverify.py, each judged by hand:
# (gold, completion, our reward, Math-Verify's verdict, why we are right)
MATH_VERIFY_CASES = [
    ("\\frac{14}{3}", "\\boxed{4.666667}", 0.0, True, "a 6-digit rounding is not the exact answer"),
    ("\\frac{1}{3}", "\\boxed{0.3333333333}", 0.0, True, "a rounding, however long, is not 1/3"),
    ("4", "\\boxed{2x = 4}", 0.0, True, "an equation in x says x = 2; its right side is no label's value"),
    ("5", "\\boxed{x = 2 + 3 = 5}", 0.0, True, "a chain also asserts 2 + 3 = 5: not graded, so refused"),
    ("9", "First \\boxed{12}, and then the total is \\boxed{9}.", 1.0, False,
     "12 is an intermediate result: words stand between the boxes"),
    ("(-1,6)", "\\boxed{-1 < x < 6}", 1.0, False, "the interval (-1, 6) written as an inequality"),
    ("(3,4]", "\\boxed{3 < x \\le 4}", 1.0, False, "the interval (3, 4] written as an inequality"),
    ("(2,\\infty)", "\\boxed{x > 2}", 1.0, False, "the interval (2, oo) written as an inequality"),
    ("(-\\infty, 0]", "\\boxed{x \\le 0}", 1.0, False, "the interval (-oo, 0] written as an inequality"),
    ("[-2,7]", "\\boxed{-2 \\le x \\le 7}", 1.0, False, "the interval [-2, 7] written as an inequality"),
    ("(15,-29)", "\\boxed{[15, -29]}", 0.0, True, "a point is not an (empty) closed interval"),
    ("1 \\pm \\sqrt{19}", "\\boxed{AB = 1 \\pm \\sqrt{19}}", 1.0, False, "a labelled answer is its value"),
    ("x=5", "\\boxed{2(x) = 2(5)}", 1.0, False, "the same equation times 2"),
    # issue 29
    ("7:32", "\\boxed{14:64}", 0.0, True, "ratios compare term by term (10:30 is no 1:3 as a time)"),
    ("k = 45, n = 2", "\\boxed{2, 45}", 0.0, True, "distinct unknowns k, n: the ordered tuple (45, 2)"),
    ("x = 1, y = 2", "\\boxed{2, 1}", 0.0, True, "distinct unknowns x, y: the ordered tuple (1, 2)"),
    ("(-\\infty, 1)", "\\boxed{-x > -1}", 1.0, False, "the same set of real numbers"),
    ("x < 3", "\\boxed{2x < 6}", 1.0, False, "the same set of real numbers"),
    ("[-\\frac32,-1] \\cup [1,\\frac32]", "\\boxed{1 \\le |z| \\le \\frac32}", 1.0, False,
     "the same set of real numbers"),
    ("(0,1)", "\\boxed{0 < f(x) < 1}", 1.0, False, "a bound on a function value: the interval of its values"),
    ("[5,\\infty)", "\\boxed{x >= 5}", 1.0, False, "x >= 5 is x \\ge 5, the interval [5, oo)"),
    ("\\sum_{k=1}^{n} 2k", "\\boxed{2\\sum_{i=1}^{n} i}", 1.0, False, "the same sum, a factor taken out"),
    (pm("-7", "16"), "\\boxed{\\frac{1}{2} " + pm("2(-7)", "2(16)") + "}", 1.0, False, "a matrix times a number"),
    ("1, -2", "\\boxed{1} \\text{, and then the answer is } \\boxed{-2}", 0.0, True,
     "words other than a separator between the boxes: the last box stands alone"),
]


@pytest.mark.parametrize("gold, completion, ours, theirs, why", MATH_VERIFY_CASES)
def test_decided_differently_from_math_verify(gold, completion, ours, theirs, why):
    assert math_reward(completion, gold) == ours


def test_extract_answer_rejects_non_strings():
    assert extract_answer(None) is None and extract_answer(5) is None


# ---------------------------------------------------------------------------------------------------------------
# The gold answers of the shared benchmark sets
# ---------------------------------------------------------------------------------------------------------------

# Different problems whose answers are genuinely the same answer under the documented rules.
GENUINELY_EQUAL = {frozenset({"5", "x=5"}): "x=5 = 5 by the documented rule for a one-variable equation"}


def _golds(shared_data):
    golds = []
    for name in ("math500", "aime24", "aime25", "amc23"):
        with open(shared_data / f"{name}.jsonl") as f:
            golds += [(name, str(json.loads(line)["answer"])) for line in f if line.strip()]
    return golds


def test_gold_answers_boxed_score_one(shared_data):
    golds = _golds(shared_data)
    assert len(golds) == 600
    failures = [g for _, g in golds if math_reward(f"… so the answer is \\boxed{{{g}}}.", g) != 1.0]
    assert not failures
    # the same answers rewritten: \dfrac for \frac, no spaces, inside $...$
    rewritten = {g: "$" + g.replace("\\frac", "\\dfrac").replace(" ", "") + "$" for _, g in golds}
    assert [g for g, r in rewritten.items() if math_reward(f"\\boxed{{{r}}}", g) != 1.0] == []


def test_gold_answers_score_zero_against_another_problem(shared_data):
    golds = _golds(shared_data)
    checked, skipped, failures = 0, [], []
    for i, (name, gold) in enumerate(golds):
        # the next problem of the same file whose answer string differs
        same_file = [g for n, g in golds[i + 1:] + golds[:i] if n == name]
        other = next(g for g in same_file if g.replace(" ", "") != gold.replace(" ", ""))
        if frozenset({gold, other}) in GENUINELY_EQUAL:
            skipped.append((gold, other))
            continue
        checked += 1
        if math_reward(f"so the answer is \\boxed{{{other}}}.", gold) != 0.0:
            failures.append((gold, other))
    assert not failures
    assert checked >= 590 and len(skipped) <= 5


# ---------------------------------------------------------------------------------------------------------------
# Hostile inputs: each returns a bool within 1 s, raises nothing and creates no file
# ---------------------------------------------------------------------------------------------------------------

SENTINEL = "/tmp/etr_reward_pwned"
HOSTILE = [
    f"__import__('os').system('touch {SENTINEL}')",
    f"\\boxed{{__import__('os').system('touch {SENTINEL}')}}",
    f"exec(\"open('{SENTINEL}','w')\")",
    f"eval('open(\"{SENTINEL}\",\"w\")')",
    "lambda: 0",
    "lambda x: x",
    "(lambda: __import__('os'))()",
    "__builtins__",
    "__class__.__mro__[1].__subclasses__()",
    "().__class__.__bases__[0].__subclasses__()",
    "x.__dict__",
    "os.system('ls')",
    "import os",
    "open('/etc/passwd').read()",
    "subprocess.run(['ls'])",
    "globals()",
    "Symbol('x')",
    "sympify('2+2')",
    f"\\input{{{SENTINEL}}}",
    f"\\write18{{touch {SENTINEL}}}",
    "\\def\\x{\\x}\\x",
    "9^{9^{9^{9}}}",
    "10^{10^{10}}!",
    "(10^{10})!",
    "1000!!",
    "2^{2^{2^{2^{2^{2}}}}}",
    "\\sqrt{9^{9^{9}}}",
    "10^{10^{100}}",
    "99999999999^{99999999999}",
    "2^{-10^{10}}",
    "(\\sqrt{2})^{10^{10}}",
    "e^{e^{e^{e^{10}}}}",
    "\\pi^{10^{10}}",
    "x^{10^{10}}",
    "(x+y+z)^{1000}",
    "(x+1)^{1000}-(x-1)^{1000}",
    "\\binom{10^{10}}{5000}",
    "\\sin(10^{10^{5}})",
    "\\sqrt[10^{10}]{2}",
    "1e1000000",
    "9" * 5000,
    "1" * 100_000,
    "x" * 100_000,
    "{" * 10_000 + "}" * 10_000,
    "{" * 10_000,
    "\\boxed{" * 5000,
    "}" * 5000 + "\\boxed{1}",
    "(" * 10_000 + ")" * 10_000,
    "(" * 50 + "1" + ")" * 50,
    "\\frac{" * 500 + "1" + "}{2}" * 500,
    "\\sqrt{" * 300 + "2" + "}" * 300,
    "\\left(" * 300 + "1" + "\\right)" * 300,
    "\\text{" * 200 + "a" + "}" * 200,
    "-" * 5000 + "1",
    "2^" * 300 + "2",
    "\\sin" * 200 + " x",
    "\x00\x00\x00",
    "1\x002",
    "\\boxed{\x00}",
    "\ud800",
    "\u202e5",
    "\\begin{pmatrix}" + "1 & " * 2000 + "1\\end{pmatrix}",
    "\\begin{pmatrix}" + "1 \\\\ " * 3000 + "1\\end{pmatrix}",
    "\\{" + ",".join(["1"] * 400) + "\\}",
    ",".join(["x"] * 400),
    "\\pm" * 200,
    "$$$$$$$$$$$$",
    "nan",
    "inf",
    "\\infty - \\infty",
    "0/0",
    "\\frac{1}{0}",
    "0^{-1}",
    "\\log(0)",
    "\\tan(\\pi/2)",
    "x_{x_{x_{x}}}",
    # the relation, label, list and several-box rules
    "<" * 5000,
    "x" + " < x" * 400,
    "\\le" * 300,
    "0 < x < " * 100 + "1",
    "\\sin(10^{4000}) < x < \\cos(10^{4000})",
    "2^{10000} < x < 2^{10001}",
    "{" + ",".join(["1"] * 400) + "}",
    ",".join(f"x_{i}" for i in range(300)),
    ";" * 5000,
    " or ".join(["x"] * 200),
    "\\boxed{1}, " * 3000,
    "(x,y) = " * 100 + "(1,2)",
    "f(" * 300 + "x" + ")" * 300 + " = 1",
    "\\left[\\begin{array}{" + "c" * 500 + "}" + "1 & " * 499 + "1\\end{array}\\right]",
    # issue 29: ASCII relations, \\approx, solution sets, ratios, assignments, matrices, sums, boxes, \\(..\\)
    ">=" * 2000, "x != " * 300 + "1", "x \\approx " * 300 + "1", "≈" * 3000,
    "x^{10^{10}} > 2", "x^{999} - 3x + 1 > 0", "10^{10^{10} x} > 1", "2^{2^{2^{2^{x}}}} > 5", "|" * 5000,
    "|x" * 400 + "|" * 400, "1 \\le |" * 100 + "z" + "|" * 100 + " \\le 2", "(x+1)^{20} (x-1)^{20} (x-2)^{20} > 0",
    "-x" + " > -x" * 300, "0 < f(x) < " * 100 + "1", "1 : " * 3000 + "1", "S_{A} : " * 300 + "S = 1 : 2",
    "p = 1, q = 2, " * 150 + "p = 1", ", ".join(f"a_{{{i}}} = {i}" for i in range(300)),
    " + ".join(["\\begin{pmatrix} x & y \\\\ z & w \\end{pmatrix}"] * 8),
    " ".join(["\\begin{pmatrix} x & y \\\\ z & w \\end{pmatrix}"] * 8),
    " + ".join(["\\begin{pmatrix} 1 \\end{pmatrix}"] * 9),
    "\\begin{pmatrix}" + " \\\\ ".join([" & ".join("x" * 10)] * 10) + "\\end{pmatrix}^{20}",
    "\\begin{pmatrix}" + "1 & " * 40 + "1\\end{pmatrix} + \\begin{pmatrix}1\\end{pmatrix}",
    "\\begin{pmatrix} 1 \\end{pmatrix}^{10^{10}}", "2" + pm("1 & " + pm("2")),
    "\\sum_{k=1}^{10^{10}} k^k", "\\prod_{k=1}^{10^{10}} k", "\\sum_{k=1}^{10^{5}} \\sin(k)",
    "\\sum_{k=1}^{n}" * 100 + " k", "2^{\\sum_{k=1}^{10^{9}} k}", "\\sum_{k=1}^{\\sum_{j=1}^{10^{9}} j} k",
    "\\sum_{i=1}^{10^{10}} i^{i^{i}} < x < 3", "\\sum_{k=1}" * 500,
    "\\boxed{1} \\text{ for part (a) and } " * 2000, "The final answer is \\(" * 3000,
    "The final answer is \\[" + "(" * 5000, "The final answer is $" + "1," * 5000 + "$.",
]
HOSTILE_GOLDS = ["5", "\\frac{1}{2}", "x^2+1", "(1,2)", "\\text{east}"]


def test_enough_hostile_inputs():
    assert len(HOSTILE) >= 50


@pytest.fixture(scope="module")
def warm_worker():
    # the first symbolic comparison starts the worker process (a one-time cost, not charged to the time limit)
    assert is_equiv("\\cot x", "\\frac{\\cos x}{\\sin x}")


@pytest.mark.parametrize("hostile", HOSTILE, ids=[f"h{i}" for i in range(len(HOSTILE))])
def test_hostile_input(hostile, warm_worker):
    if os.path.exists(SENTINEL):
        os.remove(SENTINEL)
    for gold in HOSTILE_GOLDS:
        for pred, g in ((hostile, gold), (gold, hostile), (hostile, hostile + " ")):
            start = time.monotonic()
            verdict = is_equiv(pred, g)
            reward = math_reward(pred, g)
            assert time.monotonic() - start < 1.0
            assert isinstance(verdict, bool) and reward in (0.0, 1.0)
        assert is_equiv(hostile, gold) is False
    assert math_reward(f"\\boxed{{{hostile}}}", "5") == 0.0
    assert not os.path.exists(SENTINEL)


def test_timeout_kills_the_worker_and_recovers(warm_worker, monkeypatch):
    # a comparison that needs expansion of a huge power: the worker is killed at the deadline, the answer is False,
    # and the next call works again with a fresh worker
    import reward
    monkeypatch.setattr(reward, "TIME_LIMIT", 0.3)
    start = time.monotonic()
    assert is_equiv("((x+1)(y+1))^{300}", "(xy+x+y+1)^{300}") is False  # true, but unprovable in 0.3 s
    assert time.monotonic() - start < 1.0
    assert is_equiv("\\cot x", "\\frac{\\cos x}{\\sin x}") is True


def test_never_raises_on_odd_types():
    assert is_equiv(None, "5") is False and is_equiv("5", None) is False
    assert is_equiv(5, "5") is True and math_reward(b"\\boxed{5}", "5") == 0.0


# ---------------------------------------------------------------------------------------------------------------
# The variants of benchmarks/diff_mathverify.py (re-spellings, labels, inequalities, several boxes, near misses of
# every benchmark gold answer), each against the verdict it has by construction; Math-Verify is not needed here
# ---------------------------------------------------------------------------------------------------------------

def test_generated_variants_score_as_constructed(shared_data):
    cases = [(gold, *v) for _, gold in diff_mathverify.load_golds(shared_data)
             for v in diff_mathverify.variants(gold)]
    labelled = [(gold, kind, completion, e) for gold, kind, completion, e in cases if e is not None]
    assert len(labelled) >= 7000 and sum(not e for *_, e in labelled) >= 2000
    wrong = [(kind, gold, completion) for gold, kind, completion, e in labelled
             if math_reward(completion, gold) != float(e)]
    assert not wrong


def test_diff_mathverify_skips_cleanly_without_math_verify():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "diff_mathverify.py"), "--mv-python",
                             "/nonexistent/python"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "skipped" in result.stdout
