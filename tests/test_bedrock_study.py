"""The Bedrock study's orchestration (bedrock/study.py): what it checks before any AWS call,
the order of its billable steps, and what it hands the local pipeline. The AWS steps are
replaced by recorders here; each step has its own tests against moto or the Stubber."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.client
import pytest

from bedrock_fixtures import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, study_config
from localnova.bedrock.preflight import PreflightReport
from localnova.bedrock.reconcile import ReconcileReport
from localnova.bedrock_study import study as bedrock_study
from localnova.cli import main
from localnova.config import select_run
from localnova.errors import UserError

SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "bedrock-nova.yaml"


@pytest.fixture
def aws_calls(monkeypatch, tmp_path):
    """Fake credentials, and every botocore API call recorded and refused: a test that expects
    none sees an empty list, and nothing can reach AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    calls = []

    def refuse(self, operation_name, api_params):
        calls.append(operation_name)
        raise AssertionError(f"unexpected AWS call {operation_name}")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", refuse)
    return calls


def test_unknown_arm_stops_in_one_line_before_any_aws_call(tmp_path, aws_calls, capsys):
    code = main(["run", str(SHIPPED_CONFIG), "--arms", "rag,fft", "--yes", "--set", f"output_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--arms fft" in err[0]
    assert aws_calls == []
    assert not (tmp_path / "runs").exists()


def test_limit_and_arms_reach_the_estimate_and_the_budget_check(tmp_path):
    config = study_config(tmp_path)
    eval_path = Path(config.eval.path)
    eval_path.write_text(
        "".join(
            json.dumps({"question_id": f"q{i}", "question": f"How many watts does lamp F{i} draw?", "answer": f"{i} watts."}) + "\n"
            for i in range(6)
        ),
        encoding="utf-8",
    )
    whole = bedrock_study.dry_run(config, out=None)
    narrowed_config = select_run(config, arms=["base"], limit=2)
    narrowed = bedrock_study.dry_run(narrowed_config, answer_requests=bedrock_study.actual_answer_requests(narrowed_config), out=None)
    assert whole.n_questions == 6 and narrowed.n_questions == 2
    assert set(narrowed.token_counts.answers) == {("nova-micro", "base")}
    assert narrowed.token_counts.answers[("nova-micro", "base")].requests == 2
    assert narrowed.costs.total("on_demand") < whole.costs.total("on_demand")


def test_select_run_refuses_bad_arms_and_limits(tmp_path):
    config = study_config(tmp_path)
    with pytest.raises(UserError, match="--arms fft"):
        select_run(config, arms=["rag", "fft"])
    with pytest.raises(UserError, match="--limit 0"):
        select_run(config, limit=0)
    assert select_run(config, arms=["rag", "base", "rag"]).arms == ["rag", "base"]
    assert select_run(config).arms == config.arms


def test_bedrock_settings_reach_every_bedrock_model_once(tmp_path):
    config = study_config(tmp_path, region="us-west-2", max_concurrency=7)
    settled = bedrock_study.with_bedrock_settings(config)
    assert settled.models[0].options == {"region": "us-west-2", "max_concurrency": 7}
    assert settled.judges[0].model.options == {"region": "us-west-2", "max_concurrency": 7}
    own = config.model_copy(update={"models": [config.models[0].model_copy(update={"options": {"region": "eu-west-1"}})]})
    assert bedrock_study.with_bedrock_settings(own).models[0].options["region"] == "eu-west-1"


class Recorder:
    """Stands in for the billable steps and the pipeline, in call order."""

    def __init__(self, monkeypatch):
        self.steps: list[str] = []
        self.pipeline_kwargs: dict = {}
        monkeypatch.setattr(bedrock_study, "AwsClients", self.clients)
        monkeypatch.setattr(bedrock_study, "require_preflight", self.preflight)
        monkeypatch.setattr(bedrock_study, "reconcile", self.reconcile)
        monkeypatch.setattr(bedrock_study, "say_at_start", lambda *a: self.steps.append("ask the account"))
        monkeypatch.setattr(bedrock_study, "say_what_is_left", lambda *a: self.steps.append("say what is left"))
        monkeypatch.setattr(bedrock_study, "prepare_customization", self.prepare)
        monkeypatch.setattr(bedrock_study, "check_hosting", lambda *a, **k: self.steps.append("check hosting"))
        monkeypatch.setattr(bedrock_study, "ensure_knowledge_base", self.knowledge_base)
        monkeypatch.setattr(bedrock_study, "start_customization", self.start)
        monkeypatch.setattr(bedrock_study, "wait_for_customization", self.wait)
        monkeypatch.setattr(bedrock_study, "run_study", self.run_study)

    def clients(self, region):
        recorder = self

        class Clients:
            agent_runtime = object()

            def get(self, service):
                recorder.steps.append(f"client {service}")

        return Clients()

    def preflight(self, config, clients, skip_checks):
        self.steps.append("preflight")
        return PreflightReport()

    def reconcile(self, state, clients):
        self.steps.append("reconcile")
        return ReconcileReport()

    def prepare(self, config, model, train_path, validation_path):
        self.steps.append("check customization")
        return type("Prepared", (), {"model_name": model.name, "training_tokens": 1000, "base_model_id": model.customization_model})()

    def knowledge_base(self, config, state, clients):
        self.steps.append("create knowledge base")
        return "KB123"

    def start(self, config, prepared, state, clients):
        self.steps.append(f"start job {prepared.model_name}")
        return prepared.model_name

    def wait(self, config, job, state, clients):
        self.steps.append(f"wait job {job}")
        return type("Job", (), {"custom_model_arn": f"arn:custom/{job}"})()

    def run_study(self, config, **kwargs):
        self.steps.append("pipeline")
        self.pipeline_kwargs = kwargs
        return config.study_dir, "run-1"


def test_real_run_checks_estimates_and_confirms_before_creating_anything(tmp_path, monkeypatch, capsys):
    recorder = Recorder(monkeypatch)
    config = study_config(tmp_path)
    train = tmp_path / "train.jsonl"
    train.write_text(
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n", encoding="utf-8"
    )
    config = config.model_copy(update={"finetune": config.finetune.model_copy(update={"train_path": train})})
    questions = []

    def confirm(question):
        questions.append((question, list(recorder.steps)))
        return True

    bedrock_study.run_bedrock_study(config, dry_run_only=False, allow_spend=False, assume_yes=False, confirm=confirm)
    assert "TOTAL" in capsys.readouterr().out  # the estimate was printed
    assert questions and questions[0][1] == [
        "client bedrock",
        "preflight",
        "reconcile",
        "ask the account",
        "check customization",
        "check hosting",
    ]
    assert recorder.steps[6:] == ["create knowledge base", "start job nova-micro", "wait job nova-micro", "pipeline", "say what is left"]
    assert recorder.pipeline_kwargs["adapters"] == {"nova-micro": "arn:custom/nova-micro"}
    assert recorder.pipeline_kwargs["hosting"] is not None  # hosted around the ft arms only
    assert recorder.pipeline_kwargs["artifacts"]["bedrock_routing"]["nova-micro/ft"].startswith("custom model deployment")
    assert recorder.pipeline_kwargs["retriever"].describe() == {"knowledge_base_id": "KB123"}
    assert "cost_estimate" in recorder.pipeline_kwargs["artifacts"]


def test_real_run_not_confirmed_creates_nothing(tmp_path, monkeypatch, capsys):
    recorder = Recorder(monkeypatch)
    config = select_run(study_config(tmp_path), arms=["base", "rag"])
    with pytest.raises(UserError, match="not confirmed"):
        bedrock_study.run_bedrock_study(config, dry_run_only=False, allow_spend=False, assume_yes=False, confirm=lambda question: False)
    assert recorder.steps == ["client bedrock", "preflight", "reconcile", "ask the account"]


def test_over_budget_stops_before_anything_is_created(tmp_path, monkeypatch, capsys):
    recorder = Recorder(monkeypatch)
    config = select_run(study_config(tmp_path, budget_usd=0.0), arms=["base", "rag"])
    with pytest.raises(UserError, match="bedrock.budget_usd"):
        bedrock_study.run_bedrock_study(config, dry_run_only=False, allow_spend=False, assume_yes=True)
    assert recorder.steps == ["client bedrock", "preflight", "reconcile", "ask the account"]


def test_dry_run_hands_the_pipeline_a_simulated_study(tmp_path, monkeypatch, aws_calls, capsys):
    recorder = Recorder(monkeypatch)
    config = study_config(tmp_path)
    bedrock_study.run_bedrock_study(config, dry_run_only=True, allow_spend=False, assume_yes=False)
    assert recorder.steps == ["pipeline"] and aws_calls == []
    assert recorder.pipeline_kwargs["adapters"] == {"nova-micro": bedrock_study.SIMULATED_ADAPTER}
    assert recorder.pipeline_kwargs.get("retriever") is None  # the local index stands in for the Knowledge Base


def test_a_users_training_file_is_decontaminated_against_the_eval_set(tmp_path):
    config = study_config(tmp_path)
    train = tmp_path / "train.jsonl"
    rows = [
        {"question": "How many watts does the F4 draw?", "answer": "36 watts."},  # the eval question itself
        {"question": "Which cable does the hub take?", "answer": "A USB-C cable."},
    ]
    chat = [{"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]} for r in rows]
    train.write_text("".join(json.dumps(row) + "\n" for row in chat), encoding="utf-8")
    config = config.model_copy(update={"finetune": config.finetune.model_copy(update={"train_path": train})})
    path, validation, record = bedrock_study.bedrock_training_files(config)
    kept = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(kept) == 1 and "USB-C" in json.dumps(kept[0])
    assert record["decontaminated"] and record["report"]["dropped_contaminated"] == 1 and validation is None
    unchecked = config.model_copy(update={"finetune": config.finetune.model_copy(update={"decontaminate_train_path": False})})
    path, validation, record = bedrock_study.bedrock_training_files(unchecked)
    assert path == train and record == {"source": str(train), "decontaminated": False, "why": "finetune.decontaminate_train_path: false"}


def test_validation_path_and_max_train_pairs_reach_the_bedrock_job(monkeypatch, fast_tmp, boto_clients):
    from bedrock_fake_study import Harness
    from bedrock_fixtures import recorded, write_nova_training

    harness = Harness(monkeypatch, fast_tmp, boto_clients, "on_demand")
    train = write_nova_training(fast_tmp / "train-20.jsonl", pairs=20)
    valid = write_nova_training(fast_tmp / "valid.jsonl", pairs=8)
    finetune = harness.config.finetune.model_copy(update={"train_path": train, "validation_path": valid, "max_train_pairs": 12})
    harness.config = select_run(harness.config.model_copy(update={"finetune": finetune}), arms=["ft"])
    assert harness.run() == ("ok", "")
    [request] = recorded("CreateModelCustomizationJob")
    assert request["validationDataConfig"]["validators"][0]["s3Uri"].endswith("/validation.jsonl")
    uploaded = [body for (_, key), body in harness.account.objects.items() if key.endswith("/train.jsonl")]
    assert len(uploaded) == 1 and len(uploaded[0].decode().splitlines()) == 12  # a seeded sample of 12 of the 20 pairs


def test_every_cost_of_a_finished_run_is_in_the_state_the_ingestion_and_retrieve_included(monkeypatch, fast_tmp, boto_clients):
    """The corpus files hold 36 and 31 characters (9 and 8 tokens at four characters a token);
    the one retrieve query 32 (8 tokens); Titan V2 embeds at $0.00002 per 1,000 tokens."""
    from bedrock_fake_study import Harness
    from localnova.aws.state import BedrockState
    from localnova.bedrock.spend import resource_spend

    harness = Harness(monkeypatch, fast_tmp, boto_clients, "on_demand")
    assert harness.run() == ("ok", "")
    spend = resource_spend(BedrockState.load(harness.config.study_dir), harness.config)
    assert spend["ingestion"] == pytest.approx((9 + 8) / 1000 * 0.00002)
    assert spend["other_calls"] == pytest.approx(8 / 1000 * 0.00002)


def test_an_aws_refusal_reaches_the_user_as_one_line(monkeypatch, fast_tmp, boto_clients):
    from bedrock_fake_study import Harness

    harness = Harness(monkeypatch, fast_tmp, boto_clients, "on_demand")
    harness.account.denied = {"CreateKnowledgeBase"}
    outcome, line = harness.run()
    assert outcome == "error" and "\n" not in line
    assert line.startswith("AWS refused CreateKnowledgeBase (AccessDeniedException): denied by policy")
    assert line.endswith("run the same command again to resume")
