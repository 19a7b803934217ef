"""The judge registry: every judge kind by name, the built-in ones and those that other packages
add through the `localnova.judges` entry point group. One source of truth: the config checks a
judge's `kind` against it, and the panel builds each judge from it.

A third-party package registers a judge in its own pyproject.toml:

    [project.entry-points."localnova.judges"]
    rubric_regex = "my_package.judges:RegexJudge"

where RegexJudge subclasses localnova.evaluate.judges.Judge (see its docstring). Each entry is
a "module:attribute" string, loaded only when a study uses that kind.
"""

from __future__ import annotations

import difflib
import importlib
from functools import cache
from importlib.metadata import entry_points

JUDGE_ENTRY_POINT_GROUP = "localnova.judges"

BUILTIN_JUDGES = {
    "llm": "localnova.evaluate.judges.llm:LLMJudge",
    "token_f1": "localnova.evaluate.judges.reference:TokenF1Judge",
    "embedding_similarity": "localnova.evaluate.judges.reference:EmbeddingSimilarityJudge",
}


@cache
def judge_kinds() -> dict[str, str]:
    """Every judge kind -> the "module:attribute" that implements it. A package cannot take a
    built-in kind's name: the built-in one wins."""
    found = {point.name: point.value for point in entry_points(group=JUDGE_ENTRY_POINT_GROUP)}
    return {**found, **BUILTIN_JUDGES}


def unknown_kind_message(kind: str) -> str:
    """What to say of a kind nobody registered: the kinds there are, and the closest one."""
    kinds = sorted(judge_kinds())
    close = difflib.get_close_matches(kind, kinds, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    group = JUDGE_ENTRY_POINT_GROUP
    return f"unknown judge kind {kind!r}{hint} Registered: {', '.join(kinds)} (packages add more through the {group!r} entry points)"


def load_judge_class(kind: str) -> type:
    """The class registered for `kind`, imported now."""
    kinds = judge_kinds()
    if kind not in kinds:
        raise KeyError(unknown_kind_message(kind))
    module_name, _, attribute = kinds[kind].partition(":")
    return getattr(importlib.import_module(module_name), attribute)
