"""The whole config checked against what the service accepts, before the first billable call.

Every kind of request the study will send is built here from the config, with the same
functions the real calls use (placeholders stand in for ids AWS has not given yet), and checked
against botocore's model of its operation (aws/service_model.py) and the rules some models add
(aws/model_rules.py). A member the service would refuse is traced back to the config key that
set it, so the run stops in one line naming that key, exit code 2, before anything is paid for:
a temperature above 1 refused at the first converse call after training was paid would be too
late.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from localnova.aws.availability import nova_hyperparameters
from localnova.aws.model_rules import converse_rule_problems
from localnova.aws.service_model import botocore_available, request_problems
from localnova.backends.bedrock_backend import converse_request
from localnova.bedrock.customization import PreparedTraining, job_request
from localnova.bedrock.hosting import hosting_request
from localnova.bedrock.knowledge_base import (
    data_source_request,
    existing_knowledge_base_id,
    knowledge_base_request,
    retrieve_request,
    settings_from_config,
)
from localnova.config import ModelConfig, StudyConfig
from localnova.errors import UserError
from localnova.evaluate.arms import generation_params
from localnova.evaluate.judges.llm import RETRY_MIN_TEMPERATURE
from localnova.evaluate.latency_probe import capped, probe_tags
from localnova.types import ChatRequest

# Stand-ins for what AWS names only once a resource exists; each matches its operation's pattern.
ACCOUNT = "000000000000"
KB_ID = "KBPLACEHLD"
TOKEN = "0" * 40


@dataclass
class PlannedRequest:
    service: str
    operation: str
    params: dict[str, Any]
    keys: dict[str, str] = field(default_factory=dict)  # request path prefix -> config key
    model_id: str = ""  # a Converse request's model, for the model's own rules

    def key_of(self, path: str) -> str:
        """The config key behind a request path: the longest listed prefix of it."""
        best = ""
        for prefix in self.keys:
            if (path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")) and len(prefix) > len(best):
                best = prefix
        return self.keys.get(best, f"({self.operation} {path})")


def _converse(model: ModelConfig, key: str, seed: int, model_id: str, judge: bool = False) -> list[PlannedRequest]:
    params = generation_params(model, seed)
    temperatures = [params.temperature]
    if judge:  # a judge's retries sample warmer than its first try
        temperatures.append(max(params.temperature, RETRY_MIN_TEMPERATURE))
    planned = []
    for temperature in dict.fromkeys(temperatures):
        chat = ChatRequest.from_messages([{"role": "user", "content": "?"}], replace(params, temperature=temperature))
        planned.append(
            PlannedRequest(
                "bedrock-runtime",
                "Converse",
                converse_request(model_id, chat),
                {
                    "modelId": f"{key}.model",
                    "inferenceConfig.maxTokens": f"{key}.generation.max_new_tokens",
                    "inferenceConfig.temperature": f"{key}.generation.temperature",
                    "inferenceConfig.topP": f"{key}.generation.top_p",
                },
                model_id,
            )
        )
    return planned


def _probe_converse(config: StudyConfig, model: ModelConfig, key: str, model_id: str) -> PlannedRequest:
    """A latency probe request of `model`: an answer's request, its output capped where the
    probe sets a cap, with the log tags that name it (evaluate/latency_probe.py)."""
    params = generation_params(model, config.seed)
    chat = ChatRequest.from_messages([{"role": "user", "content": "?"}], params)
    tagged = replace(
        capped(chat, config.eval.latency_probe.max_new_tokens), log_tags=probe_tags(f"{config.name}-0", model.name, "ft", "q", 0)
    )
    return PlannedRequest(
        "bedrock-runtime",
        "Converse",
        converse_request(model_id, tagged),
        {
            "modelId": f"{key}.model",
            "inferenceConfig.maxTokens": "eval.latency_probe.max_new_tokens",
            "inferenceConfig.temperature": f"{key}.generation.temperature",
            "inferenceConfig.topP": f"{key}.generation.top_p",
            "requestMetadata": "name",
        },
        model_id,
    )


def planned_requests(config: StudyConfig) -> list[PlannedRequest]:
    """One request of every kind the study sends, built from the config."""
    bedrock = config.bedrock
    assert bedrock is not None
    region = bedrock.region
    planned: list[PlannedRequest] = []
    for index, model in enumerate(config.models):
        if model.backend != "bedrock":
            continue
        key = f"models[{index}]"
        planned += _converse(model, key, config.seed, model.model)
        if config.probed_arms:
            planned.append(_probe_converse(config, model, key, model.model))
        if config.fine_tunes:
            base = model.customization_model or model.model
            custom = f"arn:aws:bedrock:{region}:{ACCOUNT}:custom-model/{base}/abcdefghijkl"
            # the ft arms call the hosting, not the custom model itself
            hosted_kind = "custom-model-deployment" if bedrock.hosting == "on_demand" else "provisioned-model"
            planned += _converse(model, key, config.seed, f"arn:aws:bedrock:{region}:{ACCOUNT}:{hosted_kind}/abcdefghijkl")
            ft = config.finetune
            prepared = PreparedTraining(
                config.name,
                model.name,
                base,
                nova_path=config.study_dir,  # not read: only the request is built
                data_sha256="0" * 64,
                training_tokens=0,
                hyperparameters=nova_hyperparameters(ft.epochs, ft.batch_size, ft.learning_rate, ft.warmup_steps),
                identity={"study": config.name, "model": model.name},
                role_arn=bedrock.role_arn or "",
                bucket=bedrock.s3_bucket or "",
                train_key=f"{bedrock.s3_prefix.strip('/')}/{config.name}/training/0/train.jsonl",
                output_prefix=f"{bedrock.s3_prefix.strip('/')}/{config.name}/customization-output/{model.name}/",
                validation_key=f"{bedrock.s3_prefix.strip('/')}/{config.name}/training/0/validation.jsonl" if ft.validation_path else None,
            )
            bucket_keys = {
                "trainingDataConfig": "bedrock.s3_bucket",
                "outputDataConfig": "bedrock.s3_bucket",
                "validationDataConfig": "bedrock.s3_bucket",
            }
            planned.append(
                PlannedRequest(
                    "bedrock",
                    "CreateModelCustomizationJob",
                    job_request(config, prepared),
                    {
                        "roleArn": "bedrock.role_arn",
                        "baseModelIdentifier": f"{key}.customization_model",
                        "jobName": "name",
                        "customModelName": "name",
                        **bucket_keys,
                    },
                )
            )
            _, _, hosting = hosting_request(config, model, custom, TOKEN)
            planned.append(
                PlannedRequest(
                    "bedrock",
                    "CreateCustomModelDeployment" if bedrock.hosting == "on_demand" else "CreateProvisionedModelThroughput",
                    hosting,
                    {"modelUnits": "bedrock.provisioned_model_units", "modelDeploymentName": "name", "provisionedModelName": "name"},
                )
            )
    for index, judge in enumerate(config.judges):
        if judge.model is not None and judge.model.backend == "bedrock":
            planned += _converse(judge.model, f"judges[{index}].model", config.seed, judge.model.model, judge=True)
    if config.retrieves:
        planned.append(
            PlannedRequest(
                "bedrock-agent-runtime",
                "Retrieve",
                retrieve_request(existing_knowledge_base_id(config) or KB_ID, "?", config.retrieval.top_k),
                {"knowledgeBaseId": "retrieval.knowledge_base_id", "retrievalConfiguration": "retrieval.top_k"},
            )
        )
        if not existing_knowledge_base_id(config):
            settings = settings_from_config(config)
            planned.append(
                PlannedRequest(
                    "bedrock-agent",
                    "CreateKnowledgeBase",
                    knowledge_base_request(config, settings),
                    {
                        "name": "bedrock.knowledge_base.name",
                        "roleArn": "bedrock.knowledge_base.role_arn (or bedrock.role_arn)",
                        "knowledgeBaseConfiguration": "bedrock.knowledge_base.embedding_model",
                        "storageConfiguration": "bedrock.knowledge_base.storage",
                    },
                )
            )
            chunking = "vectorIngestionConfiguration.chunkingConfiguration"
            fixed, hierarchical, semantic = (
                f"{chunking}.{kind}ChunkingConfiguration" for kind in ("fixedSize", "hierarchical", "semantic")
            )
            planned.append(
                PlannedRequest(
                    "bedrock-agent",
                    "CreateDataSource",
                    data_source_request(config, settings, KB_ID),
                    {
                        "name": "bedrock.knowledge_base.name",
                        "dataSourceConfiguration": "bedrock.s3_bucket",
                        "dataSourceConfiguration.s3Configuration.inclusionPrefixes": "bedrock.s3_prefix",
                        "dataDeletionPolicy": "bedrock.knowledge_base.data_deletion_policy",
                        chunking: "corpus.chunking.strategy",
                        f"{fixed}.maxTokens": "corpus.chunking.chunk_tokens",
                        f"{fixed}.overlapPercentage": "corpus.chunking.overlap_tokens (as a percentage of chunk_tokens)",
                        f"{hierarchical}.levelConfigurations[0]": "corpus.chunking.parent_tokens",
                        f"{hierarchical}.levelConfigurations[1]": "corpus.chunking.child_tokens",
                        f"{hierarchical}.overlapTokens": "corpus.chunking.overlap_tokens",
                        f"{semantic}.maxTokens": "corpus.chunking.max_chunk_tokens",
                        f"{semantic}.breakpointPercentileThreshold": "corpus.chunking.breakpoint_percentile",
                    },
                )
            )
    return planned


def request_check_problems(config: StudyConfig) -> list[str]:
    """'config.key: what the service would refuse' for every planned request, deduplicated.
    Empty when botocore (the bedrock extra) is not installed: the dry run then says so."""
    if config.bedrock is None or not botocore_available():
        return []
    problems: list[str] = []
    for request in planned_requests(config):
        found = request_problems(request.service, request.operation, request.params)
        if request.operation == "Converse":
            found += converse_rule_problems(request.model_id, request.params)
        for path, why in found:
            line = f"{request.key_of(path)}: {why} ({request.service} {request.operation} {path})"
            if line not in problems:
                problems.append(line)
    return problems


def check_requests(config: StudyConfig) -> None:
    """One UserError naming the first key whose request the service would refuse."""
    problems = request_check_problems(config)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}; nothing was created")
