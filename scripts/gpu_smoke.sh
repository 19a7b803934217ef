#!/usr/bin/env bash
# GPU smoke test of the local path on a CUDA node that may have no network at all, in at most 9
# minutes on one H200.
#
# The node needs a CUDA build of torch; what else the study needs and the node lacks comes from a
# wheelhouse made beforehand on a connected machine by scripts/prepare_offline.py (.offline/ by
# default: wheels/, and shapes/ with the config and tokenizer, no weights, of SmolLM2-135M,
# MiniLM and Qwen2.5-7B). Nothing here reaches a network: pip installs with --no-index from the
# wheelhouse only, and the hubs are off. The script
#   - picks the Python that holds torch ($PYTHON, else the first of python3, python,
#     /opt/torch/.venv/bin/python3, /usr/bin/python3 that has it);
#   - installs the wheels into a private folder and puts it and the project's src on PYTHONPATH
#     (in every mode: with no wheelhouse the node's own packages are used as they are);
#   - checks the versions that matter first (peft 0.18+ beside transformers 5, transformers, trl,
#     bitsandbytes, ...) and whether each package a step needs imports; a step whose needs are
#     missing is recorded as skipped with the reason, and the others still run;
#   - runs each step of scripts/gpu_smoke_steps.py under `timeout`, with its own limit and
#     within one overall budget (SMOKE_BUDGET_S, 540 s): QLoRA on the SmolLM2 shape, the
#     transformers backend with that adapter merged, the vllm backend with that adapter against
#     the transformers backend, the whole study on random-weights models, one FSDP rank through
#     accelerate launch, QLoRA on the Qwen2.5-7B shape against --plan, and last the GPU-marked
#     tests.
# Everything lands in ${OUT:-gpu_smoke_out}: gpu_smoke.json (device, versions, each step's status
# and seconds, the figures), the step logs, node_packages.txt (the node's own package list, for
# the next prepare_offline.py). The exit status is 0 only when every step passed.
#
#   bash scripts/gpu_smoke.sh              # on the GPU node, from anywhere
#   bash scripts/gpu_smoke.sh --dry-run    # each step, its limit and its command; runs nothing
#   SMOKE_OFFLINE=path/to/.offline bash scripts/gpu_smoke.sh
#   SMOKE_DEVICE=cpu SMOKE_SMALL=1 bash scripts/gpu_smoke.sh   # every step rehearsed on the CPU, small (tests/engines does)
# SMOKE_BUDGET_S sets the overall budget (540 s) and SMOKE_LIMIT_SCALE multiplies each step's limit
# (1), for a slower machine. SMOKE_DEVICE is auto (a CUDA GPU, the default) or cpu; SMOKE_SMALL=1
# runs every step on fewer and shorter rows.
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

absolute() { if [[ $1 == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; } # relative to where it was started
OUT_DIR=$(absolute "${OUT:-gpu_smoke_out}")
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OFFLINE_DIR=$(absolute "${SMOKE_OFFLINE:-$REPO/.offline}")
WHEELS_DIR="$OFFLINE_DIR/wheels"
SHAPES_DIR="$OFFLINE_DIR/shapes"
WORK_DIR="${TMPDIR:-/tmp}/localnova-gpu-smoke-$$"
SITE_DIR="$WORK_DIR/site"
LOG_DIR="$OUT_DIR/logs"
STEPS_TSV="$OUT_DIR/steps.tsv"
BUDGET_S=${SMOKE_BUDGET_S:-540}
LIMIT_SCALE=${SMOKE_LIMIT_SCALE:-1} # a slower machine (or a CPU test) multiplies every step's limit
REPORT_RESERVE_S=15 # kept back so the JSON is always written
cd "$REPO" || exit 2

has_torch() { "$1" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)' >/dev/null 2>&1; }
if [[ -z ${PYTHON:-} ]]; then
    for candidate in python3 python /opt/torch/.venv/bin/python3 /usr/bin/python3; do
        if command -v "$candidate" >/dev/null 2>&1 && has_torch "$candidate"; then
            PYTHON=$(command -v "$candidate")
            break
        fi
    done
fi
PYTHON=${PYTHON:-python3}

# Never wait on a network: no index for pip, no hub for the models, no tracker.
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
export LOCALNOVA_CACHE=${LOCALNOVA_CACHE:-$WORK_DIR/cache}
export LOCALNOVA_SHAPES=$SHAPES_DIR # the QLoRA test builds its model from the SmolLM2 shape when the model package is absent
export PYTHONPATH="$SITE_DIR:$REPO/src${PYTHONPATH:+:$PYTHONPATH}" SMOKE_SITE_DIR="$SITE_DIR"
STEPS_PY=("$PYTHON" "$REPO/scripts/gpu_smoke_steps.py")
COMMON=(--out "$OUT_DIR" --work "$WORK_DIR" --shapes "$SHAPES_DIR" --device "${SMOKE_DEVICE:-auto}")
[[ ${SMOKE_SMALL:-0} == 1 ]] && COMMON+=(--small) # a rehearsal's sizes: the same lines, less arithmetic

STEP_NUMBER=0
STARTED_AT=$SECONDS

# run_step NAME LIMIT_S COMMAND...: runs COMMAND under `timeout`, logs it, records the outcome;
# skipped when something it needs is missing (blocked.tsv: the versions step lists the packages
# and the CUDA device, run_step the earlier steps that did not pass).
run_step() {
    local name=$1 limit=$(($2 * LIMIT_SCALE))
    shift 2
    STEP_NUMBER=$((STEP_NUMBER + 1))
    local needs
    needs=$("${STEPS_PY[@]}" needs --name "$name" 2>/dev/null)
    if ((DRY_RUN)); then
        printf 'step %d: %s (limit %ss)%s\n    %s\n' "$STEP_NUMBER" "$name" "$limit" "${needs:+ needs $needs}" "$*"
        return 0
    fi
    local blocker
    blocker=$(blocked_by "$needs")
    if [[ -n $blocker ]]; then
        printf '%s\tskipped\t0\t0\t%s\tneeds %s\n' "$name" "$limit" "$blocker" >>"$STEPS_TSV"
        printf '%s\tthe step was skipped\n' "$name" >>"$OUT_DIR/blocked.tsv"
        echo "== step $STEP_NUMBER: $name: skipped, needs $blocker"
        return 0
    fi
    local left=$((BUDGET_S - REPORT_RESERVE_S - (SECONDS - STARTED_AT)))
    if ((left < 10)); then
        printf '%s\tskipped\t0\t0\t%s\tthe %ss budget was spent\n' "$name" "$limit" "$BUDGET_S" >>"$STEPS_TSV"
        echo "== step $STEP_NUMBER: $name: skipped, the ${BUDGET_S}s budget was spent"
        return 0
    fi
    ((limit > left)) && limit=$left
    echo "== step $STEP_NUMBER: $name (limit ${limit}s)"
    local started_ns rc status seconds
    started_ns=$(date +%s%N)
    timeout --kill-after=5 "$limit" "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null
    rc=$?
    seconds=$(awk -v a="$started_ns" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\t\n' "$name" "$status" "$rc" "$seconds" "$limit" >>"$STEPS_TSV"
    [[ $status == ok ]] || printf '%s\tthe step %s\n' "$name" "$status" >>"$OUT_DIR/blocked.tsv" # for the steps that use its output
    echo "   $status (exit $rc) in ${seconds}s; log: $LOG_DIR/$name.log"
    if [[ $status != ok ]]; then
        tail -n 5 "$LOG_DIR/$name.log" | sed 's/^/   | /'
    fi
    return 0
}

# The first of NEEDS (comma-separated) that blocked.tsv lists, with its reason; empty if none.
blocked_by() {
    [[ -n $1 && -f "$OUT_DIR/blocked.tsv" ]] || return 0
    local need module reason
    for need in ${1//,/ }; do
        while IFS=$'\t' read -r module reason; do
            if [[ $module == "$need" ]]; then
                echo "$need ($reason)"
                return 0
            fi
        done <"$OUT_DIR/blocked.tsv"
    done
}

if ((DRY_RUN)); then
    echo "gpu_smoke.sh --dry-run: budget ${BUDGET_S}s, python: $PYTHON, wheelhouse: $OFFLINE_DIR, output: $OUT_DIR"
else
    mkdir -p "$LOG_DIR" "$WORK_DIR" || exit 2
    : >"$STEPS_TSV"
fi

# Each limit is a ceiling with room above what the step should take on one H200; together they
# fit the budget less the report's reserve (docs/gpu.md gives the budget on paper). The overall
# budget still cuts a later step short when earlier ones ran long.
run_step device 20 "${STEPS_PY[@]}" device "${COMMON[@]}"
if compgen -G "$WHEELS_DIR/*.whl" >/dev/null || ((DRY_RUN)); then
    run_step install_wheels 30 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE_DIR" "$WHEELS_DIR"/*.whl
fi
run_step versions 45 "${STEPS_PY[@]}" versions "${COMMON[@]}"
run_step random_models 35 "${STEPS_PY[@]}" random_models "${COMMON[@]}"
run_step qlora 45 "${STEPS_PY[@]}" qlora "${COMMON[@]}"
run_step merged 30 "${STEPS_PY[@]}" merged "${COMMON[@]}"
run_step vllm_answers 60 "${STEPS_PY[@]}" vllm_answers "${COMMON[@]}"
run_step study 85 "${STEPS_PY[@]}" study "${COMMON[@]}"
run_step fsdp 50 "${STEPS_PY[@]}" fsdp "${COMMON[@]}"
run_step qlora_7b 95 "${STEPS_PY[@]}" qlora_7b "${COMMON[@]}"
# Only the files that hold GPU-marked tests: the rest of the suite needs the dev dependencies.
mapfile -t GPU_TEST_FILES < <(grep -l "pytest.mark.gpu" tests/test_*.py)
run_step gpu_tests 30 "$PYTHON" -m pytest -m gpu "${GPU_TEST_FILES[@]}" -q -p no:cacheprovider \
    --deselect tests/test_bench_gpu.py::test_quick_pass_on_a_gpu --junitxml "$OUT_DIR/gpu_tests.xml"

if ((DRY_RUN)); then
    echo "report: write $OUT_DIR/gpu_smoke.json (device, versions, each step's status and seconds, the figures)"
    exit 0
fi
timeout 60 "${STEPS_PY[@]}" report "${COMMON[@]}" --budget "$BUDGET_S" --elapsed "$((SECONDS - STARTED_AT))"
rc=$?
rm -rf "$WORK_DIR"
if [[ -f "$OUT_DIR/gpu_smoke.json" ]]; then
    echo "wrote $OUT_DIR/gpu_smoke.json"
else
    echo "gpu_smoke.sh: could not write $OUT_DIR/gpu_smoke.json" >&2
fi
exit $((rc == 0 ? 0 : 1))
