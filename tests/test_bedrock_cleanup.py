"""Cleanup deletes everything the state file lists, provisioned throughput first, asks first,
and leaves nothing behind in moto."""

from __future__ import annotations

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.stub import Stubber  # noqa: E402

from bedrock_fixtures import BUCKET, ROLE_ARN, moto_bedrock_backend, study_config, write_nova_training  # noqa: E402
from localnova.bedrock.aws import AwsClients  # noqa: E402
from localnova.bedrock.cleanup import cleanup  # noqa: E402
from localnova.bedrock.customization import run_customization  # noqa: E402
from localnova.bedrock.state import BedrockState, Resource  # noqa: E402

PT_ARN = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/pm1abc123def"
DEPLOYMENT_ARN = "arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/dep1abc123de"


class RecordingSplitClient:
    """moto for what it knows, the Stubber for the rest; remembers the order of calls."""

    def __init__(self, real, stubbed, stubbed_operations, calls):
        self._real, self._stubbed, self._ops, self._calls = real, stubbed, set(stubbed_operations), calls

    def __getattr__(self, name):
        target = getattr(self._stubbed if name in self._ops else self._real, name)
        if not name.startswith("delete") and not name.startswith("stop"):
            return target

        def call(**kwargs):
            self._calls.append(name)
            return target(**kwargs)

        return call


def _make_everything(config, tmp_path):
    state = BedrockState.load(config.study_dir)
    clients = AwsClients("us-east-1")

    def finish(_seconds):
        for job in moto_bedrock_backend().model_customization_jobs.values():
            job.status = "Completed"

    run_customization(config, config.models[0], write_nova_training(tmp_path / "train.jsonl"), state, clients, sleep=finish, poll_s=0.01)
    agent = boto3.client("bedrock-agent", region_name="us-east-1")
    kb = agent.create_knowledge_base(
        name="kb-test",
        roleArn=ROLE_ARN,
        knowledgeBaseConfiguration={
            "type": "VECTOR",
            "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"
            },
        },
        storageConfiguration=config.bedrock.knowledge_base["storage"],
    )["knowledgeBase"]
    state.record(Resource("knowledge_base", "knowledge_base", "us-east-1", id=kb["knowledgeBaseId"], arn=kb["knowledgeBaseArn"]))
    state.record(Resource("custom_model_deployment", "custom_model_deployment:nova-micro", "us-east-1", id="dep1", arn=DEPLOYMENT_ARN))
    state.record(Resource("provisioned_throughput", "provisioned_throughput:nova-micro", "us-east-1", id="pm1", arn=PT_ARN))
    return state


def test_cleanup_deletes_everything_listed_provisioned_first(aws_env, tmp_path):
    config = study_config(tmp_path)
    _make_everything(config, tmp_path)
    calls: list[str] = []
    stub_bedrock = boto3.client("bedrock", region_name="us-east-1")
    bedrock = RecordingSplitClient(
        boto3.client("bedrock", region_name="us-east-1"),
        stub_bedrock,
        {"delete_provisioned_model_throughput", "delete_custom_model_deployment"},
        calls,
    )
    agent = RecordingSplitClient(boto3.client("bedrock-agent", region_name="us-east-1"), None, set(), calls)
    s3 = RecordingSplitClient(boto3.client("s3", region_name="us-east-1"), None, set(), calls)
    asked: list[str] = []
    with Stubber(stub_bedrock) as stubber:
        stubber.add_response("delete_provisioned_model_throughput", {}, {"provisionedModelId": PT_ARN})
        stubber.add_response("delete_custom_model_deployment", {}, {"customModelDeploymentIdentifier": DEPLOYMENT_ARN})
        report = cleanup(
            config.study_dir,
            lambda summary: asked.append(summary) or True,
            clients=AwsClients("us-east-1", {"bedrock": bedrock, "bedrock-agent": agent, "s3": s3}),
        )
    assert len(asked) == 1 and PT_ARN in asked[0]
    assert calls[:2] == ["delete_provisioned_model_throughput", "delete_custom_model_deployment"]
    assert calls.index("delete_custom_model") < calls.index("delete_knowledge_base") < calls.index("delete_object")
    assert report.left == []
    assert BedrockState.load(config.study_dir).live() == []
    assert boto3.client("bedrock", region_name="us-east-1").list_custom_models()["modelSummaries"] == []
    assert boto3.client("bedrock-agent", region_name="us-east-1").list_knowledge_bases()["knowledgeBaseSummaries"] == []
    assert "Contents" not in boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket=BUCKET)


def test_cleanup_declined_deletes_nothing(aws_env, tmp_path):
    config = study_config(tmp_path)
    state = BedrockState.load(config.study_dir)
    boto3.client("s3", region_name="us-east-1").put_object(Bucket=BUCKET, Key="k.txt", Body=b"x")
    state.record(Resource("s3_object", f"s3://{BUCKET}/k.txt", "us-east-1", id="k.txt", details={"bucket": BUCKET, "key": "k.txt"}))
    report = cleanup(config.study_dir, lambda summary: False)
    assert report.declined and len(report.left) == 1
    assert [o["Key"] for o in boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket=BUCKET)["Contents"]] == ["k.txt"]
    assert len(BedrockState.load(config.study_dir).live()) == 1


def test_a_resource_already_gone_counts_as_deleted(aws_env, tmp_path):
    config = study_config(tmp_path)
    state = BedrockState.load(config.study_dir)
    state.record(Resource("custom_model", "custom_model:nova-micro", "us-east-1", id="never-existed"))
    report = cleanup(config.study_dir, lambda summary: True)
    assert report.already_gone and not report.left
    assert BedrockState.load(config.study_dir).live() == []
