"""The findings files: the bundled set loads with the post's six findings; a broken file is one
line naming the file and the key; 'none' turns the comparison off."""

from __future__ import annotations

import pytest

from localnova.config import DEFAULT_FINDINGS, validate_config
from localnova.errors import UserError
from localnova.findings import bundled_names, findings_setting, load_findings
from localnova.run_identity import run_identity

GOOD = """
study: An earlier study of ours
source: our wiki
checked_against_page: true
findings:
  - id: rag-helps
    claim: Retrieval helped.
    post_figure: +20%
    where: results table
    comparisons:
      - {measure: panel_score, model: larger, arm: rag, direction: up, post_pct: 20}
"""


def test_the_bundled_set_holds_the_posts_six_findings_as_the_issue_states_them():
    findings = load_findings(DEFAULT_FINDINGS)
    assert DEFAULT_FINDINGS in bundled_names()
    content = findings.content
    assert content.checked_against_page is False  # the page could not be read here: said so
    assert [f.id for f in content.findings] == [
        "ft-raises-score",
        "rag-raises-score",
        "ft-rag-best",
        "ft-rag-closes-size-gap",
        "latency",
        "tokens",
    ]
    sizes = [[(c.measure, c.model, c.arm, c.reference, c.direction, c.post_pct) for c in f.comparisons] for f in content.findings]
    # issue 21: ft +30% and rag +30% on Lite; ft_rag +83% on Lite and above both; the gap to the
    # larger model shrinks; latency ft -50%, rag -30%; tokens ft below -60%, rag above +100%
    assert sizes[0] == [("panel_score", "larger", "ft", "base", "up", 30)]
    assert sizes[1] == [("panel_score", "larger", "rag", "base", "up", 30)]
    assert sizes[2] == [
        ("panel_score", "larger", "ft_rag", "base", "up", 83),
        ("panel_score", "larger", "ft_rag", "rag", "up", None),
        ("panel_score", "larger", "ft_rag", "ft", "up", None),
    ]
    assert sizes[3] == [("panel_score", "larger_minus_smaller", "ft_rag", "base", "down", None)]
    assert sizes[4] == [("latency", "each", "ft", "base", "down", -50), ("latency", "each", "rag", "base", "down", -30)]
    assert sizes[5] == [("total_tokens", "each", "ft", "base", "down", -60), ("total_tokens", "each", "rag", "base", "up", 100)]


def test_a_file_of_the_same_form_loads_and_none_turns_the_comparison_off(tmp_path):
    path = tmp_path / "ours.yaml"
    path.write_text(GOOD, encoding="utf-8")
    findings = load_findings(str(path))
    assert findings.content.findings[0].comparisons[0].reference == "base" and findings.text == GOOD
    for off in (None, "", "none", "None"):
        assert load_findings(off) is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("direction: up", "direction: sideways"), "findings.0.comparisons.0.direction: Input should be 'up' or 'down'"),
        (("post_pct: 20", "post_pct: -20"), "findings.0.comparisons.0: Value error, post_pct -20 does not go up"),
        (("arm: rag", "arm: base"), "findings.0.comparisons.0: Value error, arm and reference are both 'base'"),
        (("measure: panel_score", "measure: accuracy"), "findings.0.comparisons.0.measure"),
        (("claim: Retrieval helped.", "claim: Retrieval helped.\n    colour: red"), "findings.0.colour: unknown key"),
        (("checked_against_page: true\n", ""), "checked_against_page: missing required key"),
        (("id: rag-helps", "id: Rag Helps"), "findings.0.id"),
        (("{measure", "[measure"), "malformed YAML"),
    ],
)
def test_a_broken_findings_file_is_one_line_naming_the_file_and_the_key(tmp_path, change, expected):
    path = tmp_path / "ours.yaml"
    path.write_text(GOOD.replace(*change), encoding="utf-8")
    with pytest.raises(UserError) as error:
        load_findings(str(path))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path} (eval.findings)") and expected in message


def test_a_missing_file_names_the_key_and_the_bundled_sets(tmp_path):
    with pytest.raises(UserError, match=r"^eval.findings: .*nope.yaml: no such findings file, nor a bundled set \(nova_case_study\)"):
        load_findings(str(tmp_path / "nope.yaml"))


def test_the_default_findings_leave_the_run_identity_as_it_was(tmp_path):
    """A report-only setting at its default names no new run: runs stored before the key
    existed keep their ids. Another file does name a new run (its report differs)."""
    data = {"name": "s", "corpus": {"path": "c"}, "eval": {"path": "e.jsonl"}, "models": [{"name": "m", "model": "x"}]}
    default = run_identity(validate_config(data))
    assert "findings" not in default["config"]["eval"] and findings_setting(default["config"]) == DEFAULT_FINDINGS
    ours = run_identity(validate_config({**data, "eval": {"path": "e.jsonl", "findings": "ours.yaml"}}))
    assert ours["config"]["eval"]["findings"] == "ours.yaml" and findings_setting(ours["config"]) == "ours.yaml"
    off = run_identity(validate_config({**data, "eval": {"path": "e.jsonl", "findings": None}}))
    assert findings_setting(off["config"]) is None
