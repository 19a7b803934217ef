"""Retrieval through a Bedrock Knowledge Base: use one by id, or create one and ingest the corpus.

Creating one: put the corpus files in S3 (and delete from S3 the ones no longer in the corpus,
so the data source stays in step with it), create the Knowledge Base (the embedding model and
the vector store that `bedrock.knowledge_base` names), an S3 data source whose chunking
follows `corpus.chunking`, then start an ingestion job and wait for it. Each resource, and
each ingestion with the tokens it embeds, is written to the state file before its call.
Names are hash-first (aws/names.py), so two studies never share a Knowledge Base by accident.

`bedrock.knowledge_base` keys:
  id                 an existing Knowledge Base (or retrieval.knowledge_base_id): nothing is created
  name               the readable part of the name (default: localnova-<study>), after its hash
  role_arn           the Knowledge Base's service role (default: bedrock.role_arn)
  embedding_model    model id or ARN (default: amazon.titan-embed-text-v2:0)
  storage            Bedrock's storageConfiguration, verbatim, e.g.
                     {type: S3_VECTORS, s3VectorsConfiguration: {indexArn: arn:aws:s3vectors:...}} or
                     {type: OPENSEARCH_SERVERLESS, opensearchServerlessConfiguration: {collectionArn: ...,
                      vectorIndexName: ..., fieldMapping: {vectorField: ..., textField: ..., metadataField: ...}}}
  data_deletion_policy  DELETE (default) or RETAIN
  vector_store_usd_per_month    what the vector store bills a month, counted by the estimate and
                                the spend guard (the price file has no figure for a store)
  vector_store_billed_elsewhere true when the store's bill is counted elsewhere (a shared one);
                                with neither, the estimate refuses to run
Each create is made once whatever happened before (bedrock/reconcile.create_once): an entry
left intended by an earlier run is looked up by name first, and a create refused because the
name is taken is looked up and adopted. An ingestion refused because another is running
(ConflictException) waits for that one, then starts its own.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from localnova.aws.clients import AwsClients, call_with_backoff, error_code, wait_until
from localnova.aws.names import client_token, resource_name
from localnova.aws.state import BedrockState, Resource
from localnova.bedrock.ingestion import ask_guard, ingest_corpus
from localnova.bedrock.reconcile import create_once
from localnova.bedrock.uploads import put_object_once
from localnova.budget import active_spend_guard
from localnova.config import ChunkingConfig, StudyConfig
from localnova.costs import STORAGE_MONTHS, VECTOR_STORE_KEYS, VectorStorePrice, count_tokens_estimate
from localnova.errors import UserError
from localnova.types import RetrievedChunk, stable_hash

log = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "amazon.titan-embed-text-v2:0"
CORPUS_SUFFIXES = {".md", ".txt", ".html", ".htm", ".pdf", ".csv", ".doc", ".docx", ".xls", ".xlsx"}
KB_NAME_LIMIT = ("bedrock-agent", "CreateKnowledgeBase", "name")
DS_NAME_LIMIT = ("bedrock-agent", "CreateDataSource", "name")


def chunking_configuration(chunking: ChunkingConfig) -> dict[str, Any]:
    """Our chunking settings in Bedrock's vectorIngestionConfiguration.chunkingConfiguration
    shape, unclamped: a setting Bedrock refuses is refused by the request check (bedrock/
    requests.py) naming its key, never quietly changed into another study."""
    if chunking.strategy == "fixed":
        # Bedrock takes the overlap as a percentage of the chunk
        return {
            "chunkingStrategy": "FIXED_SIZE",
            "fixedSizeChunkingConfiguration": {
                "maxTokens": chunking.chunk_tokens,
                "overlapPercentage": round(100 * chunking.overlap_tokens / chunking.chunk_tokens),
            },
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
        return {
            "chunkingStrategy": "SEMANTIC",
            "semanticChunkingConfiguration": {
                "maxTokens": chunking.max_chunk_tokens,
                "bufferSize": 0,
                "breakpointPercentileThreshold": round(chunking.breakpoint_percentile),
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


def text_tokens(body: bytes) -> int:
    """Tokens an embedding model reads in a file, by the one estimate (costs.py)."""
    return count_tokens_estimate(body.decode("utf-8", errors="ignore"))


@dataclass(frozen=True)
class KnowledgeBaseSettings:
    name: str
    token: str
    role_arn: str
    embedding_model: str
    embedding_model_arn: str
    storage: dict[str, Any]
    data_deletion_policy: str


def settings_from_config(config: StudyConfig) -> KnowledgeBaseSettings:
    """Check `bedrock.knowledge_base` before anything is created."""
    bedrock = config.bedrock
    if bedrock is None:
        raise UserError("bedrock: the Bedrock path needs a bedrock section")
    raw = dict(bedrock.knowledge_base)
    known = {"id", "name", "role_arn", "embedding_model", "storage", "data_deletion_policy", *VECTOR_STORE_KEYS}
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
    readable = str(raw.get("name") or f"localnova-{config.name}")
    if not any(character.isalnum() for character in readable):
        raise UserError("bedrock.knowledge_base.name: needs at least one letter or digit")
    policy = str(raw.get("data_deletion_policy", "DELETE"))
    if policy not in ("DELETE", "RETAIN"):
        raise UserError(f"bedrock.knowledge_base.data_deletion_policy: {policy!r} is not DELETE or RETAIN")
    embedding = str(raw.get("embedding_model", DEFAULT_EMBEDDING_MODEL))
    embed_arn = embedding_model_arn(embedding, bedrock.region)
    token = client_token({"study": config.name, "kb": readable, "storage": storage, "embed": embed_arn})
    return KnowledgeBaseSettings(
        name=resource_name(KB_NAME_LIMIT, token, readable),
        token=token,
        role_arn=str(role_arn),
        embedding_model=embedding.rsplit("/", 1)[-1],
        embedding_model_arn=embed_arn,
        storage=storage,
        data_deletion_policy=policy,
    )


def existing_knowledge_base_id(config: StudyConfig) -> str | None:
    kb = config.bedrock.knowledge_base if config.bedrock else {}
    return config.retrieval.knowledge_base_id or kb.get("id")


def knowledge_base_request(config: StudyConfig, settings: KnowledgeBaseSettings) -> dict[str, Any]:
    return {
        "clientToken": settings.token,
        "name": settings.name,
        "roleArn": settings.role_arn,
        "knowledgeBaseConfiguration": {
            "type": "VECTOR",
            "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": settings.embedding_model_arn},
        },
        "storageConfiguration": settings.storage,
        "tags": {"localnova-study": config.name},
    }


def data_source_request(config: StudyConfig, settings: KnowledgeBaseSettings, kb_id: str) -> dict[str, Any]:
    assert config.bedrock is not None
    chunking = chunking_configuration(config.corpus.chunking)
    token = client_token({"kb": kb_id, "chunking": chunking, "prefix": corpus_prefix(config)})
    return {
        "knowledgeBaseId": kb_id,
        "clientToken": token,
        "name": resource_name(DS_NAME_LIMIT, token, settings.name.split("-", 1)[-1], "s3"),
        "dataSourceConfiguration": {
            "type": "S3",
            "s3Configuration": {"bucketArn": f"arn:aws:s3:::{config.bedrock.s3_bucket}", "inclusionPrefixes": [corpus_prefix(config)]},
        },
        "vectorIngestionConfiguration": {"chunkingConfiguration": chunking},
        "dataDeletionPolicy": settings.data_deletion_policy,
    }


def retrieve_request(knowledge_base_id: str, query: str, top_k: int) -> dict[str, Any]:
    return {
        "knowledgeBaseId": knowledge_base_id,
        "retrievalQuery": {"text": query},
        "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": top_k}},
    }


def sync_corpus(config: StudyConfig, state: BedrockState, clients: AwsClients) -> tuple[str, int]:
    """Put every corpus file under s3://bucket/<prefix>/<study>/corpus/ and delete the objects
    of files no longer in the corpus; returns a hash of what is there (keys and contents),
    which decides whether to ingest again, and the tokens an ingestion embeds."""
    assert config.bedrock is not None
    bucket, region = config.bedrock.s3_bucket, config.bedrock.region
    root = config.corpus.path if config.corpus.path.is_dir() else config.corpus.path.parent
    uploaded, tokens = {}, 0
    for path in corpus_files(config.corpus.path):
        key = corpus_prefix(config) + path.relative_to(root).as_posix()
        body = path.read_bytes()
        put_object_once(state, clients, region, str(bucket), key, body)
        uploaded[key] = hashlib.sha256(body).hexdigest()
        tokens += text_tokens(body)
    for entry in state.live():
        key = str(entry.details.get("key", ""))
        if (
            entry.type == "s3_object"
            and entry.details.get("bucket") == bucket
            and key.startswith(corpus_prefix(config))
            and key not in uploaded
        ):
            log.info("corpus file %s is gone: deleting s3://%s/%s", key, bucket, key)
            call_with_backoff(clients.s3.delete_object, Bucket=bucket, Key=key)
            state.mark_deleted(entry)
    return stable_hash(uploaded, 40), tokens


def ensure_knowledge_base(
    config: StudyConfig,
    state: BedrockState,
    clients: AwsClients,
    sleep: Callable[[float], None] | None = None,
    poll_s: float = 15.0,
) -> str:
    """The Knowledge Base id the rag arms retrieve from: the configured one, the one this study
    already made (state file), or a new one with the corpus ingested."""
    existing = existing_knowledge_base_id(config)
    if existing:
        return str(existing)
    settings = settings_from_config(config)
    assert config.bedrock is not None
    region = config.bedrock.region
    corpus_sha, corpus_tokens = sync_corpus(config, state, clients)

    kb = state.find("knowledge_base", key="knowledge_base", client_token=settings.token)
    if kb is None or kb.status != "created":
        vector_store = VectorStorePrice.from_settings(config.bedrock.knowledge_base)
        if kb is None:
            ask_guard(f"knowledge base {settings.name} (its vector store)", STORAGE_MONTHS * (vector_store.usd_per_month or 0.0))
        entry = kb or state.intend(
            Resource(
                "knowledge_base",
                "knowledge_base",
                region,
                name=settings.name,
                client_token=settings.token,
                details={"name": settings.name, "s3_prefix": config.bedrock.s3_prefix, **vector_store.to_details()},
            )
        )
        request = knowledge_base_request(config, settings)
        answer = create_once(
            state, entry, clients, lambda: call_with_backoff(clients.agent.create_knowledge_base, **request), fresh=kb is None
        )
        kb = (
            entry
            if answer is None
            else state.confirm(
                entry, id=answer["knowledgeBase"]["knowledgeBaseId"], arn=answer["knowledgeBase"].get("knowledgeBaseArn", "")
            )
        )
    kb_id = kb.id
    wait_until(
        lambda: clients.agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]["status"],
        {"ACTIVE", "Active"},
        {"FAILED", "DELETE_UNSUCCESSFUL"},
        f"knowledge base {kb_id}",
        poll_s=poll_s,
        sleep=sleep,
    )

    request = data_source_request(config, settings, kb_id)
    source = state.find("data_source", key="data_source", client_token=request["clientToken"])
    if source is None or source.status != "created":
        entry = source or state.intend(
            Resource(
                "data_source",
                "data_source",
                region,
                name=request["name"],
                client_token=request["clientToken"],
                details={"knowledge_base_id": kb_id},
            )
        )
        answer = create_once(
            state, entry, clients, lambda: call_with_backoff(clients.agent.create_data_source, **request), fresh=source is None
        )
        source = entry if answer is None else state.confirm(entry, id=answer["dataSource"]["dataSourceId"])

    if source.details.get("ingested_corpus_sha") != corpus_sha:
        ingest_corpus(config, state, clients, source, kb_id, (corpus_sha, corpus_tokens), settings.embedding_model, poll_s, sleep)
    return kb_id


class KnowledgeBaseRetriever:
    """The rag arms' retriever on the Bedrock path: `retrieve`, then the pipeline calls converse.
    Each retrieve embeds its query, so it is reserved with the active spend guard before it is
    sent and settled when it answers."""

    def __init__(
        self,
        knowledge_base_id: str,
        corpus_s3_prefix: str,
        region: str = "us-east-1",
        client: Any = None,
        sleep: Callable[[float], None] | None = None,
        embed_price_per_1k: float = 0.0,
    ):
        self.knowledge_base_id = knowledge_base_id
        self.corpus_s3_prefix = corpus_s3_prefix
        self.embed_price_per_1k = embed_price_per_1k
        self._sleep = sleep
        if client is None:
            client = AwsClients(region).agent_runtime
        self.client = client

    def search(self, queries: list[str], top_k: int) -> list[list[RetrievedChunk]]:
        return [self._search_one(query, top_k) for query in queries]

    def describe(self) -> dict[str, Any]:
        return {"knowledge_base_id": self.knowledge_base_id}

    def _search_one(self, query: str, top_k: int) -> list[RetrievedChunk]:
        guard = active_spend_guard()
        cost = count_tokens_estimate(query) / 1000 * self.embed_price_per_1k
        reservation = guard.reserve("a retrieve call", cost) if guard is not None else None
        try:
            response = call_with_backoff(self.client.retrieve, **retrieve_request(self.knowledge_base_id, query, top_k), sleep=self._sleep)
        except BaseException as error:
            if guard is not None and reservation is not None:
                if error_code(error):
                    guard.release(reservation)  # AWS refused it: nothing embedded, nothing billed
                else:
                    guard.lost(reservation, "a retrieve call")
            raise
        if guard is not None and reservation is not None:
            guard.settle_unstored(reservation, "a retrieve call", cost)  # the store holds no retrieve
        chunks = []
        for result in response.get("retrievalResults", [])[:top_k]:
            uri = result.get("location", {}).get("s3Location", {}).get("uri", "")
            doc_id = doc_id_from_uri(uri, self.corpus_s3_prefix) if uri else str(result.get("documentId", ""))
            text = result.get("content", {}).get("text", "")
            chunk_id = str(result.get("metadata", {}).get("x-amz-bedrock-kb-chunk-id") or f"{doc_id}#{stable_hash(text, 12)}")
            chunks.append(RetrievedChunk(chunk_id=chunk_id, doc_id=doc_id, score=float(result.get("score", 0.0)), text=text))
        return chunks
