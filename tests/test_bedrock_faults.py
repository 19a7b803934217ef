"""Proof by fault injection: a whole Bedrock study against the fake account (bedrock_fake_account.py),
with one fault at every control-plane and runtime call in turn, for both hosting choices.

Each scenario runs the study once with the fault: AWS refuses the call, Ctrl-C before it is
sent, Ctrl-C after the account acted but before the answer arrives; and, for each kind of
resource the study waits for, a wait that never ends. Then it does what the tool told the user
to do (run the same command again, or `localnova bedrock cleanup`), with the fault gone, and
checks the four promises:
1. nothing billable is live (no hosting, no running job or ingestion);
2. the state file names everything the account holds for the study;
3. the spend guard's total was never below what the account's meter billed, at any check;
4. no answer was paid for twice (no converse request answered to the tool more than once).
Last, `localnova bedrock cleanup` leaves the account holding nothing and exits 0.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("botocore")

from bedrock_fake_account import FAULT_KINDS, WAITABLE, FakeAccount, FakeClock, Fault  # noqa: E402
from bedrock_fixtures import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, study_config, write_nova_training  # noqa: E402
from localnova.aws import clients as aws_clients  # noqa: E402
from localnova.aws import state as aws_state  # noqa: E402
from localnova.aws.clients import AwsClients  # noqa: E402
from localnova.aws.state import BedrockState  # noqa: E402
from localnova.backends import bedrock_backend  # noqa: E402
from localnova.bedrock.cleanup import cleanup_command  # noqa: E402
from localnova.bedrock_study import study as bedrock_study  # noqa: E402
from localnova.budget import SpendGuard  # noqa: E402
from localnova.errors import UserError  # noqa: E402
from localnova.files import write_text_atomic  # noqa: E402

SERVICES = ("sts", "iam", "s3", "service-quotas", "bedrock", "bedrock-agent", "bedrock-agent-runtime", "bedrock-runtime")
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
GUARD_BEFORE = SpendGuard.before  # the guard's own check, which each harness wraps once


@pytest.fixture
def fast_tmp(tmp_path):
    """A folder in memory when the machine has one (/dev/shm): each scenario writes the state
    file and the store dozens of times."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return tmp_path
    folder = Path(tempfile.mkdtemp(prefix="localnova-faults-", dir=shm))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def boto_clients():
    """One client per service for the whole module: making them is the slow part of a run."""
    import boto3

    session = boto3.session.Session(aws_access_key_id=FAKE_ACCESS_KEY, aws_secret_access_key=FAKE_SECRET_KEY, region_name="us-east-1")
    return {service: session.client(service) for service in SERVICES}


def fault_config(tmp_path: Path, hosting: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = study_config(tmp_path, hosting=hosting, budget_usd=5000)
    train = write_nova_training(tmp_path / "train.jsonl")
    judge = config.judges[0].model_copy(
        update={"model": config.judges[0].model.model_copy(update={"model": SONNET, "name": "claude-sonnet-4-5"})}
    )
    return config.model_copy(
        update={
            "judges": [judge],
            "finetune": config.finetune.model_copy(update={"train_path": train, "decontaminate_train_path": False}),
            "eval": config.eval.model_copy(update={"controls": False, "bootstrap_samples": 20}),
        }
    )


class Harness:
    """The tool against one fake account: runs, reruns and cleanup, and the guard's checks."""

    def __init__(self, monkeypatch, tmp_path: Path, boto_clients, hosting: str):
        self.clock = FakeClock()
        self.account = FakeAccount(self.clock)
        self.account.install(monkeypatch)
        self.config = fault_config(tmp_path, hosting)
        self.boto_clients = boto_clients
        self.guard_below_meter: list[str] = []
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
        monkeypatch.setattr(aws_state, "now", self.clock)
        monkeypatch.setattr(aws_clients, "SLEEP", self.clock.advance)
        monkeypatch.setattr(bedrock_backend, "make_client", lambda service, region: boto_clients[service])
        monkeypatch.setattr(bedrock_backend, "require_credentials", lambda region: None)
        # the state file is still written whole and renamed over the old one, only not fsynced:
        # the tests kill no machine, and hundreds of fsyncs would be most of their time
        monkeypatch.setattr(aws_state, "write_text_atomic", lambda path, text, fsync=False: write_text_atomic(path, text))
        # the estimate's prompt lengths come from the eval set: no local index to build
        monkeypatch.setattr(bedrock_study, "actual_answer_requests", lambda config: None)
        harness = self

        def checked_before(guard, step, estimated_cost_usd):
            spent, billed = guard.spent_usd, harness.account.meter_total()
            if spent < billed - 1e-9:
                harness.guard_below_meter.append(f"before {step}: guard ${spent:.8f} < meter ${billed:.8f}")
            return GUARD_BEFORE(guard, step, estimated_cost_usd)

        monkeypatch.setattr(SpendGuard, "before", checked_before)

    def clients(self) -> AwsClients:
        return AwsClients("us-east-1", dict(self.boto_clients), check_credentials=False)

    def run(self) -> tuple[str, str]:
        """('ok' | 'error' | 'interrupted', the line the user reads)."""
        try:
            bedrock_study.run_bedrock_study(self.config, dry_run_only=False, allow_spend=True, assume_yes=True, clients=self.clients())
        except UserError as error:
            return "error", str(error)
        except KeyboardInterrupt:
            return "interrupted", "interrupted; run the same command again to resume"
        return "ok", ""

    def cleanup(self) -> int:
        return cleanup_command(self.config.study_dir, yes=True, clients=self.clients())

    def check_promises(self, where: str) -> None:
        account, state = self.account, BedrockState.load(self.config.study_dir)
        assert account.live_billable() == [], f"{where}: still billing: {account.live_billable()}"
        named = set()
        for resource in state.live():
            named |= {resource.arn, resource.id, resource.name, resource.key}
        prefixes = [r.details.get("prefix", "") for r in state.live() if r.type == "s3_prefix"]
        for kind, names in account.held():
            under_prefix = kind == "s3_object" and any(n.startswith(p) for n in names for p in prefixes if p)
            assert names & named or under_prefix, f"{where}: the account holds {kind} {sorted(names)} that the state does not name"
        assert not self.guard_below_meter, f"{where}: " + "; ".join(self.guard_below_meter[:3])
        paid_twice = [key for key, count in account.delivered.items() if count > 1]
        assert not paid_twice, f"{where}: {len(paid_twice)} answer(s) paid for twice"


def scenario(harness: Harness, fault: Fault | None = None, never_ready: str | None = None) -> str:
    """Run with the fault, follow the tool's instruction with the fault gone, check the
    promises, clean up; returns what the first run ended with."""
    account = harness.account
    account.fault, account.never_ready = fault, {never_ready} if never_ready else set()
    outcome, line = harness.run()
    account.fault, account.never_ready = None, set()
    where = f"{fault or never_ready}: first run {outcome}: {line}"
    if outcome != "ok":
        if "localnova bedrock cleanup" in line and "run the same command again" not in line:
            assert harness.cleanup() == 0, where
        else:
            again, again_line = harness.run()
            assert again == "ok", f"{where}; the rerun: {again_line}"
    harness.check_promises(where)
    assert harness.cleanup() == 0, f"{where}: cleanup left something"
    assert account.held() == [] and account.live_billable() == [], f"{where}: cleanup left {account.held()}"
    return outcome


def clean_calls(monkeypatch, tmp_path: Path, boto_clients, hosting: str) -> list[tuple[str, str]]:
    harness = Harness(monkeypatch, tmp_path / "clean", boto_clients, hosting)
    assert harness.run() == ("ok", "")
    harness.check_promises("clean run")
    return list(harness.account.calls)


@pytest.mark.parametrize("hosting", ["provisioned", "on_demand"])
def test_a_fault_at_every_call_leaves_nothing_billing_unseen(monkeypatch, fast_tmp, boto_clients, hosting):
    tmp_path = fast_tmp
    started = time.perf_counter()
    calls = clean_calls(monkeypatch, tmp_path, boto_clients, hosting)
    operations = {operation for _, operation in calls}
    for needed in ("CreateModelCustomizationJob", "Converse", "Retrieve", "StartIngestionJob", "CreateKnowledgeBase"):
        assert needed in operations
    assert ("CreateProvisionedModelThroughput" if hosting == "provisioned" else "CreateCustomModelDeployment") in operations
    outcomes = []
    for number in range(1, len(calls) + 1):
        for kind in FAULT_KINDS:
            harness = Harness(monkeypatch, tmp_path / f"{number}-{kind}", boto_clients, hosting)
            outcomes.append(scenario(harness, Fault(number, kind)))
    for kind in WAITABLE:
        if kind == ("custom_model_deployment" if hosting == "provisioned" else "provisioned_throughput"):
            continue
        harness = Harness(monkeypatch, tmp_path / f"never-{kind}", boto_clients, hosting)
        outcomes.append(scenario(harness, never_ready=kind))
    record = {"hosting": hosting, "calls": len(calls), "operations": len(operations), "scenarios": len(outcomes)}
    record["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(record))
    assert len(outcomes) == 3 * len(calls) + 4


@pytest.mark.parametrize("hosting", ["provisioned", "on_demand"])
def test_the_clean_study_keeps_every_promise(monkeypatch, tmp_path, boto_clients, hosting):
    calls = clean_calls(monkeypatch, tmp_path, boto_clients, hosting)
    assert len(calls) > 30
