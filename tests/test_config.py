"""The study config: every shipped YAML validates, mistakes name their key and file."""

from pathlib import Path

import pytest

from localnova.backends import BACKENDS
from localnova.config import ARMS, BASE_ARM, FT_ARMS, LOCAL_BACKENDS, RAG_ARMS, ModelConfig, load_config
from localnova.errors import UserError
from localnova.report.figures import ARM_COLOURS
from localnova.study_parts import BUILTIN_ARMS

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
STUDY_CONFIGS = [path for path in SHIPPED_CONFIGS if "accelerate" not in path.parts]


def test_configs_folder_is_walked_recursively():
    assert (REPO / "configs" / "demo.yaml") in SHIPPED_CONFIGS


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_study_config_validates(path):
    config = load_config(path)
    assert config.models and config.arms


def test_backend_names_agree_with_the_registry():
    # One source of truth: the config's allowed backends are exactly the registry's names.
    allowed = set(ModelConfig.model_fields["backend"].annotation.__args__)
    assert allowed == set(BACKENDS)


def test_the_arm_vocabulary_is_one_set_of_names():
    # The built-in arms hold the post's four (ARMS); the subsets and the base arm are drawn from
    # them, and every built-in arm has its colour in the figures.
    assert list(BUILTIN_ARMS)[: len(ARMS)] == list(ARMS)
    assert BASE_ARM in ARMS and set(RAG_ARMS) <= set(ARMS) and set(FT_ARMS) <= set(ARMS)
    assert BASE_ARM not in RAG_ARMS + FT_ARMS
    assert set(ARM_COLOURS) == set(BUILTIN_ARMS)
    assert set(LOCAL_BACKENDS) <= set(BACKENDS)


def write(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


MINIMAL = """
name: t
corpus: {path: data/demo/corpus}
eval: {path: data/demo/eval.jsonl}
models:
  - {name: m, model: smollm2-135m-instruct}
"""


def test_unknown_key_names_the_key_path_and_file(tmp_path):
    path = write(tmp_path, MINIMAL + "retrieval: {top_kk: 3}\n")
    with pytest.raises(UserError, match=r"study\.yaml: retrieval\.top_kk: unknown key"):
        load_config(path)


def test_nested_list_key_is_named(tmp_path):
    path = write(tmp_path, MINIMAL.replace("{name: m,", "{name: m, temprature: 1,"))
    with pytest.raises(UserError, match=r"models\.0\.temprature: unknown key"):
        load_config(path)


@pytest.mark.parametrize("top_k", [0, -2])
def test_top_k_must_be_positive(tmp_path, top_k):
    path = write(tmp_path, MINIMAL + f"retrieval: {{top_k: {top_k}}}\n")
    with pytest.raises(UserError, match=r"retrieval\.top_k"):
        load_config(path)


def test_missing_file_and_malformed_yaml(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    path = write(tmp_path, "name: [unclosed\n")
    with pytest.raises(UserError, match=r"study\.yaml:\d+: malformed YAML"):
        load_config(path)


def test_missing_required_key(tmp_path):
    path = write(tmp_path, "name: t\ncorpus: {path: x}\nmodels: [{name: m, model: x}]\n")
    with pytest.raises(UserError, match="eval: missing required key"):
        load_config(path)


def test_set_overrides_any_key_with_yaml_types(tmp_path):
    path = write(tmp_path, MINIMAL)
    config = load_config(path, ["retrieval.top_k=7", "models.0.generation.temperature=0.5", "arms=[base, rag, ft]", "eval.limit=null"])
    assert config.retrieval.top_k == 7
    assert config.models[0].generation.temperature == 0.5
    assert config.arms == ["base", "rag", "ft"]
    with pytest.raises(UserError, match="unknown key"):
        load_config(path, ["retrieval.nonsense=1"])
    with pytest.raises(UserError, match="not an index"):
        load_config(path, ["models.3.name=x"])
    with pytest.raises(UserError, match="expected key.path=value"):
        load_config(path, ["retrieval.top_k"])


def test_the_old_absolute_control_thresholds_are_refused_with_what_replaced_them(tmp_path):
    path = write(
        tmp_path, MINIMAL.replace("eval: {path: data/demo/eval.jsonl}", "eval: {path: data/demo/eval.jsonl, control_gate: {other_max: 3}}")
    )
    with pytest.raises(
        UserError, match=r"study\.yaml: eval\.control_gate: .*other_max: absolute score thresholds were replaced .*min_ranked_share"
    ):
        load_config(path)
    gate = "{min_ranked_share: 0.9, max_control_failure_rate: 0.1, max_answer_failure_rate: 0.05}"
    config = load_config(
        write(
            tmp_path, MINIMAL.replace("eval: {path: data/demo/eval.jsonl}", f"eval: {{path: data/demo/eval.jsonl, control_gate: {gate}}}")
        )
    )
    assert (config.eval.control_gate.min_ranked_share, config.eval.control_gate.max_answer_failure_rate) == (0.9, 0.05)
    with pytest.raises(UserError, match=r"min_ranked_share"):
        load_config(
            write(
                tmp_path,
                MINIMAL.replace(
                    "eval: {path: data/demo/eval.jsonl}", "eval: {path: data/demo/eval.jsonl, control_gate: {min_ranked_share: 1.5}}"
                ),
            )
        )
