"""The fine-tuning stage without training: which file it trains on, what it does to the pairs
(decontamination, a seeded sample, the answer arms' system prompt), and what it hands the
report (the training-data report and each adapter's loss curve)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from localnova.config import validate_config
from localnova.errors import UserError
from localnova.evaluate.arms import SYSTEM_PROMPT
from localnova.finetune.lora import METADATA_FILE
from localnova.finetune.stage import adapter_artifacts, training_file, training_records, training_report_path
from localnova.types import EvalItem

EVAL_QUESTION = "What does the F4 lamp draw?"  # short: only the embedding check can catch a copy
EVAL_ITEMS = [EvalItem("q1", EVAL_QUESTION, "36 watts.", ("lamps.md",))]
OTHER_SYSTEM_PROMPT = "Answer questions about the Fernlight product line."


def embed(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for an embedding model: one random vector per distinct text,
    so identical texts have cosine 1 and different ones are far apart."""
    return np.stack([np.random.default_rng(zlib.crc32(text.encode("utf-8"))).normal(size=32) for text in texts])


def write_chat_pairs(path: Path, pairs: list[tuple[str, str]]) -> Path:
    rows = [
        {
            "id": f"p{index}",
            "doc_id": "lamps.md",
            "messages": [
                {"role": "system", "content": OTHER_SYSTEM_PROMPT},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ],
        }
        for index, (question, answer) in enumerate(pairs)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


TRAIN_PAIRS = [(f"Which colour is lamp model {n}?", f"Lamp model {n} comes in shade {n}.") for n in range(10)]


def make_config(tmp_path: Path, **finetune):
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / "lamps.md").write_text("# Lamps\nThe F4 lamp draws 36 watts.\n", encoding="utf-8")
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text(json.dumps({"question_id": "q1", "question": EVAL_QUESTION, "answer": "36 watts."}) + "\n", encoding="utf-8")
    seed = finetune.pop("seed", 0)
    return validate_config(
        {
            "name": "stage-test",
            "seed": seed,
            "output_dir": str(tmp_path / "runs"),
            "corpus": {"path": str(corpus)},
            "eval": {"path": str(eval_path)},
            "arms": ["base", "ft"],
            "models": [{"name": "tiny", "model": "smollm2-135m-instruct"}],
            "finetune": {key: str(value) if isinstance(value, Path) else value for key, value in finetune.items()},
        }
    )


# --- which file ------------------------------------------------------------------------


def test_training_file_is_the_configured_path(tmp_path):
    train = write_chat_pairs(tmp_path / "mine.jsonl", TRAIN_PAIRS)
    assert training_file(make_config(tmp_path, train_path=train)) == train


def test_training_file_defaults_to_what_gen_qa_wrote(tmp_path):
    config = make_config(tmp_path)
    generated = config.study_dir / "gen_qa" / "train.jsonl"
    generated.parent.mkdir(parents=True)
    write_chat_pairs(generated, TRAIN_PAIRS)
    assert training_file(config) == generated


@pytest.mark.parametrize("configured", [True, False])
def test_a_missing_training_file_is_one_line_naming_the_key(tmp_path, configured):
    config = make_config(tmp_path, train_path=tmp_path / "absent.jsonl") if configured else make_config(tmp_path)
    with pytest.raises(UserError) as error:
        training_file(config)
    message = str(error.value)
    assert message.startswith("finetune.train_path:") and "\n" not in message
    assert ("absent.jsonl" if configured else "train.jsonl") in message
    assert "gen-qa" in message


# --- what it does to the pairs ---------------------------------------------------------


def test_a_pair_asking_an_eval_question_is_dropped(tmp_path):
    train = write_chat_pairs(tmp_path / "train.jsonl", [*TRAIN_PAIRS, (EVAL_QUESTION, "It draws 36 watts.")])
    records, validation, report = training_records(make_config(tmp_path, train_path=train), EVAL_ITEMS, embed)
    questions = [record["messages"][1]["content"] for record in records]
    assert EVAL_QUESTION not in questions
    assert questions == [question for question, _ in TRAIN_PAIRS]
    assert validation is None
    assert (report["input_pairs"], report["dropped_contaminated"], report["train_pairs"]) == (11, 1, 10)
    drop = report["contamination"][0]
    assert (drop["question_id"], drop["reason"], drop["pair"]["question"]) == ("q1", "embedding", EVAL_QUESTION)


def test_when_every_pair_is_an_eval_question_nothing_is_trained(tmp_path):
    train = write_chat_pairs(tmp_path / "train.jsonl", [(EVAL_QUESTION, "It draws 36 watts.")])
    with pytest.raises(UserError, match="no training pairs left after decontamination"):
        training_records(make_config(tmp_path, train_path=train), EVAL_ITEMS, embed)


def sampled_questions(tmp_path: Path, seed: int) -> list[str]:
    train = write_chat_pairs(tmp_path / "train.jsonl", TRAIN_PAIRS)
    config = make_config(tmp_path, train_path=train, max_train_pairs=3, seed=seed)
    records, _, report = training_records(config, EVAL_ITEMS, embed)
    assert report["train_pairs"] == 3
    assert report["settings"]["sampled"] == f"3 of 10 pairs (finetune.max_train_pairs, seed {seed})"
    return [record["messages"][1]["content"] for record in records]


def test_max_train_pairs_takes_a_seeded_sample(tmp_path):
    first = sampled_questions(tmp_path, seed=0)
    assert len(set(first)) == 3 and set(first) <= {question for question, _ in TRAIN_PAIRS}
    assert sampled_questions(tmp_path, seed=0) == first
    assert sampled_questions(tmp_path, seed=1) != first


def test_max_train_pairs_above_the_pair_count_keeps_every_pair(tmp_path):
    train = write_chat_pairs(tmp_path / "train.jsonl", TRAIN_PAIRS)
    records, _, report = training_records(make_config(tmp_path, train_path=train, max_train_pairs=50), EVAL_ITEMS, embed)
    assert len(records) == report["train_pairs"] == 10
    assert "sampled" not in report["settings"]


def test_every_record_carries_the_answer_arms_system_prompt(tmp_path):
    train = write_chat_pairs(tmp_path / "train.jsonl", TRAIN_PAIRS)
    validation_file = write_chat_pairs(tmp_path / "validation.jsonl", TRAIN_PAIRS[:2])
    config = make_config(tmp_path, train_path=train, validation_path=validation_file)
    records, validation, _ = training_records(config, EVAL_ITEMS, embed)
    for record in [*records, *validation]:
        # The file's own system prompt gives way to the one the model is asked under.
        assert record["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
    assert records[0]["messages"][1:] == [
        {"role": "user", "content": TRAIN_PAIRS[0][0]},
        {"role": "assistant", "content": TRAIN_PAIRS[0][1]},
    ]
    assert len(validation) == 2


# --- what it hands the report ----------------------------------------------------------


LOSS_CURVE = [{"step": 1, "loss": 2.5, "epoch": 0.5}, {"step": 2, "loss": 1.75, "epoch": 1.0}]


def trained_adapter(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / METADATA_FILE).write_text(json.dumps({"base": "smollm2-135m-instruct", "loss_curve": LOSS_CURVE}), encoding="utf-8")
    return folder


def test_adapter_artifacts_are_the_data_report_and_each_loss_curve(tmp_path):
    config = make_config(tmp_path)
    data_report = {"source": "train.jsonl", "train_pairs": 10, "dropped_contaminated": 1}
    report_path = training_report_path(config)
    report_path.parent.mkdir(parents=True)
    report_path.write_text(json.dumps(data_report), encoding="utf-8")
    adapter = trained_adapter(tmp_path / "adapters" / "tiny")
    untracked = tmp_path / "adapters" / "elsewhere"  # trained elsewhere: no metadata file
    untracked.mkdir()
    arn = "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.nova-micro-v1:0/abc"
    artifacts = adapter_artifacts(config, {"tiny": str(adapter), "other": str(untracked), "nova": arn})
    assert artifacts == {"training_data": data_report, "loss_curve:tiny": LOSS_CURVE}


def test_no_adapters_give_no_artifacts(tmp_path):
    config = make_config(tmp_path)
    report_path = training_report_path(config)
    report_path.parent.mkdir(parents=True)
    report_path.write_text(json.dumps({"train_pairs": 10}), encoding="utf-8")
    assert adapter_artifacts(config, {}) == {}


def test_a_bedrock_arn_alone_gives_no_loss_curve(tmp_path):
    config = make_config(tmp_path)
    assert adapter_artifacts(config, {"nova": "arn:aws:bedrock:us-east-1:123456789012:custom-model/abc"}) == {}


# --- one adapter per training seed -----------------------------------------------------------


def test_one_adapter_per_seed_each_named_and_foldered_apart(tmp_path, monkeypatch):
    """finetune.seeds: [3, 7, 11] trains three adapters, each with its own seed; the first is
    the model's own (adapters/tiny), the others adapters/tiny-seed<seed> under tiny@seed<seed>.
    Training is replaced by a stand-in that records what it was asked."""
    from localnova.finetune import stage
    from localnova.finetune.lora import AdapterInfo

    trained = []

    def fake_train(base, train, validation, config, out_dir, seed, source_key=""):
        trained.append((Path(out_dir).name, seed))
        return AdapterInfo(path=str(out_dir), base_model="b", base_fingerprint="f", data_hash="d", settings={}, seed=seed)

    monkeypatch.setattr(stage, "find_or_train_adapter", fake_train)
    config = make_config(tmp_path, train_path=write_chat_pairs(tmp_path / "train.jsonl", TRAIN_PAIRS), seeds=[3, 7, 11])
    adapters = stage.adapters_for_study(config, config.models, EVAL_ITEMS, embed)
    root = config.study_dir / "adapters"
    assert adapters == {"tiny": str(root / "tiny"), "tiny@seed7": str(root / "tiny-seed7"), "tiny@seed11": str(root / "tiny-seed11")}
    assert trained == [("tiny", 3), ("tiny-seed7", 7), ("tiny-seed11", 11)]
    # without finetune.seeds: one adapter, with the study's seed, where it always was
    trained.clear()
    single = make_config(tmp_path, train_path=tmp_path / "train.jsonl", seed=5)
    assert stage.adapters_for_study(single, single.models, EVAL_ITEMS, embed) == {"tiny": str(root / "tiny")}
    assert trained == [("tiny", 5)]


def test_a_runs_identity_holds_its_adapters_content(tmp_path):
    """Two machines whose training gave different adapter weights ran different studies: the
    run id follows each adapter's files (not localnova's notes beside them)."""
    from localnova.finetune.stage import adapter_hashes
    from localnova.run_identity import run_identity
    from localnova.store import run_id_of

    config = make_config(tmp_path)
    adapter = trained_adapter(tmp_path / "adapters" / "tiny")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights from one machine")
    first = run_id_of("s", run_identity(config, adapter_hashes({"tiny": str(adapter)})))
    (adapter / METADATA_FILE).write_text("{}", encoding="utf-8")
    assert run_id_of("s", run_identity(config, adapter_hashes({"tiny": str(adapter)}))) == first
    (adapter / "adapter_model.safetensors").write_bytes(b"weights from another machine")
    assert run_id_of("s", run_identity(config, adapter_hashes({"tiny": str(adapter)}))) != first
    # a Bedrock custom model is named by its ARN, and its study keys its runs by config alone
    assert adapter_hashes({"nova": "arn:aws:bedrock:us-east-1:123456789012:custom-model/abc"}) == {}
    # and a study that does not fine-tune keeps its id whatever is passed
    no_ft = config.model_copy(update={"arms": ["base"]})
    assert run_identity(no_ft, {"tiny": "abc"}) == run_identity(no_ft)
