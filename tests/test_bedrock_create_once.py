"""Every create on the Bedrock path is made once, whatever happened to an earlier try.

The defect this guards against: a resource is written down (intended) before its create call;
a process killed between the intent and the create's answer leaves the entry intended while
the account has the resource. A rerun that sends the create again relies on the client token,
which an account honours only for a while (moto never does), and which a lost state file
forgets; then the create is refused because the name is taken, or a second resource is made.
Each create therefore asks the account by name first when its entry was intended before, and
adopts what a name-taken refusal points to (bedrock/reconcile.create_once). The tests below put
the account in that state on purpose, with a fake account that forgets client tokens (only
names say what exists), for each create: Knowledge Base, data source, provisioned throughput,
custom model deployment, customization job, S3 object and ingestion job.
"""

from __future__ import annotations

import pytest

pytest.importorskip("botocore")

from bedrock_fake_account import Fault  # noqa: E402
from bedrock_fake_study import Harness  # noqa: E402
from localnova.aws.clients import AwsClients  # noqa: E402
from localnova.aws.state import BedrockState  # noqa: E402

CREATES = ("Create", "Put", "Start")
CUSTOM_MODEL = "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.nova-micro-v1:0:128k/abcdef123456"


def _call_numbers(harness: Harness, operation: str) -> list[int]:
    return [number for number, (_, name) in enumerate(harness.account.calls, 1) if name == operation]


def _held_counts(harness: Harness) -> dict[str, int]:
    account = harness.account
    live_jobs = [job for job in account.jobs.values() if job["status"] in ("InProgress", "Completed")]
    return {
        "knowledge bases": len(account.kbs),
        "data sources": len(account.sources),
        "ingestions": len(account.ingestions),
        "live hosting": len([h for h in account.hosting.values() if not h.get("gone_at")]),
        "jobs in progress or completed": len(live_jobs),
        "custom models": len(account.models),
    }


@pytest.mark.parametrize("hosting", ["provisioned", "on_demand"])
def test_each_create_whose_answer_was_lost_is_adopted_when_the_account_forgot_its_token(monkeypatch, fast_tmp, boto_clients, hosting):
    clean = Harness(monkeypatch, fast_tmp / "clean", boto_clients, hosting)
    assert clean.run() == ("ok", "")
    expected = _held_counts(clean)
    creates = [(number, name) for number, (_, name) in enumerate(clean.account.calls, 1) if name.startswith(CREATES)]
    assert {name for _, name in creates} >= {
        "CreateKnowledgeBase",
        "CreateDataSource",
        "StartIngestionJob",
        "CreateModelCustomizationJob",
        "PutObject",
        "CreateProvisionedModelThroughput" if hosting == "provisioned" else "CreateCustomModelDeployment",
    }
    for number, name in creates:
        harness = Harness(monkeypatch, fast_tmp / f"{number}", boto_clients, hosting)
        harness.account.fault = Fault(number, "interrupt_after")  # made in the account, the answer never came
        outcome, line = harness.run()
        assert outcome == "interrupted", f"{name} (call {number}): {line}"
        harness.account.fault, harness.account.forget_tokens = None, True
        again, line = harness.run()
        where = f"{name} (call {number}) made, its answer lost, the token forgotten"
        assert again == "ok", f"{where}: the rerun: {line}"
        counts = _held_counts(harness)
        # a job stopped by the Ctrl-C is followed by a new attempt: one job made its model, as in a clean run
        assert counts == expected, f"{where}: the account holds {counts}, a clean run {expected}"
        harness.check_promises(where)
        assert harness.cleanup() == 0 and harness.account.held() == [], where


def test_a_rerun_without_its_state_file_adopts_what_the_account_holds(monkeypatch, fast_tmp, boto_clients):
    harness = Harness(monkeypatch, fast_tmp, boto_clients, "on_demand")
    assert harness.run() == ("ok", "")
    before = _held_counts(harness)
    (harness.config.study_dir / "bedrock_state.json").unlink()
    harness.account.forget_tokens = True  # only names say what exists now
    calls = len(harness.account.calls)
    outcome, line = harness.run()
    assert outcome == "ok", line
    # the start named what the account held for the study and the state file did not
    assert "before this run starts" in harness.said[0] and "[account only]" in harness.said[0]
    after = _held_counts(harness)
    assert {key: after[key] for key in after if key != "ingestions"} == {key: before[key] for key in before if key != "ingestions"}
    # creates refused as taken were looked up and adopted, none made twice
    sent = [name for _, name in harness.account.calls[calls:] if name in ("CreateKnowledgeBase", "CreateDataSource")]
    assert sent == ["CreateKnowledgeBase", "CreateDataSource"]
    assert "CreateModelCustomizationJob" not in [name for _, name in harness.account.calls[calls:]]
    # what the lost file recorded as spent is lost with it: the guard counts from this run on
    harness.guard_below_meter.clear()
    harness.check_promises("a rerun without its state file")
    assert harness.cleanup() == 0 and harness.account.held() == []


@pytest.mark.parametrize("hosting", ["provisioned", "on_demand"])
def test_hosting_intended_by_a_killed_run_is_looked_up_before_it_is_created_again(monkeypatch, fast_tmp, boto_clients, hosting):
    """host_custom_model alone (no reconcile before it): the entry is intended, the account has
    the hosting under its name, the token is forgotten: the second call adopts it."""
    from localnova.bedrock.hosting import host_custom_model

    harness = Harness(monkeypatch, fast_tmp, boto_clients, hosting)
    account = harness.account
    account.models["m"] = {"arn": CUSTOM_MODEL, "name": "m", "base": "amazon.nova-micro-v1:0:128k", "created": harness.clock.now}
    clients = harness.clients()
    state = BedrockState.load(harness.config.study_dir)
    model = harness.config.models[0]
    account.fault = Fault(1, "interrupt_after")
    with pytest.raises(KeyboardInterrupt):
        host_custom_model(harness.config, model, CUSTOM_MODEL, state, clients, allow_spend=True, estimate_shown=True)
    [entry] = BedrockState.load(harness.config.study_dir).live()
    assert entry.status == "intended" and len(account.hosting) == 1
    account.fault, account.forget_tokens = None, True
    state = BedrockState.load(harness.config.study_dir)
    arn = host_custom_model(harness.config, model, CUSTOM_MODEL, state, clients, allow_spend=True, estimate_shown=True)
    assert list(account.hosting) == [arn] and [op for _, op in account.calls].count(f"Create{_create_of(hosting)}") == 1
    assert BedrockState.load(harness.config.study_dir).find(entry.type).status == "created"


def _create_of(hosting: str) -> str:
    return "ProvisionedModelThroughput" if hosting == "provisioned" else "CustomModelDeployment"


@pytest.mark.parametrize("killed_at", ["CreateKnowledgeBase", "CreateDataSource", "StartIngestionJob", "PutObject"])
def test_knowledge_base_steps_intended_by_a_killed_run_are_made_once(monkeypatch, fast_tmp, boto_clients, killed_at):
    """ensure_knowledge_base alone (no reconcile before it), killed just after one of its
    creates acted, then run again against an account that forgot the token."""
    from localnova.bedrock.knowledge_base import ensure_knowledge_base

    first = Harness(monkeypatch, fast_tmp / "clean", boto_clients, "on_demand")
    ensure_knowledge_base(first.config, BedrockState.load(first.config.study_dir), first.clients(), sleep=first.clock.advance)
    harness = Harness(monkeypatch, fast_tmp / "killed", boto_clients, "on_demand")  # its account answers from here on
    account, clients = harness.account, harness.clients()

    def ensure():
        return ensure_knowledge_base(harness.config, BedrockState.load(harness.config.study_dir), clients, sleep=harness.clock.advance)

    account.fault = Fault(_call_numbers(first, killed_at)[0], "interrupt_after")
    with pytest.raises(KeyboardInterrupt):
        ensure()
    account.fault, account.forget_tokens = None, True
    kb_id = ensure()
    assert list(account.kbs) == [kb_id] and len(account.sources) == 1 and len(account.ingestions) == 1
    assert len(account.objects) == len(first.account.objects)
    state = BedrockState.load(harness.config.study_dir)
    assert {r.status for r in state.live()} == {"created"}


def test_the_create_once_lookup_is_skipped_for_a_fresh_entry_and_a_real_refusal_marks_it_absent(monkeypatch, fast_tmp, boto_clients):
    """A create refused for another reason than a taken name (here AccessDenied) made nothing:
    no lookup, the entry absent; a ValidationException whose name lookup finds nothing is a
    refusal too."""
    from botocore.exceptions import ClientError

    from localnova.aws.state import Resource
    from localnova.bedrock.reconcile import create_once

    harness = Harness(monkeypatch, fast_tmp, boto_clients, "on_demand")
    clients: AwsClients = harness.clients()
    state = BedrockState.load(harness.config.study_dir)
    entry = state.intend(Resource("knowledge_base", "knowledge_base", "us-east-1", name="0123456789-kb", client_token="t" * 40))
    harness.account.denied = {"CreateKnowledgeBase"}
    request = {
        "clientToken": "t" * 40,
        "name": "0123456789-kb",
        "roleArn": harness.config.bedrock.role_arn,
        "knowledgeBaseConfiguration": {
            "type": "VECTOR",
            "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"
            },
        },
        "storageConfiguration": harness.config.bedrock.knowledge_base["storage"],
    }
    with pytest.raises(ClientError, match=r"AccessDeniedException.*denied by policy"):
        create_once(state, entry, clients, lambda: clients.agent.create_knowledge_base(**request), fresh=True)
    assert entry.status == "absent" and [op for _, op in harness.account.calls] == ["CreateKnowledgeBase"]
