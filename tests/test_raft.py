"""The RAFT recipe: rows with the oracle passage among distractors (or distractors alone),
answers that quote the oracle; and a RAFT arm run end to end on the demo corpus on CPU."""

import json
from pathlib import Path

import pytest

from localnova.finetune.raft import cited_answer, oracle_chunk, quote, raft_records, raft_rows
from localnova.study_parts import PromptConfig, RaftConfig
from localnova.types import Chunk, RetrievedChunk

REPO = Path(__file__).resolve().parents[1]

CHUNKS = [
    Chunk("w0", "warranty.md", "Our shop opens at nine.", "Our shop opens at nine."),
    Chunk(
        "w1",
        "warranty.md",
        "The Loam Hub has a two-year warranty. Returns take 30 days.",
        "The Loam Hub has a two-year warranty. Returns take 30 days.",
    ),
    Chunk("p0", "pods.md", "Seed pods keep 18 months below 25 degrees.", "Seed pods keep 18 months below 25 degrees."),
    Chunk("f0", "fans.md", "The fan runs at 40 decibels.", "The fan runs at 40 decibels."),
]


def retrieved(*ids):
    by_id = {c.chunk_id: c for c in CHUNKS}
    return [RetrievedChunk(i, by_id[i].doc_id, 0.5, by_id[i].context_text) for i in ids]


def test_the_oracle_is_the_chunk_of_the_pairs_document_that_holds_the_answer():
    assert oracle_chunk("A two-year warranty.", "warranty.md", CHUNKS).chunk_id == "w1"
    # without a document, the whole corpus is searched
    assert oracle_chunk("18 months below 25 degrees", "", CHUNKS).chunk_id == "p0"


def test_the_quote_is_the_sentence_that_holds_the_answer_cut_to_its_length():
    passage = CHUNKS[1].context_text
    assert quote("two-year warranty", passage, 40) == "The Loam Hub has a two-year warranty."
    assert quote("two-year warranty", passage, 3) == "The Loam Hub ..."
    assert cited_answer("Two years.", passage, 2, 40) == 'Passage [2] says: "The Loam Hub has a two-year warranty." Two years.'


def test_rows_keep_the_oracle_at_the_configured_share_with_distractors_from_other_documents():
    pairs = [("How long is the warranty?", "A two-year warranty.", "warranty.md")] * 400
    found = [retrieved("w0", "w1", "p0", "f0")] * 400  # the retriever ranks the oracle's own document first
    rows = raft_rows(pairs, CHUNKS, found, RaftConfig(distractors=2, oracle_fraction=0.8, quote_tokens=40), seed=0)
    kept = [row for row in rows if row.oracle_position is not None]
    assert 0.74 < len(kept) / len(rows) < 0.86  # 0.8 of 400 rows, within 3 binomial sd
    for row in rows:
        distractors = [p for i, p in enumerate(row.passages) if i != row.oracle_position]
        assert [p.chunk_id for p in distractors] == ["p0", "f0"]  # not the oracle's document, best first
    assert {row.oracle_position for row in kept} == {0, 1, 2}  # the oracle goes anywhere among them
    with_oracle, without = kept[0], next(row for row in rows if row.oracle_position is None)
    assert with_oracle.passages[with_oracle.oracle_position].chunk_id == "w1"
    assert with_oracle.answer.startswith(f"Passage [{with_oracle.oracle_position + 1}] says:") and without.answer == "A two-year warranty."
    # the same seed draws the same rows
    assert raft_rows(pairs, CHUNKS, found, RaftConfig(distractors=2), seed=0) == raft_rows(
        pairs, CHUNKS, found, RaftConfig(distractors=2), seed=0
    )


def test_rows_are_asked_in_the_arms_own_prompt():
    rows = raft_rows(
        [("How long?", "Two years.", "warranty.md")], CHUNKS, [retrieved("p0")], RaftConfig(distractors=1, oracle_fraction=1.0), 0
    )
    record = raft_records(rows, PromptConfig())[0]
    roles = [m["role"] for m in record["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert "(source: pods.md)" in record["messages"][1]["content"] and "(source: warranty.md)" in record["messages"][1]["content"]
    assert record["messages"][1]["content"].endswith("Question: How long?")


@pytest.mark.slow
def test_a_raft_arm_runs_on_the_demo_corpus_on_cpu_and_the_report_shows_it(tmp_path, monkeypatch):
    """The issue's check, kept small: configs/demo-raft.yaml on 3 questions, 16 training pairs."""
    from localnova.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = [
        f"output_dir={tmp_path}",
        "finetune.max_train_pairs=16",
        "finetune.batch_size=4",
        "eval.latency_probe.enabled=false",
        "models.0.generation.max_new_tokens=24",
    ]
    args = ["run", str(REPO / "configs" / "demo-raft.yaml"), "--limit", "3", "--arms", "base,raft"]
    assert main(args + [item for override in overrides for item in ("--set", override)]) == 0
    study = tmp_path / "demo-raft"
    summary = json.loads((study / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["arms"] == ["base", "raft"]
    assert (study / "adapters" / "smollm2-135m-raft" / "adapter_config.json").is_file()
    raft_report = json.loads((study / "data" / "training_data_report_raft.json").read_text())
    assert raft_report["raft"]["rows"] == 16
    answers = [json.loads(line) for line in (study / "answers.jsonl").read_text().splitlines()]
    assert sum(a["arm"] == "raft" and len(a["retrieved"]) == 2 for a in answers) == 3
    report = (study / "report.md").read_text()
    assert "| smollm2-135m | raft |" in report
    assert "both, trained for retrieval" in report
