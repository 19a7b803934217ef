"""Loading a corpus folder into Documents, and cutting Documents into Chunks.

Loaders turn .md, .txt, .html/.htm, .pdf and .jsonl files into plain text or Markdown (HTML
headings become Markdown `#` lines, so heading-aware chunking works on every format).
Chunking offers the four strategies a Bedrock Knowledge Base offers: `fixed`, `hierarchical`,
`semantic` and `none`. Sizes are counted in tokens of the embedding model's tokenizer, and
every chunk's text is a slice of the original document string, so it reads as written.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from localnova.config import ChunkingConfig
from localnova.embedder import EmbedFn
from localnova.errors import UserError
from localnova.jsonl import read_json_lines
from localnova.types import Chunk, Document, stable_hash

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".jsonl")

# Bump when the loaders or chunkers change what they produce for the same input, so that
# persisted indexes built by the older code are rebuilt.
CHUNKER_VERSION = 1

# `embed` for semantic chunking: texts in, one L2-normalised row per text out.


# Loading


def load_documents(folder: Path) -> list[Document]:
    """Every supported file under `folder` (recursively, hidden paths skipped), sorted by
    path, as Documents whose doc_id is the path relative to `folder` with '/' separators.
    A .jsonl file gives one Document per line, with doc_id "<file>#<id>"."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"corpus folder {folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"corpus path {folder} is not a folder")
    files = sorted(
        (path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES
         and not any(part.startswith(".") for part in path.relative_to(folder).parts)),
        key=lambda path: path.relative_to(folder).as_posix(),
    )
    if not files:
        raise UserError(f"corpus folder {folder} has no supported documents ({', '.join(SUPPORTED_SUFFIXES)})")
    documents: list[Document] = []
    for path in files:
        relative = path.relative_to(folder).as_posix()
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            documents.extend(_load_jsonl(path, relative))
            continue
        if suffix == ".pdf":
            text, title = _read_pdf(path), ""
        elif suffix in (".html", ".htm"):
            text, title = html_to_markdown(_read_text(path))
        elif suffix in (".md", ".markdown"):
            text, title = clean_markdown(_read_text(path)), ""
        else:
            text, title = _read_text(path).strip(), ""
        if not text.strip():
            log.warning("skipping %s: it holds no text", path)
            continue
        documents.append(Document(relative, text, title or _first_heading(text) or path.stem, str(path)))
    if not documents:
        raise UserError(f"corpus folder {folder}: every document in it is empty")
    return documents


def corpus_hash(documents: Sequence[Document]) -> str:
    """What identifies the corpus content: a hash over every doc id and text, in order."""
    return stable_hash([[document.doc_id, document.text] for document in documents])


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None


def _first_heading(text: str) -> str:
    match = re.search(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else ""


def _load_jsonl(path: Path, relative: str) -> list[Document]:
    documents: list[Document] = []
    seen_ids: set[str] = set()
    for line_number, row in read_json_lines(path):
        where = f"{path}:{line_number}"
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object with 'id' and 'text'")
        for key in ("id", "text"):
            if key not in row:
                raise UserError(f"{where}: missing field {key!r}")
        if not isinstance(row["id"], (str, int)) or isinstance(row["id"], bool):
            raise UserError(f"{where}: field 'id' must be a string or an integer")
        if not isinstance(row["text"], str):
            raise UserError(f"{where}: field 'text' must be a string")
        row_id = str(row["id"])
        if row_id in seen_ids:
            raise UserError(f"{where}: id {row_id!r} appears more than once in the file")
        seen_ids.add(row_id)
        if not row["text"].strip():
            log.warning("skipping %s: empty text", where)
            continue
        title = row.get("title") or _first_heading(row["text"]) or row_id
        documents.append(Document(f"{relative}#{row_id}", row["text"].strip(), str(title), str(path)))
    return documents


def _read_pdf(path: Path) -> str:
    from pypdf import PdfReader

    try:
        reader = PdfReader(path)
        # An owner-password-only PDF opens with the empty user password; others cannot be read.
        if reader.is_encrypted and not reader.decrypt(""):
            raise UserError(f"{path}: the PDF is encrypted with a password; decrypt it first")
        pages = [page.extract_text() or "" for page in reader.pages]
    except UserError:
        raise
    except Exception as error:  # pypdf raises many types on damaged files; all mean "unreadable"
        raise UserError(f"{path}: unreadable PDF ({type(error).__name__}: {error})") from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise UserError(f"{path}: the PDF has no extractable text (scanned images need OCR first)")
    return text


# Cleaning

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", flags=re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_ANCHOR_TARGET = re.compile(r"""<a\s+(?:name|id)\s*=\s*("[^"]*"|'[^']*'|[^\s>]*)[^>]*>[ \t]*(?:</a>)?""", re.IGNORECASE)
_LINK_TAG = re.compile(r"<a\s[^>]*\bhref\s*=[^>]*>(.*?)</a>", re.IGNORECASE | re.DOTALL)
_CLOSING_ANCHOR = re.compile(r"</a\s*>", re.IGNORECASE)
# CommonMark lets a backslash escape any ASCII punctuation character.
_ESCAPE = re.compile(r"\\([!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])")


def clean_markdown(text: str) -> str:
    """Markdown as a reader sees it: backslash escapes (`\\.`, `\\-`, `\\_`) become the plain
    character and HTML anchor tags go, keeping the text of links. Code is left untouched,
    because a backslash there is literal."""
    return _tidy_blank_lines(_apply_outside(_FENCE, text, lambda prose: _apply_outside(_INLINE_CODE, prose, _clean_span)))


def _apply_outside(pattern: re.Pattern, text: str, clean) -> str:
    """`clean` applied to the text between the matches of `pattern`; the matches stay as they are."""
    pieces: list[str] = []
    position = 0
    for match in pattern.finditer(text):
        pieces.append(clean(text[position:match.start()]))
        pieces.append(match.group(0))
        position = match.end()
    pieces.append(clean(text[position:]))
    return "".join(pieces)


def _clean_span(text: str) -> str:
    text = _LINK_TAG.sub(r"\1", text)  # a link keeps its text
    text = _ANCHOR_TARGET.sub("", text)  # a jump target (`<a name=...>`) has nothing to read
    text = _CLOSING_ANCHOR.sub("", text)
    return _ESCAPE.sub(r"\1", text)


def _tidy_blank_lines(text: str) -> str:
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


_DROPPED_HTML_TAGS = ("script", "style", "nav", "noscript", "template", "svg", "head")
_BLOCK_HTML_TAGS = ("p", "div", "section", "article", "main", "aside", "header", "footer", "table", "tr",
                    "ul", "ol", "dl", "dt", "dd", "blockquote", "pre", "figure", "figcaption", "form")


def html_to_markdown(html: str) -> tuple[str, str]:
    """Readable text of an HTML page, with headings as Markdown `#` lines and list items as
    `- ` lines; scripts, styles and navigation dropped. Returns (text, title)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup.find_all(_DROPPED_HTML_TAGS):
        tag.decompose()
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            heading_text = " ".join(heading.get_text(" ", strip=True).split())
            heading.replace_with(f"\n\n{'#' * level} {heading_text}\n\n")
    for item in soup.find_all("li"):
        item.insert_before("\n- ")
    for cell in soup.find_all(["td", "th"]):
        cell.insert_after(" | ")
    for line_break in soup.find_all("br"):
        line_break.replace_with("\n")
    for block in soup.find_all(_BLOCK_HTML_TAGS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    raw_text = soup.get_text()
    # HTML collapses runs of whitespace inside a line; keep the line breaks we inserted.
    lines = [" ".join(line.split()) for line in raw_text.splitlines()]
    text = _tidy_blank_lines("\n".join(lines))
    return text, title or _first_heading(text)


# Chunking


@cache
def load_tokenizer(embedding_model_name: str, revision: str | None = None) -> Any:
    """The embedding model's own tokenizer (a fast HF tokenizer, for character offsets)."""
    from transformers import AutoTokenizer

    from localnova.models import resolve_model

    resolved = resolve_model(embedding_model_name, revision)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, revision=revision if resolved.path == embedding_model_name else None)
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


def chunk_documents(
    documents: Sequence[Document], config: ChunkingConfig, tokenizer: Any, embed: EmbedFn | None = None
) -> list[Chunk]:
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
    fenced = [(match.start(), match.end()) for match in _FENCE.finditer(text)]
    cuts = [0] + [match.start() for match in _HEADING_LINE.finditer(text)
                  if not any(start <= match.start() < end for start, end in fenced)]
    cuts = sorted(set(cuts)) + [len(text)]
    return [(start, end) for start, end in zip(cuts, cuts[1:]) if text[start:end].strip()]


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
    all_sentences = [document.text[start:end] for document, spans in zip(documents, sentence_spans) for start, end in spans]
    all_vectors = np.asarray(embed(all_sentences), dtype=np.float32) if all_sentences else np.zeros((0, 1), np.float32)
    chunks: list[Chunk] = []
    offset = 0
    for document, spans in zip(documents, sentence_spans):
        vectors = all_vectors[offset:offset + len(spans)]
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
