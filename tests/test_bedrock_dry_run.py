"""The dry run: offline, no credentials, every AWS call and a cost table with both totals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bedrock_fixtures import study_config
from localnova.bedrock_study.dry_run import dry_run, simulated_bedrock_model
from localnova.config import load_config
from localnova.errors import UserError
from localnova.types import EvalItem

REPO = Path(__file__).resolve().parents[1]


def test_dry_run_plans_every_call_offline_without_credentials(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # any call would fail
    config = study_config(tmp_path)
    lines: list[str] = []
    result = dry_run(config, out=lines.append)
    operations = [call.operation for call in result.plan]
    for operation in (
        "CreateKnowledgeBase",
        "CreateDataSource",
        "StartIngestionJob",
        "CreateModelCustomizationJob",
        "CreateCustomModelDeployment",
        "Retrieve",
        "Converse",
    ):
        assert operation in operations
    assert "CreateProvisionedModelThroughput" not in operations  # hosting is on_demand
    assert "with the fine-tuned models hosted on-demand" in lines[0] and "hosted provisioned" in lines[0]
    # the schedule: jobs first, hosting per model around its ft arms only, both choices totalled
    schedule = lines[0][lines[0].index("Hosting schedule") :].splitlines()
    assert schedule[1].startswith("  1. customization jobs for nova-micro")
    # the latency probe runs in the same window: 1 question x 2 rounds x 4 arms, and one untimed
    # call for each backend (the base model, the custom model); 2 x 2 + 1 of them on the custom model
    assert schedule[2].startswith(
        "  2. nova-micro: create hosting -> 2 ft calls, then the latency probe (10 calls one at a time, 5 on the custom model)"
        " -> delete; provisioned 1 unit-hour(s) $60.50"
    )
    assert schedule[3] == "  3. judges: no hosting is live"
    assert "a rerun hosts a model again while any of its ft answers or latency probe rounds is missing" in schedule[4]
    assert schedule[5].startswith("  hosting total: provisioned $60.50; on-demand $0.00")
    assert result.costs.total("provisioned") > result.costs.total("on_demand") > 0


def test_dry_run_scales_to_the_posts_ten_questions(tmp_path):
    config = study_config(tmp_path)
    one = dry_run(config, out=None)
    ten = dry_run(config, n_questions=10, out=None)
    assert ten.n_questions == 10
    assert sum(u.requests for u in ten.token_counts.answers.values()) == 10 * sum(u.requests for u in one.token_counts.answers.values())


def _with_probe(config, **probe):
    latency_probe = config.eval.latency_probe.model_copy(update=probe)
    return config.model_copy(update={"eval": config.eval.model_copy(update={"latency_probe": latency_probe})})


def test_the_plan_and_the_estimate_count_the_latency_probe_calls_from_its_config(tmp_path):
    config = _with_probe(study_config(tmp_path), questions=4, repeats=3, max_new_tokens=16)
    result = dry_run(config, n_questions=10, out=None)
    max_new_tokens = config.models[0].generation.max_new_tokens
    assert max_new_tokens > 16
    probe = [call for call in result.plan if call.step == "latency probe"]
    # per arm: min(10 questions, 4) x 3 rounds at the capped length; then one untimed call per backend
    assert [(call.params.get("arm"), call.count, call.params["maxTokens"]) for call in probe] == [
        ("base", 12, 16),
        ("rag", 12, 16),
        ("ft", 12, 16),
        ("ft_rag", 12, 16),
        (None, 2, 1),
    ]
    assert all(call.billable and call.operation == "Converse" for call in probe)
    answers, counts = result.token_counts.answers, result.token_counts.probe
    for arm in ("rag", "ft_rag"):  # the probe sends each arm's own prompt: its size per question is the answer's
        assert counts[("nova-micro", arm)].requests == 12
        assert counts[("nova-micro", arm)].input_tokens == 12 * answers[("nova-micro", arm)].input_tokens // 10
        assert counts[("nova-micro", arm)].output_tokens == 12 * 16
    # base and ft carry their backend's warm-up: the base arm's prompt, one token out
    base_prompt = answers[("nova-micro", "base")].input_tokens // 10
    for arm in ("base", "ft"):
        assert result.token_counts.probe_warm_ups[("nova-micro", arm)] == 1
        assert (counts[("nova-micro", arm)].requests, counts[("nova-micro", arm)].output_tokens) == (13, 12 * 16 + 1)
        assert counts[("nova-micro", arm)].input_tokens == 12 * answers[("nova-micro", arm)].input_tokens // 10 + base_prompt
    lines = [line for line in result.costs.lines if line.step == "latency probe"]
    assert {line.hosting for line in lines if "/ ft" in line.item} == {"on_demand"}  # paid per token only on-demand
    assert {line.hosting for line in lines if "/ ft" not in line.item} == {None}
    off = dry_run(_with_probe(config, enabled=False), n_questions=10, out=None)
    assert [call for call in off.plan if call.step == "latency probe"] == [] and off.token_counts.probe == {}
    assert off.costs.total("on_demand") < result.costs.total("on_demand")


def test_the_provisioned_hosting_window_covers_the_latency_probe(tmp_path):
    """Provisioned hours: the ft answers at concurrency 4, then the probe's calls one at a time,
    about 2 s each, plus half an hour of setup; each started hour bills."""
    config = study_config(tmp_path, hosting="provisioned")
    config = _with_probe(config, questions=120, repeats=2)
    with_probe = dry_run(config, n_questions=120, out=None)
    # 240 ft answers / 4 x 2 s = 120 s; the probe: 120 x 2 rounds x 4 arms + 2 warm-ups = 962 calls x 2 s = 1,924 s
    # 0.5 h + 2,044 s = 1.07 h: two started hours; without the probe 0.5 h + 120 s: one
    [hosting] = [line for line in with_probe.costs.lines if line.step == "hosting" and line.hosting == "provisioned"]
    assert hosting.quantity == 2
    without = dry_run(_with_probe(config, enabled=False), n_questions=120, out=None)
    [hosting] = [line for line in without.costs.lines if line.step == "hosting" and line.hosting == "provisioned"]
    assert hosting.quantity == 1
    [covered] = [line for line in with_probe.costs.lines if "ft arms + " in line.item]
    assert covered.quantity == 240 + 2 * 120 * 2 + 1 and covered.cost_usd == 0.0  # in the hourly charge


def test_shipped_config_validates_and_dry_runs(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config("configs/bedrock-nova.yaml")
    assert [m.customization_model for m in config.models] == ["amazon.nova-micro-v1:0:128k", "amazon.nova-lite-v1:0:300k"]
    assert config.arms == ["base", "rag", "ft", "ft_rag"]
    items = [EvalItem(f"q{i}", "How many watts does the F4 lamp draw at full brightness?", "The F4 draws 36 watts.") for i in range(10)]
    result = dry_run(config, eval_items=items, out=None)
    assert result.costs.complete()


def test_simulated_model_keeps_name_and_id():
    from localnova.config import ModelConfig

    model = ModelConfig(name="nova-micro", backend="bedrock", model="us.amazon.nova-micro-v1:0")
    simulated = simulated_bedrock_model(model)
    assert (simulated.name, simulated.model, simulated.backend) == ("nova-micro", "us.amazon.nova-micro-v1:0", "simulated")
    assert simulated.options["latency_ms_per_token"] == 5.0


@pytest.fixture
def no_aws_credentials(tmp_path, monkeypatch):
    """No credentials anywhere botocore looks: environment, config and credentials files."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


def test_cli_dry_run_runs_the_whole_study_offline_and_marks_the_report_simulated(tmp_path, no_aws_credentials, capsys):
    from localnova.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "bedrock-nova.yaml"
    code = main(["run", str(config), "--dry-run", "--limit", "3", "--set", f"output_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert code == 0
    assert "bedrock-runtime.Converse" in out and "CreateModelCustomizationJob" in out and "TOTAL" in out
    study = tmp_path / "bedrock-nova-dry-run"
    summary = json.loads((study / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["simulated"] is True
    assert {cell["arm"] for cell in summary["answer_metrics"].values()} == {"base", "rag", "ft", "ft_rag"}
    html = (study / "report.html").read_text()
    assert "SIMULATED" in html and html.count("<svg") >= 4
    assert not (study / "bedrock_state.json").exists()  # nothing was created, so nothing is recorded
    # the post's six findings set against the dry run, each row marked simulated
    section = (study / "report.md").read_text().split("## Reproduction", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 6 and all(row.endswith(" (simulated) |") for row in rows)
    assert "the smaller model is nova-micro and the larger nova-lite" in section


def test_cli_real_run_without_credentials_stops_with_one_line_and_creates_nothing(tmp_path, no_aws_credentials, capsys):
    from localnova.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "bedrock-nova.yaml"
    named = [
        "bedrock.role_arn=arn:aws:iam::123456789012:role/localnova",
        "bedrock.s3_bucket=my-bucket",
        "bedrock.knowledge_base.storage.s3VectorsConfiguration.indexArn=arn:aws:s3vectors:us-east-1:123456789012:bucket/v/index/i",
    ]
    code = main(["run", str(config), "--yes", "--set", f"output_dir={tmp_path / 'runs'}", *[f"--set={value}" for value in named]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "credentials" in err[0]
    assert not (tmp_path / "runs").exists()


def test_the_shipped_placeholders_block_a_real_run_in_one_line_and_the_dry_run_names_them(tmp_path, no_aws_credentials, capsys):
    from localnova.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "bedrock-nova.yaml"
    code = main(["run", str(config), "--yes", "--set", f"output_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and not (tmp_path / "runs").exists()
    # the three the shipped config holds, each by its key, before credentials are even looked for
    for key in ("bedrock.role_arn", "bedrock.s3_bucket", "bedrock.knowledge_base.storage.s3VectorsConfiguration.indexArn"):
        assert key in err[0]
    assert "3 placeholder(s)" in err[0] and "localnova bedrock setup" in err[0]
    from localnova.bedrock_study.dry_run import dry_run
    from localnova.config import load_config

    text = dry_run(load_config(config), out=None).text
    blocked = text.split("A real run is blocked until these 3 placeholder(s) are replaced", 1)[1].splitlines()[1:4]
    assert [line.split(":", 1)[0].strip() for line in blocked] == [
        "bedrock.role_arn",
        "bedrock.s3_bucket",
        "bedrock.knowledge_base.storage.s3VectorsConfiguration.indexArn",
    ]


def test_estimate_runs_the_checks_and_prints_the_cost_table_creating_nothing(monkeypatch, fast_tmp, boto_clients, capsys):
    from bedrock_fake_study import Harness
    from localnova.bedrock_study.estimate import estimate_command

    harness = Harness(monkeypatch, fast_tmp, boto_clients, "provisioned")
    assert estimate_command(harness.config, clients=harness.clients()) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("preflight: no problem found")
    assert "TOTAL" in out and "with the fine-tuned models hosted provisioned" in out
    made = [operation for _, operation in harness.account.calls if operation.startswith(("Create", "Put", "Start", "Converse", "Retrieve"))]
    assert made == [] and harness.account.meter_total() == 0  # only the preflight's free reads
    assert "left in the account" not in out  # it holds nothing for the study: nothing to name
    # a run killed where it could not act (SIGKILL) left its throughput: the estimate names it
    assert harness.run() == ("ok", "")
    model = next(m for m in harness.account.models.values())
    harness.account.hosting["arn:aws:bedrock:us-east-1:123456789012:provisioned-model/leftover1234"] = {
        "kind": "provisioned_throughput",
        "name": f"0123456789-{harness.config.name}-nova-micro",
        "modelArn": model["arn"],
        "base": model["base"],
        "modelUnits": 1,
        "created": harness.clock.now,
    }
    harness.account.tags["arn:aws:bedrock:us-east-1:123456789012:provisioned-model/leftover1234"] = {"localnova-study": harness.config.name}
    capsys.readouterr()
    assert estimate_command(harness.config, clients=harness.clients()) == 0
    out = capsys.readouterr().out
    assert "provisioned throughput arn:aws:bedrock:us-east-1:123456789012:provisioned-model/leftover1234" in out
    assert "$60.50 an hour until deleted" in out and "[account only]" in out and "localnova bedrock cleanup" in out
    harness.account.denied = {"GetFoundationModelAvailability"}  # access cannot be checked: the estimate stops
    with pytest.raises(UserError, match="preflight found"):
        estimate_command(harness.config, clients=harness.clients())


def test_training_is_estimated_and_guarded_from_the_file_actually_uploaded(tmp_path):
    """Every text block of every record of the Nova file, system prompts included, at four
    characters a token (counted here by hand), times the epochs: not the pre-training guess."""
    import json

    from bedrock_fixtures import write_nova_training
    from localnova.bedrock.customization import prepare_customization

    config = study_config(tmp_path)
    train = write_nova_training(tmp_path / "train.jsonl")
    expected = 0
    for line in train.read_text().splitlines():
        row = json.loads(line)
        texts = [b["text"] for b in row["system"]] + [b["text"] for m in row["messages"] for b in m["content"]]
        expected += sum(max(1, round(len(text) / 4)) for text in texts)
    prepared = prepare_customization(config, config.models[0], train)
    assert prepared.training_tokens == expected
    result = dry_run(config, out=None, uploaded_training_tokens=prepared.training_tokens)
    [line] = [line for line in result.costs.lines if line.step == "training"]
    assert line.cost_usd == pytest.approx(expected * 2 / 1000 * 0.001)  # 2 epochs at $0.001 per 1k (price file)
