"""Loading documents of every format and cleaning them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localnova.corpus import clean_markdown, corpus_hash, load_documents
from localnova.errors import UserError
from localnova.types import Document


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in a Helvetica content stream, xref offsets computed."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
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
        json.dumps({"id": "q1", "text": "The valve opens at 3 bar.", "title": "Valve"})
        + "\n\n"
        + json.dumps({"id": 2, "text": "The seal lasts ten years."})
        + "\n",
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
        "faq.jsonl#q1",
        "faq.jsonl#2",
        "guides/setup.md",
        "manual.pdf",
        "notes.txt",
        "page.html",
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
