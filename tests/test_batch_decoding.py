"""The refill decoder against transformers' own greedy `generate`, on a tiny random Llama: the
same tokens and log probabilities per prompt, whatever the slots, refills and shared prefixes."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from localnova.backends import batch_decoding  # noqa: E402
from localnova.backends.batch_decoding import RefillDecoder, supports_refill  # noqa: E402

STOP = 3


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=STOP,
        pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(config).eval()


def one_at_a_time(model, prompt, max_new_tokens):
    """What transformers' greedy generate gives for this prompt alone, cut after the stop token."""
    with torch.inference_mode():
        output = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=STOP,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
        )
    tokens = output.sequences[0, len(prompt) :].tolist()
    if STOP in tokens:
        tokens = tokens[: tokens.index(STOP) + 1]
    logprobs = [torch.log_softmax(step[0].float(), dim=-1) for step in output.logits[: len(tokens)]]
    return tokens, logprobs


def prompts_of_varied_length(shared_prefix: int = 0):
    generator = torch.Generator().manual_seed(1)
    prefix = torch.randint(4, 96, (shared_prefix,), generator=generator).tolist()
    return [prefix + torch.randint(4, 96, (length,), generator=generator).tolist() for length in (5, 17, 9, 30, 2, 12, 23)]


def test_the_tiny_llama_qualifies_for_refilling(tiny_model):
    assert supports_refill(tiny_model)


@pytest.fixture(scope="module")
def references(tiny_model):
    """Each prompt set's one-at-a-time answers, computed once for every slot count."""
    return {shared: [one_at_a_time(tiny_model, prompt, 12) for prompt in prompts_of_varied_length(shared)] for shared in (0, 20)}


@pytest.mark.parametrize("slots", [1, 3, 8])
@pytest.mark.parametrize("shared_prefix", [0, 20])
@pytest.mark.parametrize("prefill_budget", [4096, 60])  # 60: a group's prefill split over several forwards
def test_same_greedy_tokens_as_generate_one_at_a_time(tiny_model, references, slots, shared_prefix, prefill_budget, monkeypatch):
    monkeypatch.setattr(batch_decoding, "MAX_PREFILL_TOKENS", prefill_budget)
    prompts = prompts_of_varied_length(shared_prefix)
    decoder = RefillDecoder(tiny_model, "cpu", pad_token_id=0, stop_token_ids={STOP}, slots=slots)
    rows = decoder.decode(prompts, max_new_tokens=12, top_logprobs=5)
    for row, (expected, logprobs) in zip(rows, references[shared_prefix], strict=True):
        assert row.token_ids == expected
        assert row.stopped == (expected[-1] == STOP)
        assert len(row.steps) == len(expected)
        for (values, token_ids, chosen), step_logprobs, token in zip(row.steps, logprobs, expected, strict=True):
            top = step_logprobs.topk(5)
            assert token_ids == top.indices.tolist()
            assert values == pytest.approx(top.values.tolist(), abs=1e-4)
            assert chosen == pytest.approx(float(step_logprobs[token]), abs=1e-4)


def test_a_stop_check_ends_a_row_early(tiny_model):
    prompts = prompts_of_varied_length()
    decoder = RefillDecoder(tiny_model, "cpu", pad_token_id=0, stop_token_ids=set(), slots=4)
    rows = decoder.decode(prompts, max_new_tokens=10, stop_check=lambda token_ids: len(token_ids) == 3)
    assert all(len(row.token_ids) == 3 and row.stopped for row in rows)
    unchecked = decoder.decode(prompts, max_new_tokens=10)
    assert all(len(row.token_ids) == 10 and not row.stopped for row in unchecked)
    assert [row.token_ids[:3] for row in unchecked] == [row.token_ids for row in rows]


def test_prefill_groups_keep_within_the_token_budget(monkeypatch):
    monkeypatch.setattr(batch_decoding, "MAX_PREFILL_TOKENS", 100)
    assert batch_decoding._prefill_group_size([30, 20, 10, 5]) == 3  # 3 rows x 30 tokens
    assert batch_decoding._prefill_group_size([250, 10]) == 1  # a prompt over the budget goes alone
    assert batch_decoding._prefill_group_size([5, 5]) == 2


def test_a_forced_first_token_is_generated_and_the_model_read_after_it(tiny_model, references):
    """The first step keeps the model's own distribution; the second is what the model gives
    after the forced token, as if the prompt had ended with it."""
    prompts = prompts_of_varied_length()
    forced = 7
    decoder = RefillDecoder(tiny_model, "cpu", pad_token_id=0, stop_token_ids=set(), slots=3)
    rows = decoder.decode(prompts, max_new_tokens=2, top_logprobs=5, first_token_id=forced)
    for row, prompt, (_, logprobs) in zip(rows, prompts, references[0], strict=True):
        assert row.token_ids[0] == forced
        assert row.steps[0][1] == logprobs[0].topk(5).indices.tolist()
        assert row.steps[0][2] == pytest.approx(float(logprobs[0][forced]), abs=1e-4)
        _, after = one_at_a_time(tiny_model, prompt + [forced], 1)
        assert row.steps[1][1] == after[0].topk(5).indices.tolist()
        assert row.steps[1][0] == pytest.approx(after[0].topk(5).values.tolist(), abs=1e-4)
