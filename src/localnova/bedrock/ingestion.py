"""Ingesting the corpus into a Knowledge Base's data source, once, and only after the spend
guard said yes: an ingestion written down by an earlier run is found in the account before
another is started (its token may be forgotten), and one refused because another is running
(ConflictException) waits for that one first."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from localnova.aws.clients import AwsClients, call_with_backoff, error_code, wait_until
from localnova.aws.state import BedrockState, Resource, utc_now
from localnova.budget import active_spend_guard
from localnova.config import StudyConfig
from localnova.costs import prices_for
from localnova.errors import UserError
from localnova.types import stable_hash

log = logging.getLogger(__name__)


def ask_guard(step: str, cost_usd: float) -> None:
    """Ask the run's spend guard (when one is active) before a paid step starts."""
    guard = active_spend_guard()
    if guard is not None:
        guard.before(step, cost_usd)


def _ingestion_since(clients: AwsClients, kb_id: str, source_id: str, since: str) -> dict[str, Any] | None:
    """The newest ingestion job of the data source started at or after `since` (ISO time), if any."""
    if not since:
        return None
    jobs = clients.agent.list_ingestion_jobs(knowledgeBaseId=kb_id, dataSourceId=source_id).get("ingestionJobSummaries", [])
    after = [job for job in jobs if job.get("startedAt") and job["startedAt"] >= datetime.fromisoformat(since)]
    return max(after, key=lambda job: job["startedAt"], default=None)


def _start_ingestion(clients: AwsClients, kb_id: str, source_id: str, token: str, poll_s: float, sleep: Any) -> dict[str, Any]:
    """StartIngestionJob; when another ingestion of the data source is running (ConflictException),
    wait for it to end and start this one after it (a data source ingests one job at a time)."""
    try:
        return call_with_backoff(clients.agent.start_ingestion_job, knowledgeBaseId=kb_id, dataSourceId=source_id, clientToken=token)[
            "ingestionJob"
        ]
    except Exception as error:
        if error_code(error) != "ConflictException":
            raise
    running = [
        job
        for job in clients.agent.list_ingestion_jobs(knowledgeBaseId=kb_id, dataSourceId=source_id).get("ingestionJobSummaries", [])
        if job.get("status") in ("STARTING", "IN_PROGRESS", "STOPPING")
    ]
    for job in running:
        job_id = job["ingestionJobId"]
        log.info("ingestion %s of data source %s is running: waiting for it before starting another", job_id, source_id)
        wait_until(
            lambda job_id=job_id: clients.agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=source_id, ingestionJobId=job_id)[
                "ingestionJob"
            ]["status"],
            {"COMPLETE", "FAILED", "STOPPED"},
            set(),
            f"ingestion {job_id}",
            poll_s=poll_s,
            sleep=sleep,
        )
    return call_with_backoff(clients.agent.start_ingestion_job, knowledgeBaseId=kb_id, dataSourceId=source_id, clientToken=token)[
        "ingestionJob"
    ]


def ingest_corpus(
    config: StudyConfig,
    state: BedrockState,
    clients: AwsClients,
    source: Resource,
    kb_id: str,
    corpus: tuple[str, int],
    embedding_model: str,
    poll_s: float,
    sleep: Callable[[float], None] | None,
) -> None:
    """Sync the data source with what is in S3 now (`corpus`: its hash and the tokens it embeds).
    A finished ingestion is kept while the corpus is unchanged; a changed corpus is a new token,
    so a new job. The tokens it embeds are written down, after the spend guard is asked, before
    it starts."""
    corpus_sha, corpus_tokens = corpus
    job_token = stable_hash({"ds": source.id, "corpus": corpus_sha}, 40)
    ingestions = list(source.details.get("ingestions", []))
    recorded = next((ingestion for ingestion in ingestions if ingestion.get("token") == job_token), None)
    earlier = recorded is not None
    if recorded is None:
        embed = prices_for(config).token_prices(embedding_model)
        cost = corpus_tokens / 1000 * (embed["input_per_1k"] if embed else 0.0)
        ask_guard(f"ingestion of the corpus ({corpus_tokens:,} tokens embedded)", cost)
        recorded = {"token": job_token, "corpus_tokens": corpus_tokens, "embedding_model": embedding_model, "at": utc_now()}
        ingestions.append(recorded)
        state.update(source, details={**source.details, "ingestions": ingestions})
    # written down by an earlier run whose answer may have been lost: a job started since then
    # is that one (even where the account no longer knows the token), so it is not paid twice
    started = _ingestion_since(clients, kb_id, source.id, str(recorded.get("at", ""))) if earlier else None
    job = started or _start_ingestion(clients, kb_id, source.id, job_token, poll_s, sleep)
    job_id = job["ingestionJobId"]
    state.update(source, details={**source.details, "ingestion_running": job_id})

    def status() -> str:
        answer = clients.agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=source.id, ingestionJobId=job_id)
        return answer["ingestionJob"]["status"]

    try:
        wait_until(status, {"COMPLETE"}, {"FAILED", "STOPPED"}, f"ingestion {job_id}", poll_s=poll_s, sleep=sleep)
    except UserError as error:
        raise UserError(f"knowledge base {kb_id}: {error}; see its failureReasons in the Bedrock console, then run again") from None
    state.update(source, details={**source.details, "ingested_corpus_sha": corpus_sha, "ingestion_job_id": job_id, "ingestion_running": ""})
