"""What names a run in the store: the parts of a study's config (and the adapters it used)
that decide its results, hashed by Store.start_run into the run id. The same config gives the
same run, so a command run again resumes it; anything that changes what a run measures gives
another.
"""

from __future__ import annotations

from typing import Any

from localnova.config import DEFAULT_FINDINGS, StudyConfig, config_to_dict
from localnova.study_parts import stored_judge


def run_identity(config: StudyConfig, adapters: dict[str, str] | None = None) -> dict[str, Any]:
    """What names a run in the store (Store.start_run hashes it into the run id): the same
    config gives the same run, so a command run again resumes it. `eval.findings` at its
    default is left out: it decides no result, and runs stored before the key existed keep
    their ids (the report reads a missing key as the default); so is `finetune.seeds` unset.
    `adapters` ({name: content hash} of what the ft arms loaded) joins it when the study
    fine-tunes: two machines whose training gave different adapters ran different studies."""
    stored = config_to_dict(config)
    if config.eval.findings == DEFAULT_FINDINGS:
        del stored["eval"]["findings"]
    # Keys added since runs were first stored, left out at their defaults so that those runs
    # keep their ids; set, they name another run. The tracker decides no result.
    for section, key, default in IDENTITY_NEW_KEYS:
        if section in stored and stored[section].get(key, default) == default:
            del stored[section][key]
    stored.pop("tracker", None)
    if not stored.get("arm_definitions"):
        stored.pop("arm_definitions", None)
    stored["judges"] = [stored_judge(judge) for judge in config.judges]
    if not config.fine_tunes or "raft" not in config.adapter_recipes:
        stored["finetune"].pop("raft", None)  # it decides nothing unless a raft arm runs
    if config.finetune.seeds is None:
        del stored["finetune"]["seeds"]
    identity = {"config": stored, "arms": list(config.arms), "limit": config.eval.limit, "simulated": config.simulated}
    return {**identity, "adapters": dict(sorted(adapters.items()))} if adapters and config.fine_tunes else identity


# (section, key, default) of keys that run_identity leaves out at their default value.
IDENTITY_NEW_KEYS = (("eval", "fields", {}), ("eval", "split", None), ("finetune", "train_fields", {}), ("finetune", "train_split", None))
