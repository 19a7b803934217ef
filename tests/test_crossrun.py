"""Cross-run reports: a local run and a dry-run Bedrock run, paired by question on the questions
and judges they share, and told apart where they differ."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from localnova.cli import main
from localnova.report.collect import collect_run
from localnova.report.crossrun import compare_runs, cross_run_blocks, shared_judges
from localnova.report.summarize import summarize_run
from localnova.report.tables import Paragraph, Table

# Two whole studies (the local one with the embedding model) and a report: slow on 2 cores.
pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def local_config(tmp_path: Path) -> Path:
    path = tmp_path / "local.yaml"
    config = {
        "name": "local",
        "output_dir": str(tmp_path / "runs"),
        "corpus": {"path": str(REPO / "data/demo/corpus"), "chunking": {"strategy": "fixed", "chunk_tokens": 120, "overlap_tokens": 20}},
        "retrieval": {"top_k": 3},
        "eval": {"path": str(REPO / "data/demo/eval.jsonl"), "limit": 6},
        "models": [{"name": "sim-model", "backend": "simulated", "model": "sim-1"}],
        "arms": ["base", "rag"],
        "judges": [
            {"name": "f1", "kind": "token_f1"},
            {"name": "sim-judge", "kind": "llm", "model": {"name": "sim-judge", "backend": "simulated", "model": "j-1"}},
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def bedrock_config(tmp_path: Path) -> Path:
    """The shipped Bedrock config with the same token-F1 judge added to its LLM judges."""
    config = yaml.safe_load((REPO / "configs/bedrock-nova.yaml").read_text())
    config["judges"].append({"name": "f1", "kind": "token_f1"})
    config["output_dir"] = str(tmp_path / "runs")
    for section, key in (("corpus", "path"), ("eval", "path")):
        config[section][key] = str(REPO / config[section][key])
    path = tmp_path / "bedrock.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, no_aws_credentials_module):
    tmp_path = tmp_path_factory.mktemp("crossrun")
    assert main(["run", str(local_config(tmp_path)), "--no-report"]) == 0
    assert main(["run", str(bedrock_config(tmp_path)), "--dry-run", "--limit", "4", "--arms", "base,rag"]) == 0
    return tmp_path / "runs" / "local", tmp_path / "runs" / "bedrock-nova-dry-run"


@pytest.fixture(scope="module")
def no_aws_credentials_module(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    empty = tmp_path_factory.mktemp("aws")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        patch.delenv(name, raising=False)
    patch.setenv("AWS_CONFIG_FILE", str(empty / "no-config"))
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "no-credentials"))
    yield
    patch.undo()


def test_runs_are_paired_on_shared_questions_and_the_shared_judge(two_runs):
    local, bedrock = (collect_run(folder) for folder in two_runs)
    local_summary, bedrock_summary = summarize_run(local), summarize_run(bedrock)
    assert "f1" in local_summary.settings["headline_judges"] and "f1" in bedrock_summary.settings["headline_judges"]
    judges = shared_judges(local, local_summary, bedrock, bedrock_summary)
    assert judges == ["f1"]  # the LLM judges differ between the runs: never mixed in
    comparisons = compare_runs(local, local_summary, bedrock, bedrock_summary, judges)
    assert {(c.arm, c.other_model) for c in comparisons} == {
        (arm, model) for arm in ("base", "rag") for model in ("nova-micro", "nova-lite")
    }
    assert all(c.n == 4 and c.reference_model == "sim-model" for c in comparisons)
    # by hand for one cell: the mean of the paired token-F1 differences over the 4 shared questions
    by_key = {(j.model, j.arm, j.question_id): j.score for j in local.judgments if j.judge == "f1" and j.subject == "answer"}
    other = {(j.model, j.arm, j.question_id): j.score for j in bedrock.judgments if j.judge == "f1" and j.subject == "answer"}
    shared = sorted({q for (_, arm, q) in other if arm == "base"})
    expected = sum(other[("nova-micro", "base", q)] - by_key[("sim-model", "base", q)] for q in shared) / len(shared)
    cell = next(c for c in comparisons if c.arm == "base" and c.other_model == "nova-micro")
    assert cell.mean_diff == pytest.approx(expected)


def test_the_section_says_what_differs_and_refuses_a_delta_without_shared_judges(two_runs):
    local, bedrock = (collect_run(folder) for folder in two_runs)
    summaries = [summarize_run(local), summarize_run(bedrock)]
    blocks = cross_run_blocks([local, bedrock], summaries)
    text = " ".join(block.text for block in blocks if isinstance(block, Paragraph))
    assert "the question sets differ (6 in" in text and "compared on the 4 both answered" in text
    assert "the headline panels differ" in text and "compared on the shared judges only: f1" in text
    (table,) = [block for block in blocks if isinstance(block, Table)]
    assert len(table.rows) == 4 and table.headers[-1] == "p permutation (Holm)"
    # without the shared judge: no table, one paragraph saying why
    no_f1 = summaries[1].settings | {"headline_judges": [j for j in summaries[1].settings["headline_judges"] if j != "f1"]}
    blocks = cross_run_blocks([local, bedrock], [summaries[0], replace(summaries[1], settings=no_f1)])
    assert not any(isinstance(block, Table) for block in blocks)
    assert any("no cross-run delta" in block.text for block in blocks if isinstance(block, Paragraph))


def test_report_command_writes_the_cross_run_section(two_runs, tmp_path):
    local, bedrock = two_runs
    assert main(["report", str(local), str(bedrock), "--out", str(tmp_path / "out")]) == 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Across runs, paired by question" in markdown
    rows = [line for line in markdown.splitlines() if "vs sim-model" in line]
    assert len(rows) == 4 and all(line.split(" | ")[3] == "4" for line in rows)
    # the latency table names how each arm reached its model
    latency = markdown.split("## Latency and tokens", 1)[1].split("\n## ", 1)[0]
    assert "| nova-micro | base | cross-region inference profile |" in latency
    assert "| sim-model | base | local |" in latency
    assert "judges reached their models as: claude" in latency
