"""eval.py: pass@k against subset enumeration, maj@n ties, loaders, resume after a crash, the CLI, the toy end to end."""
import itertools
import json
import math

import pytest
import torch

import eval as ev
from rollout import UserError


# ----------------------------------------------------------------------------- pass@k

@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_pass_at_k_equals_fraction_of_k_subsets_with_a_correct_sample(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))  # samples 0..c-1 are the correct ones
            brute = sum(any(i < c for i in s) for s in subsets) / len(subsets)
            assert ev.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_hand_values_and_large_n_is_stable():
    assert ev.pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert ev.pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the plain accuracy c/n
    # n = 1024: the binomials overflow floats, the product form does not
    exact = 1 - math.comb(1024 - 5, 64) / math.comb(1024, 64)
    assert ev.pass_at_k(1024, 5, 64) == pytest.approx(exact, rel=1e-12)


# ----------------------------------------------------------------------------- maj@n

def test_majority_vote_ties_go_to_the_earliest_cluster_and_none_never_votes():
    assert ev.majority_vote(["7", "5", "5", "7"]) == 0  # 2-2 tie: the cluster of sample 0
    assert ev.majority_vote(["5", "7", "7", "5"]) == 0
    assert ev.majority_vote([None, "2", "3", "3"]) == 2  # clear winner, represented by its first sample
    assert ev.majority_vote([None, None, None, "4"]) == 3  # three Nones do not outvote one answer
    assert ev.majority_vote([None, None]) == 0  # all None: None wins


def test_majority_vote_clusters_with_is_equiv(monkeypatch):
    # An equivalence that string comparison cannot see: leading zeros (AIME "025" = "25").
    monkeypatch.setattr(ev, "is_equiv", lambda a, b: a.lstrip("0") == b.lstrip("0"))
    assert ev.majority_vote(["7", "025", "25", "7", "0025"]) == 1  # {025, 25, 0025} beats {7, 7}
    assert ev.majority_vote(["025", "7", "25", "7"]) == 0  # 2-2 tie: earliest cluster


def _record(pid, j, answer, correct, length=10, truncated=False):
    return {"id": pid, "sample": j, "answer": answer, "correct": correct, "length": length, "truncated": truncated}


def test_summarize_hand_computed():
    problems = [{"id": "a", "problem": "", "answer": "3", "level": "1"},
                {"id": "b", "problem": "", "answer": "9", "level": "2"}]
    recs = [_record("a", 0, "3", True, 4), _record("a", 1, "4", False, 8), _record("a", 2, "4", False, 8),
            _record("a", 3, "3", True, 4),
            _record("b", 0, None, False, 16, True), _record("b", 1, "1", False, 6), _record("b", 2, "2", False, 6),
            _record("b", 3, "2", False, 6)]
    s = ev.summarize(problems, {(r["id"], r["sample"]): r for r in recs}, n=4)
    assert s["avg@4"] == pytest.approx(2 / 8)
    assert s["pass@1"] == pytest.approx(2 / 8)
    assert s["pass@2"] == pytest.approx((1 - 1 / 6 + 0) / 2)  # a: 1 - C(2,2)/C(4,2); b: 0
    assert s["pass@4"] == pytest.approx(0.5)
    assert s["maj@4"] == pytest.approx(0.5)  # a: "3" vs "4" tie -> "3" (sample 0) correct; b: "2" wrong
    assert s["response_len_mean"] == pytest.approx(58 / 8)
    assert s["truncated_frac"] == pytest.approx(1 / 8)
    assert (s["n_problems"], s["n_samples"]) == (2, 8)
    assert s["per_level"] == {"1": {"avg@4": 0.5, "n_problems": 1}, "2": {"avg@4": 0.0, "n_problems": 1}}
    assert "pass@8" not in s and "per_subject" not in s


# ----------------------------------------------------------------------------- loading

def test_loader_reads_every_shared_benchmark(shared_data):
    expected = {"math500": 500, "aime24": 30, "aime25": 30, "amc23": 40}
    assert {p.stem for p in shared_data.glob("*.jsonl")} == set(expected)
    for name, count in expected.items():
        path = shared_data / f"{name}.jsonl"
        problems = ev.load_problems(str(path))
        raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        assert len(problems) == count
        assert len({p["id"] for p in problems}) == count
        for p, row in zip(problems, raw):
            assert p["answer"] and p["answer"] == str(row["answer"]).strip()  # "025" stays "025"
            assert p["problem"] == row["problem"]
    math500 = ev.load_problems(str(shared_data / "math500.jsonl"), limit=7)
    assert len(math500) == 7 and {"level", "subject"} <= set(math500[0])
    assert math500[0]["id"] == json.loads((shared_data / "math500.jsonl").open().readline())["unique_id"]


def test_loader_custom_keys_json_list_and_boxed_fallback(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "1+1?", "final": 2}\n\n{"question": "2+2?", "final": [4.0]}\n')
    assert ev.load_problems(str(f), problem_key="question", answer_key="final") == [
        {"id": "0", "problem": "1+1?", "answer": "2"}, {"id": "1", "problem": "2+2?", "answer": "4"}]
    g = tmp_path / "list.json"
    g.write_text(json.dumps([{"id": 5, "problem": "p", "solution": "so \\boxed{\\frac{1}{2}}.", "type": "Algebra",
                              "level": "Level 2"}]))
    assert ev.load_problems(str(g)) == [{"id": "5", "problem": "p", "answer": "\\frac{1}{2}", "level": "Level 2",
                                         "subject": "Algebra"}]


@pytest.mark.parametrize("content, kwargs, fix", [
    (None, {}, "--data"),
    ('{"problem": "a", "answer": "1"}\n{"problem": "b", "answ', {}, ":2:"),
    ('{"question": "a", "answer": "1"}\n', {}, "--problem-key"),
    ('{"problem": "a", "gold": "1"}\n', {}, "--answer-key"),
    ('{"problem": "a", "answer": ["1", "2"]}\n', {}, "--answer-key"),
    ('{"id": 1, "problem": "a", "answer": "1"}\n{"id": 1, "problem": "b", "answer": "2"}\n', {}, "duplicate id"),
    ('{"problem": "a", "answer": "1"}\n', {"limit": 0}, "--limit"),
])
def test_loader_errors_are_one_line_and_name_the_fix(tmp_path, content, kwargs, fix):
    path = tmp_path / "d.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError) as e:
        ev.load_problems(str(path), **kwargs)
    assert fix in str(e.value) and "\n" not in str(e.value)


def test_presets_fail_offline_with_one_line_naming_the_local_alternative(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))  # nothing cached: the download must fail
    for name in ["math500", "aime25", "math-train", "aime24", "amc23"]:
        with pytest.raises(UserError) as e:
            ev.load_problems(name)
        assert f"--data path/to/{name}.jsonl" in str(e.value) and "\n" not in str(e.value)


def _hub(monkeypatch, tmp_path, offline, probe, download):
    """The Hub as the test wants it: HF_HUB_OFFLINE, an empty hub cache, eval's one HEAD request (probe: raise or
    answer) and hf_hub_download (download), both mocked: no test reaches the network."""
    import urllib.request

    import huggingface_hub
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    monkeypatch.setattr(urllib.request, "urlopen", probe)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)


def _refused(request, timeout):
    import urllib.error

    raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))


@pytest.mark.parametrize("why", ["HF_HUB_OFFLINE", "connection refused"])
def test_an_unreachable_hub_fails_at_once_in_one_line_naming_the_callers_flag(monkeypatch, tmp_path, why, capsys):
    # no retries: hf_hub_download (which retries a connection error five times) is never called
    probe = (lambda request, timeout: pytest.fail("offline: no request")) if why == "HF_HUB_OFFLINE" else _refused
    _hub(monkeypatch, tmp_path, why == "HF_HUB_OFFLINE", probe, lambda **kw: pytest.fail("download attempted"))
    for flag in ("--data", "--eval-data"):  # eval.py's flag, train.py's for its evaluation set
        with pytest.raises(UserError) as e:
            ev.load_problems("math500", flag=flag)
        message = str(e.value)
        assert f"pass a local copy with {flag} path/to/math500.jsonl" in message and "\n" not in message
        assert ("HF_HUB_OFFLINE is set" if why == "HF_HUB_OFFLINE" else "the Hub cannot be reached") in message
    assert "downloading" not in capsys.readouterr().err


def test_an_unreachable_hub_still_serves_a_cached_copy(monkeypatch, tmp_path, shared_data):
    import huggingface_hub

    _hub(monkeypatch, tmp_path, False, _refused, lambda **kw: pytest.fail("download attempted"))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, filename, repo_type: str(
        shared_data / "math500.jsonl"))
    assert len(ev.load_problems("math500")) == 500


def test_a_reachable_hub_downloads_and_its_transient_errors_are_hf_hub_downloads_to_retry(monkeypatch, tmp_path,
                                                                                          shared_data, capsys):
    import urllib.error

    calls = []

    class Answer:
        def close(self):
            pass

    def download(**kw):
        calls.append(kw)
        if len(calls) > 1:  # what hf_hub_download raises after its own retries of a 503
            raise RuntimeError("503 Server Error: Service Unavailable")
        return str(shared_data / "math500.jsonl")
    _hub(monkeypatch, tmp_path, False, lambda request, timeout: Answer(), download)
    assert len(ev.load_problems("math500", flag="--eval-data")) == 500
    assert calls == [dict(repo_id="HuggingFaceH4/MATH-500", filename="test.jsonl", repo_type="dataset")]
    assert "eval: downloading preset 'math500' (HuggingFaceH4/MATH-500)" in capsys.readouterr().err  # no silent wait

    def server_error(request, timeout):  # the Hub answered: reachable, so the download is tried (and retried)
        raise urllib.error.HTTPError(request.full_url, 503, "Service Unavailable", {}, None)
    monkeypatch.setattr(urllib.request, "urlopen", server_error)
    with pytest.raises(UserError) as e:
        ev.load_problems("math500", flag="--eval-data")
    assert len(calls) == 2 and "503 Server Error" in str(e.value)
    assert "pass a local copy with --eval-data path/to/math500.jsonl" in str(e.value)


def _fake_viewer(rows, requests, truncated=()):
    """A stand-in for eval._get_json serving `rows` the way the Hub's dataset-viewer /rows endpoint does."""
    from urllib.parse import parse_qs, urlparse

    def get_json(url):
        assert url.startswith(ev.VIEWER_API + "?")
        q = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
        requests.append(q)
        offset, length = int(q["offset"]), int(q["length"])
        page = [{"row_idx": i, "row": rows[i], "truncated_cells": ["problem"] if i in truncated else []}
                for i in range(offset, min(offset + length, len(rows)))]
        return {"features": [], "rows": page, "num_rows_total": len(rows), "num_rows_per_page": length,
                "partial": False}
    return get_json


@pytest.mark.parametrize("name, file", [("aime24", "aime24.jsonl"), ("amc23", "amc23.jsonl")])
def test_viewer_presets_page_through_the_api_once_and_cache(shared_data, monkeypatch, tmp_path, name, file):
    import huggingface_hub.constants as hub

    rows = [json.loads(line) for line in (shared_data / file).read_text().splitlines() if line.strip()]
    if name == "amc23":  # the Hub copy names its problem field "question" and stores answers as floats
        rows = [{"id": r["id"], "question": r["problem"], "answer": float(r["answer"]), "url": r["url"]} for r in rows]
    requests = []
    monkeypatch.setenv("ETR_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(ev, "VIEWER_PAGE", 7)  # 30 or 40 rows -> 5 or 6 pages
    monkeypatch.setattr(ev, "_get_json", _fake_viewer(rows, requests))
    problems = ev.load_problems(name)
    repo, where = ev.PRESETS[name][:2]
    config, split = where.removeprefix("viewer:").split("/")
    assert [int(q["offset"]) for q in requests] == list(range(0, len(rows), 7))
    assert all((q["dataset"], q["config"], q["split"], q["length"]) == (repo, config, split, "7") for q in requests)
    local = ev.load_problems(str(shared_data / file))
    assert [(p["id"], p["problem"], p["answer"]) for p in problems] == [
        (p["id"], p["problem"], p["answer"]) for p in local]  # 27.0 -> "27"; AIME "025" stays "025"
    # Cached: offline, with the API gone, the same problems come back without a request.
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(ev, "_get_json", None)
    assert ev.load_problems(name) == problems and len(requests) == math.ceil(len(rows) / 7)
    assert [p.name for p in (tmp_path / "data").iterdir()] == [f"{repo.replace('/', '--')}--{config}--{split}.jsonl"]


@pytest.mark.parametrize("case", ["truncated cell", "wrong size", "server error"])
def test_viewer_preset_refuses_a_bad_download_and_caches_nothing(monkeypatch, tmp_path, case):
    import huggingface_hub.constants as hub

    rows = [{"id": i, "problem": f"p{i}", "answer": str(i)} for i in range(30)]
    requests = []
    get_json = _fake_viewer(rows[:29] if case == "wrong size" else rows, requests,
                            truncated={12} if case == "truncated cell" else ())
    if case == "server error":
        def get_json(url):
            raise OSError("HTTP Error 500: Internal Server Error")
    monkeypatch.setenv("ETR_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(ev, "_get_json", get_json)
    with pytest.raises(UserError) as e:
        ev.load_problems("aime24")
    message = str(e.value)
    assert "--data path/to/aime24.jsonl" in message and "\n" not in message
    assert {"truncated cell": "truncated cells", "wrong size": "29 rows, not 30",
            "server error": "HTTP Error 500"}[case] in message
    assert not list(tmp_path.rglob("*.jsonl"))  # a refused download leaves nothing to be trusted next time


def test_preset_with_a_different_size_than_its_card_is_refused(monkeypatch, tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps({"problem": f"p{i}", "answer": str(i)}) + "\n" for i in range(499)))
    monkeypatch.setattr(ev, "_download", lambda name: path)
    with pytest.raises(UserError, match="has 499 problems, not 500.*--data path/to/math500.jsonl"):
        ev.load_problems("math500")


def test_local_file_named_like_a_preset_is_read_not_downloaded(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "aime24").write_text('{"problem": "1+1?", "answer": "2"}\n')
    monkeypatch.setattr(ev, "_download", None)
    assert ev.load_problems("aime24") == [{"id": "0", "problem": "1+1?", "answer": "2"}]


def test_toy_preset_is_held_out_from_training_seeds():
    from toy import toy_problems

    held_out = ev.load_problems("toy", limit=50)
    assert len(held_out) == 50 and held_out == toy_problems(50, seed=ev.TOY_EVAL_SEED)
    train_ids = {p["id"] for p in toy_problems(50, seed=0)}
    assert not train_ids & {p["id"] for p in held_out}


# ----------------------------------------------------------------------------- resume (fake generator)

def _fake_generate(calls):
    """A deterministic stand-in for rollout.generate: the completion depends only on the prompt."""
    def generate(model, tokenizer, prompts, n, *, temperature, top_p, max_new_tokens, batch_size):
        assert n == 1 and len(prompts) <= batch_size
        calls.append(len(prompts))
        texts, lengths = [], []
        for prompt in prompts:
            i = int(prompt.split()[1])
            texts.append(f"so \\boxed{{{2 * i if i % 3 else 2 * i + 1}}}")  # every third problem wrong
            lengths.append(min(max_new_tokens, 3 + i % 4))
        mask = torch.tensor([[1] * k + [0] * (max(lengths) - k) for k in lengths])  # [N, T]
        return {"texts": texts, "completion_mask": mask,
                "truncated": torch.tensor([k == max_new_tokens for k in lengths])}
    return generate


@pytest.fixture
def fake_eval(monkeypatch):
    calls = []
    monkeypatch.setattr(ev, "generate", _fake_generate(calls))
    monkeypatch.setattr(ev, "build_prompt", lambda problem, tokenizer, template, thinking=None: problem)
    problems = [{"id": f"p{i}", "problem": f"what {i} doubled?", "answer": str(2 * i)} for i in range(7)]
    kwargs = dict(n=3, temperature=0.0, max_new_tokens=5, batch_size=4, run_info={"model": "fake", "seed": 0})
    return problems, kwargs, calls


def _lines(path):
    return path.read_text().splitlines()


def test_resume_after_crash_gives_the_uninterrupted_summary(fake_eval, tmp_path):
    problems, kwargs, calls = fake_eval
    straight = ev.evaluate(None, None, problems, out_dir=tmp_path / "a", **kwargs)
    assert sum(calls) == 21 and straight["avg@3"] == pytest.approx(4 / 7)  # problems 0, 3, 6 are wrong
    assert straight["truncated_frac"] == pytest.approx(3 / 7)  # i = 2, 3, 6 reach max_new_tokens = 5

    out = tmp_path / "b"
    ev.evaluate(None, None, problems, out_dir=out, **kwargs)
    samples = out / "samples.jsonl"
    kept = _lines(samples)[:9]
    cut = _lines(samples)[9][:25]  # the crash: a line written halfway
    samples.write_text("\n".join(kept) + "\n" + cut)
    calls.clear()
    resumed = ev.evaluate(None, None, problems, out_dir=out, **kwargs)
    assert sum(calls) == 21 - 9  # only the missing pairs are generated
    lines = _lines(samples)
    assert lines[:9] == kept  # nothing saved is lost or rewritten
    records = [json.loads(line) for line in lines]  # every line parses: the cut one is gone
    assert len(records) == 21 and len({(r["id"], r["sample"]) for r in records}) == 21
    assert resumed == straight
    assert {k: v for k, v in json.loads((out / "summary.json").read_text()).items()
            if k not in ("settings", "code_version")} == straight

    calls.clear()  # a third run has nothing left to do
    assert ev.evaluate(None, None, problems, out_dir=out, **kwargs) == straight and sum(calls) == 0
    assert len(_lines(samples)) == 21


def test_complete_last_line_without_newline_is_kept(fake_eval, tmp_path):
    problems, kwargs, calls = fake_eval
    ev.evaluate(None, None, problems, out_dir=tmp_path, **kwargs)
    samples = tmp_path / "samples.jsonl"
    samples.write_text(samples.read_text()[:-1])  # crash between a record and its newline
    calls.clear()
    ev.evaluate(None, None, problems, out_dir=tmp_path, **kwargs)
    assert sum(calls) == 0 and len(_lines(samples)) == 21


def test_other_settings_are_refused_instead_of_mixed(fake_eval, tmp_path):
    problems, kwargs, calls = fake_eval
    ev.evaluate(None, None, problems[:2], out_dir=tmp_path, **kwargs)
    before = (tmp_path / "samples.jsonl").read_text()
    for change in [{"temperature": 1.0}, {"max_new_tokens": 9}, {"run_info": {"model": "other", "seed": 0}}]:
        with pytest.raises(UserError) as e:
            ev.evaluate(None, None, problems, out_dir=tmp_path, **{**kwargs, **change})
        assert "--out" in str(e.value) and "\n" not in str(e.value)
    assert (tmp_path / "samples.jsonl").read_text() == before
    # more problems and more samples with the same settings extend the file
    ev.evaluate(None, None, problems, out_dir=tmp_path, **{**kwargs, "n": 4})
    assert _lines(tmp_path / "samples.jsonl")[:6] == before.splitlines() and len(_lines(tmp_path / "samples.jsonl")) == 28


# ----------------------------------------------------------------------------- CLI

def test_help_lists_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        ev.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    flags = ["--model", "--data", "--n", "--temperature", "--top-p", "--max-new-tokens", "--batch-size", "--template",
             "--out", "--seed", "--problem-key", "--answer-key", "--limit"]
    for flag in flags:
        assert flag in text
    for default in ["else 1)", "else 0.0)", "else 1.0)", "else 1024)", "(default: 64)", "(default: plain)",
                    "(default: 0)", "(default: problem)", "(default: answer)", "aime24: {'n': 32, 'temperature': 0.6"]:
        assert default in text
    assert text.count("(default:") >= len(flags) - 2  # --model and --data are required


@pytest.mark.parametrize("data, flags, expect", [
    ("aime24", [], dict(n=32, temperature=0.6, top_p=0.95, max_new_tokens=512 - 9)),  # lowered to the context
    ("math500", ["--n", "2", "--max-new-tokens", "100"], dict(n=2, temperature=0.6, top_p=0.95, max_new_tokens=100)),
    ("x.jsonl", [], dict(n=1, temperature=0.0, top_p=1.0, max_new_tokens=503)),
])
def test_preset_defaults_and_the_context_budget(data, flags, expect, capsys):
    """A model whose context is 512 tokens, prompts of at most 9: a preset's 32,768 is lowered to 503 with a line
    on stderr; a flag wins; an asked-for budget past the context is refused in one line naming the largest."""
    from types import SimpleNamespace
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=512))
    tokenizer = lambda prompts: {"input_ids": [[0] * (5 + i) for i in range(len(prompts))]}  # noqa: E731
    problems = [{"problem": "a"}] * 5
    args = ev.parse_args(["--model", "m", "--data", data, *flags])
    if data == "x.jsonl":
        args = ev.parse_args(["--model", "m", "--data", data, "--max-new-tokens", "504"])
        with pytest.raises(UserError, match="pass --max-new-tokens 503 or less"):
            ev.fill_defaults(args, model, tokenizer, problems)
        args = ev.parse_args(["--model", "m", "--data", data, "--max-new-tokens", "503"])
    ev.fill_defaults(args, model, tokenizer, problems)
    assert {k: getattr(args, k) for k in expect} == expect
    assert ("lowered to 503" in capsys.readouterr().err) == (data == "aime24")


def test_cli_user_error_is_one_line_on_stderr_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ev.main(["--model", "toy", "--data", str(tmp_path / "missing.jsonl")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# ----------------------------------------------------------------------------- end to end on the toy model

@pytest.fixture(scope="module")
def toy_model_dir(request, tmp_path_factory):
    try:  # the shared, cached toy when conftest provides one
        return request.getfixturevalue("toy_dir")
    except pytest.FixtureLookupError:
        from toy import build_toy
        return build_toy(tmp_path_factory.mktemp("toy"))


def test_toy_end_to_end(toy_model_dir, tmp_path, capsys):
    from reward import math_reward

    out = tmp_path / "run"
    ev.main(["--model", str(toy_model_dir), "--data", "toy", "--limit", "4", "--n", "2", "--temperature", "1.0",
             "--max-new-tokens", "40", "--batch-size", "5", "--seed", "3", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "avg@2" in printed and "maj@2" in printed
    records = [json.loads(line) for line in _lines(out / "samples.jsonl")]
    summary = json.loads((out / "summary.json").read_text())
    assert len(records) == 8 and len({(r["id"], r["sample"]) for r in records}) == 8
    assert summary["avg@2"] == pytest.approx(sum(r["correct"] for r in records) / 8)
    assert summary["pass@1"] == pytest.approx(summary["avg@2"])
    assert summary["response_len_mean"] == pytest.approx(sum(r["length"] for r in records) / 8)
    assert summary["truncated_frac"] == pytest.approx(sum(r["truncated"] for r in records) / 8)
    problems = {p["id"]: p for p in ev.load_problems("toy", limit=4)}
    for r in records:
        assert r["correct"] == (math_reward(r["completion"], r["gold"]) > 0)
        assert r["gold"] == problems[r["id"]]["answer"] and r["prompt"].startswith(problems[r["id"]]["problem"])
        assert 1 <= r["length"] <= 40 and (r["length"] == 40 if r["truncated"] else True)
    assert summary["settings"]["model"] == str(toy_model_dir) and summary["settings"]["seed"] == 3
    assert summary["settings"]["data"] == "toy" and summary["code_version"]
    # same command again: nothing regenerated, same numbers
    ev.main(["--model", str(toy_model_dir), "--data", "toy", "--limit", "4", "--n", "2", "--temperature", "1.0",
             "--max-new-tokens", "40", "--batch-size", "5", "--seed", "3", "--out", str(out)])
    assert len(_lines(out / "samples.jsonl")) == 8
    assert json.loads((out / "summary.json").read_text()) == summary
