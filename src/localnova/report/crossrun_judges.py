"""Which judges two runs share, and on what terms: the panel a cross-run comparison is made on.

Each judge of the reference run's headline panel is matched with one of the other run's, each
judge used once, in three passes (evaluate/judge_settings.py says what an identity holds):
1. the same judge: the same name and the same identity (model, host, prompt, settings, seed);
2. the same judge under another name: the same identity less the name (a judge that
   `localnova judge` stored as `<name>@<config>` on a run that already had one of that name);
3. one judge hosted twice: the same name and judging settings on another host (Llama 3.1 70B
   on Bedrock and in vLLM). Its two hosts' scores are one scale only if they agree on the same
   answers (evaluate/mirror.py `host_agreement`): answers of either run that both hosts scored,
   which `localnova judge` makes possible by putting one host's judge on the other's run.
   Measured and agreeing: paired. Measured and not agreeing, or not measured: not paired, and
   the report says which and why.
Only judges both runs keep in their headline panel are matched; a judge of one name that is
none of these (another setting, another prompt) is never paired, and the report says what
differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from localnova.evaluate.judge_settings import (
    ADDED_JUDGES_ARTIFACT,
    config_identity,
    host_of,
    hosted_twice,
    same_judge,
)
from localnova.evaluate.judges import JUDGE_IDENTITY_ARTIFACT, SUBJECT_ANSWER
from localnova.evaluate.mirror import HostAgreement, host_agreement
from localnova.evaluate.summary import StudySummary
from localnova.report.collect import RunData

SAME, RENAMED, HOSTED_TWICE = "same", "same judge, another name", "hosted twice"


@dataclass(frozen=True)
class JudgePair:
    """A judge of the reference run and the one of the other run it is compared on."""

    reference: str
    other: str
    how: str  # SAME, RENAMED or HOSTED_TWICE

    def text(self) -> str:
        return self.reference if self.reference == self.other and self.how == SAME else f"{self.reference} = {self.other} ({self.how})"


@dataclass(frozen=True)
class HostCheck:
    """One judge name hosted differently in the two runs: the hosts, their agreement on the
    answers both scored (None: no answer was scored by both), and whether it was paired."""

    judge: str
    reference_host: str
    other_host: str
    agreement: HostAgreement | None
    paired: bool
    note: str


@dataclass(frozen=True)
class SharedPanel:
    pairs: list[JudgePair]
    host_checks: list[HostCheck]
    source: str  # where the identities were read from


def _stored(run: RunData) -> dict[str, Any]:
    return {
        name[len(JUDGE_IDENTITY_ARTIFACT) :]: value for name, value in run.artifacts.items() if name.startswith(JUDGE_IDENTITY_ARTIFACT)
    }


def _from_config(run: RunData) -> dict[str, Any]:
    """Every judge of the run's config and every judge added later, as `config_identity`."""
    seed = int(run.study_config.get("seed") or 0)
    found = {judge["name"]: config_identity(judge, seed) for judge in run.study_config.get("judges") or []}
    for name, added in (run.artifacts.get(ADDED_JUDGES_ARTIFACT) or {}).items():
        found[name] = config_identity(added["judge"], int(added.get("seed", 0)))
    return found


def judge_identities(reference: RunData, other: RunData) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Judge name -> what makes it the same judge in the other run, for both runs, and where
    that came from: the identities the runs stored as they judged (model files and revision,
    server, dtype, prompt, sampling settings, seed) when both stored one for every judge they
    hold, else every deciding setting of both runs' configs (and of judges added later)."""
    stored = [_stored(run) for run in (reference, other)]
    if all(set(run.judges) <= set(found) and found for run, found in zip((reference, other), stored, strict=True)):
        return stored[0], stored[1], "the identities the runs judged with"
    return _from_config(reference), _from_config(other), "the judges' settings in each run's config"


def describe_host(identity: dict[str, Any]) -> str:
    """Where a judge runs, in a few words: its backend and model."""
    host = host_of(identity)
    if not isinstance(host, dict):
        return "no model"
    return " ".join(str(part) for part in (host.get("backend"), host.get("model")) if part)


def _answer_scores(run: RunData, judge: str) -> dict[tuple[str, str, str, str], float]:
    return {
        (run.label, j.model, j.arm, j.question_id): float(j.score)
        for j in run.judgments
        if j.judge == judge and j.subject == SUBJECT_ANSWER and j.score is not None
    }


def _host_scores(
    name: str, reference: RunData, other: RunData, ref_ids: dict[str, Any], other_ids: dict[str, Any]
) -> tuple[dict, dict, list[str]]:
    """The reference host's and the other host's scores of the same answers, pooled over both
    runs: in each run its own judge `name` beside a judge there that is the other run's `name`
    under another name (put there by `localnova judge`); and which answers those were."""
    ref_host: dict = {}
    other_host: dict = {}
    where = []
    for run, ids, theirs, own_is_reference in ((reference, ref_ids, other_ids[name], True), (other, other_ids, ref_ids[name], False)):
        copy = next((judge for judge, identity in ids.items() if judge != name and same_judge(identity, theirs)), None)
        if copy is None:
            continue
        own, copied = _answer_scores(run, name), _answer_scores(run, copy)
        shared = set(own) & set(copied)
        if not shared:
            continue
        where.append(f"{len(shared)} of {run.label}'s answers ({name} beside {copy})")
        for key in shared:
            if own_is_reference:
                ref_host[key], other_host[key] = own[key], copied[key]
            else:
                other_host[key], ref_host[key] = own[key], copied[key]
    return ref_host, other_host, where


def shared_panel(reference: RunData, ref_summary: StudySummary, other: RunData, other_summary: StudySummary) -> SharedPanel:
    """The judges the two runs are compared on (the module's three passes), and the check of
    every judge hosted twice."""
    ref_ids, other_ids, source = judge_identities(reference, other)
    ref_head = [j for j in ref_summary.settings["headline_judges"] if j in ref_ids]
    other_head = [j for j in other_summary.settings["headline_judges"] if j in other_ids]
    pairs: list[JudgePair] = []
    used_ref: set[str] = set()
    used_other: set[str] = set()

    def pair(ref_name: str, other_name: str, how: str) -> None:
        pairs.append(JudgePair(ref_name, other_name, how))
        used_ref.add(ref_name)
        used_other.add(other_name)

    for judge in ref_head:
        if judge in other_head and ref_ids[judge] == other_ids[judge]:
            pair(judge, judge, SAME)
    for judge in ref_head:
        match = next((k for k in other_head if k not in used_other and same_judge(ref_ids[judge], other_ids[k])), None)
        if judge not in used_ref and match is not None:
            pair(judge, match, RENAMED)
    checks = []
    for judge in ref_ids:
        if judge not in other_ids or not hosted_twice(ref_ids[judge], other_ids[judge]):
            continue
        ref_scores, other_scores, where = _host_scores(judge, reference, other, ref_ids, other_ids)
        agreement = host_agreement(ref_scores, other_scores) if where else None
        in_both = judge in ref_head and judge in other_head
        free = judge not in used_ref and judge not in used_other
        paired = bool(agreement and agreement.one_scale and in_both and free)
        if paired:
            pair(judge, judge, HOSTED_TWICE)
        checks.append(
            HostCheck(
                judge,
                describe_host(ref_ids[judge]),
                describe_host(other_ids[judge]),
                agreement,
                paired,
                _check_note(judge, agreement, where, in_both, free, reference, other),
            )
        )
    order = {name: index for index, name in enumerate(ref_summary.settings["headline_judges"])}
    pairs.sort(key=lambda p: order.get(p.reference, len(order)))
    return SharedPanel(pairs, checks, source)


def _check_note(
    judge: str, agreement: HostAgreement | None, where: list[str], in_both: bool, free: bool, reference: RunData, other: RunData
) -> str:
    if agreement is None:
        return (
            f"not measured: no answer was scored by both hosts, so they are kept apart; to measure it, put one host's judge on the "
            f"other's run (`localnova judge --config <the other run's config> --judges {judge} <this run>`)"
        )
    measured = f"on {' and '.join(where)}"
    if not agreement.one_scale:
        return f"not one scale ({agreement.reason}), {measured}: kept apart"
    if not in_both:
        return f"one scale, {measured}; not paired: not in both headline panels"
    if not free:
        return f"one scale, {measured}; compared on the same host's scores instead"
    return f"one scale, {measured}: paired"


def shared_judges(reference: RunData, ref_summary: StudySummary, other: RunData, other_summary: StudySummary) -> list[str]:
    """The reference's judges paired with one of the same name and identity (the first pass)."""
    return [p.reference for p in shared_panel(reference, ref_summary, other, other_summary).pairs if p.how == SAME]
