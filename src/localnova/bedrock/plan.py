"""The list of every AWS call a study would make, with its key parameters, for the dry run.

Pure: reads the config and a few counts, imports no boto3, needs no credentials. The real run
makes these calls in this order (the polling calls repeat until the resource is ready).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from localnova.aws.availability import NOVA_HYPERPARAMETER_BOUNDS, nova_hyperparameters
from localnova.bedrock.knowledge_base import chunking_configuration, corpus_prefix, existing_knowledge_base_id
from localnova.config import FT_ARMS, StudyConfig


@dataclass(frozen=True)
class PlannedCall:
    step: str
    service: str
    operation: str
    count: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    billable: bool = False
    note: str = ""

    def format(self) -> str:
        params = ", ".join(f"{key}={value}" for key, value in self.params.items())
        times = f" x{self.count:,}" if self.count != 1 else ""
        bill = " [billed]" if self.billable else ""
        note = f"  # {self.note}" if self.note else ""
        return f"{self.step:<14} {self.service}.{self.operation}{times}({params}){bill}{note}"


def plan_calls(
    config: StudyConfig,
    n_questions: int,
    n_corpus_files: int,
    judge_calls_per_judge: int,
    probe_calls: dict[tuple[str, str], int] | None = None,
    probe_warm_ups: dict[tuple[str, str], int] | None = None,
) -> list[PlannedCall]:
    """The calls in order. `probe_calls` counts the latency probe's timed calls per (model,
    arm), `probe_warm_ups` its untimed ones per (model, first arm of a backend)."""
    bedrock = config.bedrock
    assert bedrock is not None, "plan_calls needs a bedrock section"
    bucket = bedrock.s3_bucket or "<bedrock.s3_bucket>"
    role = bedrock.role_arn or "<bedrock.role_arn>"
    calls: list[PlannedCall] = [
        PlannedCall(
            "preflight",
            "sts+bedrock+iam+s3",
            "free reads",
            note="identity; each model, its route and the account's access to it; role, bucket, quotas",
        ),
        PlannedCall("reconcile", "bedrock+bedrock-agent+s3", "List*/Head*", note="find by name what the state file lists (free)"),
    ]
    uses_rag = config.retrieves
    uses_ft = config.fine_tunes

    if uses_rag:
        kb_id = existing_knowledge_base_id(config)
        if kb_id:
            calls.append(
                PlannedCall(
                    "knowledge base",
                    "bedrock-agent",
                    "GetKnowledgeBase",
                    params={"knowledgeBaseId": kb_id},
                    note="existing Knowledge Base: nothing created",
                )
            )
        else:
            kb = bedrock.knowledge_base
            storage = kb.get("storage", {}) if isinstance(kb.get("storage"), dict) else {}
            calls += [
                PlannedCall(
                    "knowledge base", "s3", "PutObject", n_corpus_files, {"Bucket": bucket, "Key": corpus_prefix(config) + "<file>"}
                ),
                PlannedCall(
                    "knowledge base",
                    "bedrock-agent",
                    "CreateKnowledgeBase",
                    params={
                        "name": kb.get("name", f"localnova-{config.name}"),
                        "roleArn": kb.get("role_arn", role),
                        "embeddingModel": kb.get("embedding_model", "amazon.titan-embed-text-v2:0"),
                        "storage": storage.get("type", "<bedrock.knowledge_base.storage>"),
                        "clientToken": "<derived>",
                    },
                ),
                PlannedCall("knowledge base", "bedrock-agent", "GetKnowledgeBase", note="poll until ACTIVE"),
                PlannedCall(
                    "knowledge base",
                    "bedrock-agent",
                    "CreateDataSource",
                    params={
                        "bucketArn": f"arn:aws:s3:::{bucket}",
                        "inclusionPrefixes": [corpus_prefix(config)],
                        **chunking_configuration(config.corpus.chunking),
                    },
                ),
                PlannedCall("knowledge base", "bedrock-agent", "StartIngestionJob", billable=True, note="embeds every chunk"),
                PlannedCall("knowledge base", "bedrock-agent", "GetIngestionJob", note="poll until COMPLETE"),
            ]

    if uses_ft:
        ft = config.finetune
        hyper = nova_hyperparameters(ft.epochs, ft.batch_size, ft.learning_rate, ft.warmup_steps)
        bounds = "; ".join(f"{b.api_name} {b.low:g}-{b.high:g}" for b in NOVA_HYPERPARAMETER_BOUNDS if b.sent)
        for model in config.models:
            base = model.customization_model or model.model
            calls += [
                PlannedCall(
                    "customization",
                    "s3",
                    "PutObject",
                    params={"Bucket": bucket, "Key": f"{bedrock.s3_prefix}/{config.name}/training/<data sha>/train.jsonl"},
                    note="Nova JSONL, validated first",
                ),
                PlannedCall(
                    "customization",
                    "bedrock",
                    "CreateModelCustomizationJob",
                    params={
                        "baseModelIdentifier": base,
                        "customizationType": "FINE_TUNING",
                        "hyperParameters": hyper,
                        "roleArn": role,
                        "clientRequestToken": "<study+model+data hash>",
                    },
                    billable=True,
                    note=f"bounds: {bounds}",
                ),
                PlannedCall("customization", "bedrock", "GetModelCustomizationJob", note="poll until Completed (hours)"),
                PlannedCall(
                    "customization",
                    "s3",
                    "ListObjectsV2 + GetObject",
                    params={"Prefix": f"{bedrock.s3_prefix}/{config.name}/customization-output/{model.name}/"},
                    note="training metrics CSV",
                ),
            ]
            if bedrock.hosting == "on_demand":
                calls += [
                    PlannedCall(
                        "hosting",
                        "bedrock",
                        "CreateCustomModelDeployment",
                        params={"modelArn": f"<custom model of {model.name}>", "clientRequestToken": "<derived>"},
                        note="on-demand: billed per token, no hourly charge",
                    ),
                    PlannedCall("hosting", "bedrock", "GetCustomModelDeployment", note="poll until Active"),
                    PlannedCall(
                        "hosting",
                        "bedrock",
                        "DeleteCustomModelDeployment",
                        note="as its ft arms end, or on any way out of the run (unless --keep-hosting)",
                    ),
                ]
            else:
                calls += [
                    PlannedCall(
                        "hosting",
                        "bedrock",
                        "CreateProvisionedModelThroughput",
                        params={
                            "modelId": f"<custom model of {model.name}>",
                            "modelUnits": bedrock.provisioned_model_units,
                            "commitmentDuration": "none (hourly)",
                        },
                        billable=True,
                        note="only with --allow-spend; bills every started hour until deleted",
                    ),
                    PlannedCall("hosting", "bedrock", "GetProvisionedModelThroughput", note="poll until InService"),
                    PlannedCall(
                        "hosting",
                        "bedrock",
                        "DeleteProvisionedModelThroughput",
                        note="as its ft arms end, or on any way out of the run (unless --keep-hosting); polled until gone",
                    ),
                ]

    if uses_rag:
        calls.append(
            PlannedCall(
                "answers",
                "bedrock-agent-runtime",
                "Retrieve",
                n_questions,
                {"numberOfResults": config.retrieval.top_k},
                billable=True,
                note="once per question, shared by the rag arms",
            )
        )
    for model in config.models:
        for arm in config.arms:
            model_id = f"<hosted ARN of {model.name}>" if arm in FT_ARMS else model.model
            gen = model.generation
            calls.append(
                PlannedCall(
                    "answers",
                    "bedrock-runtime",
                    "Converse",
                    n_questions,
                    {"arm": arm, "modelId": model_id, "maxTokens": gen.max_new_tokens, "temperature": gen.temperature},
                    billable=True,
                )
            )
    calls += _probe_calls(config, probe_calls or {}, probe_warm_ups or {})
    for judge in config.judges:
        if judge.kind == "llm" and judge.model is not None:
            calls.append(
                PlannedCall(
                    "judges",
                    "bedrock-runtime" if judge.model.backend == "bedrock" else judge.model.backend,
                    "Converse",
                    judge_calls_per_judge,
                    {"judge": judge.name, "modelId": judge.model.model, "maxTokens": judge.model.generation.max_new_tokens},
                    billable=judge.model.backend == "bedrock",
                )
            )
    calls.append(
        PlannedCall(
            "cleanup",
            "localnova",
            "bedrock cleanup",
            note=f"run `localnova bedrock cleanup {config.study_dir}` to delete what the study made (provisioned throughput first)",
        )
    )
    return calls


def _probe_calls(config: StudyConfig, timed: dict[tuple[str, str], int], warm_ups: dict[tuple[str, str], int]) -> list[PlannedCall]:
    """The latency probe's calls: each arm's own requests again, one at a time, inside its
    model's ft hosting window, and one untimed call per backend before them."""
    cap = config.eval.latency_probe.max_new_tokens
    calls = []
    for model in config.models:
        service = "bedrock-runtime" if model.backend == "bedrock" else model.backend
        billed = model.backend == "bedrock"
        for arm in config.arms:
            if not timed.get((model.name, arm)):
                continue
            max_tokens = model.generation.max_new_tokens if cap is None else min(cap, model.generation.max_new_tokens)
            model_id = f"<hosted ARN of {model.name}>" if arm in FT_ARMS else model.model
            calls.append(
                PlannedCall(
                    "latency probe",
                    service,
                    "Converse",
                    timed[(model.name, arm)],
                    {"arm": arm, "modelId": model_id, "maxTokens": max_tokens},
                    billable=billed,
                    note="the arm's own requests again, timed one at a time, arms interleaved; requestMetadata names each",
                )
            )
        backends = [arm for (name, arm) in warm_ups if name == model.name]
        if backends:
            ids = ", ".join(f"<hosted ARN of {model.name}>" if arm in FT_ARMS else model.model for arm in backends)
            calls.append(
                PlannedCall(
                    "latency probe",
                    service,
                    "Converse",
                    sum(warm_ups[(model.name, arm)] for arm in backends),
                    {"modelId": ids, "maxTokens": 1},
                    billable=billed,
                    note="untimed warm-up, one per backend before its first timed call (again in a rerun that times)",
                )
            )
    return calls
