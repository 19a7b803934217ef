"""Loading a corpus folder into Documents.

Loaders turn .md, .txt, .html/.htm, .pdf and .jsonl files into plain text or Markdown (HTML
headings become Markdown `#` lines, so heading-aware chunking works on every format).
Cutting Documents into Chunks is chunking.py's job.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from localnova.errors import UserError
from localnova.jsonl import read_json_lines
from localnova.types import Document, stable_hash

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".jsonl")


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
        (
            path
            for path in folder.rglob("*")
            if path.is_file()
            and path.suffix.lower() in SUPPORTED_SUFFIXES
            and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        ),
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

# A fenced code block; chunking.py uses it too, since a heading inside code is no heading.
CODE_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", flags=re.MULTILINE | re.DOTALL)
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
    return _tidy_blank_lines(_apply_outside(CODE_FENCE, text, lambda prose: _apply_outside(_INLINE_CODE, prose, _clean_span)))


def _apply_outside(pattern: re.Pattern, text: str, clean) -> str:
    """`clean` applied to the text between the matches of `pattern`; the matches stay as they are."""
    pieces: list[str] = []
    position = 0
    for match in pattern.finditer(text):
        pieces.append(clean(text[position : match.start()]))
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
_BLOCK_HTML_TAGS = (
    "p",
    "div",
    "section",
    "article",
    "main",
    "aside",
    "header",
    "footer",
    "table",
    "tr",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "form",
)


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
