"""What a rerun of a Bedrock study will host again, read from its store before anything is paid.

A custom model is hosted on the first call to it that the store cannot answer (bedrock/hosting
via the backend's `host_on_first_call`): for its ft answers, and for the latency probe, which
runs inside the same hosting window and times the ft arms too. A rerun whose ft answers are all
stored but whose probe rounds are not hosts the custom model again for the probe alone: with
provisioned throughput, at least one started hour. The confirmation says so, model by model,
before the run starts; a model whose ft answers and probe rounds are all stored is not hosted.
"""

from __future__ import annotations

from collections import Counter

from localnova.bedrock.hosting import hourly_usd
from localnova.config import FT_ARMS, StudyConfig
from localnova.data.eval_set import load_study_eval_set
from localnova.run_identity import run_identity
from localnova.store import DB_NAME, Store, run_id_of


def hosting_on_rerun(config: StudyConfig) -> list[str]:
    """One line per Bedrock model whose ft answers this run already holds: whether its custom
    model is hosted again, only for the latency probe's missing rounds, or not at all. Empty
    for a first run, or one whose ft answers are not all stored (then hosting is needed anyway)."""
    if not config.fine_tunes or not (config.study_dir / DB_NAME).is_file():
        return []
    store = Store(config.study_dir)
    try:
        run_id = run_id_of(config.name, run_identity(config))
        answered = Counter((answer.model, answer.arm) for answer in store.answers(run_id))
        arms_timed: dict[tuple[str, str, int], set[str]] = {}
        for timing in store.probe_timings(run_id):
            arms_timed.setdefault((timing.model, timing.question_id, timing.round), set()).add(timing.arm)
    finally:
        store.close()
    questions = len(load_study_eval_set(config.eval, config.eval.limit))
    probe = config.eval.latency_probe
    wanted = min(questions, probe.questions) * probe.repeats if config.probed_arms else 0
    lines = []
    for model in config.models:
        if model.backend != "bedrock" or any(answered[(model.name, arm)] < questions for arm in config.arms if arm in FT_ARMS):
            continue
        done = sum(1 for (name, _, _), arms in arms_timed.items() if name == model.name and arms >= set(config.probed_arms))
        if done >= wanted:
            lines.append(
                f"{model.name}: its ft answers and latency probe rounds are all in the store: its custom model is not hosted again"
            )
            continue
        hourly = hourly_usd(config, model)
        cost = f"at least one started hour, ${hourly:,.2f}" if hourly else "no hourly charge, its calls' tokens only"
        lines.append(
            f"{model.name}: its ft answers are all in the store but {wanted - done} of its {wanted} latency probe round(s) are not: "
            f"its custom model is hosted again for the probe alone ({config.bedrock.hosting if config.bedrock else 'on_demand'}: "
            f"{cost}); eval.latency_probe.enabled: false skips the probe"
        )
    return lines
