"""Loading documents of every format, cleaning them, and the four chunking strategies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localnova.config import ChunkingConfig
from localnova.corpus import (
    chunk_documents,
    clean_markdown,
    corpus_hash,
    load_documents,
    load_tokenizer,
    split_sentences,
)
from localnova.errors import UserError
from localnova.types import Document


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def embedder():
    from localnova.embedder import Embedder

    return Embedder("all-minilm-l6-v2", device="cpu")


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in a Helvetica content stream, xref offsets computed."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    pdf = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(pdf))
        pdf += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref_offset = len(pdf)
    pdf += f"xref\n0 {len(objects) + 1}\n".encode() + b"0000000000 65535 f \n"
    for offset in offsets:
        pdf += f"{offset:010d} 00000 n \n".encode()
    pdf += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref_offset}\n%%EOF\n".encode()
    return bytes(pdf)


def write_mixed_corpus(folder: Path) -> None:
    (folder / "guides").mkdir(parents=True)
    (folder / "guides" / "setup.md").write_text("# Setup\n\nRun `nova init`\\. Then restart\\-now.\n", encoding="utf-8")
    (folder / "notes.txt").write_text("Plain notes about the Zephyr pump.\n", encoding="utf-8")
    (folder / "page.html").write_text(
        "<html><head><title>Pump page</title><style>p{color:red}</style><script>alert(1)</script></head>"
        "<body><nav>Home | About</nav><h1>Pump</h1><p>The pump moves <b>water</b>.</p>"
        "<h2>Care</h2><ul><li>Oil it</li><li>Clean it</li></ul></body></html>",
        encoding="utf-8",
    )
    (folder / "faq.jsonl").write_text(
        json.dumps({"id": "q1", "text": "The valve opens at 3 bar.", "title": "Valve"}) + "\n\n"
        + json.dumps({"id": 2, "text": "The seal lasts ten years."}) + "\n",
        encoding="utf-8",
    )
    (folder / "manual.pdf").write_bytes(minimal_pdf("The Zephyr pump weighs 12 kilograms."))
    (folder / "ignored.csv").write_text("a,b\n", encoding="utf-8")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "secret.md").write_text("not part of the corpus", encoding="utf-8")


def test_load_documents_reads_every_format_in_stable_order(tmp_path):
    write_mixed_corpus(tmp_path)
    documents = load_documents(tmp_path)
    by_id = {document.doc_id: document for document in documents}
    assert [document.doc_id for document in documents] == [
        "faq.jsonl#q1", "faq.jsonl#2", "guides/setup.md", "manual.pdf", "notes.txt", "page.html",
    ]
    assert by_id["guides/setup.md"].text == "# Setup\n\nRun `nova init`. Then restart-now."
    assert by_id["guides/setup.md"].title == "Setup"
    assert by_id["notes.txt"].text == "Plain notes about the Zephyr pump."
    assert by_id["faq.jsonl#q1"].title == "Valve"
    assert by_id["faq.jsonl#2"].text == "The seal lasts ten years."
    assert "12 kilograms" in by_id["manual.pdf"].text


def test_html_keeps_headings_and_drops_scripts_styles_and_navigation(tmp_path):
    write_mixed_corpus(tmp_path)
    page = next(document for document in load_documents(tmp_path) if document.doc_id == "page.html")
    assert page.title == "Pump page"
    assert "# Pump" in page.text.splitlines()
    assert "## Care" in page.text.splitlines()
    assert "The pump moves water." in page.text
    assert "- Oil it" in page.text.splitlines()
    for dropped in ("alert", "color:red", "Home | About"):
        assert dropped not in page.text


def test_markdown_escapes_and_anchor_tags_are_cleaned_but_code_is_kept():
    raw = (
        '# Release 2\\.0 <a name="top"></a>\n\n'
        'Use the \\_fast\\_ mode \\- see <a href="modes.html">the modes page</a>.<a id="modes"></a>\n\n'
        "`path\\.ext` stays\n\n```\nraw \\. text\n```\n"
    )
    cleaned = clean_markdown(raw)
    assert cleaned.startswith("# Release 2.0\n")
    assert "Use the _fast_ mode - see the modes page." in cleaned
    assert "<a" not in cleaned and "</a>" not in cleaned
    assert "`path\\.ext`" in cleaned
    assert "raw \\. text" in cleaned


def test_readable_pdf_built_by_pypdf_is_extracted(tmp_path):
    from pypdf import PdfReader, PdfWriter

    # Round-trip the hand-made page through pypdf's writer: a second, independently written file.
    writer = PdfWriter()
    writer.append(PdfReader(_write(tmp_path / "source.pdf", minimal_pdf("Boiler pressure is 2 bar."))))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with open(corpus / "boiler.pdf", "wb") as handle:
        writer.write(handle)
    (document,) = load_documents(corpus)
    assert "Boiler pressure is 2 bar." in document.text


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_corrupt_pdf_is_a_user_error_naming_the_file(tmp_path):
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf at all")
    with pytest.raises(UserError, match="broken.pdf"):
        load_documents(tmp_path)


def test_password_protected_pdf_is_a_user_error(tmp_path):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(_write(tmp_path / "plain.pdf", minimal_pdf("Secret text."))))
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with open(corpus / "locked.pdf", "wb") as handle:
        writer.write(handle)
    with pytest.raises(UserError, match="locked.pdf.*encrypted"):
        load_documents(corpus)


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    (tmp_path / "docs.jsonl").write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"docs.jsonl:2: malformed JSON"):
        load_documents(tmp_path)


def test_jsonl_line_without_text_names_the_field(tmp_path):
    (tmp_path / "docs.jsonl").write_text('{"id": "a"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"docs.jsonl:1: missing field 'text'"):
        load_documents(tmp_path)


@pytest.mark.parametrize("make_folder", ["missing", "empty", "unsupported"])
def test_unusable_corpus_folder_is_a_user_error_naming_it(tmp_path, make_folder):
    folder = tmp_path / "corpus"
    if make_folder != "missing":
        folder.mkdir()
    if make_folder == "unsupported":
        (folder / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(UserError, match=str(folder)):
        load_documents(folder)


def test_corpus_hash_changes_with_content_only(tmp_path):
    documents = [Document("a.md", "alpha"), Document("b.md", "beta")]
    assert corpus_hash(documents) == corpus_hash([Document("a.md", "alpha", title="other"), Document("b.md", "beta")])
    assert corpus_hash(documents) != corpus_hash([Document("a.md", "alpha"), Document("b.md", "beta!")])


def long_document() -> Document:
    sections = []
    for number in range(1, 5):
        body = " ".join(f"Section {number} sentence {index} describes the Kestrava pump part {number * 100 + index}." for index in range(12))
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
    for previous, following in zip(chunks, chunks[1:]):
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
    import numpy as np

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
