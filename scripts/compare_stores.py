"""Compare the answers and judgments of two study folders' latest runs, row by row.

A refactoring that must not change results runs the same study before and after and passes
both folders here: every answer is matched on (model, arm, question) and compared by its store
key and text, every judgment on (judge, model, arm, question, subject) by its content key and
score. Exit code 0 when all are identical, 1 otherwise.

    python scripts/compare_stores.py runs/demo /tmp/before/runs/demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from localnova.store import Store


def latest_rows(study_dir: Path) -> tuple[dict, dict]:
    store = Store(study_dir)
    try:
        run_id = store.run_ids()[-1]
        answers = {(a.model, a.arm, a.question_id): (a.generation_key, a.result.text) for a in store.answers(run_id)}
        judgments = {
            (j.judge, j.model, j.arm, j.question_id, j.subject): (j.content_key, j.score, j.method) for j in store.judgments(run_id)
        }
        return answers, judgments
    finally:
        store.close()


def compare(name: str, first: dict, second: dict) -> int:
    differing = sorted(key for key in first.keys() & second.keys() if first[key] != second[key])
    only_first, only_second = sorted(first.keys() - second.keys()), sorted(second.keys() - first.keys())
    print(
        f"{name}: {len(first)} and {len(second)} rows; {len(first.keys() & second.keys()) - len(differing)} identical, "
        f"{len(differing)} differ, {len(only_first)} only in the first, {len(only_second)} only in the second"
    )
    for key in (differing + only_first + only_second)[:5]:
        print(f"  {key}: {first.get(key)!r} vs {second.get(key)!r}")
    return len(differing) + len(only_first) + len(only_second)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    answers_a, judgments_a = latest_rows(args.first)
    answers_b, judgments_b = latest_rows(args.second)
    problems = compare("answers", answers_a, answers_b) + compare("judgments", judgments_a, judgments_b)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
