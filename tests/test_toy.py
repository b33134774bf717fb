"""toy.py: the problem generator, the character tokenizer, and the cached pre-trained toy model."""
import random
import re

import torch

import rollout
import toy


def test_problems_are_deterministic_and_their_answers_correct():
    problems = toy.toy_problems(50, seed=3)
    assert problems == toy.toy_problems(50, seed=3)
    assert problems != toy.toy_problems(50, seed=4)
    assert len({p["id"] for p in problems}) == 50
    for p in problems:  # recompute each answer from the text: "has a ... and gets b more" / "and gives away b"
        a, b = map(int, re.findall(r"\d+", p["problem"]))
        assert p["answer"] == str(a + b if "gets" in p["problem"] else a - b) and int(p["answer"]) >= 0


def test_worked_solutions_end_in_the_boxed_answer():
    rng = random.Random(0)
    for _ in range(20):
        problem, solution, answer = toy._toy_problem(rng)
        assert solution.endswith(f"\\boxed{{{answer}}}")


def test_tokenizer_round_trips_every_character_of_the_task():
    tokenizer = toy.make_tokenizer()
    problems = toy.toy_problems(200, seed=0)
    text = "".join(rollout.build_prompt(p["problem"], tokenizer) + p["answer"] for p in problems)
    text += "".join(solution for _, solution, _ in (toy._toy_problem(random.Random(i)) for i in range(50))) + toy.CHARS
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token_id not in ids  # nothing fell back to the unknown token (= EOS)
    one_char = tokenizer(toy.CHARS, add_special_tokens=False)["input_ids"]
    assert len(one_char) == len(set(one_char)) == len(toy.CHARS)  # one distinct token per character
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # documented choice: pad == eos, as in Qwen2.5 base


def test_toy_builds_caches_and_reloads(toy_dir, monkeypatch):
    config = toy_dir / "config.json"
    built_at = config.stat().st_mtime_ns
    monkeypatch.setattr(toy, "_pretrain", lambda *a: (_ for _ in ()).throw(AssertionError("rebuilt")))
    assert toy.build_toy(toy_dir.parent) == toy_dir  # cached: no second pre-training
    assert config.stat().st_mtime_ns == built_at
    model, tokenizer = rollout.load_model("toy", device="cpu")  # ETR_CACHE points at the session cache
    assert str(model.name_or_path) == str(toy_dir)
    assert model.config.model_type == "qwen2" and tokenizer.padding_side == "left"
    # AutoTokenizer reloads a qwen2 directory as Qwen2Tokenizer: the saved tokenizer must survive that unchanged
    text = toy.CHARS + rollout.build_prompt("Ann has 7 pens and gets 8 more. How many pens?", tokenizer) + "7+8=15."
    assert tokenizer(text)["input_ids"] == toy.make_tokenizer()(text)["input_ids"]
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_pretraining_taught_the_worked_answers(toy_dir):
    """The saved toy predicts held-out worked answers far better than its untrained initialisation (~ln 98 nats/token)."""
    model, tokenizer = rollout.load_model(str(toy_dir), device="cpu")
    torch.manual_seed(toy.SEED)
    untrained = toy.make_model(len(tokenizer)).eval()
    rng = random.Random(99)
    problems = [toy._toy_problem(rng) for _ in range(16)]
    prompts = tokenizer([rollout.build_prompt(p, tokenizer) for p, _, _ in problems], return_tensors="pt", padding=True)
    answers = [tokenizer(s + toy.EOS, add_special_tokens=False)["input_ids"] for _, s, _ in problems]
    T = max(map(len, answers))
    completion_ids = torch.tensor([a + [tokenizer.pad_token_id] * (T - len(a)) for a in answers])
    completion_mask = torch.tensor([[1] * len(a) + [0] * (T - len(a)) for a in answers])
    nll = {}
    for name, m in (("toy", model), ("untrained", untrained)):
        with torch.no_grad():
            logp, _ = rollout.completion_logprobs(m, prompts["input_ids"], prompts["attention_mask"], completion_ids,
                                                  completion_mask, with_entropy=False)
        nll[name] = -(logp.sum() / completion_mask.sum()).item()
    assert nll["untrained"] > 3.5 and nll["toy"] < 1.5, nll
