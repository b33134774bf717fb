"""rollout.py with a model of absolute position embeddings (GPT-2 architecture, random, in memory).

Qwen's rotary embeddings see only relative positions, so a left-padded row scores the same whatever its
position ids start at (to float round-off): the Qwen-shaped tests of test_rollout.py cannot tell whether
completion_logprobs passes positions counted from the attention mask. Learned absolute positions can: there,
without them, the left-padded rows are scored at other positions than generate sampled them at."""
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import rollout
import toy

PROMPTS = ["Ann has 3 pens. How many?", "Bob has 12 eggs, gets 40 more, gives away 7. How many eggs?"]


def test_left_padded_rows_score_what_generate_sampled_with_absolute_positions():
    tokenizer = toy.make_tokenizer()
    tokenizer.padding_side = "left"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                                       bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(2)
    out = rollout.generate(model, tokenizer, PROMPTS, 2, temperature=0.7, max_new_tokens=8)
    assert (out["prompt_mask"] == 0).any()  # the short prompt's rows are left-padded
    torch.manual_seed(2)  # same seed, same batch: the same samples, now with generate's own logits
    hf = model.generate(input_ids=out["prompt_ids"], attention_mask=out["prompt_mask"], do_sample=True,
                        temperature=0.7, top_p=1.0, top_k=0, max_new_tokens=8, eos_token_id=[tokenizer.eos_token_id],
                        pad_token_id=tokenizer.pad_token_id, output_logits=True, return_dict_in_generate=True)
    assert torch.equal(hf.sequences[:, out["prompt_ids"].shape[1]:], out["completion_ids"])
    T = out["completion_ids"].shape[1]
    logits = torch.stack(hf.logits, 1)[:, :T].float() / 0.7  # [N, T, V] the logits each token was sampled from
    sampled = logits.log_softmax(-1).gather(-1, out["completion_ids"][..., None]).squeeze(-1) * out["completion_mask"]
    logp, _ = rollout.score(model, out, 4, temperature=0.7)  # [N, T]
    torch.testing.assert_close(logp, sampled, atol=1e-4, rtol=0)
