"""Embeddings, the FAISS index (exact and approximate), persistence and recall@k."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from localnova.errors import UserError
from localnova.optional import cuda_available
from localnova.retrieval import (
    Embedder,
    VectorIndex,
    build_or_load_index,
    hit_at_k,
    load_index,
    read_manifest,
    recall_at_k,
)
from localnova.types import Chunk

FACTS = {
    "pump.md": "The Zephyr pump moves forty litres of water per minute and runs on a 12 volt battery.",
    "warranty.md": "Every Zephyr product carries a five year warranty that covers parts and labour.",
    "cleaning.md": "Rinse the filter basket under warm water once a week to keep it free of sand.",
    "shipping.md": "Orders leave our warehouse in Tromso within two working days by sea freight.",
    "colors.md": "The housing is sold in three colours: storm grey, moss green and harbour blue.",
    "noise.md": "At full speed the motor is quieter than a normal conversation, about 45 decibels.",
}


def fact_chunks() -> list[Chunk]:
    return [Chunk(f"{doc_id}::none::0", doc_id, text, text) for doc_id, text in FACTS.items()]


@pytest.fixture(scope="module")
def embedder():
    return Embedder("all-minilm-l6-v2", device="cpu")


def random_unit_vectors(count: int, dimension: int = 32, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def numbered_chunks(count: int) -> list[Chunk]:
    return [Chunk(f"c{number}", f"doc{number}", f"text {number}", f"text {number}") for number in range(count)]


def test_embeddings_are_normalised_float32(embedder):
    vectors = embedder.encode(["one sentence", "and another one"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, embedder.dimension)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.identity["name"] == "all-minilm-l6-v2" and embedder.identity["fingerprint"]


def test_exact_search_finds_the_chunk_a_paraphrase_asks_about(embedder):
    index = VectorIndex.build(fact_chunks(), embedder)
    questions = [
        "How long is the guarantee on these products?",
        "How many litres per minute can the pump push?",
        "Which colours can I buy the casing in?",
        "How loud is the engine?",
    ]
    results = index.search(questions, top_k=2)
    assert [result[0].doc_id for result in results] == ["warranty.md", "pump.md", "colors.md", "noise.md"]
    assert all(len(result) == 2 and result[0].score >= result[1].score for result in results)
    assert results[0][0].text == FACTS["warranty.md"]


def test_children_of_one_parent_come_back_once_with_their_parent_text(embedder):
    parent_text = "Pump guide. The pump moves forty litres per minute. The pump runs on a 12 volt battery."
    chunks = [
        Chunk("p::0", "pump.md", "The pump moves forty litres per minute.", parent_text, 0, "pump-parent"),
        Chunk("p::1", "pump.md", "The pump runs on a 12 volt battery.", parent_text, 1, "pump-parent"),
    ] + fact_chunks()[1:]
    index = VectorIndex.build(chunks, embedder)
    (result,) = index.search(["What battery does the pump use and how much water does it move?"], top_k=3)
    assert len(result) == 3
    assert [item.doc_id for item in result].count("pump.md") == 1
    assert result[0].doc_id == "pump.md" and result[0].text == parent_text


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_agree_with_exact_search_on_top_1(kind):
    vectors = random_unit_vectors(400)
    chunks = numbered_chunks(400)
    queries = vectors[:50] + 0.05 * random_unit_vectors(50, seed=1)
    exact = VectorIndex.from_vectors(vectors, chunks, "flat", use_gpu=False).search(queries, top_k=1)
    approximate_index = VectorIndex.from_vectors(vectors, chunks, kind, use_gpu=False)
    assert approximate_index.kind == kind
    approximate = approximate_index.search(queries, top_k=1)
    assert [result[0].chunk_id for result in approximate] == [result[0].chunk_id for result in exact]
    assert [result[0].chunk_id for result in exact] == [f"c{number}" for number in range(50)]


def test_ivf_with_too_few_vectors_falls_back_to_exact(caplog):
    vectors = random_unit_vectors(20)
    with caplog.at_level("INFO", logger="localnova.retrieval"):
        index = VectorIndex.from_vectors(vectors, numbered_chunks(20), "ivf", use_gpu=False)
    assert index.kind == "flat"
    assert "too few" in caplog.text
    assert index.search(vectors[3:4], top_k=1)[0][0].chunk_id == "c3"


def test_index_is_persisted_and_rebuilt_only_when_inputs_change(tmp_path, embedder):
    folder = tmp_path / "index"
    inputs = {"corpus_hash": "abc", "chunking": {"strategy": "none"}}
    index, rebuilt = build_or_load_index(fact_chunks(), folder, embedder, "flat", inputs)
    assert rebuilt
    assert {path.name for path in folder.iterdir()} == {"index.faiss", "chunks.jsonl", "manifest.json"}
    manifest = read_manifest(folder)
    assert manifest["count"] == len(FACTS) and manifest["index_kind"] == "flat"
    assert manifest["inputs"] == inputs and manifest["embedding"]["name"] == "all-minilm-l6-v2"
    assert manifest["faiss_version"] and manifest["chunks_per_s"] > 0

    def chunking_that_must_not_run():
        raise AssertionError("an unchanged index was rebuilt")

    reloaded, rebuilt = build_or_load_index(chunking_that_must_not_run, folder, embedder, "flat", dict(inputs))
    assert not rebuilt
    question = ["Where do orders ship from?"]
    assert reloaded.search(question, 1)[0][0].doc_id == index.search(question, 1)[0][0].doc_id == "shipping.md"

    changed_inputs = {"corpus_hash": "abc", "chunking": {"strategy": "fixed"}}
    _, rebuilt = build_or_load_index(fact_chunks()[:3], folder, embedder, "flat", changed_inputs)
    assert rebuilt and read_manifest(folder)["count"] == 3
    _, rebuilt = build_or_load_index(fact_chunks()[:3], folder, embedder, "hnsw", changed_inputs)
    assert rebuilt and read_manifest(folder)["index_kind"] == "hnsw"


def test_a_half_written_index_folder_is_rebuilt(tmp_path, embedder):
    folder = tmp_path / "index"
    inputs = {"corpus_hash": "abc"}
    build_or_load_index(fact_chunks(), folder, embedder, "flat", inputs)
    # As if a crash hit between writing the chunks and the manifest: chunks no longer match.
    lines = (folder / "chunks.jsonl").read_text(encoding="utf-8").splitlines()
    (folder / "chunks.jsonl").write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    assert load_index(folder, embedder) is None
    index, rebuilt = build_or_load_index(fact_chunks(), folder, embedder, "flat", inputs)
    assert rebuilt and len(index) == len(FACTS)
    assert [json.loads(line)["chunk_id"] for line in (folder / "chunks.jsonl").read_text().splitlines()] == [
        chunk.chunk_id for chunk in fact_chunks()
    ]


def test_recall_at_k_counts_questions_with_any_gold_document_retrieved():
    retrieved = [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "a"], ["x", "y", "z"]]
    gold = [["a"], ["f", "q"], ["a"], []]  # the last question has no gold and is left out
    assert recall_at_k(retrieved, gold) == pytest.approx(1.0)
    assert recall_at_k(retrieved, gold, k=1) == pytest.approx(1 / 3)
    assert recall_at_k(retrieved, gold, k=2) == pytest.approx(1 / 3)
    assert hit_at_k(["d", "e", "f"], ("f",)) and not hit_at_k(["d", "e", "f"], ("f",), k=2)
    assert np.isnan(recall_at_k([["a"]], [[]]))
    with pytest.raises(ValueError):
        recall_at_k([["a"]], [["a"], ["b"]])


def test_search_rejects_non_positive_top_k():
    index = VectorIndex.from_vectors(random_unit_vectors(5), numbered_chunks(5), use_gpu=False)
    with pytest.raises(ValueError, match="top_k"):
        index.search(random_unit_vectors(1), top_k=0)


def _faiss_gpu_usable() -> bool:
    from localnova.retrieval import faiss_gpu_usable

    return cuda_available() and faiss_gpu_usable()


@pytest.fixture
def fresh_availability():
    from localnova.optional import is_available

    is_available.cache_clear()
    yield
    is_available.cache_clear()


def test_a_cuda_machine_without_faiss_has_no_gpu_index_and_no_import_error(monkeypatch, fresh_availability):
    """The GPU test below asks this while pytest collects the file; on a CUDA node without
    faiss it raised ModuleNotFoundError and the whole file errored."""
    from localnova import retrieval

    monkeypatch.setattr(retrieval, "cuda_available", lambda: True)
    monkeypatch.setitem(sys.modules, "faiss", None)  # what `import faiss` sees where it is not installed
    assert retrieval.faiss_gpu_usable() is False


def test_a_faiss_that_cannot_load_is_one_line_naming_faiss_cpu(monkeypatch, tmp_path, fresh_availability):
    """faiss-gpu-cu12 beside a CUDA 13 torch installs but cannot load its library."""
    broken = tmp_path / "faiss"
    broken.mkdir()
    (broken / "__init__.py").write_text('raise ImportError("libcudart.so.12: cannot open shared object file")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "faiss", raising=False)
    with pytest.raises(UserError, match=r"faiss is installed but cannot load \(ImportError: libcudart.so.12.*install faiss-cpu"):
        VectorIndex.from_vectors(random_unit_vectors(5), numbered_chunks(5), use_gpu=False)


@pytest.mark.gpu
@pytest.mark.skipif(not _faiss_gpu_usable(), reason="needs faiss with GPU support and a CUDA device")
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_faiss_gpu_gives_the_same_results_as_cpu(kind):
    vectors = random_unit_vectors(2000, dimension=64)
    chunks = numbered_chunks(2000)
    queries = random_unit_vectors(100, dimension=64, seed=2)
    cpu_index = VectorIndex.from_vectors(vectors, chunks, kind, use_gpu=False)
    gpu_index = VectorIndex.from_vectors(vectors, chunks, kind, use_gpu=True)
    assert gpu_index.on_gpu and not cpu_index.on_gpu
    cpu_results = cpu_index.search(queries, top_k=5)
    gpu_results = gpu_index.search(queries, top_k=5)
    assert [[item.chunk_id for item in result] for result in gpu_results] == [[item.chunk_id for item in result] for result in cpu_results]
    assert np.allclose(
        [[item.score for item in result] for result in gpu_results], [[item.score for item in result] for result in cpu_results], atol=1e-4
    )


def test_refetching_for_shared_parents_stays_within_the_gpu_k_limit():
    """Children of few parents make the search fetch more and more neighbours; on the GPU,
    faiss answers at most GPU_MAX_K a query, so no fetch may ask for more."""
    from localnova.retrieval import GPU_MAX_K

    count = GPU_MAX_K + 1000
    vectors = np.random.default_rng(0).normal(size=(count, 8)).astype(np.float32)
    chunks = [Chunk(f"c{i}", "doc", f"child {i}", f"parent {i % 2}", i, parent_id=f"p{i % 2}") for i in range(count)]
    index = VectorIndex.from_vectors(vectors, chunks, use_gpu=False)
    asked = []
    cpu_search = index.search_index.search

    class RecordingIndex:
        def search(self, queries, k):
            asked.append(k)
            return cpu_search(queries, k)

    index.search_index, index.on_gpu = RecordingIndex(), True  # as an index moved to the GPU would be
    results = index.search(vectors[:1], top_k=3)
    assert len(results[0]) == 2  # only two distinct parents exist
    assert max(asked) == GPU_MAX_K and asked == sorted(asked)
    with pytest.raises(UserError, match="at most 2048"):
        index.search(vectors[:1], top_k=GPU_MAX_K + 1)


def test_identity_from_the_model_files_equals_the_loaded_models(embedder):
    lazy = Embedder("all-minilm-l6-v2", device="cpu")
    from_files = lazy.identity
    assert not lazy.loaded  # read from the folder's files, nothing loaded
    embedder.encode(["load it"])
    assert embedder.loaded
    loaded = {**from_files, "dimension": embedder.dimension, "max_seq_length": int(embedder.model.max_seq_length)}
    assert from_files == loaded


def test_a_reloaded_index_searches_known_questions_without_the_embedding_model(tmp_path, embedder):
    folder = tmp_path / "index"
    questions = ["How long is the guarantee?", "Which colours are sold?"]
    index, _ = build_or_load_index(fact_chunks(), folder, embedder, "flat", {"corpus": "facts"})
    first = index.search(questions, 2)
    lazy = Embedder("all-minilm-l6-v2", device="cpu")
    reloaded, rebuilt = build_or_load_index(fact_chunks, folder, lazy, "flat", {"corpus": "facts"})
    assert not rebuilt
    assert reloaded.search(questions, 2) == first
    assert not lazy.loaded  # the questions' vectors came from the index folder's query cache
    reloaded.search(["A question not asked before?"], 1)
    assert lazy.loaded
