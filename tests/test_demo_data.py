"""The shipped demo data passes its checks, and the checker catches the faults it promises to."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / "data" / "demo"


def _load_checker():
    script = REPO_ROOT / "scripts" / "check_demo_data.py"
    spec = importlib.util.spec_from_file_location("check_demo_data", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here while the class is built
    spec.loader.exec_module(module)
    return module


checker = _load_checker()


def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, copy)
    return copy


def test_shipped_demo_data_passes_every_check():
    report = checker.check_demo_data(DEMO_DIR)
    assert report.problems == []
    assert report.doc_count >= checker.MIN_DOCS
    assert report.eval_count >= checker.MIN_EVAL
    assert report.train_count >= checker.MIN_TRAIN


def test_shipped_corpus_has_the_markup_the_loader_must_clean():
    texts = [path.read_text(encoding="utf-8") for path in (DEMO_DIR / "corpus").glob("*.md")]
    assert any("\\." in text or "\\-" in text for text in texts)
    assert any("<a name=" in text for text in texts)


def test_some_eval_questions_need_two_documents():
    rows = _read_rows(DEMO_DIR / "eval.jsonl")
    assert sum(1 for row in rows if len(row["doc_ids"]) > 1) >= 2


def test_main_prints_counts_and_succeeds(capsys):
    assert checker.main([str(DEMO_DIR)]) == 0
    printed = capsys.readouterr().out
    assert "corpus documents: " in printed and "training pairs: " in printed
    assert printed.strip().endswith("OK")


def test_training_question_copied_from_eval_is_reported(demo_copy: Path):
    eval_rows = _read_rows(demo_copy / "eval.jsonl")
    train_rows = _read_rows(demo_copy / "train.jsonl")
    leaked = dict(train_rows[0], id="t9999")
    leaked["messages"] = [
        {"role": "user", "content": "Quick one: " + eval_rows[5]["question"].upper()},
        {"role": "assistant", "content": "Some answer."},
    ]
    _write_rows(demo_copy / "train.jsonl", train_rows + [leaked])
    report = checker.check_demo_data(demo_copy)
    assert ("t9999", eval_rows[5]["question_id"]) in [(t, q) for t, q, _ in report.overlaps]
    assert not report.ok


def test_unknown_doc_id_and_missing_field_name_their_line(demo_copy: Path):
    eval_rows = _read_rows(demo_copy / "eval.jsonl")
    eval_rows[2]["doc_ids"] = ["99-no-such-doc.md"]
    del eval_rows[3]["answer"]
    _write_rows(demo_copy / "eval.jsonl", eval_rows)
    problems = checker.check_demo_data(demo_copy).problems
    assert any(p.startswith("eval.jsonl:3:") and "99-no-such-doc.md" in p for p in problems)
    assert any(p.startswith("eval.jsonl:4:") and "'answer'" in p for p in problems)


def test_bad_json_and_wrong_role_order_are_reported(demo_copy: Path):
    lines = (demo_copy / "train.jsonl").read_text(encoding="utf-8").splitlines()
    swapped = json.loads(lines[1])
    swapped["messages"].reverse()
    lines[1] = json.dumps(swapped)
    lines[2] = "{not json"
    (demo_copy / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    problems = checker.check_demo_data(demo_copy).problems
    assert any(p.startswith("train.jsonl:2:") and "'user'" in p for p in problems)
    assert any(p.startswith("train.jsonl:3:") and "not valid JSON" in p for p in problems)


def test_too_few_items_fail_the_count_check(demo_copy: Path):
    _write_rows(demo_copy / "eval.jsonl", _read_rows(demo_copy / "eval.jsonl")[:10])
    report = checker.check_demo_data(demo_copy)
    assert any("eval questions, need at least" in p for p in report.problems)


def test_ngrams_ignore_case_and_punctuation():
    assert checker.word_ngrams("What, IS the max-power of the F4 cabinet?", 8) == checker.word_ngrams(
        "what is the max power of the f4 cabinet", 8
    )
    assert checker.word_ngrams("too short", 8) == set()
