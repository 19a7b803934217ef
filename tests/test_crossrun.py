"""Cross-run reports: a local run and a dry-run Bedrock run, paired by question on the questions
and judges they share, and told apart where they differ."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from localnova.cli import main
from localnova.config import load_config
from localnova.evaluate.judge_settings import config_identity, hosted_twice
from localnova.report.collect import RunData, collect_run
from localnova.report.crossrun import compare_runs, cross_run_blocks, match_questions, shared_judges
from localnova.report.summarize import summarize_run
from localnova.report.tables import Paragraph, Table
from localnova.store import AnswerRecord, JudgmentRecord
from localnova.types import GenerationResult

# The tests on `two_runs` run two whole studies (the local one with the embedding model) and a
# report: slow on 2 cores. The others build runs by hand.
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
        # the CPU demo's reference judges, as configs/demo.yaml sets them, beside a simulated LLM judge
        "judges": [
            *REFERENCE_JUDGES,
            {"name": "sim-judge", "kind": "llm", "model": {"name": "sim-judge", "backend": "simulated", "model": "j-1"}},
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


REFERENCE_JUDGES = [judge for judge in yaml.safe_load((REPO / "configs/demo.yaml").read_text())["judges"] if judge["kind"] != "llm"]


def bedrock_config(tmp_path: Path) -> Path:
    """The shipped Bedrock config, as it is, writing under tmp_path."""
    config = yaml.safe_load((REPO / "configs/bedrock-nova.yaml").read_text())
    config["output_dir"] = str(tmp_path / "runs")
    for section, key in (("corpus", "path"), ("eval", "path")):
        config[section][key] = str((REPO / "configs" / config[section][key]).resolve())  # read from the config's folder
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


@pytest.mark.slow
def test_runs_are_paired_on_shared_questions_and_the_shared_judges(two_runs):
    local, bedrock = (collect_run(folder) for folder in two_runs)
    local_summary, bedrock_summary = summarize_run(local), summarize_run(bedrock)
    # the shipped Bedrock config carries the demo's reference judges: the two runs share them
    judges = shared_judges(local, local_summary, bedrock, bedrock_summary)
    assert judges == ["minilm-similarity", "token-f1"]  # the LLM judges differ between the runs: never mixed in
    comparisons = compare_runs(local, local_summary, bedrock, bedrock_summary, ["token-f1"])
    assert {(c.arm, c.other_model) for c in comparisons} == {
        (arm, model) for arm in ("base", "rag") for model in ("nova-micro", "nova-lite")
    }
    assert all(c.n == 4 and c.reference_model == "sim-model" for c in comparisons)
    # by hand for one cell: the mean of the paired token-F1 differences over the 4 shared questions
    score = "token-f1"
    by_key = {(j.model, j.arm, j.question_id): j.score for j in local.judgments if j.judge == score and j.subject == "answer"}
    other = {(j.model, j.arm, j.question_id): j.score for j in bedrock.judgments if j.judge == score and j.subject == "answer"}
    shared = sorted({q for (_, arm, q) in other if arm == "base"})
    expected = sum(other[("nova-micro", "base", q)] - by_key[("sim-model", "base", q)] for q in shared) / len(shared)
    cell = next(c for c in comparisons if c.arm == "base" and c.other_model == "nova-micro")
    assert cell.mean_diff == pytest.approx(expected)


@pytest.mark.slow
def test_the_section_says_what_differs_and_refuses_a_delta_without_shared_judges(two_runs):
    local, bedrock = (collect_run(folder) for folder in two_runs)
    summaries = [summarize_run(local), summarize_run(bedrock)]
    blocks = cross_run_blocks([local, bedrock], summaries)
    text = " ".join(block.text for block in blocks if isinstance(block, Paragraph))
    assert "the question sets differ (6 in" in text and "Compared on the 4 questions asked alike" in text
    assert "the headline panels differ" in text and "compared on the shared judges only: minilm-similarity, token-f1" in text
    (table,) = [block for block in blocks if isinstance(block, Table)]
    assert len(table.rows) == 4 and table.headers[-1] == "p permutation (Holm)"
    # without the shared judges: no table, one paragraph saying why
    kept = [j for j in summaries[1].settings["headline_judges"] if j not in ("token-f1", "minilm-similarity")]
    blocks = cross_run_blocks(
        [local, bedrock], [summaries[0], replace(summaries[1], settings=summaries[1].settings | {"headline_judges": kept})]
    )
    assert not any(isinstance(block, Table) for block in blocks)
    assert any("no cross-run delta" in block.text for block in blocks if isinstance(block, Paragraph))


@pytest.mark.slow
def test_report_command_writes_the_cross_run_section(two_runs, tmp_path):
    """The Bedrock dry run beside a local run: rows on the shared judges, no 'share no judge'
    line, every row marked simulated, and each finding set in both runs."""
    local, bedrock = two_runs
    assert main(["report", str(local), str(bedrock), "--out", str(tmp_path / "out")]) == 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    section = markdown.split("## Across runs, paired by question", 1)[1].split("\n## ", 1)[0]
    assert "share no judge" not in section and "no cross-run delta" not in section
    rows = [line for line in section.splitlines() if "vs sim-model" in line]
    assert len(rows) == 4 and all(line.split(" | ")[3] == "4" for line in rows)
    table_rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| run |")]
    body = [line for line in table_rows if not line.startswith(("| finding |", "| run |"))]
    assert len(body) >= 4 + 6 and all("(simulated)" in line for line in body)
    assert "Each finding, local local-" in section and "beside cloud bedrock-nova-dry-run-" in section
    assert "Levels are never compared" in section
    # the latency table names how each arm reached its model
    latency = markdown.split("## Latency and tokens", 1)[1].split("\n## ", 1)[0]
    assert "| nova-micro | base | cross-region inference profile |" in latency
    assert "| sim-model | base | local |" in latency
    assert "judges reached their models as: claude" in latency


def _run(label: str, questions: dict[str, tuple[str, str]], scores: dict[str, float], judges: list[dict], seed: int = 0, identities=None):
    """A run built by hand: `questions` maps an id to (question, truth); `scores` maps an id to
    the score every judge gave the base arm's answer (the rag arm gets one point more)."""
    judgments, answers = [], []
    for question_id, score in scores.items():
        for arm, bonus in (("base", 0.0), ("rag", 1.0)):
            result = GenerationResult(text="a", input_tokens=1, output_tokens=1, latency_ms=1.0)
            answers.append(AnswerRecord(label, "m", arm, question_id, f"{label}-{arm}-{question_id}", [], {}, result))
            for judge in judges:
                judgments.append(JudgmentRecord(judge["name"], "m", arm, question_id, "answer", "k", score + bonus, "x", None, None, 1))
    artifacts = {f"judge_identity:{name}": identity for name, identity in (identities or {}).items()}
    info = {"config": {"config": {"seed": seed, "judges": judges, "eval": {}}}}
    items = {qid: {"question_id": qid, "question": q, "answer": t} for qid, (q, t) in questions.items()}
    return RunData(Path(label), label, info, answers, judgments, artifacts, label=label, eval_items=items)


QUESTIONS = {f"q{i:02d}": (f"What is part {i}?", f"Part {i} is a thing.") for i in range(6)}
F1 = {"name": "f1", "kind": "token_f1"}


def _llm_judge(**changes) -> dict:
    model = {"name": "j", "backend": "openai", "model": "llama3", "revision": None, "generation": {"temperature": 0.0, "batch_size": 8}}
    model["options"] = {"base_url": "http://judge:8000/v1", "max_concurrency": 8}
    judge = {"name": "llm", "kind": "llm", "scoring": "parsed", "max_attempts": 3, "model": model}
    for key, value in changes.items():
        if key in ("revision", "generation", "options"):
            model[key] = value
        else:
            judge[key] = value
    return judge


def _section(reference: RunData, other: RunData) -> tuple[list[str], list]:
    summaries = [summarize_run(reference), summarize_run(other)]
    blocks = cross_run_blocks([reference, other], summaries)
    return [block.text for block in blocks if isinstance(block, Paragraph)], [block for block in blocks if isinstance(block, Table)]


def test_same_ids_asking_other_questions_are_not_paired_and_the_section_says_so():
    scores = {qid: 5.0 for qid in QUESTIONS}
    reference = _run("ref", QUESTIONS, scores, [F1])
    # q00-q02 are other questions under the same ids; q03 has another ground truth
    renumbered = {
        qid: (f"Another question {qid}?", truth) if qid < "q03" else (question, truth) for qid, (question, truth) in QUESTIONS.items()
    }
    renumbered["q03"] = (QUESTIONS["q03"][0], "Another truth.")
    other = _run("other", renumbered, {qid: 7.0 if qid < "q04" else 5.0 for qid in QUESTIONS}, [F1])
    match = match_questions(reference, other)
    assert match.paired == {"q04", "q05"} and match.other_question == ["q00", "q01", "q02"] and match.other_truth == ["q03"]
    comparisons = compare_runs(reference, summarize_run(reference), other, summarize_run(other), ["f1"])
    # on the two questions asked alike the runs agree exactly; pairing on ids alone gave +2 on four of six
    assert {c.n for c in comparisons} == {2} and all(c.mean_diff == 0.0 for c in comparisons)
    text, _ = _section(reference, other)
    assert any("not paired, another question under the same id: q00, q01, q02" in t for t in text)
    assert any("another ground truth for the same question: q03" in t and "Compared on the 2 questions asked alike" in t for t in text)


@pytest.mark.parametrize(
    "change",
    [
        {"generation": {"temperature": 0.7, "batch_size": 8}},
        {"max_attempts": 5},
        {"scoring": "logprob"},
    ],
)
def test_a_judge_of_one_name_with_other_settings_is_not_shared(change):
    scores = {qid: 5.0 for qid in QUESTIONS}
    reference = _run("ref", QUESTIONS, scores, [F1, _llm_judge()])
    other = _run("other", QUESTIONS, scores, [F1, _llm_judge(**change)])
    assert shared_judges(reference, summarize_run(reference), other, summarize_run(other)) == ["f1"]
    text, _ = _section(reference, other)
    assert any("same name, another judge, so not shared" in t and "llm (" in t for t in text)


@pytest.mark.parametrize(
    "change",
    [{"revision": "v2"}, {"options": {"base_url": "http://other-judge:8000/v1", "max_concurrency": 8}}],
)
def test_a_judge_of_one_name_on_another_host_is_not_shared_until_its_hosts_are_shown_to_agree(change):
    """The same settings, another revision or server: one judge hosted twice, whose agreement
    is measured on answers both hosts scored; here none, so it is kept apart and the section
    says how to measure it."""
    scores = {qid: 5.0 for qid in QUESTIONS}
    reference = _run("ref", QUESTIONS, scores, [F1, _llm_judge()])
    other = _run("other", QUESTIONS, scores, [F1, _llm_judge(**change)])
    assert shared_judges(reference, summarize_run(reference), other, summarize_run(other)) == ["f1"]
    blocks = cross_run_blocks([reference, other], [summarize_run(reference), summarize_run(other)])
    text = [block.text for block in blocks if isinstance(block, Paragraph)]
    assert not any("same name, another judge" in t for t in text)
    (hosts,) = [block for block in blocks if isinstance(block, Table) and block.headers[0] == "judge"]
    (row,) = hosts.rows
    assert row[0] == "llm" and row[3] == "0" and row[-1].startswith("not measured") and "localnova judge" in row[-1]
    assert any("compared on the shared judges only: f1." in t for t in text)


def test_settings_that_only_pace_requests_and_the_seed_of_an_llm_judge():
    scores = {qid: 5.0 for qid in QUESTIONS}
    reference = _run("ref", QUESTIONS, scores, [F1, _llm_judge()])
    paced = _run("paced", QUESTIONS, scores, [F1, _llm_judge(options={"base_url": "http://judge:8000/v1", "max_concurrency": 64})])
    assert shared_judges(reference, summarize_run(reference), paced, summarize_run(paced)) == ["f1", "llm"]
    # the study seed seeds an LLM judge's sampling: another seed is another judge
    reseeded = _run("reseeded", QUESTIONS, scores, [F1, _llm_judge()], seed=1)
    assert shared_judges(reference, summarize_run(reference), reseeded, summarize_run(reseeded)) == ["f1"]


def test_stored_identities_decide_when_both_runs_have_them():
    scores = {qid: 5.0 for qid in QUESTIONS}
    identity = {"judge": "llm", "kind": "llm", "backend": {"backend": "vllm", "weights": "org/m@" + "1" * 40, "dtype": "bfloat16"}}
    moved = {**identity, "backend": {**identity["backend"], "weights": "org/m@" + "2" * 40}}  # main moved between the runs
    reference = _run("ref", QUESTIONS, scores, [_llm_judge()], identities={"llm": identity})
    same = _run("same", QUESTIONS, scores, [_llm_judge()], identities={"llm": identity})
    other = _run("other", QUESTIONS, scores, [_llm_judge()], identities={"llm": moved})
    assert shared_judges(reference, summarize_run(reference), same, summarize_run(same)) == ["llm"]
    assert shared_judges(reference, summarize_run(reference), other, summarize_run(other)) == []
    # weights moved: the same judge on another host, kept apart until its hosts are shown to agree
    text, tables = _section(reference, other)
    assert any("no cross-run delta" in t for t in text)
    assert [table.headers[0] for table in tables] == ["judge"] and tables[0].rows[0][-1].startswith("not measured")
    # settings changed: another judge altogether, and the section says what differs
    reseeded = _run("reseeded", QUESTIONS, scores, [_llm_judge()], identities={"llm": {**identity, "seed": 1}})
    text, tables = _section(reference, reseeded)
    assert any("same name, another judge" in t and "seed" in t for t in text) and not tables


STUDY_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))  # configs/accelerate/ holds accelerate's files, not studies


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda path: path.name)
def test_every_shipped_config_carries_the_same_reference_judges(path, monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(path)
    found = {judge.name: config_identity(judge.model_dump(mode="json"), config.seed) for judge in config.judges}
    demo = load_config(REPO / "configs" / "demo.yaml")
    for judge in demo.judges:
        if judge.kind != "llm":  # token F1 and MiniLM similarity: free on every path, the same everywhere
            assert found.get(judge.name) == config_identity(judge.model_dump(mode="json"), demo.seed), f"{path.name}: {judge.name}"


def test_the_bedrock_and_every_local_gpu_config_judge_with_the_posts_llama_under_one_name(monkeypatch):
    """The same name and judging settings on another host: the cross-run report pairs it once
    its hosts are shown to agree."""
    monkeypatch.chdir(REPO)
    bedrock = load_config("configs/bedrock-nova.yaml")
    gpu_configs = sorted(REPO.glob("configs/local-gpu*.yaml"))
    assert len(gpu_configs) >= 3

    def llama(config):
        (judge,) = [j for j in config.judges if j.name == "llama-3-1-70b"]
        return config_identity(judge.model_dump(mode="json"), config.seed)

    for path in gpu_configs:
        local = llama(load_config(path))
        assert "70B" in local["model"]["model"] or "70b" in local["model"]["model"]
        assert hosted_twice(llama(bedrock), local), path.name
