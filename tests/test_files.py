"""Atomic writes: readable files, no temporary file left behind, never half a file."""

from __future__ import annotations

import json
import math
import stat

import numpy as np
import pytest

from localnova.files import atomic_path, write_jsonl_atomic, write_text_atomic


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_are_readable_by_others(tmp_path):
    text_path, jsonl_path, raw_path = tmp_path / "a.json", tmp_path / "b.jsonl", tmp_path / "c.bin"
    write_text_atomic(text_path, "{}\n")
    write_jsonl_atomic(jsonl_path, [{"a": 1}])
    with atomic_path(raw_path) as temporary:
        temporary.write_bytes(b"\x00\x01")
    # mkstemp alone would leave 0o600: results are meant to be shared
    assert [_mode(p) for p in (text_path, jsonl_path, raw_path)] == [0o644] * 3


def test_text_and_jsonl_round_trip_and_create_the_folder(tmp_path):
    path = tmp_path / "deep" / "er" / "rows.jsonl"
    rows = [{"q": "Qu'est-ce que c'est ?", "n": 1}, {"q": "ü", "n": 2}]
    assert write_jsonl_atomic(path, iter(rows)) == 2
    assert path.read_text(encoding="utf-8") == "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_text_atomic(path, "replaced", fsync=True)
    assert path.read_text(encoding="utf-8") == "replaced"
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.jsonl"]


def test_a_failure_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl_atomic(path, [{"version": 1}])

    def rows():
        yield {"version": 2}
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_jsonl_atomic(path, rows())
    with pytest.raises(TypeError):
        write_text_atomic(path, None)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as temporary:
        temporary.write_text("half")
        raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_a_reader_sees_the_old_file_or_the_new_one_never_part_of_one(tmp_path):
    path = tmp_path / "answers.jsonl"
    write_jsonl_atomic(path, [{"i": i, "old": True} for i in range(3)])
    seen_midway = []

    def rows():
        for i in range(1000):
            if i == 500:  # half written: a reader now still sees the whole old file
                seen_midway.append(path.read_text())
            yield {"i": i, "old": False}

    assert write_jsonl_atomic(path, rows()) == 1000
    assert [json.loads(line)["old"] for line in seen_midway[0].splitlines()] == [True] * 3
    assert len(path.read_text().splitlines()) == 1000


def test_json_files_never_hold_nan(tmp_path):
    from localnova.files import json_text

    value = {"recall": math.nan, "rows": [1.0, math.inf, (2, -math.inf)], 3: "x", "n": np.int64(4), "m": np.float32("nan")}
    assert json.loads(json_text(value)) == {"recall": None, "rows": [1.0, None, [2, None]], "3": "x", "n": 4, "m": None}
    write_jsonl_atomic(tmp_path / "rows.jsonl", [{"score": math.nan}])
    assert (tmp_path / "rows.jsonl").read_text() == '{"score": null}\n'
