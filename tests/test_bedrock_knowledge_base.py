"""Knowledge Base: chunking mapped to Bedrock's strategies, creation against moto (S3, the
Knowledge Base) and the Stubber (data source, ingestion), retrieval doc ids for recall@k."""

from __future__ import annotations

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.stub import ANY, Stubber  # noqa: E402

from bedrock_fixtures import BUCKET, study_config  # noqa: E402
from localnova.bedrock.aws import AwsClients  # noqa: E402
from localnova.bedrock.knowledge_base import KnowledgeBaseRetriever, chunking_configuration, ensure_knowledge_base  # noqa: E402
from localnova.bedrock.state import BedrockState  # noqa: E402
from localnova.config import ChunkingConfig  # noqa: E402
from localnova.errors import UserError  # noqa: E402


class SplitClient:
    """moto answers most operations; the Stubber answers the ones moto lacks."""

    def __init__(self, real, stubbed, stubbed_operations):
        self._real, self._stubbed, self._ops = real, stubbed, set(stubbed_operations)

    def __getattr__(self, name):
        return getattr(self._stubbed if name in self._ops else self._real, name)


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


def test_create_knowledge_base_ingest_and_resume(aws_env, tmp_path):
    config = study_config(tmp_path)
    real_agent = boto3.client("bedrock-agent", region_name="us-east-1")
    stub_agent = boto3.client("bedrock-agent", region_name="us-east-1")
    agent = SplitClient(real_agent, stub_agent, {"create_data_source", "start_ingestion_job", "get_ingestion_job"})
    stubber = Stubber(stub_agent)
    stubber.add_response(
        "create_data_source",
        {
            "dataSource": {
                "knowledgeBaseId": "kb",
                "dataSourceId": "DS12345678",
                "name": "n",
                "status": "AVAILABLE",
                "dataSourceConfiguration": {"type": "S3"},
                "createdAt": "2026-01-01T00:00:00Z",
                "updatedAt": "2026-01-01T00:00:00Z",
            }
        },
        {
            "knowledgeBaseId": ANY,
            "clientToken": ANY,
            "name": ANY,
            "dataSourceConfiguration": {
                "type": "S3",
                "s3Configuration": {"bucketArn": f"arn:aws:s3:::{BUCKET}", "inclusionPrefixes": ["localnova/bedrock-test/corpus/"]},
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
    job = {
        "knowledgeBaseId": "kb",
        "dataSourceId": "DS12345678",
        "ingestionJobId": "JOB1234567",
        "startedAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-01-01T00:00:00Z",
    }
    stubber.add_response(
        "start_ingestion_job",
        {"ingestionJob": {**job, "status": "STARTING"}},
        {"knowledgeBaseId": ANY, "dataSourceId": "DS12345678", "clientToken": ANY},
    )
    stubber.add_response(
        "get_ingestion_job",
        {"ingestionJob": {**job, "status": "IN_PROGRESS"}},
        {"knowledgeBaseId": ANY, "dataSourceId": "DS12345678", "ingestionJobId": "JOB1234567"},
    )
    stubber.add_response(
        "get_ingestion_job",
        {"ingestionJob": {**job, "status": "COMPLETE"}},
        {"knowledgeBaseId": ANY, "dataSourceId": "DS12345678", "ingestionJobId": "JOB1234567"},
    )
    clients = AwsClients("us-east-1", {"bedrock-agent": agent})
    with stubber:
        kb_id = ensure_knowledge_base(config, BedrockState.load(config.study_dir), clients, sleep=lambda s: None)
        # a rerun creates nothing: the state file lists the Knowledge Base, data source and ingestion
        assert ensure_knowledge_base(config, BedrockState.load(config.study_dir), clients, sleep=lambda s: None) == kb_id
        stubber.assert_no_pending_responses()
    assert [kb["knowledgeBaseId"] for kb in real_agent.list_knowledge_bases()["knowledgeBaseSummaries"]] == [kb_id]
    keys = sorted(o["Key"] for o in boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == ["localnova/bedrock-test/corpus/guides/setup.md", "localnova/bedrock-test/corpus/lamps.md"]


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
