"""The README's equation <-> code table links to line ranges; check each still lands on what it names."""
import re

from conftest import REPO

LINK = re.compile(r"\[`(\w+)`[^\]]*\]\((\w+\.py)#L(\d+)-L(\d+)\)")


def test_readme_line_links_land_on_the_named_code():
    links = LINK.findall((REPO / "README.md").read_text())
    assert len(links) >= 10
    for name, path, start, end in links:
        lines = (REPO / path).read_text().splitlines()
        start, end = int(start), int(end)
        assert start <= end <= len(lines), (name, start, end)
        head = lines[start - 1]
        assert head.startswith((f"def {name}(", f"{name} = ")), f"{path}#L{start} is {head!r}, not {name}"
        # the range must not run into the next top-level definition
        inside = lines[start:end]
        assert not any(re.match(r"(def |class |@)", line) for line in inside), f"{name}: range too long"
        following = lines[end:end + 1]
        assert not following or not following[0].startswith("    "), f"{name}: range ends inside the function"


def test_the_readmes_rl_step_is_eight_lines_that_run_as_written(tiny_model_dir):
    import torch

    import etr
    import reward
    import rollout
    import toy

    section = (REPO / "README.md").read_text().split("## One RL step in eight lines\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) == 8
    model, tokenizer = rollout.load_model(str(tiny_model_dir), device="cpu")  # the toy's shape, untrained
    problems, G = toy.toy_problems(2, seed=0), 4
    names = dict(etr=etr, reward=reward, rollout=rollout, torch=torch, model=model, tokenizer=tokenizer, G=G,
                 optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4), cfg=etr.make_config("etr"),
                 prompts=[rollout.build_prompt(p["problem"], tokenizer) for p in problems],
                 golds=[p["answer"] for p in problems for _ in range(G)])
    before = [p.detach().clone() for p in model.parameters()]
    exec(code, names)
    assert names["rewards"].shape == (len(problems) * G,) and torch.isfinite(names["loss"])
    assert {"clip_frac_low", "clip_frac_high", "ratio_max"} <= set(names["metrics"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it updated the model
