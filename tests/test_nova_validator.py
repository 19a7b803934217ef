"""One test per Nova rule the validator enforces, plus reporting and the round trip."""

import json

import pytest

from localnova.data.formats import ChatRecord, read_chat_jsonl, read_nova_jsonl, write_chat_jsonl, write_nova_jsonl
from localnova.data.nova_validator import (
    Problem,
    format_problems,
    validate_command,
    validate_nova_file,
)
from localnova.errors import UserError


def good_sample(index: int = 0) -> dict:
    return {
        "schemaVersion": "bedrock-conversation-2024",
        "system": [{"text": "Answer briefly."}],
        "messages": [
            {"role": "user", "content": [{"text": f"What is fact number {index}?"}]},
            {"role": "assistant", "content": [{"text": f"Fact {index} is that lamps need light."}]},
        ],
    }


def write_file(tmp_path, samples, name="train.jsonl", filler=10):
    """The samples first, then enough good ones to satisfy the minimum count."""
    path = tmp_path / name
    lines = [s if isinstance(s, str) else json.dumps(s) for s in samples]
    lines += [json.dumps(good_sample(i)) for i in range(filler)]
    path.write_text("\n".join(lines) + "\n")
    return path


def messages_of(problems):
    return [p.message for p in problems]


def test_valid_file_passes(tmp_path, capsys):
    path = write_file(tmp_path, [], filler=12)
    assert validate_nova_file(path) == []
    assert validate_nova_file(path, model="micro") == []
    assert validate_command(path, "lite") == 0
    assert capsys.readouterr().out.strip() == f"{path}: 12 samples, valid"


def test_wrong_role_order_is_reported(tmp_path):
    sample = good_sample()
    sample["messages"].reverse()  # assistant first, user last
    problems = validate_nova_file(write_file(tmp_path, [sample]))
    assert {p.line for p in problems} == {1}
    text = " ".join(messages_of(problems))
    assert "first turn must be 'user'" in text and "last turn must be 'assistant'" in text


def test_turns_must_alternate(tmp_path):
    sample = good_sample()
    sample["messages"].insert(1, {"role": "user", "content": [{"text": "And another thing?"}]})
    sample["messages"].insert(1, {"role": "user", "content": [{"text": "Also?"}]})
    problems = validate_nova_file(write_file(tmp_path, [sample]))
    assert any("two 'user' turns in a row" in m for m in messages_of(problems))


def test_only_user_and_assistant_roles(tmp_path):
    sample = good_sample()
    sample["messages"].insert(0, {"role": "system", "content": [{"text": "Be nice."}]})
    problems = validate_nova_file(write_file(tmp_path, [sample]))
    assert any("role 'system' is not 'user' or 'assistant'" in m and "top-level 'system'" in m for m in messages_of(problems))


def test_a_single_turn_is_not_a_sample(tmp_path):
    sample = good_sample()
    sample["messages"] = sample["messages"][:1]
    problems = validate_nova_file(write_file(tmp_path, [sample]))
    assert any("at least a user turn followed by an assistant turn" in m for m in messages_of(problems))


def test_empty_message_text(tmp_path):
    sample = good_sample()
    sample["messages"][1]["content"] = [{"text": "   "}]
    problems = validate_nova_file(write_file(tmp_path, [sample]))
    assert [(p.line, p.message) for p in problems] == [(1, "messages[1]: empty message (no text)")]


def test_empty_content_list_and_string_content(tmp_path):
    empty, plain = good_sample(), good_sample()
    empty["messages"][0]["content"] = []
    plain["messages"][1]["content"] = "chat-style string"
    problems = validate_nova_file(write_file(tmp_path, [empty, plain]))
    assert any(p.line == 1 and "non-empty list" in p.message and "got empty" in p.message for p in problems)
    assert any(p.line == 2 and "got a string" in p.message for p in problems)


def test_reserved_keyword(tmp_path):
    in_user, in_system = good_sample(), good_sample()
    in_user["messages"][0]["content"][0]["text"] = "User: what does the Bot: say?"
    in_system["system"][0]["text"] = "End every answer with [EOS]"
    problems = validate_nova_file(write_file(tmp_path, [in_user, in_system]))
    assert any(p.line == 1 and "'User:', 'Bot:'" in p.message for p in problems)
    assert any(p.line == 2 and p.message.startswith("system[0]") and "[EOS]" in p.message for p in problems)


# The Nova user guide, "Preparing data for fine-tuning Understanding models", table "Dataset
# constraints" (docs.aws.amazon.com/nova/latest/userguide/fine-tune-prepare-data-understanding.html
# #custom-fine-tune-constraints, read 2026-12-02): Model | Minimum Samples | Maximum Samples |
# Context Length; Amazon Nova Micro | 8 | 20k | 32k; Amazon Nova Lite | 8 | 20k | 32k;
# Amazon Nova Pro | 8 | 20k | 32k. ("32k" read as 32,000 tokens, the stricter reading.)
GUIDE_LIMITS = {"micro": (8, 20_000, 32_000), "lite": (8, 20_000, 32_000), "pro": (8, 20_000, 32_000)}


@pytest.mark.parametrize("model", sorted(GUIDE_LIMITS))
def test_too_few_samples(tmp_path, model):
    low = GUIDE_LIMITS[model][0]
    assert validate_nova_file(write_file(tmp_path, [], filler=low), model=model) == []
    problems = validate_nova_file(write_file(tmp_path, [], filler=low - 1), model=model)
    assert problems == [Problem(0, f"{low - 1} samples; Nova {model.capitalize()} fine-tuning needs at least {low}")]


@pytest.mark.parametrize("model", sorted(GUIDE_LIMITS))
def test_too_many_samples(tmp_path, model):
    high = GUIDE_LIMITS[model][1]
    path = tmp_path / "big.jsonl"
    line = json.dumps(good_sample()) + "\n"
    path.write_text(line * high)
    assert validate_nova_file(path, model=model) == []
    path.write_text(line * (high + 1))
    problems = validate_nova_file(path, model=model)
    assert problems == [Problem(0, f"{high + 1} samples; Nova {model.capitalize()} fine-tuning takes at most {high:,}")]


@pytest.mark.parametrize("model", sorted(GUIDE_LIMITS))
def test_a_sample_over_the_context_length_is_reported_at_its_line(tmp_path, model):
    """Each text at four characters a token (rounded, at least one), summed over the sample:
    a sample whose answer brings the sum to exactly the context length fits; 8 characters
    more are 2 tokens over."""
    context = GUIDE_LIMITS[model][2]
    fits, over = good_sample(), good_sample()
    system, question = fits["system"][0]["text"], fits["messages"][0]["content"][0]["text"]
    answer_tokens = context - max(1, round(len(system) / 4)) - max(1, round(len(question) / 4))
    fits["messages"][1]["content"][0]["text"] = "x" * (4 * answer_tokens)
    over["messages"][1]["content"][0]["text"] = "x" * (4 * answer_tokens + 8)
    problems = validate_nova_file(write_file(tmp_path, [fits, over]), model=model)
    assert [p.line for p in problems] == [2]
    assert f"over Nova {model.capitalize()}'s context length of {context:,}" in problems[0].message


def test_more_than_ten_images_in_one_sample(tmp_path):
    """The guide: "Maximum images 10/sample", over all of a sample's turns."""
    image = {"image": {"format": "png", "source": {"s3Location": {"uri": "s3://b/a.png"}}}}
    sample = good_sample()
    sample["messages"] = [
        {"role": "user", "content": [{"text": "Look."}, *[image] * 6]},
        {"role": "assistant", "content": [{"text": "Seen."}]},
        {"role": "user", "content": [{"text": "And these?"}, *[image] * 5]},
        {"role": "assistant", "content": [{"text": "Seen too."}]},
    ]
    problems = validate_nova_file(write_file(tmp_path, [sample]), model="lite")
    assert [(p.line, p.message) for p in problems] == [(1, "11 images in one sample; at most 10 are allowed")]


def test_bad_schema_version(tmp_path):
    # The guide says schemaVersion "can be any string value": a number or null is wrong.
    sample = good_sample()
    sample["schemaVersion"] = 2024
    problems = validate_nova_file(write_file(tmp_path, [sample]))
    assert [(p.line, p.message) for p in problems] == [
        (1, "'schemaVersion' must be a string (e.g. \"bedrock-conversation-2024\"), got 2024")
    ]


def test_bad_system_shape(tmp_path):
    sample = good_sample()
    sample["system"] = "Answer briefly."
    problems = validate_nova_file(write_file(tmp_path, [sample]))
    assert any("'system' must be a list" in m for m in messages_of(problems))


def test_malformed_json_and_blank_line(tmp_path):
    problems = validate_nova_file(write_file(tmp_path, ['{"messages": [', ""]))
    assert [p.line for p in problems] == [1, 2]
    assert problems[0].message.startswith("malformed JSON") and "blank line" in problems[1].message


def test_media_rules(tmp_path):
    image = {"image": {"format": "bmp", "source": {"s3Location": {"uri": "https://x/y.bmp"}}}}
    sample = good_sample()
    sample["messages"][0]["content"].append(image)
    sample["messages"][1]["content"].append({"image": {"format": "png", "source": {"s3Location": {"uri": "s3://b/a.png"}}}})
    problems = messages_of(validate_nova_file(write_file(tmp_path, [sample]), model="micro"))
    assert any("format 'bmp'" in m for m in problems)
    assert any("s3Location.uri starting with 's3://'" in m for m in problems)
    assert any("assistant turn cannot hold an image" in m for m in problems)
    assert any("Nova Micro takes text only" in m for m in problems)


def test_file_name_rule(tmp_path):
    problems = validate_nova_file(write_file(tmp_path, [], name="my data.json"))
    assert messages_of(problems) == [
        "the file name must end in .jsonl",
        "the file name may hold only letters, digits, '_', '-', '/' and '.'",
    ]


def test_every_problem_is_reported_with_its_line(tmp_path, capsys):
    reserved, swapped = good_sample(), good_sample()
    reserved["messages"][1]["content"][0]["text"] = "Assistant: fine"
    swapped["messages"].reverse()
    path = write_file(tmp_path, [good_sample(), reserved, "not json", good_sample(), swapped], filler=0)
    problems = validate_nova_file(path)
    assert sorted({p.line for p in problems}) == [0, 2, 3, 5]  # 0: only 5 samples
    assert validate_command(path) == 2
    out = capsys.readouterr().out
    assert f"{path}:2: messages[1].content[0]: reserved keyword 'Assistant:'" in out
    assert f"{path}:3: malformed JSON" in out
    assert f"{path}:5: the first turn must be 'user'" in out
    assert f"{path}: 5 samples; Nova fine-tuning needs at least 8" in out


def test_format_problems():
    text = format_problems([Problem(0, "too few"), Problem(7, "bad role")], "x.jsonl")
    assert text == "x.jsonl: too few\nx.jsonl:7: bad role"


def test_unknown_model_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="unknown Nova model 'mega'"):
        validate_nova_file(write_file(tmp_path, []), model="mega")
    with pytest.raises(UserError, match="file not found"):
        validate_nova_file(tmp_path / "none.jsonl")


def test_round_trip_chat_nova_chat_and_export_validates(tmp_path):
    records = [
        ChatRecord(id=f"r{i}", doc_id="d.md", messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Question {i}?"},
            {"role": "assistant", "content": f"Answer {i}."},
        ]) for i in range(9)
    ]  # fmt: skip
    write_chat_jsonl(records, tmp_path / "chat.jsonl")
    write_nova_jsonl(read_chat_jsonl(tmp_path / "chat.jsonl"), tmp_path / "train.nova.jsonl")
    assert validate_nova_file(tmp_path / "train.nova.jsonl", model="micro") == []
    back = read_nova_jsonl(tmp_path / "train.nova.jsonl")
    assert [r.messages for r in back] == [r.messages for r in records]
