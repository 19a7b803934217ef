"""What makes two judges the same judge, read from the record a run keeps of them.

A run stores each judge's identity as it judged (`JUDGE_IDENTITY_ARTIFACT` + name: its kind,
prompt, sampling settings, seed, and the backend's identity: model files or id, revision,
server, dtype). A run stored before that keeps only its config; `config_identity` reads a
judge's deciding settings from there. Both forms split the same way into three parts:
- the name (`judge` in a stored identity, `name` in a config): a label, not a setting;
- the host (a stored identity's `backend`; a config's model id, backend, revision and options):
  where the weights run and in what form;
- everything else (kind, prompt, scoring, sampling, attempts, seed): how the judge judges.
Two judges with equal settings and hosts are one judge under two names; equal settings on
another host are the same judge hosted twice (Llama 3.1 70B on Bedrock and in vLLM), whose
scores are one scale only once they are shown to agree (report/crossrun_judges.py).

`ADDED_JUDGES_ARTIFACT` is where `localnova judge` records the judges it put on a run later,
so that the run's own config is not the only record of its judges.
"""

from __future__ import annotations

from typing import Any

# A judging model's options that only pace its requests (how many at once, how often retried,
# which variable holds the key): they decide nothing about a score.
PACING_OPTIONS = (
    "max_concurrency",
    "max_attempts",
    "max_retries",
    "timeout_s",
    "backoff_initial_s",
    "backoff_max_s",
    "retry_base_delay_s",
    "api_key_env",
)
# {stored name: {"judge": JudgeConfig as a dict, "seed": the study seed it judged with,
#  "config": the config it came from, "as": its name there}}, one entry per judge added.
ADDED_JUDGES_ARTIFACT = "added_judges"
# A config's model keys that say where a judge runs rather than how it judges.
_HOST_MODEL_KEYS = ("backend", "model", "revision", "options")


def config_identity(judge: dict[str, Any], seed: int) -> dict[str, Any]:
    """What a config says of a judge: every setting (and, for an LLM judge, the study seed its
    sampling uses) but the batch size, the judging model's label and the options that only
    pace requests."""
    found = dict(judge)
    model = found.get("model")
    if isinstance(model, dict):
        options = {key: value for key, value in (model.get("options") or {}).items() if key not in PACING_OPTIONS}
        generation = {key: value for key, value in (model.get("generation") or {}).items() if key != "batch_size"}
        found["model"] = {**{key: value for key, value in model.items() if key != "name"}, "options": options, "generation": generation}
    if judge.get("kind", "llm") == "llm":
        found["seed"] = seed
    return found


def without_name(identity: dict[str, Any]) -> dict[str, Any]:
    """The identity (stored or from a config) less the judge's name."""
    return {key: value for key, value in identity.items() if key not in ("judge", "name")}


def host_of(identity: dict[str, Any]) -> Any:
    """Where the judge runs: a stored identity's backend, or a config's model id, backend,
    revision and options (None for a judge without a model)."""
    if "backend" in identity:
        return identity["backend"]
    model = identity.get("model")
    if isinstance(model, dict):
        return {key: model.get(key) for key in _HOST_MODEL_KEYS}
    return None


def judging_settings(identity: dict[str, Any]) -> dict[str, Any]:
    """The identity less its name and its host: how the judge judges, wherever it runs."""
    found = without_name(identity)
    found.pop("backend", None)
    model = found.get("model")
    if isinstance(model, dict):
        found["model"] = {key: value for key, value in model.items() if key not in _HOST_MODEL_KEYS}
    return found


def same_judge(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """One judge, perhaps under two names: equal settings and host."""
    return without_name(one) == without_name(other)


def hosted_twice(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """The same judging settings on two hosts (an LLM judge whose model runs elsewhere or in
    another form)."""
    return (
        one.get("kind", "llm") == "llm"
        and judging_settings(one) == judging_settings(other)
        and host_of(one) is not None
        and host_of(one) != host_of(other)
    )


def differences(one: Any, other: Any, prefix: str = "") -> list[str]:
    """The dotted keys where two nested dicts differ."""
    if not (isinstance(one, dict) and isinstance(other, dict)):
        return [prefix or "value"] if one != other else []
    found = []
    for key in sorted(set(one) | set(other), key=str):
        found += differences(one.get(key), other.get(key), f"{prefix}.{key}" if prefix else str(key))
    return found
