"""Evaluate a model on math benchmarks: avg@n, unbiased pass@k, maj@n, per-level breakdown; resumable.

    python eval.py --model Qwen2.5-Math-1.5B --data math500 --n 4 --temperature 0.6 --top-p 0.95

Design
- Data. `load_problems` turns a preset name or a local JSONL file into a list of
  {"id", "problem", "answer"[, "level", "subject"]}. A preset is fetched once from the Hugging Face Hub and
  cached: a JSONL file with `huggingface_hub.hf_hub_download`, or, for sets the Hub holds only as parquet
  (which needs pyarrow), the rows as JSON from the Hub's dataset-viewer API, cached as JSONL. No
  `datasets`/`pandas` dependency. "toy" is a held-out set of the toy model's task.
- Generation and scoring go through the same code as training: `rollout.build_prompt` (same templates),
  `rollout.generate` (n samples per problem, temperature 0 = greedy), `reward.math_reward`.
- Metrics. avg@n is the mean accuracy over all n samples of every problem. pass@k uses the unbiased
  estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code", eq. 1),
  1 - C(n-c, k) / C(n, k), in its numerically stable product form. maj@n is majority voting
  (self-consistency, Wang et al. 2022) over extracted answers clustered with `reward.is_equiv`.
- Outputs. Every sample is appended to <out>/samples.jsonl as soon as its batch is scored, and flushed.
  Re-running with the same --out skips the (id, sample) pairs already in the file and recomputes the
  summary from the file, so an interrupted run loses at most one batch. A line cut by a crash is dropped
  before appending. <out>/meta.json records the settings that define the samples (model, data, decoding,
  seed); a re-run with other settings is refused instead of mixing two distributions in one file.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from reward import extract_answer, is_equiv, math_reward
from rollout import PROMPT_TEMPLATES, UserError, build_prompt, default_cache_dir, generate, load_model, thinking
from toy import toy_problems

# preset -> (hub dataset repo, where its rows are, problem field(s), answer field, number of problems).
# "Where" is a JSONL file in the repo, fetched with hf_hub_download, or "viewer:<config>/<split>" for a set
# the Hub holds only as parquet: the Hub's dataset-viewer API serves those rows as JSON (VIEWER_API). Repos,
# files, fields and sizes were checked against each dataset's card and file list on the Hub; a download whose
# size differs from the card is refused rather than evaluated.
PRESETS = {
    "math500": ("HuggingFaceH4/MATH-500", "test.jsonl", "problem", "answer", 500),
    "aime24": ("HuggingFaceH4/aime_2024", "viewer:default/train", "problem", "answer", 30),
    "aime25": ("math-ai/aime25", "test.jsonl", "problem", "answer", 30),
    "amc23": ("math-ai/amc23", "viewer:default/test", ("question", "problem"), "answer", 40),
    # The MATH (Hendrycks et al. 2021) training problems, for train.py; when a row has no answer field
    # the answer is the last \boxed{} of its solution.
    "math-train": ("HuggingFaceTB/math_tasks", "data/math/train.jsonl", "problem", "answer", None),
}
# How each benchmark is sampled unless a flag says otherwise. DeepSeek-R1 (arXiv 2501.12948, Sec. 3.1, "Evaluation
# Setup") reports pass@1 as the mean over k samples per problem at temperature 0.6 and top-p 0.95, with up to 32,768
# new tokens, for AIME 2024, MATH-500 and the rest; DAPO (arXiv 2503.14476) reports AIME as avg@32. Here: k = 32 for
# the 30-40 problems of AIME and AMC (avg@32), k = 4 for MATH-500's 500 problems (the same number of samples as 64
# AIME problems would need, within a day on one GPU). 32,768 tokens is an upper bound, not a target: main() lowers it
# to what the model's context leaves after the longest prompt, and says so. Anything else (a JSONL file, the toy):
# greedy, 1,024 tokens, one sample.
EVAL_DEFAULTS = {
    "aime24": dict(n=32, temperature=0.6, top_p=0.95, max_new_tokens=32768),
    "aime25": dict(n=32, temperature=0.6, top_p=0.95, max_new_tokens=32768),
    "amc23": dict(n=32, temperature=0.6, top_p=0.95, max_new_tokens=32768),
    "math500": dict(n=4, temperature=0.6, top_p=0.95, max_new_tokens=32768),
}
OTHER_DEFAULTS = dict(n=1, temperature=0.0, top_p=1.0, max_new_tokens=1024)
VIEWER_API = "https://datasets-server.huggingface.co/rows"  # ?dataset=&config=&split=&offset=&length=
VIEWER_PAGE = 100  # the most rows the API returns per request
TOY_EVAL_SEED = 10_000  # the toy task's held-out problems: a seed range training never uses
TOY_EVAL_SIZE = 200


# ----------------------------------------------------------------------------- data

def _as_text(value):
    """An answer or id as a string: AIME "025" stays "025"; 27.0 (a float from JSON) becomes "27"."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _read_rows(path: Path) -> list[dict]:
    """A JSONL file (one object per line) or a JSON file holding a list of objects."""
    if not path.is_file():
        raise UserError(f"{path}: no such file; pass --data with a preset ({', '.join([*PRESETS, 'toy'])}) "
                        f"or a path to a JSONL file")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix the file") from None
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be one JSON object") from None
    if not rows or not all(isinstance(row, dict) for row in rows):
        raise UserError(f"{path}: expected JSON objects with a problem and an answer field, one per line")
    return rows


def _to_problems(rows: list[dict], source: str, problem_key: str, answer_key: str) -> list[dict]:
    problems, seen, no_answer = [], set(), 0
    for i, row in enumerate(rows):
        if problem_key not in row:
            raise UserError(f"{source} row {i}: no field '{problem_key}' (fields: {', '.join(row)}); "
                            f"name the problem field with --problem-key")
        if answer_key in row:
            value = row[answer_key]
            if isinstance(value, list) and len(value) == 1:  # some copies store ["27"]
                value = value[0]
            if isinstance(value, (list, dict)):
                raise UserError(f"{source} row {i}: '{answer_key}' is not a single answer; "
                                f"name a field holding one answer string with --answer-key")
            answer = _as_text(value)
        elif "solution" in row:  # MATH layout: the answer is the solution's last \boxed{}
            answer = extract_answer(row["solution"]) or ""
            if not answer:
                no_answer += 1
                continue
        else:
            raise UserError(f"{source} row {i}: no field '{answer_key}' (fields: {', '.join(row)}); "
                            f"name the answer field with --answer-key")
        if not answer:
            raise UserError(f"{source} row {i}: empty '{answer_key}'; every problem needs a reference answer")
        pid = _as_text(row.get("unique_id", row.get("id", i)))
        if pid in seen:
            raise UserError(f"{source} row {i}: duplicate id '{pid}'; ids (unique_id / id) must be unique")
        seen.add(pid)
        problem = {"id": pid, "problem": str(row[problem_key]), "answer": answer}
        if "level" in row:
            problem["level"] = _as_text(row["level"])
        if "subject" in row or "type" in row:  # MATH-500 says "subject", the original MATH files "type"
            problem["subject"] = _as_text(row.get("subject", row.get("type")))
        problems.append(problem)
    if no_answer:
        print(f"warning: {source}: skipped {no_answer} rows whose solution has no \\boxed{{}} answer", file=sys.stderr)
    return problems


def _get_json(url: str) -> dict:
    from huggingface_hub.utils import build_hf_headers  # user agent, and the user's HF token if one is set

    with urllib.request.urlopen(urllib.request.Request(url, headers=build_hf_headers()), timeout=60) as response:
        return json.load(response)


def _viewer_rows(repo: str, config: str, split: str) -> list[dict]:
    """Every row of one split from the Hub's dataset-viewer API, page by page."""
    rows, total = [], None
    while total is None or len(rows) < total:
        query = urllib.parse.urlencode(dict(dataset=repo, config=config, split=split, offset=len(rows),
                                            length=VIEWER_PAGE))
        page = _get_json(f"{VIEWER_API}?{query}")
        total = page["num_rows_total"]
        if page.get("partial") or not page["rows"]:
            raise RuntimeError(f"the viewer served {len(rows)} of {total} rows")
        for item in page["rows"]:
            if item.get("truncated_cells"):  # the viewer shortens huge cells; a cut problem is a wrong problem
                raise RuntimeError(f"row {item['row_idx']} has truncated cells {item['truncated_cells']}")
            rows.append(item["row"])
    return rows


class _NotDownloaded(Exception):
    """A preset could not be fetched; load_problems names the flag that passes a local copy instead."""


def _hub_unreachable() -> str | None:
    """Why the Hub cannot be reached at all (offline mode, no connection), or None when it answers.

    One HEAD request, no retries: hf_hub_download retries a connection error five times with backoff (~25 s), which
    suits a transient error and only delays the same one-line failure when there is no network at all."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=10).close()
    except urllib.error.HTTPError:
        return None  # the Hub answered: an HTTP error may be transient, and hf_hub_download retries those
    except OSError as e:  # no DNS, connection refused, no route, connect timeout (URLError is an OSError)
        reason = getattr(e, "reason", e)
        return f"the Hub cannot be reached ({constants.ENDPOINT}: {type(reason).__name__}: {reason})"
    return None


def _download(name: str) -> Path:
    """A preset's rows as a local JSONL file, fetched once and cached."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    repo, where, _, _, size = PRESETS[name]
    try:
        if not where.startswith("viewer:"):
            cached = try_to_load_from_cache(repo, where, repo_type="dataset")
            unreachable = _hub_unreachable()
            if unreachable and isinstance(cached, str):
                return Path(cached)  # what hf_hub_download falls back to, without its retries
            if unreachable:
                raise _NotDownloaded(f"{unreachable}, and it is not cached")
            if not isinstance(cached, str):
                print(f"eval: downloading preset '{name}' ({repo}) from the Hugging Face Hub, once (then cached)",
                      file=sys.stderr, flush=True)
            return Path(hf_hub_download(repo_id=repo, filename=where, repo_type="dataset"))
        config, split = where.removeprefix("viewer:").split("/")
        path = default_cache_dir() / "data" / f"{repo.replace('/', '--')}--{config}--{split}.jsonl"
        if not path.is_file():
            if constants.HF_HUB_OFFLINE:
                raise RuntimeError("HF_HUB_OFFLINE is set and nothing is cached")
            print(f"eval: downloading preset '{name}' ({repo}) from the Hub's dataset viewer, once (cached in "
                  f"{path})", file=sys.stderr, flush=True)
            rows = _viewer_rows(repo, config, split)
            if len(rows) != size:  # checked before caching, so a bad copy is not kept
                raise RuntimeError(f"the split has {len(rows)} rows, not {size}")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
            os.replace(tmp, path)  # atomic: a crash never leaves half a file in the cache
        return path
    except _NotDownloaded:
        raise
    except Exception as e:  # offline, no network, moved file, auth: all have the same fix
        raise _NotDownloaded(f"{repo} {where}: {type(e).__name__}: {e}") from None


def load_problems(data: str, problem_key: str = "problem", answer_key: str = "answer",
                  limit: int | None = None, flag: str = "--data") -> list[dict]:
    """Problems from a preset name or a JSONL path: [{"id", "problem", "answer", ["level", "subject"]}].

    flag: the caller's command-line flag for `data`, named in the error that asks for a local copy when a preset
    cannot be downloaded (eval.py and train.py's training set: --data; train.py's evaluation set: --eval-data)."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive number of problems, got {limit}")
    if data == "toy":
        problems = toy_problems(limit or TOY_EVAL_SIZE, seed=TOY_EVAL_SEED)
    elif data in PRESETS and not Path(data).exists():  # a local file named like a preset wins
        repo, _, problem_keys, answer_key, size = PRESETS[data]
        try:
            rows = _read_rows(_download(data))
        except _NotDownloaded as e:
            raise UserError(f"could not download preset '{data}' ({e}); pass a local copy with {flag} "
                            f"path/to/{data}.jsonl".replace("\n", " ")) from None
        problem_keys = (problem_keys,) if isinstance(problem_keys, str) else problem_keys
        problem_key = next((k for k in problem_keys if k in rows[0]), problem_keys[0])
        problems = _to_problems(rows, data, problem_key, answer_key)
        if size is not None and len(problems) != size:
            raise UserError(f"preset '{data}' from {repo} has {len(problems)} problems, not {size}: the Hub copy "
                            f"changed; pass a checked local copy with {flag} path/to/{data}.jsonl")
    else:
        problems = _to_problems(_read_rows(Path(data)), data, problem_key, answer_key)
    return problems[:limit]


# ----------------------------------------------------------------------------- metrics

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, eq. 1).

    1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i): no huge binomials, no overflow.
    """
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_vote(answers: list[str | None]) -> int:
    """Index of the sample whose answer wins the majority vote (maj@n).

    Answers are clustered in sampling order: each joins the first cluster whose representative (its
    earliest answer) it equals, exactly as a string or by reward.is_equiv. The largest cluster wins;
    among tied largest clusters the one whose representative was sampled earliest wins. None (no
    extracted answer) never votes, so it wins only when every answer is None (index 0 is returned).
    """
    clusters = []  # [index of the representative, size]
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        for cluster in clusters:
            rep = answers[cluster[0]]
            if answer == rep or is_equiv(answer, rep):
                cluster[1] += 1
                break
        else:
            clusters.append([i, 1])
    if not clusters:
        return 0
    return max(clusters, key=lambda cluster: cluster[1])[0]  # max keeps the first of equal sizes


def summarize(problems: list[dict], samples: dict, n: int) -> dict:
    """Metrics over problems, from samples[(id, sample index)] = record (see evaluate)."""
    per_problem = [[samples[(p["id"], j)] for j in range(n)] for p in problems]
    correct = [[r["correct"] for r in rs] for rs in per_problem]
    flat = [r for rs in per_problem for r in rs]
    summary = {f"avg@{n}": sum(map(sum, correct)) / len(flat)}
    k = 1
    while k <= n:
        summary[f"pass@{k}"] = sum(pass_at_k(n, sum(c), k) for c in correct) / len(problems)
        k *= 2
    votes = [rs[majority_vote([r["answer"] for r in rs])]["correct"] for rs in per_problem]
    summary[f"maj@{n}"] = sum(votes) / len(problems)
    summary["response_len_mean"] = sum(r["length"] for r in flat) / len(flat)
    summary["truncated_frac"] = sum(r["truncated"] for r in flat) / len(flat)
    summary["n_problems"] = len(problems)
    summary["n_samples"] = len(flat)
    for field in ("level", "subject"):  # MATH-500: accuracy per difficulty level and per subject
        groups = defaultdict(list)
        for p, c in zip(problems, correct):
            if field in p:
                groups[p[field]].append(sum(c) / n)
        if groups:
            summary[f"per_{field}"] = {g: {f"avg@{n}": sum(v) / len(v), "n_problems": len(v)}
                                       for g, v in sorted(groups.items())}
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"{'metric':<20}{'value':>10}"]
    for key, value in summary.items():
        if isinstance(value, dict):
            continue
        lines.append(f"{key:<20}{value:>10.4f}" if isinstance(value, float) else f"{key:<20}{value:>10}")
    for field in ("level", "subject"):
        for group, stats in summary.get(f"per_{field}", {}).items():
            avg_key = next(k for k in stats if k.startswith("avg@"))
            lines.append(f"{(field + ' ' + group)[:28]:<28}{avg_key} {stats[avg_key]:.4f}  (n={stats['n_problems']})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- samples file

def read_samples(path: Path) -> dict:
    """{(id, sample index): record} from a samples.jsonl; lines that do not parse (a crash) are skipped."""
    samples, broken = {}, 0
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                samples[(record["id"], record["sample"])] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                broken += 1
    if broken:
        print(f"warning: {path}: ignored {broken} unreadable line(s) (an interrupted write)", file=sys.stderr)
    return samples


def _drop_partial_last_line(path: Path):
    """Make the file end with a newline so the next append starts a fresh line.

    A last line without its newline was cut by a crash unless it is still complete JSON: a cut line is
    removed (its pair gets regenerated), a complete one just gets its newline.
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:])
        with open(path, "ab") as f:
            f.write(b"\n")
    except json.JSONDecodeError:
        with open(path, "r+b") as f:
            f.truncate(start)


def _check_meta(out_dir: Path, meta: dict):
    """Write <out>/meta.json on the first run; refuse to add samples made with other settings."""
    meta_path, samples_path = out_dir / "meta.json", out_dir / "samples.jsonl"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old != meta:
            diff = ", ".join(f"{k}: {old.get(k)!r} -> {meta.get(k)!r}" for k in sorted({*old, *meta})
                             if old.get(k) != meta.get(k))
            raise UserError(f"{out_dir} holds samples made with other settings ({diff}); pass another --out")
    elif samples_path.exists() and samples_path.stat().st_size > 0:
        raise UserError(f"{samples_path} exists without meta.json, so its settings are unknown; pass another --out")
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")


def code_version() -> str:
    """The git commit of this file's checkout (+"-dirty" with uncommitted changes), else "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


# ----------------------------------------------------------------------------- evaluation

def evaluate(model, tokenizer, problems: list[dict], *, n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
             max_new_tokens: int = 1024, batch_size: int = 64, template: str = "plain", thinking: bool | None = None,
             out_dir: str | Path | None = None, run_info: dict | None = None) -> dict:
    """Sample n completions per problem, score them, return the summary (see summarize).

    With out_dir: samples go to <out_dir>/samples.jsonl as they are produced, pairs already there are
    skipped, and the summary (plus settings, run_info such as model/data/seed, and code version) is
    written to <out_dir>/summary.json. run_info is part of the settings a re-run must match.
    """
    if n < 1 or batch_size < 1 or max_new_tokens < 1:
        raise UserError(f"--n, --batch-size and --max-new-tokens must be >= 1 (got {n}, {batch_size}, {max_new_tokens})")
    if temperature < 0 or not 0 < top_p <= 1:
        raise UserError(f"need --temperature >= 0 and 0 < --top-p <= 1 (got {temperature}, {top_p})")
    if not problems:
        raise UserError("no problems to evaluate; check --data and --limit")
    settings = {"template": template, **({} if thinking is None else {"thinking": thinking}),
                "temperature": temperature, "top_p": top_p,
                "max_new_tokens": max_new_tokens, **(run_info or {})}
    samples_path = None
    samples = {}
    if out_dir is not None:
        out_dir = Path(out_dir)
        _check_meta(out_dir, settings)
        samples_path = out_dir / "samples.jsonl"
        _drop_partial_last_line(samples_path)
        samples = read_samples(samples_path)

    prompts = [build_prompt(p["problem"], tokenizer, template, thinking) for p in problems]
    todo = [(i, j) for i, p in enumerate(problems) for j in range(n) if (p["id"], j) not in samples]
    out_file = open(samples_path, "a", encoding="utf-8") if samples_path else None
    try:
        with tqdm(total=len(problems) * n, initial=len(problems) * n - len(todo), desc="eval",
                  unit="sample", disable=not todo) as bar:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]  # one row per (problem, sample) pair
                batch = generate(model, tokenizer, [prompts[i] for i, _ in chunk], n=1, temperature=temperature,
                                 top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size)
                lengths = batch["completion_mask"].sum(dim=1).tolist()  # [N] tokens incl. EOS
                for row, (i, j) in enumerate(chunk):
                    text, gold = batch["texts"][row], problems[i]["answer"]
                    record = {"id": problems[i]["id"], "sample": j, "prompt": prompts[i], "completion": text,
                              "answer": extract_answer(text), "gold": gold,
                              "correct": math_reward(text, gold) > 0, "length": int(lengths[row]),
                              "truncated": bool(batch["truncated"][row])}
                    samples[(record["id"], j)] = record
                    if out_file:
                        out_file.write(json.dumps(record) + "\n")
                if out_file:
                    out_file.flush()
                    os.fsync(out_file.fileno())
                bar.update(len(chunk))
    finally:
        if out_file:
            out_file.close()

    if samples_path is not None:  # the file is the record of truth: recompute from it
        samples = read_samples(samples_path)
    summary = summarize(problems, samples, n)
    if out_dir is not None:
        report = {**summary, "settings": {**settings, "n": n, "batch_size": batch_size},
                  "code_version": code_version()}
        (out_dir / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    return summary


# ----------------------------------------------------------------------------- CLI

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Evaluate a model on math benchmarks (avg@n, pass@k, maj@n).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="hub id, local directory, alias (e.g. Qwen2.5-Math-1.5B), 'toy', "
                                                  "or a .gguf file or SmolLM2-135M-Instruct-GGUF (converted once)")
    p.add_argument("--data", required=True,
                   help=f"preset ({', '.join([*PRESETS, 'toy'])}) or a path to a JSONL file")
    by_preset = "; ".join(f"{k}: {v}" for k, v in EVAL_DEFAULTS.items())
    p.add_argument("--n", type=int, help=f"samples per problem (default: the preset's, else {OTHER_DEFAULTS['n']})")
    p.add_argument("--temperature", type=float,
                   help=f"sampling temperature; 0 = greedy (default: the preset's, else {OTHER_DEFAULTS['temperature']})")
    p.add_argument("--top-p", type=float, help=f"nucleus sampling (default: the preset's, else {OTHER_DEFAULTS['top_p']})")
    p.add_argument("--max-new-tokens", type=int,
                   help=f"generation budget per sample, at most the model's context less the longest prompt (default: "
                        f"the preset's, else {OTHER_DEFAULTS['max_new_tokens']}). Presets: {by_preset}")
    p.add_argument("--batch-size", type=int, default=64, help="sequences generated at once (problems x samples)")
    p.add_argument("--template", default="plain", choices=sorted(PROMPT_TEMPLATES), help="prompt template, as in training")
    p.add_argument("--thinking", choices=["on", "off"],
                   help="with --template chat: Qwen3's thinking switch (enable_thinking); default: the template's own")
    p.add_argument("--out", default=None, help="output directory (samples.jsonl, summary.json); "
                                               "default runs/eval/<model>/<data>")
    p.add_argument("--seed", type=int, default=0, help="seed of torch's RNG (sampling)")
    p.add_argument("--problem-key", default="problem", help="field of a JSONL file holding the problem")
    p.add_argument("--answer-key", default="answer",
                   help="field of a JSONL file holding the reference answer (if absent: last \\boxed{} of 'solution')")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first LIMIT problems")
    return p.parse_args(argv)


def context_budget(model, tokenizer, prompts: list[str]) -> tuple[int, int | None]:
    """(longest prompt in tokens, new tokens the model's context leaves after it; None if the config names no limit)."""
    longest = max(len(ids) for ids in tokenizer(prompts)["input_ids"])
    context = getattr(model.config, "max_position_embeddings", None)
    return longest, None if context is None else context - longest


def fill_defaults(args, model, tokenizer, problems):
    """The preset's sampling settings (EVAL_DEFAULTS) where no flag was given; a budget past the model's context is
    refused when asked for, and lowered to fit when it is the preset's."""
    defaulted = {key for key in OTHER_DEFAULTS if getattr(args, key) is None}
    for key in defaulted:
        setattr(args, key, EVAL_DEFAULTS.get(args.data, OTHER_DEFAULTS)[key])
    longest, room = context_budget(model, tokenizer, [build_prompt(p["problem"], tokenizer, args.template, thinking(args.thinking))
                                                      for p in problems])
    if room is None or args.max_new_tokens <= room:
        return
    if room < 1:
        raise UserError(f"the longest prompt ({longest} tokens) fills the model's context: use --limit or other data")
    if "max_new_tokens" not in defaulted:
        raise UserError(f"--max-new-tokens {args.max_new_tokens} + the longest prompt ({longest} tokens) exceeds the "
                        f"model's context of {longest + room} tokens: pass --max-new-tokens {room} or less")
    print(f"eval: --max-new-tokens {args.max_new_tokens} (the default for {args.data}) lowered to {room}, what the "
          f"model's context of {longest + room} tokens leaves after the longest prompt", file=sys.stderr)
    args.max_new_tokens = room


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")) or "_"


def main(argv=None):
    args = parse_args(argv)
    try:
        problems = load_problems(args.data, args.problem_key, args.answer_key, args.limit)
        out = Path(args.out) if args.out else Path("runs/eval") / _slug(args.model) / _slug(args.data)
        model, tokenizer = load_model(args.model)
        fill_defaults(args, model, tokenizer, problems)
        torch.manual_seed(args.seed)
        run_info = {"model": args.model, "data": args.data, "seed": args.seed,
                    "problem_key": args.problem_key, "answer_key": args.answer_key}
        summary = evaluate(model, tokenizer, problems, n=args.n, temperature=args.temperature, top_p=args.top_p,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, template=args.template,
                           thinking=thinking(args.thinking),
                           out_dir=out, run_info=run_info)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(format_summary(summary))
    print(f"samples: {out / 'samples.jsonl'}  summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
