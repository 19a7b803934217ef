"""Published findings as data: the claims a study is set against in the report's Reproduction
section, each with the comparisons that test it (see nova_case_study.yaml, the bundled set).

A study config names its set with `eval.findings`: a bundled set by name (the default is the
AWS post's), a YAML file of the same form, or none. Every file is checked on load against the
schema below, so a typo is one line naming the file and the key. Plain pydantic and PyYAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from localnova.config import BASE_ARM, DEFAULT_FINDINGS, FINDINGS_OFF, Arm, format_validation_error, load_yaml_mapping
from localnova.errors import UserError

Measure = Literal["panel_score", "latency", "total_tokens"]
MEASURES: tuple[str, ...] = ("panel_score", "latency", "total_tokens")
# How a comparison picks its model among the run's: the smaller or the larger (by the order of
# `models` in the run's config, smallest first), each model in turn, or the per-question gap
# of the larger model's value over the smaller's.
Role = Literal["larger", "smaller", "each", "larger_minus_smaller"]
GAP_ROLE = "larger_minus_smaller"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Comparison(_Strict):
    """One paired change within a run: `arm` against `reference` on `measure`, for the models
    `model` picks, expected to go `direction`; `post_pct` is the post's size (% of the
    reference, signed) where it gives one, an estimate (`post_size` about) or a bound the
    change went past (beyond: "more than 60%"). `reference_sign` is the premise of the post's
    reading, where it has one: the sign the reference level has (for a gap between two models,
    positive: the larger model ahead at the reference arm); a run whose interval of that level
    lies wholly on the other side cannot test the reading, and says so."""

    measure: Measure
    model: Role
    arm: Arm
    reference: Arm = BASE_ARM
    direction: Literal["up", "down"]
    post_pct: float | None = None
    post_size: Literal["about", "beyond"] = "about"
    reference_sign: Literal["positive", "negative"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Comparison:
        if self.arm == self.reference:
            raise ValueError(f"arm and reference are both {self.arm!r}: a comparison needs two arms")
        if self.post_pct is not None and (self.post_pct > 0) != (self.direction == "up"):
            raise ValueError(f"post_pct {self.post_pct:+g} does not go {self.direction}")
        if self.post_pct is not None and self.model == GAP_ROLE:
            raise ValueError("a gap between two models has no % of a reference: leave post_pct out")
        return self


class Finding(_Strict):
    """One claim of the post, in plain words, with the post's figure, where it says it, how the
    claim is made operational when that needs saying, and the comparisons that test it."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    claim: str = Field(min_length=1)
    post_figure: str = Field(min_length=1)
    where: str = Field(min_length=1)
    definition: str = ""
    comparisons: list[Comparison] = Field(min_length=1)


class FindingsFile(_Strict):
    """A study's findings: what study, where it was published, whether the figures were checked
    against that page, and the findings in the order the report numbers them."""

    study: str = Field(min_length=1)
    source: str = Field(min_length=1)
    publisher: str = ""
    setting: str = ""
    checked_against_page: bool
    note: str = ""
    findings: list[Finding] = Field(min_length=1)

    @field_validator("findings")
    @classmethod
    def _unique_ids(cls, findings: list[Finding]) -> list[Finding]:
        ids = [finding.id for finding in findings]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"finding ids appear more than once: {', '.join(repeated)}")
        return findings


@dataclass(frozen=True)
class FindingsSet:
    """A loaded findings file: what names it (a bundled name or the path given), its text (the
    report's key holds it, so an edited file rewrites the report) and its checked content."""

    name: str
    text: str
    content: FindingsFile


def bundled_names() -> list[str]:
    """The bundled findings sets, by name (their file names without .yaml)."""
    folder = resources.files(__package__)
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_findings(setting: str | None, key: str = "eval.findings") -> FindingsSet | None:
    """The findings `setting` names (a bundled name, else a path), checked; None when it turns
    them off (FINDINGS_OFF or null). A missing file or a broken one is a UserError naming the
    file, `key` and what is wrong."""
    if setting is None or setting.strip().lower() in FINDINGS_OFF:
        return None
    if setting in bundled_names():
        text = resources.files(__package__).joinpath(f"{setting}.yaml").read_text(encoding="utf-8")
        return parse_findings(text, f"{key} {setting} (bundled)", setting)
    path = Path(setting)
    if not path.is_file():
        raise UserError(
            f"{key}: {setting}: no such findings file, nor a bundled set ({', '.join(bundled_names())}); "
            "'none' turns the comparison with published findings off"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path} ({key}): cannot be read: {error}") from None
    return parse_findings(text, f"{path} ({key})", setting)


def parse_findings(text: str, source: str, name: str) -> FindingsSet:
    """A findings file's text, checked against the schema; `source` names it in errors."""
    data = load_yaml_mapping(text, source)
    try:
        content = FindingsFile.model_validate(data)
    except ValidationError as error:
        raise UserError(format_validation_error(error, source)) from None
    return FindingsSet(name, text, content)


def findings_setting(study_config: dict) -> str | None:
    """What a stored study config sets for `eval.findings` (the default where it does not say:
    a run stored before the key existed, or one at the default, which its identity leaves out)."""
    eval_config = study_config.get("eval") or {}
    return eval_config["findings"] if "findings" in eval_config else DEFAULT_FINDINGS
