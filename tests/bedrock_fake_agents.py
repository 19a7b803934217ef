"""The Knowledge Base and runtime side of the fake account (bedrock_fake_account.py): the
bedrock-agent, bedrock-agent-runtime and bedrock-runtime handlers, as a mixin of FakeAccount.
Retrieve and converse bill as the price file says, converse by the route it was called by."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from bedrock_fake_services import ARN, CONVERSE_SECONDS, INGESTION_SECONDS, KB_SECONDS, client_error, tokens


class AgentServices:
    """Handlers of the Knowledge Base and runtime services; FakeAccount holds their state."""

    # bedrock-agent: Knowledge Base, data source, ingestion

    def bedrock_agent__CreateKnowledgeBase(self, params):
        known = self._same_token("CreateKnowledgeBase", params["clientToken"])
        if known is None and any(kb["name"] == params["name"] for kb in self.kbs.values()):
            raise client_error("ConflictException", "CreateKnowledgeBase", f"a knowledge base named {params['name']} exists")
        if known is None:
            known = self.new_id(10).upper()
            embed = params["knowledgeBaseConfiguration"]["vectorKnowledgeBaseConfiguration"]["embeddingModelArn"].rsplit("/", 1)[-1]
            self.kbs[known] = {"name": params["name"], "created": self.clock.now, "embed": embed, "roleArn": params["roleArn"]}
            self.tags[f"{ARN}:knowledge-base/{known}"] = dict(params.get("tags", {}))
            self.tokens_seen[("CreateKnowledgeBase", params["clientToken"])] = known
        return {"knowledgeBase": self._kb_view(known)}

    def _kb_view(self, kb_id):
        kb = self.kbs[kb_id]
        ready = "knowledge_base" not in self.never_ready and self.clock.now >= kb["created"] + timedelta(seconds=KB_SECONDS)
        return {
            "knowledgeBaseId": kb_id,
            "name": kb["name"],
            "knowledgeBaseArn": f"{ARN}:knowledge-base/{kb_id}",
            "roleArn": kb["roleArn"],
            "knowledgeBaseConfiguration": {"type": "VECTOR"},
            "status": "ACTIVE" if ready else "CREATING",
            "createdAt": kb["created"],
            "updatedAt": kb["created"],
        }

    def bedrock_agent__GetKnowledgeBase(self, params):
        if params["knowledgeBaseId"] not in self.kbs:
            raise client_error("ResourceNotFoundException", "GetKnowledgeBase")
        return {"knowledgeBase": self._kb_view(params["knowledgeBaseId"])}

    def bedrock_agent__ListKnowledgeBases(self, params):
        return {
            "knowledgeBaseSummaries": [
                {"knowledgeBaseId": i, "name": kb["name"], "status": "ACTIVE", "updatedAt": kb["created"]} for i, kb in self.kbs.items()
            ]
        }

    def bedrock_agent__DeleteKnowledgeBase(self, params):
        if self.kbs.pop(params["knowledgeBaseId"], None) is None:
            raise client_error("ResourceNotFoundException", "DeleteKnowledgeBase")
        for ds_id in [i for i, ds in self.sources.items() if ds["kb"] == params["knowledgeBaseId"]]:
            del self.sources[ds_id]
        return {"knowledgeBaseId": params["knowledgeBaseId"], "status": "DELETING"}

    def bedrock_agent__CreateDataSource(self, params):
        if params["knowledgeBaseId"] not in self.kbs:
            raise client_error("ResourceNotFoundException", "CreateDataSource")
        known = self._same_token("CreateDataSource", params["clientToken"])
        if known is None and any(ds["name"] == params["name"] and ds["kb"] == params["knowledgeBaseId"] for ds in self.sources.values()):
            raise client_error("ConflictException", "CreateDataSource", f"a data source named {params['name']} exists")
        if known is None:
            known = self.new_id(10).upper()
            prefixes = params["dataSourceConfiguration"]["s3Configuration"]["inclusionPrefixes"]
            self.sources[known] = {"name": params["name"], "kb": params["knowledgeBaseId"], "prefixes": prefixes, "created": self.clock.now}
            self.tokens_seen[("CreateDataSource", params["clientToken"])] = known
        ds = self.sources[known]
        view = {
            "knowledgeBaseId": ds["kb"],
            "dataSourceId": known,
            "name": ds["name"],
            "status": "AVAILABLE",
            "createdAt": ds["created"],
            "updatedAt": ds["created"],
        }
        return {"dataSource": {**view, "dataSourceConfiguration": params["dataSourceConfiguration"]}}

    def bedrock_agent__ListDataSources(self, params):
        found = [(i, ds) for i, ds in self.sources.items() if ds["kb"] == params["knowledgeBaseId"]]
        return {
            "dataSourceSummaries": [
                {"knowledgeBaseId": ds["kb"], "dataSourceId": i, "name": ds["name"], "status": "AVAILABLE", "updatedAt": ds["created"]}
                for i, ds in found
            ]
        }

    def bedrock_agent__DeleteDataSource(self, params):
        if self.sources.pop(params["dataSourceId"], None) is None:
            raise client_error("ResourceNotFoundException", "DeleteDataSource")
        return {"knowledgeBaseId": params["knowledgeBaseId"], "dataSourceId": params["dataSourceId"], "status": "DELETING"}

    def bedrock_agent__StartIngestionJob(self, params):
        if params["dataSourceId"] not in self.sources:
            raise client_error("ResourceNotFoundException", "StartIngestionJob")
        known = self._same_token("StartIngestionJob", params["clientToken"])
        if known is None:
            known = self.new_id(10).upper()
            source = self.sources[params["dataSourceId"]]
            self.ingestions[known] = {"kb": params["knowledgeBaseId"], "ds": params["dataSourceId"], "started": self.clock.now}
            self.tokens_seen[("StartIngestionJob", params["clientToken"])] = known
            embedded = sum(
                tokens(body.decode("utf-8", "ignore"))
                for (_, key), body in self.objects.items()
                if any(key.startswith(p) for p in source["prefixes"])
            )
            price, _ = self.meter.token_price(self.kbs[params["knowledgeBaseId"]]["embed"])
            self.meter.bill(f"ingestion {known}", embedded / 1000 * price)
        return {"ingestionJob": self._ingestion_view(known)}

    def bedrock_agent__StopIngestionJob(self, params):
        job = self.ingestions.get(params["ingestionJobId"])
        if job is None:
            raise client_error("ResourceNotFoundException", "StopIngestionJob")
        if self._ingestion_status(job) != "COMPLETE":
            job["stopped"] = True
        return {"ingestionJob": self._ingestion_view(params["ingestionJobId"])}

    def _ingestion_status(self, job):
        if job.get("stopped"):
            return "STOPPED"
        if "ingestion_job" not in self.never_ready and self.clock.now >= job["started"] + timedelta(seconds=INGESTION_SECONDS):
            return "COMPLETE"
        return "IN_PROGRESS"

    def _ingestion_view(self, job_id):
        job = self.ingestions[job_id]
        return {
            "knowledgeBaseId": job["kb"],
            "dataSourceId": job["ds"],
            "ingestionJobId": job_id,
            "status": self._ingestion_status(job),
            "startedAt": job["started"],
            "updatedAt": job["started"],
        }

    def bedrock_agent__ListIngestionJobs(self, params):
        found = [(i, job) for i, job in self.ingestions.items() if job["ds"] == params["dataSourceId"]]
        return {
            "ingestionJobSummaries": [
                {
                    "knowledgeBaseId": job["kb"],
                    "dataSourceId": job["ds"],
                    "ingestionJobId": i,
                    "status": self._ingestion_status(job),
                    "startedAt": job["started"],
                    "updatedAt": job["started"],
                }
                for i, job in found
            ]
        }

    def bedrock_agent__ListTagsForResource(self, params):
        if params["resourceArn"] not in self.tags:
            raise client_error("ResourceNotFoundException", "ListTagsForResource")
        return {"tags": dict(self.tags[params["resourceArn"]])}

    def bedrock_agent__GetIngestionJob(self, params):
        if params["ingestionJobId"] not in self.ingestions:
            raise client_error("ResourceNotFoundException", "GetIngestionJob")
        return {"ingestionJob": self._ingestion_view(params["ingestionJobId"])}

    # the runtimes: retrieve and converse

    def bedrock_agent_runtime__Retrieve(self, params):
        kb = self.kbs.get(params["knowledgeBaseId"])
        if kb is None:
            raise client_error("ResourceNotFoundException", "Retrieve")
        price, _ = self.meter.token_price(kb["embed"])
        self.meter.bill("retrieve", tokens(params["retrievalQuery"]["text"]) / 1000 * price)
        top_k = params["retrievalConfiguration"]["vectorSearchConfiguration"]["numberOfResults"]
        sources = [ds for ds in self.sources.values() if ds["kb"] == params["knowledgeBaseId"]]
        found = [(b, k) for (b, k) in sorted(self.objects) if any(k.startswith(p) for ds in sources for p in ds["prefixes"])][:top_k]
        return {
            "retrievalResults": [
                {
                    "content": {"text": self.objects[(b, k)].decode("utf-8", "ignore")[:300]},
                    "location": {"type": "S3", "s3Location": {"uri": f"s3://{b}/{k}"}},
                    "score": 0.5,
                }
                for b, k in found
            ]
        }

    def _resolve_model(self, model_id):
        """(base model, price route id or None when paid by the hour) of a modelId."""
        hosted = self.hosting.get(model_id)
        if hosted is not None:
            status = self._hosting_status(hosted)
            if status not in ("Active", "InService"):
                raise client_error("ValidationException", "Converse", f"hosting is {status}")
            return hosted["modelArn"], (hosted["base"] if hosted["kind"] == "custom_model_deployment" else None)
        return model_id, model_id

    def bedrock_runtime__Converse(self, params):
        model_id = params["modelId"]
        config = params.get("inferenceConfig", {})
        # Claude Sonnet 4.5 refuses temperature with topP (written here from the service's error, not the tool's rule table)
        if "claude-sonnet-4-5" in model_id and "temperature" in config and "topP" in config:
            raise client_error("ValidationException", "Converse", "`temperature` and `top_p` cannot both be specified for this model")
        resolved, priced = self._resolve_model(model_id)
        texts = [b["text"] for b in params.get("system", [])] + [b["text"] for m in params["messages"] for b in m["content"]]
        judge = "anthropic" in model_id or "meta." in model_id
        key = hashlib.sha256(json.dumps([model_id, texts, config], sort_keys=True).encode()).hexdigest()
        text = json.dumps({"score": 7, "reason": "mostly right"}) if judge else f"The F4 lamp draws 36 watts ({key[:8]})."
        input_tokens, output_tokens = sum(tokens(t) for t in texts), min(config.get("maxTokens", 4096), tokens(text))
        input_tokens += self.judge_extra_input_tokens if judge else 0
        if priced is not None:
            price_in, price_out = self.meter.token_price(priced)
            self.meter.bill(f"converse {model_id}", input_tokens / 1000 * price_in + output_tokens / 1000 * price_out)
        self.clock.advance(CONVERSE_SECONDS)
        key = hashlib.sha256(json.dumps([resolved, texts, config], sort_keys=True).encode()).hexdigest()
        return {
            "_key": key,
            "_tags": dict(params.get("requestMetadata", {})),
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens, "totalTokens": input_tokens + output_tokens},
            "metrics": {"latencyMs": 50},
        }
