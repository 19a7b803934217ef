"""Cleanup deletes everything the state file lists, every provisioned throughput first, waits
until AWS no longer lists the hosting before the custom model goes, asks first, and sends
exactly the requests botocore's model and the Stubber expect."""

from __future__ import annotations

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.stub import Stubber  # noqa: E402

from bedrock_fixtures import BUCKET, RECORDED_REQUESTS, ROLE_ARN, study_config  # noqa: E402
from localnova.aws.clients import AwsClients  # noqa: E402
from localnova.aws.state import BedrockState, Resource  # noqa: E402
from localnova.bedrock.cleanup import cleanup  # noqa: E402

ACCOUNT_ARN = "arn:aws:bedrock:us-east-1:123456789012"
PT_OLD = f"{ACCOUNT_ARN}:provisioned-model/pm1abc123def"
PT_NEW = f"{ACCOUNT_ARN}:provisioned-model/pm2abc123def"
DEPLOYMENT_ARN = f"{ACCOUNT_ARN}:custom-model-deployment/dep1abc123de"
CUSTOM_MODEL_ARN = f"{ACCOUNT_ARN}:custom-model/amazon.nova-micro-v1:0:128k/cm1abc123def"
KB_ID, DS_ID = "KB12345678", "DS12345678"
OUTPUT_PREFIX = "localnova/bedrock-test/customization-output/nova-micro/job-a1/"


def _clients():
    made = {}
    for service in ("bedrock", "bedrock-agent", "s3"):
        made[service] = boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    return made


def _pt_response(arn, status="Deleting"):
    return {
        "modelUnits": 1,
        "desiredModelUnits": 1,
        "provisionedModelName": "p",
        "provisionedModelArn": arn,
        "modelArn": CUSTOM_MODEL_ARN,
        "desiredModelArn": CUSTOM_MODEL_ARN,
        "foundationModelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0",
        "status": status,
        "creationTime": "2026-01-01T00:00:00Z",
        "lastModifiedTime": "2026-01-01T00:00:00Z",
    }


def _everything(study_dir):
    """A study that made two throughputs for one model (the units changed between runs), a
    deployment, a job, its custom model and output, a Knowledge Base with a data source, a file."""
    state = BedrockState.load(study_dir)
    state.record(Resource("s3_object", f"s3://{BUCKET}/k.txt", "us-east-1", id="k.txt", details={"bucket": BUCKET, "key": "k.txt"}))
    state.record(Resource("knowledge_base", "knowledge_base", "us-east-1", id=KB_ID, client_token="kb"))
    state.record(Resource("data_source", "data_source", "us-east-1", id=DS_ID, client_token="ds", details={"knowledge_base_id": KB_ID}))
    state.record(Resource("customization_job", "customization_job:nova-micro", "us-east-1", id="job-a1", client_token="job"))
    state.record(
        Resource("s3_prefix", f"s3://{BUCKET}/{OUTPUT_PREFIX}", "us-east-1", id="out", details={"bucket": BUCKET, "prefix": OUTPUT_PREFIX})
    )
    state.record(Resource("custom_model", "custom_model:nova-micro", "us-east-1", id="cm", arn=CUSTOM_MODEL_ARN, client_token="job"))
    for arn, token in ((PT_OLD, "units-1"), (PT_NEW, "units-2")):
        state.record(Resource("provisioned_throughput", "provisioned_throughput:nova-micro", "us-east-1", arn=arn, client_token=token))
    state.record(
        Resource("custom_model_deployment", "custom_model_deployment:nova-micro", "us-east-1", arn=DEPLOYMENT_ARN, client_token="d")
    )
    return state


def _deployment_response(status="Active"):
    return {
        "customModelDeploymentArn": DEPLOYMENT_ARN,
        "modelDeploymentName": "d",
        "modelArn": CUSTOM_MODEL_ARN,
        "createdAt": "2026-01-01T00:00:00Z",
        "status": status,
    }


def _expect_everything_deleted(stubbers, keep_training_output=False):
    bedrock, agent, s3 = stubbers
    # cleanup first asks whether the hosting it lists is still there (reconcile)
    for arn in (PT_OLD, PT_NEW):
        bedrock.add_response("get_provisioned_model_throughput", _pt_response(arn, "InService"), {"provisionedModelId": arn})
    bedrock.add_response("get_custom_model_deployment", _deployment_response(), {"customModelDeploymentIdentifier": DEPLOYMENT_ARN})
    bedrock.add_response("delete_provisioned_model_throughput", {}, {"provisionedModelId": PT_OLD})
    bedrock.add_response("delete_provisioned_model_throughput", {}, {"provisionedModelId": PT_NEW})
    bedrock.add_response("delete_custom_model_deployment", {}, {"customModelDeploymentIdentifier": DEPLOYMENT_ARN})
    # first poll: the old throughput is still being deleted, the others are gone
    bedrock.add_response("get_provisioned_model_throughput", _pt_response(PT_OLD), {"provisionedModelId": PT_OLD})
    bedrock.add_client_error(
        "get_provisioned_model_throughput", "ResourceNotFoundException", expected_params={"provisionedModelId": PT_NEW}
    )
    bedrock.add_client_error(
        "get_custom_model_deployment", "ResourceNotFoundException", expected_params={"customModelDeploymentIdentifier": DEPLOYMENT_ARN}
    )
    # second poll: gone too; only now may the custom model go
    bedrock.add_client_error(
        "get_provisioned_model_throughput", "ResourceNotFoundException", expected_params={"provisionedModelId": PT_OLD}
    )
    job = {
        "jobArn": f"{ACCOUNT_ARN}:model-customization-job/amazon.nova-micro-v1:0:128k/job1abc123de",
        "jobName": "job-a1",
        "outputModelName": "cm",
        "roleArn": ROLE_ARN,
        "status": "Completed",
        "creationTime": "2026-01-01T00:00:00Z",
        "baseModelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0:128k",
        "hyperParameters": {},
        "trainingDataConfig": {"s3Uri": f"s3://{BUCKET}/train.jsonl"},
        "validationDataConfig": {"validators": []},
        "outputDataConfig": {"s3Uri": f"s3://{BUCKET}/{OUTPUT_PREFIX}"},
    }
    bedrock.add_response("get_model_customization_job", job, {"jobIdentifier": "job-a1"})
    bedrock.add_response("delete_custom_model", {}, {"modelIdentifier": "cm"})
    agent.add_response(
        "delete_data_source",
        {"knowledgeBaseId": KB_ID, "dataSourceId": DS_ID, "status": "DELETING"},
        {"knowledgeBaseId": KB_ID, "dataSourceId": DS_ID},
    )
    agent.add_response("delete_knowledge_base", {"knowledgeBaseId": KB_ID, "status": "DELETING"}, {"knowledgeBaseId": KB_ID})
    s3.add_response("delete_object", {}, {"Bucket": BUCKET, "Key": "k.txt"})
    if not keep_training_output:
        s3.add_response(
            "list_objects_v2",
            {"Contents": [{"Key": OUTPUT_PREFIX + "step_wise_training_metrics.csv"}, {"Key": OUTPUT_PREFIX + "model.tar"}]},
            {"Bucket": BUCKET, "Prefix": OUTPUT_PREFIX},
        )
        s3.add_response(
            "delete_objects",
            {},
            {
                "Bucket": BUCKET,
                "Delete": {
                    "Objects": [{"Key": OUTPUT_PREFIX + "step_wise_training_metrics.csv"}, {"Key": OUTPUT_PREFIX + "model.tar"}],
                    "Quiet": True,
                },
            },
        )


@pytest.mark.parametrize("keep_training_output", [False, True])
def test_cleanup_deletes_both_throughputs_waits_for_hosting_then_the_rest(tmp_path, keep_training_output):
    state = _everything(tmp_path)
    assert len(state.live()) == 9  # the second throughput did not replace the first
    clients = _clients()
    stubbers = [Stubber(clients[service]) for service in ("bedrock", "bedrock-agent", "s3")]
    _expect_everything_deleted(stubbers, keep_training_output)
    asked, slept = [], []
    for stubber in stubbers:
        stubber.activate()
    report = cleanup(
        tmp_path,
        lambda summary: asked.append(summary) or True,
        clients=AwsClients("us-east-1", clients, check_credentials=False),
        keep_training_output=keep_training_output,
        sleep=slept.append,
        poll_s=5.0,
    )
    for stubber in stubbers:
        stubber.assert_no_pending_responses()
    assert len(asked) == 1 and PT_OLD in asked[0] and PT_NEW in asked[0]
    assert slept == [5.0]  # one wait: the old throughput's deletion was still running
    assert report.left == []
    after = BedrockState.load(tmp_path)
    assert [r.type for r in after.live()] == (["s3_prefix"] if keep_training_output else [])
    throughputs = after.all_of("provisioned_throughput")
    assert [r.arn for r in throughputs] == [PT_OLD, PT_NEW] and all(r.deleted_at for r in throughputs)
    # the custom model was asked to go only after AWS no longer listed any hosting
    operations = [operation for _service, operation, _params in RECORDED_REQUESTS]
    assert operations.index("DeleteCustomModel") > max(i for i, op in enumerate(operations) if op == "GetProvisionedModelThroughput")


def test_custom_model_is_kept_while_its_hosting_is_still_listed(tmp_path, monkeypatch):
    from localnova.bedrock import cleanup as cleanup_module

    monkeypatch.setattr(cleanup_module, "DELETE_WAIT_S", 0.0)
    state = BedrockState.load(tmp_path)
    state.record(Resource("custom_model", "custom_model:nova-micro", "us-east-1", id="cm", arn=CUSTOM_MODEL_ARN, client_token="job"))
    state.record(Resource("provisioned_throughput", "provisioned_throughput:nova-micro", "us-east-1", arn=PT_OLD, client_token="u1"))
    clients = _clients()
    with Stubber(clients["bedrock"]) as stubber:
        stubber.add_response("get_provisioned_model_throughput", _pt_response(PT_OLD, "InService"), {"provisionedModelId": PT_OLD})
        stubber.add_response("delete_provisioned_model_throughput", {}, {"provisionedModelId": PT_OLD})
        stubber.add_response("get_provisioned_model_throughput", _pt_response(PT_OLD), {"provisionedModelId": PT_OLD})
        report = cleanup(
            tmp_path, lambda summary: True, clients=AwsClients("us-east-1", clients, check_credentials=False), sleep=lambda s: None
        )
        stubber.assert_no_pending_responses()  # no DeleteCustomModel was sent
    assert len(report.left) == 2
    assert {r.type for r in BedrockState.load(tmp_path).live()} == {"custom_model", "provisioned_throughput"}


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


@pytest.mark.parametrize(
    ("identity", "asked_for"),
    [
        ({"arn": PT_OLD, "id": "pm1abc123def", "name": "localnova-pt"}, PT_OLD),
        ({"id": "pm1abc123def", "name": "localnova-pt"}, "pm1abc123def"),
        ({"name": "localnova-pt"}, "localnova-pt"),  # intended: its create call never answered
    ],
)
def test_hosting_is_looked_up_by_arn_else_id_else_the_name_it_was_created_under(identity, asked_for):
    from localnova.bedrock.reconcile import hosting_exists

    resource = Resource("provisioned_throughput", "provisioned_throughput:nova-micro", "us-east-1", **identity)
    clients = _clients()
    with Stubber(clients["bedrock"]) as stubber:
        stubber.add_response("get_provisioned_model_throughput", _pt_response(PT_OLD, "InService"), {"provisionedModelId": asked_for})
        stubber.add_client_error(
            "get_provisioned_model_throughput", "ResourceNotFoundException", expected_params={"provisionedModelId": asked_for}
        )
        aws = AwsClients("us-east-1", clients, check_credentials=False)
        assert hosting_exists(resource, aws) is True
        assert hosting_exists(resource, aws) is False
        stubber.assert_no_pending_responses()


def test_cleanup_takes_the_study_folder_or_its_config(tmp_path):
    """A removed study folder still names its study; a config names its bucket and prefix too."""
    import yaml

    from localnova.bedrock.cleanup import cleanup_target
    from localnova.bedrock.inventory import scope_of_folder
    from localnova.config import config_to_dict

    config = study_config(tmp_path, region="us-west-2")
    config_file = tmp_path / "study.yaml"
    config_file.write_text(yaml.safe_dump(config_to_dict(config)), encoding="utf-8")
    folder, scope = cleanup_target(config_file)
    assert folder == config.study_dir
    assert (scope.study, scope.region, scope.bucket, scope.study_prefix) == ("bedrock-test", "us-west-2", BUCKET, "localnova/bedrock-test/")
    gone = tmp_path / "runs" / "gone-study"
    assert cleanup_target(gone) == (gone, None)
    from_folder = scope_of_folder(gone, BedrockState.load(gone))
    assert (from_folder.study, from_folder.region, from_folder.bucket) == ("gone-study", "us-east-1", None)
