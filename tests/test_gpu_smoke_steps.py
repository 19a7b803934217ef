"""scripts/gpu_smoke_steps.py rehearsed on the CPU (--device cpu) in the main environment: the
records fit the length they are made for, the study step runs the whole study and counts its
answers, the merged step merges, so that a lent GPU's minutes are not spent finding a slip in
them. tests/engines/test_engine_smoke.py runs every step, QLoRA and vLLM included."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import gpu_smoke_steps  # noqa: E402
from test_gpu_smoke import fake_wheelhouse  # noqa: E402


@pytest.fixture(scope="module")
def smoke_dirs(tmp_path_factory):
    """A fake wheelhouse's tiny shapes, and the random models and study config built from them."""
    root = tmp_path_factory.mktemp("smoke")
    offline = fake_wheelhouse(root / "offline")
    args = argparse.Namespace(out=root / "out", work=root / "work", shapes=offline / "shapes", device="cpu", small=False)
    args.out.mkdir()
    assert gpu_smoke_steps.step_random_models(args) == 0
    return args


@pytest.mark.parametrize("count, max_seq_length, context_tokens", [(48, 512, 400), (12, 1024, 874)])  # as the qlora steps use them
def test_rag_records_come_close_to_the_row_length_and_keep_their_answer(smoke_dirs, count, max_seq_length, context_tokens):
    from transformers import AutoTokenizer

    from localnova.finetune.chat_data import IGNORE_INDEX, tokenize_chat

    model = smoke_dirs.work / "models" / "smollm2-135m-instruct"
    tokenizer = AutoTokenizer.from_pretrained(model)
    records = gpu_smoke_steps.rag_records(count, model, context_tokens)
    lengths = []
    for record in records:
        full = tokenize_chat(tokenizer, record["messages"], max_seq_length=10_000)
        assert len(full["input_ids"]) <= max_seq_length  # nothing is cut: the answer stays in the row
        row = tokenize_chat(tokenizer, record["messages"], max_seq_length)
        assert any(label != IGNORE_INDEX for label in row["labels"])
        lengths.append(len(full["input_ids"]))
    assert min(lengths) > 0.8 * max_seq_length  # rows of about the length the plan's estimate assumes


@pytest.mark.slow
def test_the_study_step_runs_every_arm_and_the_merged_step_merges(smoke_dirs, monkeypatch):
    from localnova.config import FinetuneConfig

    monkeypatch.chdir(REPO)
    from localnova import console

    monkeypatch.setattr(console, "gpu_memory_held_gb", lambda: 0.09)  # as if the embedder alone stayed on a GPU
    monkeypatch.setattr(console, "GPU_MEMORY_AFTER_STAGE", {})
    assert gpu_smoke_steps.step_study(smoke_dirs) == 0
    study = json.loads((smoke_dirs.out / "study.json").read_text())
    assert study["exit_status"] == 0 and study["answers_per_arm"] == {arm: 4 for arm in ("base", "rag", "ft", "ft_rag")}
    held = study["gpu_memory_held_after_stage_gb"]
    assert list(held)[0] == "eval set, corpus and index" and "fine-tuning (or reuse)" in held and len(held) >= 8
    assert study["gpu_memory_left_behind_gb"] == 0.0 and study["faiss_on_gpu"] is False
    # the merged step on an adapter trained as the qlora step trains, less the 4 bits (bitsandbytes is not in this venv)
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
    config = FinetuneConfig(epochs=1, batch_size=2, max_seq_length=512, lora=lora)
    base = smoke_dirs.work / "models" / "smollm2-135m-instruct"
    records = gpu_smoke_steps.rag_records(4, base, 400)
    trained = gpu_smoke_steps.train(base, config, records, smoke_dirs.work / "qlora-adapter", 2, device="cpu")
    assert trained["adapter_saved"] and trained["device"] == "cpu" and trained["quantization"] == "none"
    status = gpu_smoke_steps.step_merged(smoke_dirs)
    merged = json.loads((smoke_dirs.out / "merged.json").read_text())
    assert merged["merged"] is True and merged["requests"] == 32 and merged["device"] == "cpu"
    assert status == 0  # on the CPU too, with the same lines
