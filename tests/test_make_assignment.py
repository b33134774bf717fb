"""The teaching kit: tests/make_assignment.py writes hand-outs of etr.py, tests/test_etr.py grades them (ETR_MODULE)."""
import ast
import json
import os
import subprocess
import sys

import pytest

import make_assignment
from conftest import REPO

HANDOUT = ["clipped_surrogate", "etr_bounds", "erc_keep_mask"]  # the example


def functions(source):
    return {node.name: node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)}


def test_handout_keeps_signature_docstring_and_shape_comments_and_hides_the_code():
    source = (REPO / "etr.py").read_text()
    handout = make_assignment.make_assignment(HANDOUT, source)
    before, after = functions(source), functions(handout)
    assert list(before) == list(after)
    comments = make_assignment.comment_lines(source)
    for name, old in before.items():
        new = after[name]
        if name not in HANDOUT:  # untouched, character for character
            assert ast.get_source_segment(handout, new) == ast.get_source_segment(source, old), name
            continue
        assert ast.dump(new.args) == ast.dump(old.args) and ast.dump(new.returns or ast.Pass()) == ast.dump(old.returns or ast.Pass())
        assert ast.get_docstring(new, clean=False) == ast.get_docstring(old, clean=False)
        assert "=" in ast.get_docstring(new)  # the equation is in it
        raise_ = new.body[1]  # docstring, then only `raise NotImplementedError(...)`
        assert len(new.body) == 2 and isinstance(raise_, ast.Raise) and raise_.exc.func.id == "NotImplementedError"
        text = ast.get_source_segment(handout, new)
        shapes = [comments[line].lstrip("# ") for line in range(old.body[1].lineno, old.end_lineno + 1) if line in comments]
        assert shapes and all(shape in text for shape in shapes), name  # every shape comment is kept ...
        code = [ast.get_source_segment(source, stmt) for stmt in old.body[1:]]
        assert not any(line.strip() in text for stmt in code for line in stmt.splitlines()), name  # ... no code line
    # the comment of `clipped = torch.minimum(...)  # [B, T]  clip(...)` names the tensor, not the code
    assert "    # clipped: [B, T]  clip(rho, 1-eps_low, 1+eps_high)\n" in handout
    assert "torch.minimum(torch.maximum(ratio, lo), hi)" in source and "torch.minimum(torch.maximum" not in handout
    everything = make_assignment.make_assignment(list(before), source)  # every function emptied: still Python
    assert [len(f.body) for f in functions(everything).values()] == [2] * len(before)


def test_unknown_names_are_one_line_listing_the_valid_ones_exit_2():
    for args in (["clipped_surrogate", "clip_surrogate"], []):
        result = subprocess.run([sys.executable, "tests/make_assignment.py", *args], cwd=REPO, capture_output=True,
                                text=True)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "choose from group_advantages, importance_ratio" in result.stderr and "etr_bounds" in result.stderr
    assert "unknown function(s) clip_surrogate:" in subprocess.run(
        [sys.executable, "tests/make_assignment.py", "clip_surrogate"], cwd=REPO, capture_output=True, text=True).stderr


def test_help_prints_the_usage_and_the_functions_exit_0():
    result = subprocess.run([sys.executable, "tests/make_assignment.py", "--help"], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: make_assignment.py") and "unknown function" not in result.stdout
    assert "> hw_etr.py" in result.stdout and "clipped_surrogate, gppo_surrogate" in result.stdout


# Runs tests/test_etr.py on a module and records, per test, its outcome, the first line of its failure, and which
# functions of the module it entered (sys.settrace sees every Python call, a stub's included).
TRACED_PYTEST = """
import json, sys, pytest
module, out = sys.argv[1], sys.argv[2]
entered, results = {}, {}
class Tracer:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        names = entered.setdefault(item.nodeid, set())
        sys.settrace(lambda frame, event, arg: names.add(frame.f_code.co_name) if frame.f_code.co_filename == module else None)
        try:
            yield
        finally:
            sys.settrace(None)
    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            results[report.nodeid] = [report.outcome, crash.message.splitlines()[0] if crash else ""]
pytest.main(["-q", "-p", "no:cacheprovider", "-W", "ignore", "tests/test_etr.py"], plugins=[Tracer()])
json.dump({"entered": {k: sorted(v) for k, v in entered.items()}, "results": results}, open(out, "w"))
"""


def test_graded_handout_fails_exactly_the_tests_that_reach_a_stubbed_function(tmp_path):
    """The hand-out of clipped_surrogate, etr_bounds and erc_keep_mask under the grader: a test fails iff it
    calls one of them -- directly, or through a function that depends on them (grpo_loss, etr_loss and
    erc_dapo_loss call clipped_surrogate; etr_loss calls etr_bounds; both ERC losses call erc_keep_mask) --
    and it fails with the stub's NotImplementedError. Every other test passes: the rest of the module is
    etr.py itself. (etr.py, the solution, passes them all: that is the ordinary run of tests/test_etr.py.)"""
    handout = tmp_path / "hw_etr.py"
    handout.write_text(make_assignment.make_assignment(HANDOUT, (REPO / "etr.py").read_text()))
    env = {**os.environ, "ETR_MODULE": str(handout), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", TRACED_PYTEST, str(handout), str(tmp_path / "out.json")], cwd=REPO,
                         env=env, check=True, capture_output=True, text=True)
    out = json.loads((tmp_path / "out.json").read_text())
    entered, results = out["entered"], out["results"]
    failed = {test for test, (outcome, _) in results.items() if outcome == "failed"}
    reach = {test for test, names in entered.items() if set(names) & set(HANDOUT)}
    assert failed == reach
    for test in failed:
        assert results[test][1].startswith(tuple(f"NotImplementedError: {name}: " for name in HANDOUT)), results[test]
    # worked out by hand from what each test calls
    for test in ["test_etr_forward_by_hand", "test_ratio_exactly_on_a_clip_bound_keeps_the_whole_gradient",
                 "test_erc_masks_out_of_band_tokens_strictly[erc-gppo]", "test_kl_penalty_k3_value_and_gradient",
                 "test_gradients_match_analytic[grpo]", "test_accumulation_equals_full_batch[1.0-token-mean-erc-gppo]"]:
        assert f"tests/test_etr.py::{test}" in failed, test
    for test in ["test_group_advantages_by_hand", "test_gradients_match_analytic[gppo]",
                 "test_accumulation_equals_full_batch[1.0-drgrpo-gppo]", "test_etr_py_imports_only_torch_and_stdlib",
                 "test_settings_that_would_silently_stop_learning_are_refused[eps_low-0.0]"]:
        assert results[f"tests/test_etr.py::{test}"][0] == "passed", test
    assert len(results) == len(entered) > 60
    # grader mode prints each failure as its one-line message (and where), no traceback through the stub
    assert sum(line.startswith("E   NotImplementedError: ") for line in run.stdout.splitlines()) == len(failed)
    assert "Traceback" not in run.stdout and "def test_" not in run.stdout and "raise NotImplementedError" not in run.stdout


def test_grader_failure_is_one_line_naming_the_equation_expected_and_got(tmp_path, monkeypatch):
    """A student's group_advantages with the unbiased std (divide by G - 1), graded by test_etr.py's own test."""
    import test_etr
    student = tmp_path / "student_etr.py"
    source = (REPO / "etr.py").read_text()
    assert source.count("unbiased=False, keepdim=True") == 1
    student.write_text(source.replace("unbiased=False, keepdim=True", "unbiased=True, keepdim=True"))
    monkeypatch.setenv("ETR_MODULE", str(student))
    try:
        monkeypatch.setattr(test_etr, "etr", test_etr.load_etr())
        with pytest.raises(AssertionError) as failure:
            test_etr.test_group_advantages_by_hand()
    finally:
        sys.modules.pop("etr_graded", None)
    assert str(failure.value) == (
        "group_advantages (README: A_i = (r_i - mean_q) / (sigma_q + eps), sigma_q the population std): "
        "A of group {1, 0, 0, 0} (std over G, not G - 1): expected [1.7321, -0.57735, -0.57735, -0.57735], "
        "got [1.5, -0.5, -0.5, -0.5]")
