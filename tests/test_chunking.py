"""The four chunking strategies, sentence splitting, and stable chunk ids."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from localnova.chunking import chunk_documents, load_tokenizer, split_sentences
from localnova.config import ChunkingConfig
from localnova.corpus import load_documents
from localnova.embedder import Embedder
from localnova.types import Document
from test_corpus import write_mixed_corpus


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def embedder():
    return Embedder("all-minilm-l6-v2", device="cpu")


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def long_document() -> Document:
    sections = []
    for number in range(1, 5):
        body = " ".join(
            f"Section {number} sentence {index} describes the Kestrava pump part {number * 100 + index}." for index in range(12)
        )
        sections.append(f"## Part {number}\n\n{body}")
    return Document("manual.md", "# Manual\n\nIntro line.\n\n" + "\n\n".join(sections))


def test_fixed_chunks_respect_size_and_overlap(tokenizer):
    document = long_document()
    config = ChunkingConfig(strategy="fixed", chunk_tokens=40, overlap_tokens=10)
    chunks = chunk_documents([document], config, tokenizer)
    assert len(chunks) > 5
    for chunk in chunks:
        assert token_count(tokenizer, chunk.text) <= 40
        assert chunk.text in document.text  # a slice of the original, readable as written
        assert chunk.context_text == chunk.text and chunk.parent_id is None
    for previous, following in pairwise(chunks):
        previous_tokens = tokenizer(previous.text, add_special_tokens=False)["input_ids"]
        following_tokens = tokenizer(following.text, add_special_tokens=False)["input_ids"]
        shared = max(size for size in range(1, 41) if previous_tokens[-size:] == following_tokens[:size])
        # At least the configured overlap; a few more where it is widened to a word start.
        assert 10 <= shared <= 14
    # No chunk starts or ends in the middle of a word.
    for chunk in chunks:
        start = document.text.index(chunk.text)
        end = start + len(chunk.text)
        assert start == 0 or not (document.text[start - 1].isalnum() and document.text[start].isalnum())
        assert end == len(document.text) or not (document.text[end - 1].isalnum() and document.text[end].isalnum())
    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    # Together the windows cover the whole document.
    assert chunks[0].text.startswith("# Manual") and document.text.endswith(chunks[-1].text)


def test_hierarchical_children_sit_inside_heading_aware_parents(tokenizer):
    document = long_document()
    config = ChunkingConfig(strategy="hierarchical", chunk_tokens=40, overlap_tokens=5, parent_tokens=200, child_tokens=50)
    chunks = chunk_documents([document], config, tokenizer)
    parents = {}
    for chunk in chunks:
        assert chunk.parent_id is not None
        assert chunk.text in chunk.context_text
        assert token_count(tokenizer, chunk.text) <= 50
        assert token_count(tokenizer, chunk.context_text) <= 200
        parents.setdefault(chunk.parent_id, chunk.context_text)
    # Each Part (about 140 tokens) fits a parent but two do not, so every parent is one
    # section, opening at its heading; the short intro is merged into the first.
    assert [text.splitlines()[0] for text in parents.values()] == ["# Manual", "## Part 2", "## Part 3", "## Part 4"]
    assert "## Part 1" in list(parents.values())[0]


def test_hierarchical_splits_a_section_longer_than_a_parent(tokenizer):
    document = long_document()
    config = ChunkingConfig(strategy="hierarchical", chunk_tokens=40, overlap_tokens=5, parent_tokens=60, child_tokens=30)
    chunks = chunk_documents([document], config, tokenizer)
    parent_texts = list(dict.fromkeys(chunk.context_text for chunk in chunks))
    assert len(parent_texts) > 8
    assert all(token_count(tokenizer, text) <= 60 for text in parent_texts)


def test_hierarchical_merges_small_sections_into_one_parent(tokenizer):
    document = Document("small.md", "# A\n\nOne line.\n\n## B\n\nTwo line.\n\n## C\n\nThree line.")
    config = ChunkingConfig(strategy="hierarchical", parent_tokens=100, child_tokens=50)
    chunks = chunk_documents([document], config, tokenizer)
    assert {chunk.parent_id for chunk in chunks} == {chunks[0].parent_id}
    assert chunks[0].context_text == document.text


def test_none_strategy_gives_one_chunk_per_document(tokenizer):
    documents = [long_document(), Document("short.txt", "Just this.")]
    chunks = chunk_documents(documents, ChunkingConfig(strategy="none"), tokenizer)
    assert [(chunk.doc_id, chunk.text) for chunk in chunks] == [(document.doc_id, document.text) for document in documents]


def test_sentences_split_at_ends_and_line_breaks_not_abbreviations():
    text = "The pump is red. It uses e.g. oil daily! Does it? Yes.\n# Heading\n- item"
    sentences = [text[start:end] for start, end in split_sentences(text)]
    assert sentences == ["The pump is red.", "It uses e.g. oil daily!", "Does it?", "Yes.", "# Heading", "- item"]


def test_semantic_chunks_break_at_a_topic_change(tokenizer, embedder):
    cooking = [
        "Knead the bread dough for ten minutes until it is smooth.",
        "Let the dough rise in a warm kitchen for an hour.",
        "Bake the loaf in a hot oven until the crust is golden.",
        "Slice the bread once it has cooled on a rack.",
    ]
    astronomy = [
        "Jupiter is the largest planet in the solar system.",
        "Its moons Io and Europa orbit the gas giant closely.",
        "Saturn's rings are made of ice and rock particles.",
        "Telescopes reveal the bands of clouds on these planets.",
    ]
    document = Document("mixed.txt", " ".join(cooking + astronomy))
    config = ChunkingConfig(strategy="semantic", breakpoint_percentile=80, max_chunk_tokens=400)
    chunks = chunk_documents([document], config, tokenizer, embed=embedder)
    assert len(chunks) >= 2
    # No chunk mixes the two topics: the break falls where the topic changes.
    for chunk in chunks:
        assert not ("bread" in chunk.text.lower() or "dough" in chunk.text.lower()) or "planet" not in chunk.text.lower()
    assert any(chunk.text.startswith("Jupiter") for chunk in chunks)


def test_semantic_chunks_never_exceed_max_tokens(tokenizer):
    document = long_document()

    # A constant embedding has no breakpoints, so only the token limit cuts the text.
    def flat_embed(texts):
        return np.ones((len(texts), 4), dtype=np.float32) / 2.0

    config = ChunkingConfig(strategy="semantic", max_chunk_tokens=60)
    chunks = chunk_documents([document], config, tokenizer, embed=flat_embed)
    assert len(chunks) > 3
    assert all(token_count(tokenizer, chunk.text) <= 60 for chunk in chunks)
    assert "".join(chunk.text for chunk in chunks).replace(" ", "").replace("\n", "") == document.text.replace(" ", "").replace("\n", "")


def test_semantic_without_embed_function_is_refused(tokenizer):
    with pytest.raises(ValueError, match="embed"):
        chunk_documents([long_document()], ChunkingConfig(strategy="semantic"), tokenizer)


@pytest.mark.parametrize("strategy", ["fixed", "hierarchical", "none"])
def test_chunk_ids_are_stable_across_runs_and_unique(tmp_path, tokenizer, strategy):
    write_mixed_corpus(tmp_path)
    (tmp_path / "manual.md").write_text(long_document().text, encoding="utf-8")
    config = ChunkingConfig(strategy=strategy, chunk_tokens=30, overlap_tokens=5, parent_tokens=120, child_tokens=30)
    first = chunk_documents(load_documents(tmp_path), config, tokenizer)
    second = chunk_documents(load_documents(tmp_path), config, tokenizer)
    assert [chunk.chunk_id for chunk in first] == [chunk.chunk_id for chunk in second]
    assert len({chunk.chunk_id for chunk in first}) == len(first)
    assert all(chunk.chunk_id.startswith(f"{chunk.doc_id}::{strategy}::") for chunk in first)
