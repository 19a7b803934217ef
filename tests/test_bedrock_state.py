"""The state file: written at once, found again by token, deleted ones skipped, order kept."""

from __future__ import annotations

import json

import pytest

from localnova.aws.state import BedrockState, Resource


def test_record_is_on_disk_at_once_and_found_by_token(tmp_path):
    state = BedrockState.load(tmp_path)
    state.record(Resource("customization_job", "customization_job:m", "us-east-1", id="job", arn="arn:job", client_token="tok"))
    on_disk = json.loads((tmp_path / "bedrock_state.json").read_text())
    assert on_disk["resources"][0]["arn"] == "arn:job" and on_disk["resources"][0]["created_at"]
    again = BedrockState.load(tmp_path)
    assert again.find("customization_job", client_token="tok").id == "job"
    assert again.find("customization_job", client_token="other") is None
    assert not list(tmp_path.glob(".bedrock_state.*.tmp"))


def test_live_lists_hourly_billing_first_and_skips_deleted(tmp_path):
    state = BedrockState.load(tmp_path)
    state.record(Resource("s3_object", "s3://b/k", "us-east-1", id="k"))
    state.record(Resource("custom_model", "custom_model:m", "us-east-1", id="m"))
    pt = state.record(Resource("provisioned_throughput", "pt:m", "us-east-1", id="p"))
    assert [r.type for r in state.live()] == ["provisioned_throughput", "custom_model", "s3_object"]
    state.update(pt, status="deleted")
    assert [r.type for r in BedrockState.load(tmp_path).live()] == ["custom_model", "s3_object"]


def test_a_new_token_is_appended_beside_the_live_entry_never_over_it(tmp_path):
    state = BedrockState.load(tmp_path)
    first = state.record(Resource("provisioned_throughput", "provisioned_throughput:m", "us-east-1", arn="arn:1", client_token="units-1"))
    state.record(Resource("provisioned_throughput", "provisioned_throughput:m", "us-east-1", arn="arn:2", client_token="units-2"))
    again = state.record(
        Resource("provisioned_throughput", "provisioned_throughput:m", "us-east-1", arn="arn:other", client_token="units-1")
    )
    assert again is first  # the same token is the same resource: nothing added
    reloaded = BedrockState.load(tmp_path)
    assert [r.arn for r in reloaded.live()] == ["arn:1", "arn:2"]
    reloaded.mark_deleted(reloaded.live()[0])
    kept = BedrockState.load(tmp_path).all_of("provisioned_throughput")
    assert [(r.arn, r.status, bool(r.deleted_at)) for r in kept] == [("arn:1", "deleted", True), ("arn:2", "created", False)]


def test_spend_counts_hosting_hours_from_creation_to_deletion(tmp_path):
    from bedrock_fixtures import study_config
    from localnova.bedrock.spend import resource_spend

    config = study_config(tmp_path)
    state = BedrockState.load(tmp_path / "state")
    job = Resource("customization_job", "customization_job:nova-micro", "us-east-1", id="j", client_token="j")
    job.details = {"model": "nova-micro", "training_tokens": 100_000}
    state.record(job)
    state.record(Resource("custom_model", "custom_model:nova-micro", "us-east-1", id="cm", client_token="j"))
    pt = Resource("provisioned_throughput", "provisioned_throughput:nova-micro", "us-east-1", arn="arn:1", client_token="u1")
    pt.created_at, pt.status, pt.deleted_at = "2026-01-01T10:00:00+00:00", "deleted", "2026-01-01T11:30:00+00:00"
    pt.details = {"model_units": 1}
    state.record(pt)
    never = Resource("provisioned_throughput", "provisioned_throughput:nova-micro", "us-east-1", name="never", client_token="u2")
    state.mark_absent(state.intend(never))  # written down, refused by AWS: never billed
    source = Resource("data_source", "data_source", "us-east-1", id="ds", details={"ingestions": [{"corpus_tokens": 50_000}]})
    state.record(source)
    state.record_paid_call("a retrieve call", 0.0001)
    spend = resource_spend(state, config)
    # 100k tokens x 2 epochs at $0.001 per 1k; a month of storage; 1.5 h started = 2 hours billed;
    # 50k corpus tokens embedded at $0.00002 per 1k; one retrieve
    assert spend == pytest.approx(
        {"training": 0.2, "storage": 1.95, "hosting": 2 * 60.50, "ingestion": 0.001, "vector_store": 0.0, "other_calls": 0.0001}
    )


def test_intended_entries_are_live_until_confirmed_or_found_absent(tmp_path):
    state = BedrockState.load(tmp_path)
    entry = state.intend(Resource("provisioned_throughput", "pt:m", "us-east-1", name="n1", client_token="t1", hourly_usd=60.5))
    on_disk = json.loads((tmp_path / "bedrock_state.json").read_text())["resources"][0]
    assert (on_disk["status"], on_disk["name"], on_disk["client_token"], on_disk["hourly_usd"]) == ("intended", "n1", "t1", 60.5)
    assert state.intend(Resource("provisioned_throughput", "pt:m", "us-east-1", name="n1", client_token="t1")) is entry
    state.confirm(entry, arn="arn:pt")
    assert [r.arn for r in BedrockState.load(tmp_path).live()] == ["arn:pt"]
    gone = state.intend(Resource("custom_model_deployment", "d:m", "us-east-1", name="n2", client_token="t2"))
    state.mark_absent(gone)
    assert [r.name for r in BedrockState.load(tmp_path).live()] == ["n1"]
