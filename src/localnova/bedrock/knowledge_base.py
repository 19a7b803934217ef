"""Retrieval through a Bedrock Knowledge Base: use one by id, or create one and ingest the corpus.

Creating one: upload the corpus files to S3, create the Knowledge Base (the embedding model
and the vector store that `bedrock.knowledge_base` names), an S3 data source whose chunking
follows `corpus.chunking`, then start an ingestion job and wait for it. Each resource is
recorded in the state file as soon as its create call returns.

`bedrock.knowledge_base` keys:
  id                 an existing Knowledge Base (or retrieval.knowledge_base_id): nothing is created
  name               default: localnova-<study>; cleaned to Bedrock's rules (letters, digits, single hyphens)
  role_arn           the Knowledge Base's service role (default: bedrock.role_arn)
  embedding_model    model id or ARN (default: amazon.titan-embed-text-v2:0)
  storage            Bedrock's storageConfiguration, verbatim, e.g.
                     {type: S3_VECTORS, s3VectorsConfiguration: {indexArn: arn:aws:s3vectors:...}} or
                     {type: OPENSEARCH_SERVERLESS, opensearchServerlessConfiguration: {collectionArn: ...,
                      vectorIndexName: ..., fieldMapping: {vectorField: ..., textField: ..., metadataField: ...}}}
  data_deletion_policy  DELETE (default) or RETAIN
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from localnova.aws.clients import AwsClients, call_with_backoff, wait_until
from localnova.aws.names import NAME_LIMITS, clean_name
from localnova.aws.state import BedrockState, Resource
from localnova.config import ChunkingConfig, StudyConfig
from localnova.errors import UserError
from localnova.types import RetrievedChunk, stable_hash

log = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "amazon.titan-embed-text-v2:0"
CORPUS_SUFFIXES = {".md", ".txt", ".html", ".htm", ".pdf", ".csv", ".doc", ".docx", ".xls", ".xlsx"}


def chunking_configuration(chunking: ChunkingConfig) -> dict[str, Any]:
    """Our chunking settings in Bedrock's vectorIngestionConfiguration.chunkingConfiguration shape."""
    if chunking.strategy == "fixed":
        # Bedrock takes the overlap as a percentage of the chunk (1-99)
        overlap_percent = min(99, max(1, round(100 * chunking.overlap_tokens / chunking.chunk_tokens)))
        return {
            "chunkingStrategy": "FIXED_SIZE",
            "fixedSizeChunkingConfiguration": {"maxTokens": chunking.chunk_tokens, "overlapPercentage": overlap_percent},
        }
    if chunking.strategy == "hierarchical":
        return {
            "chunkingStrategy": "HIERARCHICAL",
            "hierarchicalChunkingConfiguration": {
                "levelConfigurations": [{"maxTokens": chunking.parent_tokens}, {"maxTokens": chunking.child_tokens}],
                "overlapTokens": chunking.overlap_tokens,
            },
        }
    if chunking.strategy == "semantic":
        # Bedrock accepts a breakpoint percentile of 50-99 and a sentence buffer of 0 or 1
        percentile = min(99, max(50, round(chunking.breakpoint_percentile)))
        return {
            "chunkingStrategy": "SEMANTIC",
            "semanticChunkingConfiguration": {
                "maxTokens": chunking.max_chunk_tokens,
                "bufferSize": 0,
                "breakpointPercentileThreshold": percentile,
            },
        }
    return {"chunkingStrategy": "NONE"}


def embedding_model_arn(model: str, region: str) -> str:
    return model if model.startswith("arn:") else f"arn:aws:bedrock:{region}::foundation-model/{model}"


def corpus_files(corpus_path: Path) -> list[Path]:
    if not corpus_path.exists():
        raise UserError(f"corpus.path: {corpus_path} not found")
    files = (
        [corpus_path]
        if corpus_path.is_file()
        else sorted(p for p in corpus_path.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES)
    )
    if not files:
        raise UserError(f"corpus.path: {corpus_path} holds no documents Bedrock can ingest ({', '.join(sorted(CORPUS_SUFFIXES))})")
    return files


def corpus_prefix(config: StudyConfig) -> str:
    assert config.bedrock is not None
    return f"{config.bedrock.s3_prefix.strip('/')}/{config.name}/corpus/"


def doc_id_from_uri(uri: str, prefix: str) -> str:
    """The eval set's doc id of an S3 object: its path under the corpus prefix
    (s3://bucket/localnova/study/corpus/guides/a.md -> guides/a.md)."""
    key = uri.split("://", 1)[-1].split("/", 1)[-1] if uri.startswith("s3://") else uri
    return key[len(prefix) :] if key.startswith(prefix) else PurePosixPath(key).name


@dataclass(frozen=True)
class KnowledgeBaseSettings:
    name: str
    role_arn: str
    embedding_model_arn: str
    storage: dict[str, Any]
    data_deletion_policy: str


def settings_from_config(config: StudyConfig) -> KnowledgeBaseSettings:
    """Check `bedrock.knowledge_base` before anything is created."""
    bedrock = config.bedrock
    if bedrock is None:
        raise UserError("bedrock: the Bedrock path needs a bedrock section")
    raw = dict(bedrock.knowledge_base)
    known = {"id", "name", "role_arn", "embedding_model", "storage", "data_deletion_policy"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"bedrock.knowledge_base.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    role_arn = raw.get("role_arn") or bedrock.role_arn
    if not role_arn:
        raise UserError(
            "bedrock.role_arn: creating a Knowledge Base needs an IAM role ARN (or bedrock.knowledge_base.id for an existing one)"
        )
    storage = raw.get("storage")
    if not isinstance(storage, dict) or "type" not in storage:
        raise UserError(
            "bedrock.knowledge_base.storage: name the vector store as Bedrock's storageConfiguration, "
            "e.g. {type: S3_VECTORS, s3VectorsConfiguration: {indexArn: ...}}"
        )
    if not bedrock.s3_bucket:
        raise UserError("bedrock.s3_bucket: creating a Knowledge Base needs a bucket for the corpus")
    name_limit = NAME_LIMITS[("bedrock-agent", "CreateKnowledgeBase", "name")]
    name = clean_name(str(raw.get("name") or f"localnova-{config.name}"), name_limit - len("-s3"))
    if not name:
        raise UserError("bedrock.knowledge_base.name: needs at least one letter or digit")
    policy = str(raw.get("data_deletion_policy", "DELETE"))
    if policy not in ("DELETE", "RETAIN"):
        raise UserError(f"bedrock.knowledge_base.data_deletion_policy: {policy!r} is not DELETE or RETAIN")
    return KnowledgeBaseSettings(
        name=name,
        role_arn=str(role_arn),
        embedding_model_arn=embedding_model_arn(str(raw.get("embedding_model", DEFAULT_EMBEDDING_MODEL)), bedrock.region),
        storage=storage,
        data_deletion_policy=policy,
    )


def existing_knowledge_base_id(config: StudyConfig) -> str | None:
    kb = config.bedrock.knowledge_base if config.bedrock else {}
    return config.retrieval.knowledge_base_id or kb.get("id")


def upload_corpus(config: StudyConfig, state: BedrockState, clients: AwsClients) -> str:
    """Put every corpus file under s3://bucket/<prefix>/<study>/corpus/, recording each object;
    returns a hash of what is there (keys and contents), which decides whether to re-ingest."""
    assert config.bedrock is not None
    bucket, region = config.bedrock.s3_bucket, config.bedrock.region
    root = config.corpus.path if config.corpus.path.is_dir() else config.corpus.path.parent
    uploaded = {}
    for path in corpus_files(config.corpus.path):
        key = corpus_prefix(config) + path.relative_to(root).as_posix()
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()
        uri = f"s3://{bucket}/{key}"
        known = state.find("s3_object", key=uri)
        if known is None or known.details.get("sha") != digest:
            call_with_backoff(clients.s3.put_object, Bucket=bucket, Key=key, Body=body)
            # one object per key: an upload over it is the same resource, with new content
            listed = state.record(Resource("s3_object", uri, region, id=key, client_token=uri, details={"bucket": bucket, "key": key}))
            state.update(listed, details={**listed.details, "sha": digest})
        uploaded[key] = digest
    return stable_hash(uploaded, 40)


def ensure_knowledge_base(
    config: StudyConfig,
    state: BedrockState,
    clients: AwsClients,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = 15.0,
) -> str:
    """The Knowledge Base id the rag arms retrieve from: the configured one, the one this study
    already made (state file), or a new one with the corpus ingested."""
    existing = existing_knowledge_base_id(config)
    if existing:
        return str(existing)
    settings = settings_from_config(config)
    assert config.bedrock is not None
    region, bucket = config.bedrock.region, config.bedrock.s3_bucket
    corpus_sha = upload_corpus(config, state, clients)

    kb_token = stable_hash(
        {"study": config.name, "kb": settings.name, "storage": settings.storage, "embed": settings.embedding_model_arn}, 40
    )
    kb = state.find("knowledge_base", key="knowledge_base", client_token=kb_token)
    if kb is None:
        response = call_with_backoff(
            clients.agent.create_knowledge_base,
            clientToken=kb_token,
            name=settings.name,
            roleArn=settings.role_arn,
            knowledgeBaseConfiguration={
                "type": "VECTOR",
                "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": settings.embedding_model_arn},
            },
            storageConfiguration=settings.storage,
            tags={"localnova-study": config.name},
        )["knowledgeBase"]
        kb = state.record(
            Resource(
                "knowledge_base",
                "knowledge_base",
                region,
                id=response["knowledgeBaseId"],
                arn=response.get("knowledgeBaseArn", ""),
                client_token=kb_token,
                details={"name": settings.name},
            )
        )
    kb_id = kb.id
    wait_until(
        lambda: clients.agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]["status"],
        {"ACTIVE", "Active"},
        {"FAILED", "DELETE_UNSUCCESSFUL"},
        "knowledge base",
        poll_s=poll_s,
        sleep=sleep,
    )

    chunking = chunking_configuration(config.corpus.chunking)
    ds_token = stable_hash({"kb": kb_id, "chunking": chunking, "prefix": corpus_prefix(config)}, 40)
    source = state.find("data_source", key="data_source", client_token=ds_token)
    if source is None:
        response = call_with_backoff(
            clients.agent.create_data_source,
            knowledgeBaseId=kb_id,
            clientToken=ds_token,
            name=f"{settings.name}-s3"[:100],
            dataSourceConfiguration={
                "type": "S3",
                "s3Configuration": {"bucketArn": f"arn:aws:s3:::{bucket}", "inclusionPrefixes": [corpus_prefix(config)]},
            },
            vectorIngestionConfiguration={"chunkingConfiguration": chunking},
            dataDeletionPolicy=settings.data_deletion_policy,
        )["dataSource"]
        source = state.record(
            Resource(
                "data_source",
                "data_source",
                region,
                id=response["dataSourceId"],
                client_token=ds_token,
                details={"knowledge_base_id": kb_id},
            )
        )

    # Ingestion syncs the data source with what is in S3 now. A finished one is kept while the
    # corpus is unchanged; a changed corpus is a new token, so a new job that re-syncs it.
    if source.details.get("ingested_corpus_sha") != corpus_sha:
        job = call_with_backoff(
            clients.agent.start_ingestion_job,
            knowledgeBaseId=kb_id,
            dataSourceId=source.id,
            clientToken=stable_hash({"ds": source.id, "corpus": corpus_sha}, 40),
        )["ingestionJob"]
        job_id = job["ingestionJobId"]

        def status() -> str:
            return clients.agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=source.id, ingestionJobId=job_id)["ingestionJob"][
                "status"
            ]

        try:
            wait_until(status, {"COMPLETE"}, {"FAILED", "STOPPED"}, "ingestion", poll_s=poll_s, sleep=sleep)
        except RuntimeError as error:
            raise UserError(
                f"knowledge base {kb_id}: ingestion job {job_id} {error}; see its failureReasons in the Bedrock console"
            ) from None
        state.update(source, details={**source.details, "ingested_corpus_sha": corpus_sha, "ingestion_job_id": job_id})
    return kb_id


class KnowledgeBaseRetriever:
    """The rag arms' retriever on the Bedrock path: `retrieve`, then the pipeline calls converse."""

    def __init__(
        self,
        knowledge_base_id: str,
        corpus_s3_prefix: str,
        region: str = "us-east-1",
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.knowledge_base_id = knowledge_base_id
        self.corpus_s3_prefix = corpus_s3_prefix
        self._sleep = sleep
        if client is None:
            client = AwsClients(region).agent_runtime
        self.client = client

    def search(self, queries: list[str], top_k: int) -> list[list[RetrievedChunk]]:
        return [self._search_one(query, top_k) for query in queries]

    def describe(self) -> dict[str, Any]:
        return {"knowledge_base_id": self.knowledge_base_id}

    def _search_one(self, query: str, top_k: int) -> list[RetrievedChunk]:
        response = call_with_backoff(
            self.client.retrieve,
            knowledgeBaseId=self.knowledge_base_id,
            retrievalQuery={"text": query},
            retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": top_k}},
            sleep=self._sleep,
        )
        chunks = []
        for result in response.get("retrievalResults", [])[:top_k]:
            uri = result.get("location", {}).get("s3Location", {}).get("uri", "")
            doc_id = doc_id_from_uri(uri, self.corpus_s3_prefix) if uri else str(result.get("documentId", ""))
            text = result.get("content", {}).get("text", "")
            chunk_id = str(result.get("metadata", {}).get("x-amz-bedrock-kb-chunk-id") or f"{doc_id}#{stable_hash(text, 12)}")
            chunks.append(RetrievedChunk(chunk_id=chunk_id, doc_id=doc_id, score=float(result.get("score", 0.0)), text=text))
        return chunks
