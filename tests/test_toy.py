"""toy.py: the problem generator, the character tokenizer, and the cached pre-trained toy model."""
import json
import random
import re

import pytest
import torch

import rollout
import toy
import train


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
    torch.manual_seed(toy.DEFAULT_SEED)
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


# ---- the measured stop of pre-training (issue: the toy must land in the same place on every machine) ----------

def _scripted_criterion(values):
    """A stand-in for sampled_accuracy that returns the scripted values, one per call, and counts calls."""
    calls = []

    def criterion(model, tokenizer, problems):
        calls.append(len(calls))
        return values[min(len(calls) - 1, len(values) - 1)]
    return criterion, calls


def _tiny(monkeypatch):
    monkeypatch.setattr(toy, "PRETRAIN_BATCH", 2)
    monkeypatch.setattr(toy, "CHECK_PROBLEMS", 2)
    tokenizer = toy.make_tokenizer()
    torch.manual_seed(0)
    return toy.make_model(len(tokenizer), n_layers=1), tokenizer


def test_pretraining_stops_at_the_first_check_that_reaches_the_target(monkeypatch):
    model, tokenizer = _tiny(monkeypatch)
    monkeypatch.setattr(toy, "CHECK_BELOW_LOSS", float("inf"))  # check every CHECK_EVERY = 2 steps from the start
    criterion, calls = _scripted_criterion([0.0, 0.3, 0.45, 0.55, 0.9])
    report = toy._pretrain(model, tokenizer, seed=0, target=0.5, max_steps=50, criterion=criterion)
    assert report["steps"] == 6 and report["stopped_by"] == "target"  # checks: before step 1, after 2, 4, 6
    assert report["sampled_accuracy"] == 0.55 and len(calls) == 4


def test_pretraining_checks_only_once_the_training_loss_is_low(monkeypatch):
    model, tokenizer = _tiny(monkeypatch)
    monkeypatch.setattr(toy, "CHECK_BELOW_LOSS", 0.0)  # an untrained model's loss is ~4.6: never below 0
    criterion, calls = _scripted_criterion([0.0, 0.9])
    report = toy._pretrain(model, tokenizer, seed=0, target=0.5, max_steps=6, criterion=criterion)
    assert report["steps"] == 6 and len(calls) == 2  # before step 1, and at the cap (0.9: "target" there)


def test_pretraining_stops_at_the_cap_when_the_target_is_never_reached(monkeypatch):
    model, tokenizer = _tiny(monkeypatch)
    criterion, calls = _scripted_criterion([0.0])
    before = [p.detach().clone() for p in model.parameters()]
    report = toy._pretrain(model, tokenizer, seed=0, target=0.5, max_steps=3, criterion=criterion)
    assert report["steps"] == 3 and report["stopped_by"] == "step cap" and len(calls) == 2  # before and at the cap
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it did train


def test_pretraining_does_not_train_a_model_that_already_meets_the_target(monkeypatch):
    model, tokenizer = _tiny(monkeypatch)
    criterion, _ = _scripted_criterion([0.7])
    before = [p.detach().clone() for p in model.parameters()]
    report = toy._pretrain(model, tokenizer, seed=0, target=0.5, max_steps=3, criterion=criterion)
    assert report["steps"] == 0 and report["stopped_by"] == "target"
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sampled_accuracy_is_the_verified_fraction_with_common_random_numbers(tiny_model_dir, monkeypatch):
    model, tokenizer = rollout.load_model(str(tiny_model_dir), device="cpu")
    problems = [toy._toy_problem(random.Random(i)) for i in range(3)]  # answers: the third element
    seen = {}

    def fake_generate(model, tokenizer, prompts, n, **knobs):
        seen.update(prompts=prompts, n=n, knobs=knobs, draw=torch.rand(1).item())
        texts = [f"\\boxed{{{a}}}" if j < k else "\\boxed{-1}" for (_, _, a), k in zip(problems, (0, 2, 3))
                 for j in range(n)]
        return {"texts": texts}
    monkeypatch.setattr(rollout, "generate", fake_generate)
    state = torch.random.get_rng_state()
    assert toy.sampled_accuracy(model, tokenizer, problems, n=3) == (0 + 2 + 3) / 9
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    first = seen["draw"]
    toy.sampled_accuracy(model, tokenizer, problems, n=3)
    assert seen["draw"] == first  # the same sampling seed at every check
    assert seen["knobs"]["temperature"] == 1.0 and seen["n"] == 3
    assert seen["prompts"] == [rollout.build_prompt(q, tokenizer, "plain") for q, _, _ in problems]


def test_cache_key_covers_seed_recipe_code_and_template(monkeypatch, tmp_path):
    key = toy.cache_key(1234)
    assert toy.cache_key(1234) == key and toy.cache_key(1) != key
    for name in ("toy.py", "rollout.py", "reward.py", "latex.py"):  # the recipe, and the code the criterion runs
        copy = tmp_path / name.replace(".py", "")
        copy.mkdir()
        for other in ("toy.py", "rollout.py", "reward.py", "latex.py"):
            text = (toy.Path(toy.__file__).parent / other).read_text()
            (copy / other).write_text(text + ("\n# changed\n" if other == name else ""))
        monkeypatch.setattr(toy, "__file__", str(copy / "toy.py"))
        assert toy.cache_key(1234) != key, name
        monkeypatch.undo()
    assert toy.cache_key(1234) == key
    monkeypatch.setitem(toy.PROMPT_TEMPLATES, "plain", "{problem}\nAnswer:")
    assert toy.cache_key(1234) != key  # another prompt
    monkeypatch.undo()
    import transformers
    monkeypatch.setattr(transformers, "__version__", "0.0.1")
    assert toy.cache_key(1234) != key  # another library version


def test_toy_seed_from_the_environment(monkeypatch):
    monkeypatch.delenv("ETR_TOY_SEED", raising=False)
    assert toy.toy_seed() == toy.DEFAULT_SEED
    monkeypatch.setenv("ETR_TOY_SEED", " 7 ")
    assert toy.toy_seed() == 7
    monkeypatch.setenv("ETR_TOY_SEED", "1.5")
    with pytest.raises(rollout.UserError, match="ETR_TOY_SEED='1.5' is not an integer"):
        toy.toy_seed()


def test_a_bad_toy_seed_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    import train

    monkeypatch.setenv("ETR_TOY_SEED", "abc")
    monkeypatch.setenv("ETR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as e:
        train.main(["--steps", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "ETR_TOY_SEED" in err, err


def test_the_built_toy_reached_its_target(toy_dir):
    report = json.loads((toy_dir / "pretrain.json").read_text())
    assert report["stopped_by"] == "target" and report["sampled_accuracy"] >= toy.TARGET_ACCURACY
    assert report["seed"] == toy.DEFAULT_SEED and 0 < report["steps"] < toy.PRETRAIN_MAX_STEPS


def test_the_default_toy_run_samples_at_most_two_thirds_of_the_300_steps_of_8_x_16_it_replaced():
    # issue 12's budget for `python train.py`: the same lesson from <= 2/3 of the earlier default's samples, with
    # more than one update per rollout batch (with one, the ratio is exactly 1 and no clip ever acts)
    args = train.resolve_args(train.parse_args([]))
    assert args.model == "toy"
    assert args.steps * args.prompts_per_step * args.group_size <= 2 / 3 * 300 * 8 * 16
    assert args.mini_batches * args.epochs >= 2


def test_a_build_says_first_what_it_builds_and_shows_its_steps_on_stderr(monkeypatch, tmp_path, capsys):
    # a capped build: 1 layer, batches of 2, 2 check problems, 3 steps (the real one: 2-4 minutes, ~200-280 steps)
    monkeypatch.setattr(toy, "PRETRAIN_BATCH", 2)
    monkeypatch.setattr(toy, "CHECK_PROBLEMS", 2)
    make_model, pretrain = toy.make_model, toy._pretrain
    monkeypatch.setattr(toy, "make_model", lambda vocab_size: make_model(vocab_size, n_layers=1))
    monkeypatch.setattr(toy, "_pretrain", lambda model, tokenizer, seed: pretrain(model, tokenizer, seed, target=1.1,
                                                                                max_steps=3))
    out = toy.build_toy(tmp_path)
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout stays clean for train.py's and eval.py's results
    first = captured.err.splitlines()[0]
    assert first.startswith("toy: building the offline toy model, once") and "about 2-4 minutes" in first
    assert first.endswith(f"cached in {out}")
    assert "toy pre-training (stops at sampled accuracy 1.1): 3step" in captured.err  # the tqdm counter
    assert toy.build_toy(tmp_path) == out and capsys.readouterr().err == ""  # cached: silent
