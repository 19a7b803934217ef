"""Cutting Documents into Chunks.

The four strategies a Bedrock Knowledge Base offers: `fixed`, `hierarchical`, `semantic` and
`none`. Sizes are counted in tokens of the embedding model's tokenizer, and every chunk's text
is a slice of the original document string, so it reads as written.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from functools import cache
from itertools import pairwise
from typing import Any

import numpy as np

from localnova.config import ChunkingConfig
from localnova.corpus import CODE_FENCE
from localnova.embedder import EmbedFn
from localnova.errors import UserError
from localnova.models import resolve_model
from localnova.types import Chunk, Document, stable_hash

# Bump when the loaders (corpus.py) or the chunkers change what they produce for the same
# input, so that persisted indexes built by the older code are rebuilt.
CHUNKER_VERSION = 1


@cache
def load_tokenizer(embedding_model_name: str, revision: str | None = None) -> Any:
    """The embedding model's own tokenizer (a fast HF tokenizer, for character offsets)."""
    from transformers import AutoTokenizer

    resolved = resolve_model(embedding_model_name, revision)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, revision=resolved.revision)
    if not tokenizer.is_fast:
        raise UserError(f"embedding model {embedding_model_name!r}: chunking needs a fast tokenizer (with offsets)")
    return tokenizer


class _TokenizedText:
    """A text with its tokens' character spans, to count tokens in any slice of it."""

    def __init__(self, text: str, tokenizer: Any):
        self.text = text
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        self.spans = [(start, end) for start, end in encoding["offset_mapping"] if end > start]
        self.starts = [start for start, _ in self.spans]

    def token_range(self, char_start: int, char_end: int) -> tuple[int, int]:
        return bisect.bisect_left(self.starts, char_start), bisect.bisect_left(self.starts, char_end)

    def count(self, char_start: int, char_end: int) -> int:
        first, stop = self.token_range(char_start, char_end)
        return stop - first

    def starts_word(self, index: int) -> bool:
        """Whether token `index` begins a word, rather than continuing one (a sub-word piece
        such as "##ing" directly after letters or digits)."""
        if index <= 0 or index >= len(self.spans):
            return True
        start, previous_end = self.spans[index][0], self.spans[index - 1][1]
        return start > previous_end or not (self.text[start].isalnum() and self.text[previous_end - 1].isalnum())

    def _snap_to_word(self, index: int, low: int, high: int) -> int:
        """The nearest word start at or before `index` and above `low`; failing that, the
        first one after it and below `high`; failing that (one huge word), `index` itself."""
        for candidate in range(index, low, -1):
            if self.starts_word(candidate):
                return candidate
        for candidate in range(index + 1, high):
            if self.starts_word(candidate):
                return candidate
        return index

    def windows(self, char_start: int, char_end: int, size: int, overlap: int) -> list[tuple[int, int]]:
        """Character spans of windows of at most `size` tokens covering the slice
        [char_start, char_end), neighbours sharing about `overlap` tokens. Windows begin and
        end at word boundaries, so a chunk never starts or ends inside a word, and its text
        tokenizes to the same tokens on its own."""
        first, stop = self.token_range(char_start, char_end)
        if stop <= first:
            return []
        spans = []
        window_start = first
        while True:
            window_stop = min(window_start + size, stop)
            if window_stop < stop:
                window_stop = self._snap_to_word(window_stop, window_start, window_stop)
            spans.append((self.spans[window_start][0], self.spans[window_stop - 1][1]))
            if window_stop >= stop:
                return spans
            # Snapping moves the next start back to a word start, so the overlap is at least
            # `overlap` tokens where words allow it.
            next_start = max(window_stop - overlap, window_start + 1)
            window_start = self._snap_to_word(next_start, window_start, window_stop)


def chunk_documents(documents: Sequence[Document], config: ChunkingConfig, tokenizer: Any, embed: EmbedFn | None = None) -> list[Chunk]:
    """Cut documents into chunks with the strategy `config.strategy`. `tokenizer` (the
    embedding model's) measures sizes; `embed` is needed by the `semantic` strategy only."""
    strategy = config.strategy
    if strategy == "none":
        return [chunk for document in documents for chunk in _whole_document(document)]
    if strategy == "semantic":
        if embed is None:
            raise ValueError("semantic chunking needs an embed function")
        return _semantic_chunks(documents, config, tokenizer, embed)
    chunks: list[Chunk] = []
    for document in documents:
        tokenized = _TokenizedText(document.text, tokenizer)
        if strategy == "fixed":
            spans = tokenized.windows(0, len(document.text), config.chunk_tokens, config.overlap_tokens)
            chunks.extend(_chunks_from_spans(document, "fixed", spans))
        elif strategy == "hierarchical":
            chunks.extend(_hierarchical_chunks(document, tokenized, config))
        else:
            raise ValueError(f"unknown chunking strategy {strategy!r}")
    return chunks


def _chunk_id(doc_id: str, strategy: str, position: int, text: str) -> str:
    return f"{doc_id}::{strategy}::{position}::{stable_hash(text, 8)}"


def _whole_document(document: Document) -> list[Chunk]:
    text = document.text.strip()
    return [Chunk(_chunk_id(document.doc_id, "none", 0, text), document.doc_id, text, text, 0)] if text else []


def _chunks_from_spans(document: Document, strategy: str, spans: list[tuple[int, int]]) -> list[Chunk]:
    chunks = []
    for start, end in spans:
        text = document.text[start:end].strip()
        if text:
            position = len(chunks)
            chunks.append(Chunk(_chunk_id(document.doc_id, strategy, position, text), document.doc_id, text, text, position))
    return chunks


_HEADING_LINE = re.compile(r"^#{1,6}[ \t]+\S", flags=re.MULTILINE)


def _section_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sections of a Markdown text: each starts at a heading line
    (the text before the first heading is a section too). Headings inside code fences are
    not headings."""
    fenced = [(match.start(), match.end()) for match in CODE_FENCE.finditer(text)]
    cuts = [0] + [match.start() for match in _HEADING_LINE.finditer(text) if not any(start <= match.start() < end for start, end in fenced)]
    cuts = sorted(set(cuts)) + [len(text)]
    return [(start, end) for start, end in pairwise(cuts) if text[start:end].strip()]


def _parent_spans(tokenized: _TokenizedText, max_tokens: int) -> list[tuple[int, int]]:
    """Sections merged while they fit in `max_tokens` together; a section longer than that is
    cut into windows of `max_tokens`."""
    parents: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for start, end in _section_spans(tokenized.text):
        if tokenized.count(start, end) > max_tokens:
            if current:
                parents.append(current)
                current = None
            parents.extend(tokenized.windows(start, end, max_tokens, 0))
        elif current and tokenized.count(current[0], end) <= max_tokens:
            current = (current[0], end)
        else:
            if current:
                parents.append(current)
            current = (start, end)
    if current:
        parents.append(current)
    return parents


def _hierarchical_chunks(document: Document, tokenized: _TokenizedText, config: ChunkingConfig) -> list[Chunk]:
    # Children share the fixed strategy's overlap, kept below half a child so windows advance.
    child_overlap = min(config.overlap_tokens, config.child_tokens // 2)
    chunks: list[Chunk] = []
    for parent_number, (parent_start, parent_end) in enumerate(_parent_spans(tokenized, config.parent_tokens)):
        parent_text = document.text[parent_start:parent_end].strip()
        if not parent_text:
            continue
        parent_id = f"{document.doc_id}::hierarchical-parent::{parent_number}::{stable_hash(parent_text, 8)}"
        for child_start, child_end in tokenized.windows(parent_start, parent_end, config.child_tokens, child_overlap):
            child_text = document.text[child_start:child_end].strip()
            if not child_text:
                continue
            position = len(chunks)
            chunk_id = _chunk_id(document.doc_id, "hierarchical", position, child_text)
            chunks.append(Chunk(chunk_id, document.doc_id, child_text, parent_text, position, parent_id))
    return chunks


# A sentence ends at . ! or ? (plus closing quotes or brackets) followed by white space and a
# capital, digit or Markdown marker (so "e.g. the" stays whole), or at a line break.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+(?=[A-Z0-9\"'(\[#*-])|\n+")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences (and headings, list items) of a text."""
    spans = []
    start = 0
    for boundary in _SENTENCE_END.finditer(text):
        spans.append((start, boundary.end()))
        start = boundary.end()
    spans.append((start, len(text)))
    trimmed = []
    for span_start, span_end in spans:
        piece = text[span_start:span_end]
        if piece.strip():
            left = span_start + len(piece) - len(piece.lstrip())
            right = span_end - (len(piece) - len(piece.rstrip()))
            trimmed.append((left, right))
    return trimmed


def semantic_breaks(sentence_vectors: np.ndarray, breakpoint_percentile: float) -> list[int]:
    """Indices i after which a chunk ends: where the cosine distance between sentence i and
    i+1 is above the given percentile of the document's neighbour distances."""
    if len(sentence_vectors) < 2:
        return []
    distances = 1.0 - np.sum(sentence_vectors[:-1] * sentence_vectors[1:], axis=1)
    threshold = np.percentile(distances, breakpoint_percentile)
    return [int(i) for i in np.flatnonzero(distances > threshold)]


def _semantic_chunks(documents: Sequence[Document], config: ChunkingConfig, tokenizer: Any, embed: EmbedFn) -> list[Chunk]:
    sentence_spans = [split_sentences(document.text) for document in documents]
    # One embed call for the whole corpus batches far better than one call per document.
    all_sentences = [document.text[start:end] for document, spans in zip(documents, sentence_spans, strict=True) for start, end in spans]
    all_vectors = np.asarray(embed(all_sentences), dtype=np.float32) if all_sentences else np.zeros((0, 1), np.float32)
    chunks: list[Chunk] = []
    offset = 0
    for document, spans in zip(documents, sentence_spans, strict=True):
        vectors = all_vectors[offset : offset + len(spans)]
        offset += len(spans)
        tokenized = _TokenizedText(document.text, tokenizer)
        breaks = set(semantic_breaks(vectors, config.breakpoint_percentile))
        groups: list[tuple[int, int]] = []
        group: tuple[int, int] | None = None
        for index, (start, end) in enumerate(spans):
            if group and tokenized.count(group[0], end) > config.max_chunk_tokens:
                groups.append(group)
                group = None
            group = (group[0], end) if group else (start, end)
            if index in breaks:
                groups.append(group)
                group = None
        if group:
            groups.append(group)
        # A single sentence longer than the limit is cut into windows.
        bounded: list[tuple[int, int]] = []
        for start, end in groups:
            if tokenized.count(start, end) > config.max_chunk_tokens:
                bounded.extend(tokenized.windows(start, end, config.max_chunk_tokens, 0))
            else:
                bounded.append((start, end))
        chunks.extend(_chunks_from_spans(document, "semantic", bounded))
    return chunks
