"""A user's own data: eval sets and training pairs from JSONL, CSV, Parquet or a Hugging Face
dataset folder, with a field map, paths read from the config file's folder, and every problem
one line that names the file, the row and the field."""

import csv
import json
from pathlib import Path

import pytest

from localnova.cli import main
from localnova.config import load_config
from localnova.data.eval_set import load_eval_set
from localnova.data.formats import read_training_pairs
from localnova.data.tables import read_rows, source_fingerprint
from localnova.errors import UserError
from localnova.run_identity import run_identity

REPO = Path(__file__).resolve().parents[1]
DEMO_EVAL = REPO / "data" / "demo" / "eval.jsonl"
FIELDS = {"question_id": "id", "question": "prompt", "answer": "reference", "doc_ids": "sources"}


def demo_rows(limit=None):
    rows = [json.loads(line) for line in DEMO_EVAL.read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def write_csv(path, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["id", "prompt", "reference", "sources"])
        for row in rows:
            writer.writerow([row["question_id"], row["question"], row["answer"], json.dumps(row["doc_ids"])])


def test_a_csv_with_other_column_names_reads_as_the_jsonl_does(tmp_path):
    write_csv(tmp_path / "eval.csv", demo_rows())
    from_csv = load_eval_set(tmp_path / "eval.csv", fields=FIELDS)
    assert from_csv == load_eval_set(DEMO_EVAL)
    assert len(from_csv) == 60 and from_csv[0].doc_ids  # the JSON list in a cell became doc_ids


def test_tsv_parquet_and_dataset_folders_read_the_same_rows(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = demo_rows(5)
    expected = load_eval_set(DEMO_EVAL, limit=5)
    write_csv(tmp_path / "eval.tsv", rows, delimiter="\t")
    assert load_eval_set(tmp_path / "eval.tsv", fields=FIELDS) == expected
    renamed = [{"id": r["question_id"], "prompt": r["question"], "reference": r["answer"], "sources": r["doc_ids"]} for r in rows]
    pq.write_table(pa.Table.from_pylist(renamed), tmp_path / "eval.parquet")
    assert load_eval_set(tmp_path / "eval.parquet", fields=FIELDS) == expected
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(renamed[:2]), "test": datasets.Dataset.from_list(renamed)})
    splits.save_to_disk(str(tmp_path / "saved"))
    assert load_eval_set(tmp_path / "saved", fields=FIELDS) == expected  # test is the eval split by default
    assert load_eval_set(tmp_path / "saved", fields=FIELDS, split="train") == expected[:2]
    with pytest.raises(UserError, match=r"saved: no split 'dev'; it has train, test"):
        load_eval_set(tmp_path / "saved", fields=FIELDS, split="dev")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("id,prompt,reference\nq1,What?,\n", r"eval.csv:2: field 'answer' \(column 'reference'\) is missing or empty"),
        ("id,prompt,reference\nq1,What?,Yes\nq2,Why?,No\nq1,How?,So\n", r"eval.csv:4: duplicate question_id 'q1'"),
        ('id,prompt,reference\nq1,"What\nelse?",Yes\nq2,Why?,\n', r"eval.csv:4: field 'answer'"),  # a cell spanning two lines
        ("id,prompt,reference,sources\nq1,What?,Yes,[not json\n", r"eval.csv:2: field 'doc_ids' \(column 'sources'\) is not a JSON list"),
        ("id,prompt\nq1,What?,extra\n", r"eval.csv:2: more cells than the header has columns"),
    ],
)
def test_each_problem_is_one_line_naming_file_row_and_field(tmp_path, text, error):
    (tmp_path / "eval.csv").write_text(text)
    with pytest.raises(UserError, match=error):
        load_eval_set(tmp_path / "eval.csv", fields=FIELDS)


def test_a_parquet_row_is_named_by_its_number(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.Table.from_pylist([{"id": "a", "prompt": "Q?", "reference": "A"}, {"id": "b", "prompt": None, "reference": "A"}]),
        tmp_path / "e.parquet",
    )
    with pytest.raises(UserError, match=r"e.parquet row 2: field 'question' \(column 'prompt'\) is missing"):
        load_eval_set(tmp_path / "e.parquet", fields=FIELDS)


def test_unknown_format_and_unknown_field_names(tmp_path):
    (tmp_path / "eval.xlsx").write_text("x")
    with pytest.raises(UserError, match=r"eval.xlsx: unknown data format .xlsx"):
        read_rows(tmp_path / "eval.xlsx")
    config = tmp_path / "c.yaml"
    config.write_text("name: x\ncorpus: {path: c}\neval: {path: e.csv, fields: {questoin: prompt}}\nmodels: [{name: m, model: m}]\n")
    with pytest.raises(UserError, match=r"eval.fields: Value error, unknown field 'questoin'"):
        load_config(config)


def test_training_pairs_from_csv_rows_with_a_field_map(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("q,a,source\nWhat is a pod?,A seed capsule.,10-pods.md\nHow long?,Two years.,\n")
    pairs = read_training_pairs(path, {"question": "q", "answer": "a", "doc_id": "source"})
    assert [(p.question, p.answer, p.doc_id) for p in pairs] == [
        ("What is a pod?", "A seed capsule.", "10-pods.md"),
        ("How long?", "Two years.", ""),
    ]
    # a chat JSONL file is still read as conversations
    assert len(read_training_pairs(REPO / "data" / "demo" / "train.jsonl")) == 737


def test_a_folder_fingerprint_follows_its_content(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.csv").write_text("x\n1\n")
    before = source_fingerprint(tmp_path / "d")
    (tmp_path / "d" / "a.csv").write_text("x\n2\n")
    assert source_fingerprint(tmp_path / "d") != before


def test_paths_are_read_from_the_config_folder_and_overrides_from_the_working_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    config = project / "configs" / "study.yaml"
    config.write_text("name: s\noutput_dir: ../runs\ncorpus: {path: ../docs}\neval: {path: ../eval.csv}\nmodels: [{name: m, model: m}]\n")
    monkeypatch.chdir(tmp_path)
    loaded = load_config(Path("project/configs/study.yaml"))
    assert (loaded.eval.path, loaded.corpus.path, loaded.study_dir) == (
        Path("project/eval.csv"),
        Path("project/docs"),
        Path("project/runs/s"),
    )
    assert load_config(config, ["eval.path=mine.csv"]).eval.path == Path("mine.csv")
    # from the folder above configs/, the paths read as they were written before the rule, and
    # the run identity leaves the new keys out at their defaults
    monkeypatch.chdir(project)
    identity = run_identity(load_config(Path("configs/study.yaml")))
    assert identity["config"]["eval"]["path"] == "eval.csv" and "fields" not in identity["config"]["eval"]
    assert "train_fields" not in identity["config"]["finetune"]


def test_the_shipped_demo_keeps_its_run_id(monkeypatch):
    """The demo's run id as main computed it before paths were read from the config's folder
    (`run_id_of` on main at 0979510, from the repository): a finished demo reruns in place."""
    from localnova.store import run_id_of

    monkeypatch.chdir(REPO)
    config = load_config("configs/demo.yaml")
    assert run_id_of(config.name, run_identity(config)) == "demo-edfdd6c1f4"


@pytest.mark.slow
def test_a_csv_eval_set_runs_base_and_rag_from_another_folder(tmp_path, monkeypatch):
    """The issue's check: a CSV with its own column names, mapped in the config, runs the demo's
    base and rag arms with the real small model, the command run from an unrelated folder."""
    study = tmp_path / "mystudy"
    study.mkdir()
    write_csv(study / "questions.csv", demo_rows(3))
    (study / "study.yaml").write_text(
        f"""name: own-data
output_dir: runs
corpus: {{path: {REPO / "data" / "demo" / "corpus"}, chunking: {{strategy: fixed, chunk_tokens: 128, overlap_tokens: 20}}}}
retrieval: {{top_k: 2}}
eval:
  path: questions.csv
  fields: {{question_id: id, question: prompt, answer: reference, doc_ids: sources}}
  latency_probe: {{enabled: false}}
  findings: none
models:
  - {{name: smollm2-135m, model: smollm2-135m-instruct, generation: {{max_new_tokens: 16, batch_size: 3}}}}
arms: [base, rag]
judges:
  - {{name: token-f1, kind: token_f1}}
"""
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["run", str(study / "study.yaml")]) == 0
    summary = json.loads((study / "runs" / "own-data" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["questions"] == 3 and summary["arms"] == ["base", "rag"]
    answers = [json.loads(line) for line in (study / "runs" / "own-data" / "answers.jsonl").read_text().splitlines()]
    assert {(a["arm"], a["question_id"]) for a in answers} == {(arm, r["question_id"]) for arm in ("base", "rag") for r in demo_rows(3)}
    assert not (elsewhere / "runs").exists()
