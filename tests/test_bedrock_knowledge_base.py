"""Knowledge Base: chunking mapped to Bedrock's strategies, creation, resume and re-ingestion
through the Stubber with exact parameters, retrieval doc ids for recall@k."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.stub import ANY, Stubber  # noqa: E402

from bedrock_fixtures import BUCKET, ROLE_ARN, recorded, study_config  # noqa: E402
from localnova.aws.clients import AwsClients  # noqa: E402
from localnova.aws.state import BedrockState  # noqa: E402
from localnova.bedrock.knowledge_base import KnowledgeBaseRetriever, chunking_configuration, ensure_knowledge_base  # noqa: E402
from localnova.config import ChunkingConfig, select_run  # noqa: E402
from localnova.errors import UserError  # noqa: E402


def test_chunking_maps_to_bedrock_strategies():
    assert chunking_configuration(ChunkingConfig(strategy="fixed", chunk_tokens=300, overlap_tokens=60)) == {
        "chunkingStrategy": "FIXED_SIZE",
        "fixedSizeChunkingConfiguration": {"maxTokens": 300, "overlapPercentage": 20},
    }
    hierarchical = chunking_configuration(ChunkingConfig(strategy="hierarchical", parent_tokens=1500, child_tokens=300, overlap_tokens=60))
    assert hierarchical["hierarchicalChunkingConfiguration"]["levelConfigurations"] == [{"maxTokens": 1500}, {"maxTokens": 300}]
    semantic = chunking_configuration(ChunkingConfig(strategy="semantic", breakpoint_percentile=95, max_chunk_tokens=400))
    assert semantic == {
        "chunkingStrategy": "SEMANTIC",
        "semanticChunkingConfiguration": {"maxTokens": 400, "bufferSize": 0, "breakpointPercentileThreshold": 95},
    }
    assert chunking_configuration(ChunkingConfig(strategy="none")) == {"chunkingStrategy": "NONE"}
    # nothing is clamped into range any more: the request check refuses it, naming the key
    zero = chunking_configuration(ChunkingConfig(strategy="fixed", chunk_tokens=300, overlap_tokens=0))
    assert zero["fixedSizeChunkingConfiguration"]["overlapPercentage"] == 0


KB_ID, DS_ID = "KB12345678", "DS12345678"


def _kb_clients():
    return {
        service: boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
        for service in ("bedrock-agent", "s3")
    }


def _ingestion(agent_stub, job_id, token=ANY):
    job = {"knowledgeBaseId": KB_ID, "dataSourceId": DS_ID, "ingestionJobId": job_id, "startedAt": "2026-01-01T00:00:00Z"}
    job["updatedAt"] = job["startedAt"]
    agent_stub.add_response(
        "start_ingestion_job",
        {"ingestionJob": {**job, "status": "STARTING"}},
        {"knowledgeBaseId": KB_ID, "dataSourceId": DS_ID, "clientToken": token},
    )
    agent_stub.add_response(
        "get_ingestion_job",
        {"ingestionJob": {**job, "status": "COMPLETE"}},
        {"knowledgeBaseId": KB_ID, "dataSourceId": DS_ID, "ingestionJobId": job_id},
    )


def _kb():
    return {
        "knowledgeBaseId": KB_ID,
        "name": "n",
        "knowledgeBaseArn": f"arn:aws:bedrock:us-east-1:123456789012:knowledge-base/{KB_ID}",
        "roleArn": ROLE_ARN,
        "knowledgeBaseConfiguration": {"type": "VECTOR"},
        "status": "ACTIVE",
        "createdAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-01-01T00:00:00Z",
    }


def _kb_active(agent_stub):
    agent_stub.add_response("get_knowledge_base", {"knowledgeBase": _kb()}, {"knowledgeBaseId": KB_ID})


def test_create_knowledge_base_ingest_resume_and_reingest_a_changed_corpus(tmp_path):
    config = study_config(tmp_path)
    config = config.model_copy(update={"name": "nova.v2"})  # a dot: refused by Bedrock unless cleaned
    clients = _kb_clients()
    agent_stub, s3_stub = Stubber(clients["bedrock-agent"]), Stubber(clients["s3"])
    prefix = "localnova/nova.v2/corpus/"
    for key, body in (("guides/setup.md", b"# Setup\nPlug the hub in first.\n"), ("lamps.md", b"# Lamps\nThe F4 lamp draws 36 watts.\n")):
        s3_stub.add_response("put_object", {}, {"Bucket": BUCKET, "Key": prefix + key, "Body": body})
    agent_stub.add_response(
        "create_knowledge_base",
        {"knowledgeBase": _kb()},
        {
            "clientToken": ANY,
            "name": ANY,  # hash-first: checked below
            "roleArn": ROLE_ARN,
            "knowledgeBaseConfiguration": {
                "type": "VECTOR",
                "vectorKnowledgeBaseConfiguration": {
                    "embeddingModelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"
                },
            },
            "storageConfiguration": config.bedrock.knowledge_base["storage"],
            "tags": {"localnova-study": "nova.v2"},
        },
    )
    _kb_active(agent_stub)
    source = {
        "knowledgeBaseId": KB_ID,
        "dataSourceId": DS_ID,
        "name": "n",
        "status": "AVAILABLE",
        "dataSourceConfiguration": {"type": "S3"},
        "createdAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-01-01T00:00:00Z",
    }
    agent_stub.add_response(
        "create_data_source",
        {"dataSource": source},
        {
            "knowledgeBaseId": KB_ID,
            "clientToken": ANY,
            "name": ANY,  # hash-first: checked below
            "dataSourceConfiguration": {
                "type": "S3",
                "s3Configuration": {"bucketArn": f"arn:aws:s3:::{BUCKET}", "inclusionPrefixes": [prefix]},
            },
            "vectorIngestionConfiguration": {
                "chunkingConfiguration": {
                    "chunkingStrategy": "FIXED_SIZE",
                    "fixedSizeChunkingConfiguration": {"maxTokens": 200, "overlapPercentage": 15},
                }
            },
            "dataDeletionPolicy": "DELETE",
        },
    )
    _ingestion(agent_stub, "JOB1234567")
    _kb_active(agent_stub)  # the rerun: nothing uploaded, created or ingested again
    s3_stub.add_response(
        "put_object", {}, {"Bucket": BUCKET, "Key": prefix + "lamps.md", "Body": b"# Lamps\nThe F4 lamp draws 40 watts.\n"}
    )
    _kb_active(agent_stub)  # the corpus changed: one file uploaded, one new ingestion
    _ingestion(agent_stub, "JOB7654321")
    aws = AwsClients("us-east-1", clients, check_credentials=False)
    with agent_stub, s3_stub:
        assert ensure_knowledge_base(config, BedrockState.load(config.study_dir), aws, sleep=lambda s: None) == KB_ID
        assert ensure_knowledge_base(config, BedrockState.load(config.study_dir), aws, sleep=lambda s: None) == KB_ID
        (Path(config.corpus.path) / "lamps.md").write_text("# Lamps\nThe F4 lamp draws 40 watts.\n", encoding="utf-8")
        assert ensure_knowledge_base(config, BedrockState.load(config.study_dir), aws, sleep=lambda s: None) == KB_ID
        agent_stub.assert_no_pending_responses()
        s3_stub.assert_no_pending_responses()
    tokens = [params["clientToken"] for params in recorded("StartIngestionJob")]
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    [kb_name] = [params["name"] for params in recorded("CreateKnowledgeBase")]
    [ds_name] = [params["name"] for params in recorded("CreateDataSource")]
    assert re.fullmatch(r"[0-9a-f]{10}-localnova-nova-v2", kb_name) and re.fullmatch(r"[0-9a-f]{10}-localnova-nova-v2-s3", ds_name)
    objects = BedrockState.load(config.study_dir).all_of("s3_object")
    assert len(objects) == 2  # the new upload of lamps.md is the same object, with a new hash


def test_knowledge_base_without_storage_is_refused_before_upload(aws_env, tmp_path):
    config = study_config(tmp_path, knowledge_base={})
    with pytest.raises(UserError, match="bedrock.knowledge_base.storage"):
        ensure_knowledge_base(config, BedrockState.load(config.study_dir), AwsClients("us-east-1"))
    assert "Contents" not in boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket=BUCKET)


def test_retrieve_gives_doc_ids_relative_to_the_corpus_prefix():
    client = boto3.client("bedrock-agent-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    prefix = "localnova/study/corpus/"
    results = [
        {
            "content": {"text": "The F4 lamp draws 36 watts."},
            "location": {"type": "S3", "s3Location": {"uri": f"s3://b/{prefix}lamps.md"}},
            "score": 0.9,
            "metadata": {"x-amz-bedrock-kb-chunk-id": "c1"},
        },
        {
            "content": {"text": "Plug the hub in first."},
            "location": {"type": "S3", "s3Location": {"uri": f"s3://b/{prefix}guides/setup.md"}},
            "score": 0.5,
        },
    ]
    with Stubber(client) as stubber:
        stubber.add_response(
            "retrieve",
            {"retrievalResults": results},
            {
                "knowledgeBaseId": "KB12345678",
                "retrievalQuery": {"text": "watts?"},
                "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 2}},
            },
        )
        [chunks] = KnowledgeBaseRetriever("KB12345678", prefix, client=client).search(["watts?"], top_k=2)
    assert [c.doc_id for c in chunks] == ["lamps.md", "guides/setup.md"]
    assert chunks[0].chunk_id == "c1" and chunks[0].score == 0.9 and chunks[1].text == "Plug the hub in first."


def test_knowledge_base_names_are_hash_first_so_long_study_names_never_collide(tmp_path):
    from localnova.bedrock.knowledge_base import data_source_request, settings_from_config

    long_name = "a-study-name-long-enough-that-the-name-limit-of-one-hundred-characters-cuts-what-follows-it-x"
    first = study_config(tmp_path).model_copy(update={"name": long_name + "1"})
    second = first.model_copy(update={"name": long_name + "2"})
    names = []
    for config in (first, second):
        settings = settings_from_config(config)
        names.append((settings.name, data_source_request(config, settings, "KB12345678")["name"]))
    assert names[0][0] != names[1][0] and names[0][1] != names[1][1]
    for kb_name, ds_name in names:
        assert re.match(r"^[0-9a-f]{10}-", kb_name) and re.match(r"^[0-9a-f]{10}-", ds_name)
        assert len(kb_name) <= 100 and len(ds_name) <= 100


def test_a_file_deleted_from_the_corpus_leaves_s3_and_the_knowledge_base(monkeypatch, fast_tmp, boto_clients):
    """The data source is kept in step with the corpus: the removed file's object is deleted
    and a new ingestion runs, which drops it from the Knowledge Base."""
    from bedrock_fake_study import Harness

    harness = Harness(monkeypatch, fast_tmp, boto_clients, "on_demand")
    harness.config = select_run(harness.config, arms=["base", "rag"])
    assert harness.run() == ("ok", "")
    keys = lambda: sorted(key for _, key in harness.account.objects if "/corpus/" in key)  # noqa: E731
    assert keys() == ["localnova/bedrock-test/corpus/guides/setup.md", "localnova/bedrock-test/corpus/lamps.md"]
    (Path(harness.config.corpus.path) / "guides" / "setup.md").unlink()
    assert harness.run() == ("ok", "")
    assert keys() == ["localnova/bedrock-test/corpus/lamps.md"]
    assert [operation for _, operation in harness.account.calls].count("StartIngestionJob") == 2
    deleted = BedrockState.load(harness.config.study_dir).all_of(
        "s3_object", key=f"s3://{BUCKET}/localnova/bedrock-test/corpus/guides/setup.md"
    )
    assert [entry.status for entry in deleted] == ["deleted"]
