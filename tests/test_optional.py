"""The one dtype table (optional.precision_for), every branch, with the hardware facts passed
in: no CUDA needed."""

from __future__ import annotations

import pytest

from localnova import optional
from localnova.errors import UserError
from localnova.optional import Precision, pick_precision, precision_for

BF16_GPU = {"on_cuda": True, "cuda_bf16": True}
FP16_GPU = {"on_cuda": True, "cuda_bf16": False}


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_auto_on_cpu_is_fp32_weights_with_bf16_autocast_only_for_training_on_a_bf16_cpu(cpu_bf16):
    assert precision_for("auto", "inference", on_cuda=False, cpu_bf16=cpu_bf16) == Precision("float32", False, False, "cpu")
    assert precision_for("auto", "training", on_cuda=False, cpu_bf16=cpu_bf16) == Precision("float32", cpu_bf16, False, "cpu")


@pytest.mark.parametrize("purpose", ["inference", "training"])
def test_auto_on_cuda_is_bf16_where_the_gpu_has_it_else_fp16(purpose):
    training = purpose == "training"
    assert precision_for("auto", purpose, **BF16_GPU) == Precision("bfloat16", training, False, "cuda")
    assert precision_for("auto", purpose, **FP16_GPU) == Precision("float16", False, training, "cuda")


def test_an_explicit_choice_wins_for_inference_in_either_spelling():
    for requested, dtype in [
        ("fp32", "float32"),
        ("float32", "float32"),
        ("bf16", "bfloat16"),
        ("bfloat16", "bfloat16"),
        ("float16", "float16"),
        ("half", "float16"),
    ]:
        assert precision_for(requested, "inference", on_cuda=False).dtype == dtype
        assert precision_for(requested, "inference", **FP16_GPU).dtype == dtype  # taken as it is
    assert precision_for("auto", "inference", on_cuda=True, cuda_bf16=True, device="cuda:1").device == "cuda:1"


def test_explicit_training_precisions_and_their_refusals():
    assert precision_for("fp32", "training", **BF16_GPU) == Precision("float32", False, False, "cuda")
    assert precision_for("fp32", "training", on_cuda=False, cpu_bf16=True) == Precision("float32", False, False, "cpu")
    # bf16 on CPU: autocast over fp32 weights, even where the CPU only emulates it (the user asked)
    assert precision_for("bf16", "training", on_cuda=False) == Precision("float32", True, False, "cpu")
    assert precision_for("bf16", "training", **BF16_GPU) == Precision("bfloat16", True, False, "cuda")
    assert precision_for("fp16", "training", **FP16_GPU) == Precision("float16", False, True, "cuda")
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        precision_for("fp16", "training", on_cuda=False)
    with pytest.raises(UserError, match="no bf16 support"):
        precision_for("bf16", "training", **FP16_GPU)


def test_unknown_names_are_user_errors():
    with pytest.raises(UserError, match="options.dtype 'int3'"):
        precision_for("int3", "inference", on_cuda=False)
    with pytest.raises(UserError, match="finetune.precision"):
        precision_for("fp8", "training", on_cuda=False)
    with pytest.raises(ValueError):
        precision_for("auto", "serving", on_cuda=False)  # type: ignore[arg-type]


def test_short_names_for_the_memory_plan():
    assert [precision_for(r, "inference", **BF16_GPU).short_dtype for r in ("auto", "float32", "half")] == ["bf16", "fp32", "fp16"]


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_pick_precision_reads_this_machines_facts(monkeypatch, cpu_bf16):
    monkeypatch.setattr(optional, "cuda_available", lambda: False)
    monkeypatch.setattr(optional, "cpu_supports_bf16", lambda: cpu_bf16)
    assert pick_precision("auto", "inference") == Precision("float32", False, False, "cpu")
    assert pick_precision("auto", "training") == Precision("float32", cpu_bf16, False, "cpu")
    assert pick_precision("auto", "inference", device="cpu").device == "cpu"
    monkeypatch.setattr(optional, "cuda_available", lambda: True)
    monkeypatch.setattr(optional, "cuda_bf16_supported", lambda: False)
    assert pick_precision("auto", "inference") == Precision("float16", False, False, "cuda")
    assert pick_precision("auto", "inference", device="cpu") == Precision("float32", False, False, "cpu")  # options.device wins


def test_version_problems_name_each_package_too_old_for_the_study():
    from localnova.optional import version_problems

    node = {"torch": "2.11.0+cu130", "transformers": "5.17.0", "peft": "0.17.1", "trl": "0.18.2", "bitsandbytes": "0.50.2"}
    problems = version_problems(node.get)
    assert problems == [
        "trl 0.18.2 is older than 0.19 (SFTConfig's max_length and padding_free)",
        "peft 0.17.1 does not work with transformers 5.17.0: transformers 5 needs peft 0.18 or newer",
    ]
    # the same peft beside transformers 4 is fine; packages not installed are no problem here
    assert version_problems({"transformers": "4.57.1", "peft": "0.17.1"}.get) == []
    assert version_problems({"bitsandbytes": "0.45.0"}.get) == [
        "bitsandbytes 0.45.0 is older than 0.46.1 (4-bit QLoRA with transformers' current quantizer)"
    ]
    assert version_problems({"bitsandbytes": "0.45.0"}.get, only={"trl"}) == []
    assert version_problems({"transformers": "5.0.0rc1", "peft": "0.18.0"}.get) == []
