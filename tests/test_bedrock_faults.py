"""Proof by fault injection: a whole Bedrock study against the fake account (bedrock_fake_account.py),
with one fault at every control-plane and runtime call in turn, for both hosting choices.

Each scenario runs the study once with the fault: AWS refuses the call, Ctrl-C before it is
sent, Ctrl-C after the account acted but before the answer arrives; and, for each kind of
resource the study waits for, a wait that never ends. It stops there first, as a user who
reads the last lines and goes home would, and checks those lines against the account: every
hosting, running job or ingestion, custom model, Knowledge Base, data source and S3 object the
account holds is named in them, with the cleanup command (Harness.check_exit_lines). Then it
does what the tool told the user to do (run the same command again, or `localnova bedrock
cleanup`), with the fault gone, and checks the four promises:
1. nothing billable is live (no hosting, no running job or ingestion);
2. the state file names everything the account holds for the study;
3. the spend guard's total was never below what the account's meter billed, at any check;
4. no answer was paid for twice (no converse request answered to the tool more than once), and
   every latency probe call (which sends an answer's request again, on purpose, and says so in
   its requestMetadata) was paid for once and is in the store's ledger of probe calls.
Last, `localnova bedrock cleanup` leaves the account holding nothing and exits 0.

A second set stops there with the state file lost: after Ctrl-C just after each create call
acted (the answer never came), the study folder is removed and `localnova bedrock cleanup`
must find everything through the account alone (tags, hash-first names, the study's prefix in
the bucket it is given) and leave it holding nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("botocore")

from bedrock_fake_account import FAULT_KINDS, WAITABLE, Fault  # noqa: E402
from bedrock_fake_study import Harness  # noqa: E402
from localnova.errors import UserError  # noqa: E402

# The calls that make something in the account: a Ctrl-C just after one leaves it made, unanswered.
CREATING = ("Create", "Put", "Start")


def scenario(harness: Harness, fault: Fault | None = None, never_ready: str | None = None) -> str:
    """Run with the fault, follow the tool's instruction with the fault gone, check the
    promises, clean up; returns what the first run ended with."""
    account = harness.account
    account.fault, account.never_ready = fault, {never_ready} if never_ready else set()
    outcome, line = harness.run()
    account.fault, account.never_ready = None, set()
    where = f"{fault or never_ready}: first run {outcome}: {line}"
    harness.check_exit_lines(where)  # stopping there: the last lines name all that is left
    if outcome != "ok":
        if "localnova bedrock cleanup" in line and "run the same command again" not in line:
            assert harness.cleanup() == 0, where
        else:
            again, again_line = harness.run()
            assert again == "ok", f"{where}; the rerun: {again_line}"
            harness.check_exit_lines(f"{where}; after the rerun")
    harness.check_promises(where)
    assert harness.cleanup() == 0, f"{where}: cleanup left something"
    assert account.held() == [] and account.live_billable() == [], f"{where}: cleanup left {account.held()}"
    return outcome


def lost_state_scenario(harness: Harness, fault: Fault) -> str:
    """The run stops with the fault, its last lines are checked, then the study folder goes
    (`rm -rf runs/`) and cleanup, given the bucket, finds and deletes everything through the
    account alone."""
    import shutil

    harness.account.fault = fault
    outcome, line = harness.run()
    harness.account.fault = None
    where = f"{fault} then the study folder removed: first run {outcome}: {line}"
    harness.check_exit_lines(where)
    shutil.rmtree(harness.config.study_dir)
    assert harness.cleanup(bucket=harness.config.bedrock.s3_bucket) == 0, where
    assert harness.account.held() == [] and harness.account.live_billable() == [], f"{where}: cleanup left {harness.account.held()}"
    return outcome


def cleanup_scenario(harness: Harness, fault: Fault) -> str:
    """A finished study, then `localnova bedrock cleanup` with the fault at one of its calls;
    then cleanup again, as its last line says, with the fault gone."""
    assert harness.run() == ("ok", "")
    harness.account.fault = Fault(len(harness.account.calls) + fault.call_number, fault.kind)
    try:
        outcome = "left" if harness.cleanup() else "ok"
    except UserError:
        outcome = "error"
    except KeyboardInterrupt:
        outcome = "interrupted"
    harness.account.fault = None
    harness.check_promises(f"cleanup with {fault}: {outcome}")
    assert harness.cleanup() == 0, f"cleanup with {fault}: the second cleanup left something"
    assert harness.account.held() == [] and harness.account.live_billable() == []
    return outcome


def clean_calls(monkeypatch, tmp_path: Path, boto_clients, hosting: str) -> list[tuple[str, str]]:
    harness = Harness(monkeypatch, tmp_path / "clean", boto_clients, hosting)
    assert harness.run() == ("ok", "")
    harness.check_promises("clean run")
    # the latency probe sends answers' own requests again, on purpose: per arm, min(1 question,
    # eval.latency_probe.questions) x its repeats, and one untimed call per backend (base
    # model, custom model); promise 4 holds them to that, each once and each in the store
    probe = harness.config.eval.latency_probe
    assert sum(harness.account.probe_delivered.values()) == len(harness.config.arms) * min(1, probe.questions) * probe.repeats + 2
    return list(harness.account.calls)


@pytest.mark.slow  # about 30 s of one core per hosting choice
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
    # Ctrl-C after each create acted, then the state file lost with its folder
    creates = [number for number, (_, operation) in enumerate(calls, 1) if operation.startswith(CREATING)]
    for number in creates:
        harness = Harness(monkeypatch, tmp_path / f"lost-{number}", boto_clients, hosting)
        outcomes.append(lost_state_scenario(harness, Fault(number, "interrupt_after")))
    # and every call of the cleanup that follows a finished study
    finished = Harness(monkeypatch, tmp_path / "finished", boto_clients, hosting)
    assert finished.run() == ("ok", "")
    before = len(finished.account.calls)
    assert finished.cleanup() == 0
    cleanup_calls = finished.account.calls[before:]
    for number in range(1, len(cleanup_calls) + 1):
        for kind in FAULT_KINDS:
            harness = Harness(monkeypatch, tmp_path / f"cleanup-{number}-{kind}", boto_clients, hosting)
            outcomes.append(cleanup_scenario(harness, Fault(number, kind)))
    operations |= {operation for _, operation in cleanup_calls}
    record = {
        "hosting": hosting,
        "study calls": len(calls),
        "cleanup calls": len(cleanup_calls),
        "operations": len(operations),
        "lost state files": len(creates),
        "scenarios": len(outcomes),
    }
    record["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(record))
    assert len(outcomes) == 3 * (len(calls) + len(cleanup_calls)) + 4 + len(creates)


@pytest.mark.parametrize("hosting", ["provisioned", "on_demand"])
def test_the_clean_study_keeps_every_promise(monkeypatch, fast_tmp, boto_clients, hosting):
    calls = clean_calls(monkeypatch, fast_tmp, boto_clients, hosting)
    assert len(calls) > 30


SIGNAL_CHILD = r"""
import json, sys, time
sys.path[:0] = sys.argv[3].split(":")
from pathlib import Path

import boto3
import pytest
from bedrock_fake_study import Harness
from bedrock_fixtures import FAKE_ACCESS_KEY, FAKE_ACCOUNT_SERVICES, FAKE_SECRET_KEY
from localnova.aws import clients as aws_clients

patch = pytest.MonkeyPatch()
session = boto3.session.Session(aws_access_key_id=FAKE_ACCESS_KEY, aws_secret_access_key=FAKE_SECRET_KEY, region_name="us-east-1")
harness = Harness(patch, Path(sys.argv[1]), {s: session.client(s) for s in FAKE_ACCOUNT_SERVICES}, "provisioned")
harness.account.never_ready = {"provisioned_throughput"}
clock = harness.clock


def slow(seconds):  # real time passes while the throughput is awaited, so the parent can signal
    clock.advance(seconds)
    time.sleep(0.05)


patch.setattr(aws_clients, "SLEEP", slow)
outcome = ("not ended", "")
try:
    outcome = harness.run()
finally:
    checked = ""
    try:
        harness.check_exit_lines("after the signal")
    except AssertionError as failed:
        checked = str(failed)
    report = {"outcome": outcome, "live": harness.account.live_billable(), "said": harness.said, "check": checked}
    Path(sys.argv[2]).write_text(json.dumps(report))
"""


def _throughput_created(state_path) -> bool:
    try:
        resources = json.loads(state_path.read_text())["resources"]
    except (FileNotFoundError, ValueError):
        return False
    return any(r["type"] == "provisioned_throughput" and r["status"] == "created" for r in resources)


@pytest.mark.parametrize("name", ["SIGHUP", "SIGTERM", "SIGQUIT"])
def test_a_signal_while_throughput_bills_deletes_it_and_says_so(tmp_path, name):
    """A dropped SSH session (SIGHUP), kill (SIGTERM), Ctrl-\\ (SIGQUIT) while a provisioned
    throughput is live: the run deletes it, says so, and its last lines name what is left."""
    import os
    import signal
    import subprocess
    import sys

    number = getattr(signal, name, None)
    if number is None:
        pytest.skip(f"{name} does not exist on this platform")
    tests = Path(__file__).resolve().parent
    path = os.pathsep.join([str(tests.parent / "src"), str(tests)])
    report = tmp_path / "account.json"
    child = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_CHILD, str(tmp_path / "study"), str(report), path.replace(os.pathsep, ":")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = tmp_path / "study" / "runs" / "bedrock-test" / "bedrock_state.json"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _throughput_created(state):
            assert child.poll() is None, child.stderr.read()
            time.sleep(0.1)
        assert _throughput_created(state), "the child never created its throughput"
        child.send_signal(number)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err[-2000:]  # it ended through its own code, not killed by the signal
    result = json.loads(report.read_text())
    assert result["outcome"][0] == "interrupted" and result["live"] == [], err[-2000:]
    said = "\n".join(result["said"])
    assert "deleted provisioned throughput arn:aws:bedrock:us-east-1:" in said and "$60.50/h" in said
    assert f"terminated ({name})" in said
    assert result["check"] == "", result["check"]


def test_kept_hosting_then_ctrl_c_then_the_study_folder_removed_cleanup_finds_it_through_the_account(
    monkeypatch, fast_tmp, boto_clients, capsys
):
    """--keep-hosting, Ctrl-C as the ft arms end, `rm -rf runs/`: cleanup of the same folder,
    with no state file, finds the throughput by the study's tag and name and deletes it; without
    a bucket it says S3 was not asked and exits 1; given the bucket, it leaves nothing."""
    import shutil

    clean = Harness(monkeypatch, fast_tmp / "clean", boto_clients, "provisioned")
    assert clean.run() == ("ok", "")
    delete_call = next(n for n, (_, op) in enumerate(clean.account.calls, 1) if op == "DeleteProvisionedModelThroughput")
    harness = Harness(monkeypatch, fast_tmp / "study", boto_clients, "provisioned")
    harness.account.fault = Fault(delete_call, "interrupt_before")
    outcome, line = harness.run(keep_hosting=True)
    harness.account.fault = None
    assert outcome == "error" and "hosting kept as asked" in line
    [throughput] = [arn for arn, h in harness.account.hosting.items() if h["kind"] == "provisioned_throughput"]
    assert harness.account.live_billable() == [f"provisioned_throughput {throughput}"]
    harness.check_exit_lines("kept, then stopped")
    assert throughput in harness.said[-1] and "$60.50 an hour" in harness.said[-1]
    shutil.rmtree(harness.config.output_dir)
    capsys.readouterr()
    assert harness.cleanup() == 1  # S3 could not be asked: no bucket known without the state file
    said = capsys.readouterr().out
    assert f"found in the account, not in the state file: provisioned throughput {throughput}" in said
    assert "$60.50 an hour until deleted" in said and f"deleted: provisioned throughput {throughput}" in said
    assert "NOT ASKED: S3 objects: no bucket known" in said and "nothing left that this tool created" not in said
    assert harness.account.live_billable() == [], "the throughput still bills"
    assert harness.cleanup(bucket=harness.config.bedrock.s3_bucket) == 0
    assert harness.account.held() == []
