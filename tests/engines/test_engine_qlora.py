"""QLoRA through the project's trainer with bitsandbytes' CPU backend: the code path a GPU takes
(the device comes from the hardware, the 4-bit load is bitsandbytes' own), then the adapter
merged into the full-precision base by the transformers backend and answering, and the
training's memory set against what `--plan` predicts for the same settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from engine_support import REPO, need_bitsandbytes

pytestmark = pytest.mark.engines

# Trains in a process of its own, so its peak resident memory is the training's: the peak is
# reset (Linux: 5 written to clear_refs) once everything is imported, just before the model
# loads, and read after training.
TRAIN = """
import json, sys
from pathlib import Path
from localnova.config import load_config
from localnova.finetune.lora import train_adapter
from localnova.models import resolve_model

def resident(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9

config = load_config(sys.argv[1], ["finetune.quantization=4bit"])
records = [json.loads(line) for line in Path(sys.argv[2]).read_text().splitlines()[:32]]
import peft, transformers, trl, bitsandbytes  # noqa: F401 - imported before the peak is reset
Path("/proc/self/clear_refs").write_text("5")
start = resident("VmRSS")
info = train_adapter(resolve_model("smollm2-135m-instruct"), records, None, config.finetune, Path(sys.argv[3]), seed=0, max_steps=3)
print(json.dumps({"info": info.to_json(), "resident_at_start_gb": start, "peak_resident_gb": resident("VmHWM")}))
"""


@pytest.fixture(scope="module")
def qlora(tmp_path_factory) -> dict:
    need_bitsandbytes()
    folder = tmp_path_factory.mktemp("qlora")
    config = REPO / "configs" / "demo.yaml"
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, str(config), str(REPO / "data" / "demo" / "train.jsonl"), str(folder / "adapter")],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["adapter"] = str(folder / "adapter")
    return result


def test_qlora_trains_4bit_on_the_cpu_through_the_study_trainer(qlora):
    info = qlora["info"]
    # SmolLM2-135M has 30 decoder layers of 7 linear layers (q, k, v, o, gate, up, down), all 4-bit
    assert info["settings"]["quantization"] == "4bit" and info["linear_4bit_layers"] == 30 * 7
    assert info["device"] == "cpu" and len(info["loss_curve"]) == 3
    assert all(point["loss"] > 0 for point in info["loss_curve"])


def test_the_qlora_adapter_merges_into_the_full_precision_base_and_answers(qlora):
    from localnova.backends.transformers_backend import TransformersBackend
    from localnova.config import GenerationConfig, ModelConfig
    from localnova.types import ChatRequest, GenerationParams

    questions = [json.loads(line)["question"] for line in (REPO / "data" / "demo" / "eval.jsonl").read_text().splitlines()[:4]]
    requests = [
        ChatRequest.from_messages([{"role": "user", "content": q}], GenerationParams(max_new_tokens=16, top_logprobs=5)) for q in questions
    ]
    model = ModelConfig(name="smollm2-135m", model="smollm2-135m-instruct", generation=GenerationConfig(max_new_tokens=16))
    answers = {}
    for name, adapter in (("merged", qlora["adapter"]), ("base", None)):
        backend = TransformersBackend(model, adapter_path=adapter)
        try:
            answers[name] = backend.generate(requests)
            if adapter:
                assert type(backend.model).__module__.split(".")[0] == "transformers"  # merge_and_unload left the plain model
        finally:
            backend.close()
    assert all(answer.output_tokens > 0 for answer in answers["merged"])
    # The adapter moved the model: its first-position log probabilities differ from the base's.
    moved = max(
        abs(a.top_logprobs[0][token] - b.top_logprobs[0][token])
        for a, b in zip(answers["merged"], answers["base"], strict=True)
        for token in set(a.top_logprobs[0]) & set(b.top_logprobs[0])
    )
    print(f"the merged QLoRA adapter moved the first-position log probabilities by up to {moved:.4f}")
    assert moved > 1e-4


def test_the_qlora_memory_against_the_plans_4bit_estimate(qlora):
    """--plan's estimate of the same training (the demo's settings, 4-bit) is a GPU's: 4-bit
    weights, LoRA states, activations with gradient checkpointing, the logits, and a fixed
    runtime overhead. The CPU's measure is the growth of the resident set while loading and
    training. The estimate must hold the measure (it is what a user sizes a GPU by); how far
    above it is, is printed."""
    from localnova.config import ModelConfig, load_config
    from localnova.model_shapes import model_shape
    from localnova.models import resolve_model
    from localnova.plan import training_memory

    config = load_config(REPO / "configs" / "demo.yaml", ["finetune.quantization=4bit"])
    model = ModelConfig(name="smollm2-135m", model=resolve_model("smollm2-135m-instruct").path)
    predicted = training_memory(model, model_shape(model), config)
    measured = qlora["peak_resident_gb"] - qlora["resident_at_start_gb"]
    print(
        f"QLoRA of SmolLM2-135M on the CPU: resident set grew by {measured:.2f} GB; "
        f"--plan predicts {predicted.gb:.2f} GB ({predicted.detail})"
    )
    assert 0 < measured <= predicted.gb
