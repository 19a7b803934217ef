import importlib.util
import json
import re
from pathlib import Path

import pytest

from localnova.backends.base import Backend
from localnova.config import GenQAConfig, StudyConfig
from localnova.data.formats import TrainingPair, read_chat_jsonl, read_nova_jsonl, write_chat_jsonl
from localnova.data.gen_qa import generate_pairs, parse_pairs, run_gen_qa
from localnova.data.nova_validator import validate_nova_file
from localnova.data.qa_filters import (
    DataReport,
    decontaminate,
    decontaminate_training_file,
    filter_grounded,
    filter_pairs,
    grounding_score,
    remove_near_duplicates,
    split_by_document,
)
from localnova.errors import UserError
from localnova.types import Chunk, EvalItem, GenerationParams, GenerationResult

DEMO_CORPUS = Path(__file__).resolve().parents[1] / "data" / "demo" / "corpus"


@pytest.fixture(scope="module")
def embed():
    """The project's embedder, or the bundled MiniLM straight through sentence-transformers."""
    try:
        from localnova.embedder import Embedder

        return Embedder()
    except ImportError:
        from sentence_transformers import SentenceTransformer

        from localnova.models import resolve_model

        model = SentenceTransformer(resolve_model("all-minilm-l6-v2").path)
        return lambda texts: model.encode(texts, normalize_embeddings=True)


CHUNKS = [
    Chunk("f4::0", "03-f4.md", "The Fernlight F4 weighs 38 kg empty. It has four trays of 12 pod sites each.",
          "The Fernlight F4 weighs 38 kg empty. It has four trays of 12 pod sites each."),
    Chunk("warranty::0", "22-warranty.md", "The Loam Hub carries a two-year warranty from the date of delivery.",
          "The Loam Hub carries a two-year warranty from the date of delivery."),
    Chunk("pods::0", "10-pods.md", "Seed pods keep for 18 months when stored below 25 degrees.",
          "Seed pods keep for 18 months when stored below 25 degrees."),
    Chunk("noise::0", "03-f4.md", "The F4 runs at 31 dBA at one metre. It has no fans.",
          "The F4 runs at 31 dBA at one metre. It has no fans."),
]  # fmt: skip


class SentenceQuizBackend(Backend):
    """A deterministic stand-in generator: one Q/A pair per sentence of the passage, and
    garbage for a passage that mentions 'dBA', so parsing failures are exercised."""

    identity = {"backend": "test-quiz"}

    def __init__(self):
        self.calls = []

    def generate(self, requests):
        self.calls.append(len(requests))
        results = []
        for request in requests:
            passage = request.messages[-1][1].split("Passage:\n", 1)[1].split("\n\n", 1)[0]
            if "dBA" in passage:
                text = "Sure! Here are some facts about the lamp, in no particular format."
            else:
                sentences = [s.strip() for s in re.split(r"(?<=\.)\s+", passage) if s.strip()]
                text = "\n\n".join(
                    f"Q: {i + 1}. What does the guide say about point {i + 1} here?\nA: {s}" for i, s in enumerate(sentences)
                )
            results.append(GenerationResult(text=text, input_tokens=10, output_tokens=10, latency_ms=1.0))
        return results


def make_config(tmp_path: Path, **gen_qa) -> StudyConfig:
    return StudyConfig(
        name="t",
        corpus={"path": str(tmp_path)},
        eval={"path": str(tmp_path / "eval.jsonl")},
        models=[{"name": "gen", "backend": "simulated", "model": "x", "generation": {"batch_size": 2}}],
        gen_qa=gen_qa,
    )


def test_parse_pairs_reads_labels_numbering_json_and_drops_halves():
    assert parse_pairs("Q: 1. What is it made of?\nA: Powder-coated\nsteel.\n\nQ: An orphan question?") == (
        [("What is it made of?", "Powder-coated steel.")],
        1,
    )
    assert parse_pairs('{"question": "Is it loud?", "answer": "No, 31 dBA."}')[0] == [("Is it loud?", "No, 31 dBA.")]
    assert parse_pairs("**Question 2:** How tall?\n**Answer 2:** 155 cm.")[0] == [("How tall?", "155 cm.")]
    assert parse_pairs("no structure at all") == ([], 0)


def test_generate_pairs_batches_and_counts_unparseable_output():
    backend = SentenceQuizBackend()
    report = DataReport()
    pairs = generate_pairs(CHUNKS, backend, GenerationParams(), pairs_per_chunk=3, batch_size=3, report=report)
    assert backend.calls == [3, 1]
    assert report.requests == 4 and report.unparseable_outputs == 1
    assert len(pairs) == 4 and report.parsed_pairs == 4  # 2 + 1 + 1 sentences
    assert {p.chunk_id for p in pairs} == {"f4::0", "warranty::0", "pods::0"}
    assert all(p.doc_id and p.pair_id for p in pairs)


def test_pairs_per_chunk_caps_each_chunk():
    pairs = generate_pairs(CHUNKS[:1], SentenceQuizBackend(), GenerationParams(), pairs_per_chunk=1)
    assert len(pairs) == 1


def test_grounding_filter_drops_answers_the_chunk_does_not_support():
    grounded = TrainingPair("How heavy is the F4 empty?", "The F4 weighs 38 kg empty.", "03-f4.md", "f4::0")
    invented = TrainingPair("What colour is the F4?", "It comes in matte green and walnut veneer.", "03-f4.md", "f4::0")
    report = DataReport()
    kept = filter_grounded([grounded, invented], {c.chunk_id: c.context_text for c in CHUNKS}, 0.5, report=report)
    assert kept == [grounded]
    assert report.dropped_ungrounded == 1 and report.ungrounded_examples[0]["pair"]["question"] == "What colour is the F4?"
    assert grounding_score("The F4 weighs 38 kg.", CHUNKS[0].context_text) == 1.0


def test_grounding_by_embedding(embed):
    on_topic = TrainingPair("How long is the hub warranty?", "The Loam Hub has a two-year warranty.", "22-warranty.md", "warranty::0")
    off_topic = TrainingPair("How long is the hub warranty?", "Basil grows best in warm sunny kitchens.", "22-warranty.md", "warranty::0")
    texts = {c.chunk_id: c.context_text for c in CHUNKS}
    assert filter_grounded([on_topic, off_topic], texts, 0.5, embed=embed, method="embedding") == [on_topic]


def test_near_duplicates_are_removed(embed):
    first = TrainingPair("How heavy is the F4 when empty?", "The F4 weighs 38 kg empty.", "03-f4.md")
    near = TrainingPair("How heavy is the F4 when it is empty?", "The F4 weighs 38 kg when empty.", "03-f4.md")
    exact = TrainingPair("how heavy is the F4 when empty", "The F4 weighs 38 kg empty!", "03-f4.md")
    other = TrainingPair("How many trays does the F4 have?", "The F4 has four trays.", "03-f4.md")
    report = DataReport()
    assert remove_near_duplicates([first, near, exact, other], embed, 0.95, report) == [first, other]
    assert report.dropped_duplicates == 2


EVAL = [
    EvalItem("q01", "How much does the Fernlight F4 weigh when it is completely empty?", "38 kg.", ("03-f4.md",)),
    EvalItem("q02", "How long is the warranty on the Loam Hub?", "Two years from delivery.", ("22-warranty.md",)),
]


def test_decontamination_drops_and_lists_matches(embed):
    copied = TrainingPair("Tell me how much does the Fernlight F4 weigh when it is completely empty", "38 kg.", "03-f4.md")
    paraphrase = TrainingPair("What is the warranty period of the Loam Hub?", "Two years.", "22-warranty.md")
    clean = TrainingPair("How long do seed pods keep?", "18 months below 25 degrees.", "10-pods.md")
    report = DataReport()
    kept, drops = decontaminate([copied, paraphrase, clean], EVAL, embed, ngram=8, similarity=0.85, report=report)
    assert kept == [clean]
    assert [(d.pair, d.question_id, d.reason) for d in drops] == [(copied, "q01", "ngram"), (paraphrase, "q02", "embedding")]
    assert drops[0].detail == "how much does the fernlight f4 weigh when"
    assert report.dropped_contaminated == 2
    markdown = report.to_markdown()
    assert "| q02 | embedding | cosine" in markdown and "What is the warranty period of the Loam Hub?" in markdown
    assert json.loads(json.dumps(report.to_dict()))["contamination"][0]["question_id"] == "q01"


def test_decontamination_checks_eval_answers_only_when_asked():
    eval_items = [EvalItem("q9", "What does the manual say?", "Press and hold the reset button for ten full seconds to restart", ())]
    pair = TrainingPair("How do I restart the hub?", "Press and hold the reset button for ten full seconds to restart it.", "d.md")
    assert decontaminate([pair], eval_items, None, ngram=8)[0] == [pair]
    kept, drops = decontaminate([pair], eval_items, None, ngram=8, against_answers=True)
    assert kept == [] and drops[0].question_id == "q9"


def test_split_by_document_keeps_each_document_on_one_side():
    pairs = [TrainingPair(f"Question {d} {i}?", f"Answer {i}.", f"doc{d}.md") for d in range(10) for i in range(3)]
    train, validation = split_by_document(pairs, 0.2, seed=7)
    train_docs, validation_docs = {p.doc_id for p in train}, {p.doc_id for p in validation}
    assert not train_docs & validation_docs
    assert len(validation_docs) == 2 and len(train) + len(validation) == 30
    assert split_by_document(pairs, 0.2, seed=7) == (train, validation)
    one_doc = [p for p in pairs if p.doc_id == "doc0.md"]
    assert split_by_document(one_doc, 0.5, seed=7) == (one_doc, [])


def test_filter_pairs_counts_each_step_and_splits(tmp_path, embed):
    config = make_config(tmp_path, validation_fraction=0.34).gen_qa
    pairs = generate_pairs(CHUNKS, SentenceQuizBackend(), GenerationParams(), 3)
    pairs.append(TrainingPair("Which colours does the F4 come in?", "Matte green and walnut veneer.", "03-f4.md", "f4::0"))
    train, validation, report = filter_pairs(pairs, EVAL, embed, config, seed=1, chunks=CHUNKS)
    assert report.input_pairs == 5 and report.dropped_ungrounded == 1
    assert report.train_pairs == len(train) and report.validation_pairs == len(validation) == 1
    assert not set(report.train_docs) & set(report.validation_docs)


def test_everything_decontaminated_is_a_user_error(tmp_path):
    pairs = [TrainingPair("How long is the warranty on the Loam Hub exactly", "Two years.", "22-warranty.md")]
    eval_items = [EvalItem("q02", "How long is the warranty on the Loam Hub exactly?", "Two years.", ())]
    with pytest.raises(UserError, match=r"no training pairs left after decontamination: 1 in, .* 1 close to eval questions"):
        filter_pairs(pairs, eval_items, None, GenQAConfig(decontam_ngram=5), seed=0)
    with pytest.raises(UserError, match="no training pairs left after generation"):
        filter_pairs([], eval_items, None, GenQAConfig(), seed=0)


def test_run_gen_qa_writes_every_file(tmp_path, embed):
    out_dir = tmp_path / "data"
    report = run_gen_qa(make_config(tmp_path, validation_fraction=0.34), CHUNKS, EVAL, SentenceQuizBackend(), embed, out_dir)
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "data_report.json", "data_report.md", "train.jsonl", "train.nova.jsonl", "validation.jsonl", "validation.nova.jsonl",
    ]  # fmt: skip
    train = read_chat_jsonl(out_dir / "train.jsonl")
    assert len(train) == report.train_pairs > 0
    assert [r.messages for r in read_nova_jsonl(out_dir / "train.nova.jsonl")] == [r.messages for r in train]
    # Only the file-wide sample count may fail on a set this small.
    assert [p for p in validate_nova_file(out_dir / "train.nova.jsonl") if p.line] == []
    saved = json.loads((out_dir / "data_report.json").read_text())
    assert saved["requests"] == 4 and saved["unparseable_outputs"] == 1 and saved["generator"]["backend"] == "test-quiz"


def test_run_gen_qa_fully_decontaminated_writes_no_training_files(tmp_path):
    out_dir = tmp_path / "data"
    eval_items = [EvalItem(f"q{i}", f"What does the guide say about point {i} here?", "-", ()) for i in (1, 2)]
    with pytest.raises(UserError, match=r"no training pairs left after decontamination: .*data_report\.md"):
        run_gen_qa(make_config(tmp_path, decontam_ngram=4), CHUNKS, eval_items, SentenceQuizBackend(), None, out_dir)
    assert sorted(p.name for p in out_dir.iterdir()) == ["data_report.json", "data_report.md"]
    assert json.loads((out_dir / "data_report.json").read_text())["status"] == "empty"


def test_decontaminate_a_user_training_file(tmp_path, embed):
    path = tmp_path / "train.jsonl"
    pairs = [
        TrainingPair("What is the warranty period of the Loam Hub?", "Two years from delivery.", "22-warranty.md"),
        TrainingPair("How long do seed pods keep?", "18 months below 25 degrees.", "10-pods.md"),
    ]
    write_chat_jsonl([p.to_record() for p in pairs], path)
    kept, report = decontaminate_training_file(path, EVAL, embed, GenQAConfig(decontam_similarity=0.85))
    assert [p.question for p in kept] == ["How long do seed pods keep?"]
    assert report.source == str(path) and report.contamination[0].question_id == "q02"


needs_real_model = pytest.mark.skipif(
    importlib.util.find_spec("localnova.backends.transformers_backend") is None, reason="the transformers backend module is not there yet"
)


@pytest.mark.slow
@needs_real_model
def test_gen_qa_end_to_end_with_smollm2_on_the_demo_corpus(tmp_path, embed, monkeypatch):
    """The bundled 135M model writes poor pairs; what is checked is that real output goes
    through parsing, every filter and the writers, and that what survives is grounded."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from localnova.backends.transformers_backend import TransformersBackend
    from localnova.chunking import chunk_documents
    from localnova.config import ChunkingConfig
    from localnova.corpus import load_documents

    corpus = DEMO_CORPUS if DEMO_CORPUS.is_dir() else None
    if corpus is None:
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        (corpus / "f4.md").write_text(CHUNKS[0].text + "\n")
        (corpus / "warranty.md").write_text(CHUNKS[1].text + "\n")
    documents = [d for d in load_documents(corpus) if d.doc_id.startswith(("03-", "22-", "f4", "warranty"))]
    chunks = chunk_documents(documents, ChunkingConfig(chunk_tokens=90, overlap_tokens=10), embed.tokenizer)
    chunks = [next(c for c in chunks if c.doc_id == d.doc_id) for d in documents]  # the first chunk of each
    config = StudyConfig(
        name="e2e",
        corpus={"path": str(corpus)},
        eval={"path": str(tmp_path / "eval.jsonl")},
        models=[{"name": "smol", "model": "smollm2-135m-instruct", "generation": {"max_new_tokens": 96, "batch_size": 2}}],
        gen_qa={"pairs_per_chunk": 2, "grounding_threshold": 0.5, "validation_fraction": 0.5},
    )
    backend = TransformersBackend(config.models[0])
    out_dir = tmp_path / "data"
    try:
        # Greedy decoding on these two chunks yields pairs that pass every filter; a run that
        # yields none fails here (EmptyTrainingSet) instead of passing without checking them.
        report = run_gen_qa(config, chunks, EVAL, backend, embed, out_dir)
    finally:
        backend.close()
    assert report.requests == len(chunks) == 2
    assert report.train_pairs >= 1
    texts = {c.chunk_id: c.context_text for c in chunks}
    train = read_chat_jsonl(out_dir / "train.jsonl")
    assert len(train) == report.train_pairs
    for record in train + read_chat_jsonl(out_dir / "validation.jsonl"):
        pair = record.to_pair()
        assert max(grounding_score(pair.answer, text) for text in texts.values()) >= 0.5
