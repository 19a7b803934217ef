import json

import pytest

from localnova.data.formats import (
    NOVA_SCHEMA_VERSION,
    ChatRecord,
    TrainingPair,
    read_chat_jsonl,
    read_nova_jsonl,
    read_training_file,
    read_training_pairs,
    record_to_nova,
    write_chat_jsonl,
    write_nova_jsonl,
)
from localnova.errors import UserError


def sample_records() -> list[ChatRecord]:
    return [
        ChatRecord(
            id="r1",
            doc_id="02-product-lineup.md",
            messages=[
                {"role": "system", "content": "Answer in one sentence."},
                {"role": "user", "content": "How many lamps does the line have?"},
                {"role": "assistant", "content": "Two: the F4 and the F8 Pro."},
            ],
        ),
        ChatRecord(
            id="r2",
            doc_id="05-installation.md",
            messages=[
                {"role": "user", "content": "Where does the hub go?"},
                {"role": "assistant", "content": "Within 10 m of the lamp.\nUnicode: café ✓"},
                {"role": "user", "content": "And the cartridge?"},
                {"role": "assistant", "content": "In the base tray."},
            ],
        ),
    ]


def test_chat_jsonl_round_trip_keeps_ids_doc_ids_and_turns(tmp_path):
    path = tmp_path / "train.jsonl"
    write_chat_jsonl(sample_records(), path)
    back = read_chat_jsonl(path)
    assert [r.to_dict() for r in back] == [r.to_dict() for r in sample_records()]
    assert json.loads(path.read_text().splitlines()[0])["doc_id"] == "02-product-lineup.md"


def test_nova_export_has_documented_shape():
    sample = record_to_nova(sample_records()[0])
    assert sample == {
        "schemaVersion": NOVA_SCHEMA_VERSION,
        "system": [{"text": "Answer in one sentence."}],
        "messages": [
            {"role": "user", "content": [{"text": "How many lamps does the line have?"}]},
            {"role": "assistant", "content": [{"text": "Two: the F4 and the F8 Pro."}]},
        ],
    }
    assert "system" not in record_to_nova(sample_records()[1])


def test_chat_to_nova_to_chat_keeps_system_and_every_turn(tmp_path):
    path = tmp_path / "train.nova.jsonl"
    write_nova_jsonl(sample_records(), path)
    back = read_nova_jsonl(path)
    assert [r.messages for r in back] == [r.messages for r in sample_records()]
    assert back[0].system == "Answer in one sentence."
    assert back[1].system is None


def test_read_training_file_detects_nova_and_chat(tmp_path):
    write_chat_jsonl(sample_records(), tmp_path / "a.jsonl")
    write_nova_jsonl(sample_records(), tmp_path / "b.jsonl")
    chat, nova = read_training_file(tmp_path / "a.jsonl"), read_training_file(tmp_path / "b.jsonl")
    assert [r.messages for r in chat] == [r.messages for r in nova]
    pairs = read_training_pairs(tmp_path / "a.jsonl")
    assert pairs[1].question == "Where does the hub go?" and pairs[1].answer == "In the base tray."
    assert pairs[1].doc_id == "05-installation.md"


def test_training_pair_record_and_stable_id():
    pair = TrainingPair("What is X?", "X is Y.", doc_id="d.md", chunk_id="c1")
    assert pair.pair_id == TrainingPair("What is X?", "X is Y.", doc_id="d.md").pair_id
    record = pair.to_record("Be brief.")
    assert [m["role"] for m in record.messages] == ["system", "user", "assistant"]
    assert record.to_pair().question == "What is X?"


def test_malformed_chat_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "1", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n{not json\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: malformed JSON"):
        read_chat_jsonl(path)


def test_chat_line_with_unknown_role_is_a_user_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "bot", "content": "q"}]}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:1: messages\[0\]"):
        read_chat_jsonl(path)


def test_nova_import_refuses_images(tmp_path):
    path = tmp_path / "img.jsonl"
    sample = {"messages": [{"role": "user", "content": [{"text": "What is this?"}, {"image": {"format": "png"}}]},
                           {"role": "assistant", "content": [{"text": "A lamp."}]}]}  # fmt: skip
    path.write_text(json.dumps(sample) + "\n")
    with pytest.raises(UserError, match="only text content"):
        read_nova_jsonl(path)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        read_training_file(tmp_path / "nope.jsonl")
