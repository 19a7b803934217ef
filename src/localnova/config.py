"""The study config: one YAML file says everything one study does.

Every section is a pydantic model that forbids unknown keys, so a typo is an error that names
the key path and the file. `--set key.sub=value` overrides any key before validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from localnova.config_files import (  # noqa: F401  (parse_override_value: read from here by serve.py)
    apply_overrides,
    format_validation_error,
    load_yaml_mapping,
    parse_override_value,
    resolve_config_paths,
)
from localnova.errors import UserError
from localnova.plugins import judge_kinds, unknown_kind_message
from localnova.study_parts import (  # noqa: F401  (Section, ChunkingConfig, field names: read from here by other modules)
    BUILTIN_ARMS,
    EVAL_FIELD_NAMES,
    TRAIN_FIELD_NAMES,
    ArmConfig,
    ChunkingConfig,
    RaftConfig,
    RubricConfig,
    Section,
    TrackerConfig,
    known_fields,
)

# The study's vocabulary, defined once: every other module reads these names.
Arm = str  # an arm's name: a built-in arm (study_parts.BUILTIN_ARMS) or one of arm_definitions
ARMS: tuple[str, ...] = ("base", "rag", "ft", "ft_rag")  # the post's four arms, the default set
BASE_ARM = "base"  # the arm every other arm is compared with
# The post's arms by their parts (a config's own arms: StudyConfig.arm_config)
RAG_ARMS = ("rag", "ft_rag")  # arms whose prompt carries retrieved chunks
FT_ARMS = ("ft", "ft_rag")  # arms answered by the model fine-tuned on the question-answer pairs
BackendName = Literal["transformers", "vllm", "openai", "bedrock", "simulated"]  # backends.BACKENDS agrees (a test checks)
LOCAL_BACKENDS = ("transformers", "vllm")  # backends that load weights here (vs a server or API)
Preset = Literal["nova", "free"]  # finetune/presets.py says what each allows
Tracker = Literal["tensorboard", "wandb", "mlflow"]  # finetune.report_to: where training metrics go
# eval.findings: the published findings the report sets the run against (localnova/findings/).
# The default names the bundled set, the AWS post's; a path names a team's own file; these
# values turn the report's Reproduction section off.
DEFAULT_FINDINGS = "nova_case_study"
FINDINGS_OFF = ("", "none")


class CorpusConfig(Section):
    path: Path
    chunking: ChunkingConfig = ChunkingConfig()


class RetrievalConfig(Section):
    embedding_model: str = "all-minilm-l6-v2"
    index: Literal["flat", "hnsw", "ivf"] = "flat"  # flat = exact inner product
    top_k: int = Field(3, gt=0)
    batch_size: int = Field(32, gt=0)
    # Bedrock path: use a Knowledge Base instead of the local FAISS index
    knowledge_base_id: str | None = None


class GenerationConfig(Section):
    max_new_tokens: int = Field(128, gt=0)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    batch_size: int = Field(16, gt=0)


class ModelConfig(Section):
    """An answer model or an LLM judge: a name, a backend and what the backend loads."""

    name: str
    backend: BackendName = "transformers"
    model: str  # bundled name, hub id, local path, Bedrock model id or server model name
    revision: str | None = None
    generation: GenerationConfig = GenerationConfig()
    # backend-specific settings (e.g. base_url for openai, tensor_parallel_size for vllm,
    # dtype or device for transformers, max_concurrency for bedrock)
    options: dict[str, Any] = Field(default_factory=dict)
    # Bedrock: the customizable base model id, when it differs from the inference id
    customization_model: str | None = None
    # A LoRA adapter trained elsewhere for the ft arms; without it the study trains one
    adapter: Path | None = None


class JudgeConfig(Section):
    name: str
    # a registered judge kind (plugins.py): llm, token_f1, embedding_similarity, or one that a
    # package adds through the localnova.judges entry points
    kind: str = "llm"
    # for kind=llm: which model answers as judge (same fields as an answer model)
    model: ModelConfig | None = None
    # llm judges: "parsed" reads the integer from the JSON reply; "logprob" takes the
    # expected score over the score tokens' probabilities (backends that expose them)
    scoring: Literal["parsed", "logprob"] = "parsed"
    max_attempts: int = Field(3, gt=0)
    # logprob scoring: below this probability mass on the score tokens "0".."10" the reply
    # is a recorded failure, not a score (a model that mostly wants to write something else)
    min_score_mass: float = Field(0.5, gt=0, le=1)
    embedding_model: str = "all-minilm-l6-v2"  # for kind=embedding_similarity
    rubric: RubricConfig = RubricConfig()  # kind=llm: what it grades by and on what scale
    options: dict[str, Any] = Field(default_factory=dict)  # settings of a judge kind a package adds

    @field_validator("kind")
    @classmethod
    def _registered(cls, kind: str) -> str:
        if kind not in judge_kinds():
            raise ValueError(unknown_kind_message(kind))
        return kind

    @model_validator(mode="after")
    def _llm_needs_model(self) -> "JudgeConfig":
        if self.kind == "llm" and self.model is None:
            raise ValueError(f"judge {self.name!r} of kind 'llm' needs a model")
        return self


class ControlGate(Section):
    """Which judges make the headline panel (evaluate/controls.py). A judge must score the ground
    truth strictly above both the empty answer and another question's truth on at least
    min_ranked_share of the questions (a ranking on its own scale, so a judge whose scale sits
    high or low is not failed for it), fail at most max_control_failure_rate of its controls, and
    at most max_answer_failure_rate of the answers of any model x arm. The last rule holds in
    every headline mode: a comparison needs the same judges on every question."""

    min_ranked_share: float = Field(0.8, ge=0, le=1)
    max_control_failure_rate: float = Field(0.2, ge=0, le=1)
    max_answer_failure_rate: float = Field(0.2, ge=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _absolute_thresholds_were_replaced(cls, data: Any) -> Any:
        if isinstance(data, dict):
            old = [key for key in LEGACY_GATE_KEYS if key in data]
            if old:
                raise ValueError(
                    f"{', '.join(old)}: absolute score thresholds were replaced by a per-question ranking on the judge's own "
                    "scale; set min_ranked_share (and max_control_failure_rate, max_answer_failure_rate) instead"
                )
        return data


# The absolute thresholds of the first gate; runs stored with them are summarised under the
# ranking gate (report/summarize.py drops them), a config that sets them is refused.
LEGACY_GATE_KEYS = ("truth_min", "empty_max", "other_max")


class LatencyProbeConfig(Section):
    """The latency probe (evaluate/latency_probe.py): on a seeded sample of questions, each arm
    answers one request at a time, the arms in a random order per question and round, so a
    machine (or service) that gets busier during the run cannot pass for an arm's effect. The
    report's latency comparison comes from these timings; the batched answers' times stay as
    throughput."""

    enabled: bool = True
    questions: int = Field(10, gt=0)  # how many questions are sampled (all of them when fewer)
    repeats: int = Field(2, gt=0)  # rounds per question; each round draws its own order
    # Cap on each probe answer's new tokens (None: the arm's own max_new_tokens). A cap makes
    # the probe cheaper and times every arm alike up to it, but hides length differences past it.
    max_new_tokens: int | None = Field(None, gt=0)


class EvalConfig(Section):
    # JSONL, CSV, TSV, Parquet, a Hugging Face dataset folder, or hf:owner/name on the Hub
    path: Path
    # The columns of the file that hold question_id, question, answer and doc_ids, where they
    # are named otherwise: {question: prompt, answer: reference}
    fields: dict[str, str] = Field(default_factory=dict)
    split: str | None = None  # a dataset with several splits: which one (default test, then train)
    limit: int | None = Field(None, gt=0)

    @field_validator("fields")
    @classmethod
    def _known_eval_fields(cls, fields: dict[str, str]) -> dict[str, str]:
        return known_fields(fields, EVAL_FIELD_NAMES)

    controls: bool = True  # judges also score the ground truth, an empty answer, another answer
    bootstrap_samples: int = Field(2000, gt=0)
    # gated: the headline panel keeps only the judges that pass their controls (the others
    # stay in the per-judge tables, marked); all: every judge, whatever its controls say
    headline_panel: Literal["gated", "all"] = "gated"
    control_gate: ControlGate = ControlGate()
    latency_probe: LatencyProbeConfig = LatencyProbeConfig()
    # The findings the report's Reproduction section sets this run against: the name of a
    # bundled set (DEFAULT_FINDINGS, the AWS post's), a YAML file of the same form, or none.
    # It decides nothing the study computes, only what the report compares it with.
    findings: str | None = DEFAULT_FINDINGS


class LoraConfig(Section):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class FinetuneConfig(Section):
    # chat or Nova JSONL, or question/answer rows (JSONL, CSV, Parquet, a dataset folder or
    # hf:owner/name); default: generated by gen-qa
    train_path: Path | None = None
    # The columns of question/answer rows that hold question, answer and doc_id, where they are
    # named otherwise; and which split of a dataset with several (default train)
    train_fields: dict[str, str] = Field(default_factory=dict)
    train_split: str | None = None

    @field_validator("train_fields")
    @classmethod
    def _known_train_fields(cls, fields: dict[str, str]) -> dict[str, str]:
        return known_fields(fields, TRAIN_FIELD_NAMES)

    # A user's own train_path is decontaminated against the eval set like generated pairs
    # (Bedrock path); false sends it as it is, and the run records that it was not checked.
    decontaminate_train_path: bool = True
    validation_path: Path | None = None
    # Train on a seeded sample of at most this many pairs (after decontamination): a knob for
    # quick runs such as the CPU demo; None uses every pair
    max_train_pairs: int | None = Field(None, gt=0)
    preset: Preset = "free"
    epochs: int = Field(2, gt=0)
    batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(0, ge=0)
    max_seq_length: int = Field(512, gt=0)
    lora: LoraConfig = LoraConfig()
    raft: RaftConfig = RaftConfig()  # the recipe of arms whose adapter is raft
    quantization: Literal["none", "4bit"] = "none"  # 4bit = QLoRA: a CUDA GPU, or the CPU with bitsandbytes 0.50+
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: from the hardware
    # Speed (finetune/trainer.py says what each does): Liger's Triton kernels through the
    # Trainer's use_liger_kernel switch, CUDA only (needs the liger-kernel package); and
    # padding-free batches, rows laid end to end with their own positions instead of padded.
    liger_kernels: bool = False
    padding_free: bool = False
    # Training metrics to a tracker you already run (the Trainer's report_to); none by default.
    report_to: list[Tracker] = Field(default_factory=list)
    # Local training: one adapter per seed, each answering the ft arms, so that the report's
    # intervals and tests take the training seed's variance in (evaluate/seeds.py). None: one
    # adapter, trained with the study's seed. The data sample stays the study seed's.
    seeds: list[int] | None = Field(None, min_length=1)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError("seeds are listed more than once")
        return seeds


class GenQAConfig(Section):
    generator: ModelConfig | None = None  # default: the first answer model
    pairs_per_chunk: int = Field(3, gt=0)
    target_pairs: int = Field(1000, gt=0)
    grounding_threshold: float = Field(0.5, ge=0, le=1)
    dedup_threshold: float = Field(0.95, ge=0, le=1)
    decontam_ngram: int = Field(8, gt=0)
    decontam_similarity: float = Field(0.9, ge=0, le=1)
    validation_fraction: float = Field(0.1, ge=0, lt=1)


class TokenPrice(Section):
    """A model's on-demand price, USD per 1,000 tokens, set in the config (bedrock.prices)."""

    input_per_1k: float = Field(ge=0)
    output_per_1k: float = Field(0.0, ge=0)


class BedrockConfig(Section):
    region: str = "us-east-1"
    role_arn: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = "localnova"
    knowledge_base: dict[str, Any] = Field(default_factory=dict)
    hosting: Literal["on_demand", "provisioned"] = "on_demand"
    provisioned_model_units: int = Field(1, gt=0)
    budget_usd: float = Field(50.0, ge=0)
    max_concurrency: int = Field(4, gt=0)
    # Prices of models that the price file (localnova/prices/bedrock.yaml) lacks, by model id:
    # a billable model without a price stops the estimate and the run; one priced here is run
    # at this price, which the cost table shows as the config's.
    prices: dict[str, TokenPrice] = Field(default_factory=dict)


class StudyConfig(Section):
    name: str
    seed: int = 0
    output_dir: Path = Path("runs")
    corpus: CorpusConfig
    retrieval: RetrievalConfig = RetrievalConfig()
    eval: EvalConfig
    models: list[ModelConfig] = Field(min_length=1)
    arms: list[Arm] = Field(default_factory=lambda: ["base", "rag"])
    # Arms beyond the built-in ones (base, rag, ft, ft_rag, raft): each a name plus its prompt,
    # retrieval and adapter recipe; `arms` lists them by name like the built-in ones.
    arm_definitions: list[ArmConfig] = Field(default_factory=list)
    tracker: TrackerConfig | None = None  # where a finished run's metrics, report and log go
    judges: list[JudgeConfig] = Field(default_factory=list)
    finetune: FinetuneConfig = FinetuneConfig()
    gen_qa: GenQAConfig = GenQAConfig()
    bedrock: BedrockConfig | None = None

    @field_validator("arms")
    @classmethod
    def _unique_arms(cls, arms: list[str]) -> list[str]:
        if len(set(arms)) != len(arms):
            raise ValueError("arms are listed more than once")
        return arms

    @model_validator(mode="after")
    def _arms_are_defined(self) -> "StudyConfig":
        defined = [arm.name for arm in self.arm_definitions]
        taken = [name for name in defined if name in BUILTIN_ARMS]
        if taken:
            raise ValueError(f"arm_definitions: {taken[0]!r} is a built-in arm; give your variant another name")
        if len(set(defined)) != len(defined):
            raise ValueError(f"arm_definitions: names appear more than once: {defined}")
        unknown = [arm for arm in self.arms if arm not in BUILTIN_ARMS and arm not in defined]
        if unknown:
            raise ValueError(f"arms: {unknown[0]!r} is neither a built-in arm ({', '.join(BUILTIN_ARMS)}) nor in arm_definitions")
        return self

    def arm_config(self, name: str) -> ArmConfig:
        """The parts of the arm `name`: a built-in arm or one of arm_definitions."""
        for arm in self.arm_definitions:
            if arm.name == name:
                return arm
        if name in BUILTIN_ARMS:
            return BUILTIN_ARMS[name]
        raise KeyError(f"arm {name!r} is not defined")

    def uses_adapter(self, arm: str) -> bool:
        """Whether the arm is answered by a fine-tuned model (of any recipe)."""
        return self.arm_config(arm).adapter != "none"

    def uses_retrieval(self, arm: str) -> bool:  # whether the arm's prompt carries retrieved chunks
        return self.arm_config(arm).retrieval is not None

    @property
    def adapter_recipes(self) -> list[str]:
        """The training recipes this study's arms need, in the order the arms first name them."""
        return list(dict.fromkeys(self.arm_config(arm).adapter for arm in self.arms if self.uses_adapter(arm)))

    @model_validator(mode="after")
    def _unique_names(self) -> "StudyConfig":
        for what, names in (("models", [m.name for m in self.models]), ("judges", [j.name for j in self.judges])):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} have duplicate names: {names}")
        return self

    @property
    def study_dir(self) -> Path:
        return self.output_dir / self.name

    def all_models(self) -> list[ModelConfig]:
        """Every model the study calls: answer models, LLM judges and the gen-qa generator."""
        judges = [judge.model for judge in self.judges if judge.model is not None]
        generator = [self.gen_qa.generator] if self.gen_qa.generator is not None else []
        return [*self.models, *judges, *generator]

    @property
    def uses_bedrock(self) -> bool:
        return any(model.backend == "bedrock" for model in self.all_models())

    @property
    def simulated(self) -> bool:
        """True when any model is answered by the simulated backend: its results are not real."""
        return any(model.backend == "simulated" for model in self.all_models())

    @property
    def retrieves(self) -> bool:
        return any(self.uses_retrieval(arm) for arm in self.arms)

    @property
    def fine_tunes(self) -> bool:
        return any(self.uses_adapter(arm) for arm in self.arms)

    @property
    def probed_arms(self) -> list[str]:
        """The arms the latency probe times for each model, in the order the study hands them
        to it (the base model's, then its first adapter recipe's) when the probe is on and
        there are two arms to compare, else none. Each backend among them (the base model, the
        adapter) also answers one untimed warm-up call per sitting."""
        if not self.eval.latency_probe.enabled or len(self.arms) < 2:
            return []
        first = self.adapter_recipes[:1]  # a second recipe's arms are not probed (pipeline.run_answers)
        return [arm for arm in self.arms if not self.uses_adapter(arm)] + [a for a in self.arms if self.arm_config(a).adapter in first]


def select_run(config: StudyConfig, arms: list[str] | None = None, limit: int | None = None) -> StudyConfig:
    """The config of one run: `--arms` narrows the arms and `--limit` the eval set. Checked
    here, before any stage (or any AWS call) starts, and applied to the config so that every
    stage, the Bedrock estimate and budget check included, sees the same arms and questions."""
    if arms is not None:
        unknown = [arm for arm in arms if arm not in config.arms]
        if unknown or not arms:
            raise UserError(f"--arms {','.join(unknown) or '(none)'}: not among the config's arms ({', '.join(config.arms)})")
        config = config.model_copy(update={"arms": list(dict.fromkeys(arms))})
    if limit is not None:
        if limit <= 0:
            raise UserError(f"--limit {limit}: must be a positive number of questions")
        config = config.model_copy(update={"eval": config.eval.model_copy(update={"limit": limit})})
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Read, override and validate a study config. Relative paths written in the file are taken
    from the file's own folder (resolve_config_paths); those given in `overrides` (--set) from
    the working folder, as the user typed them there."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    data = load_yaml_mapping(path.read_text(encoding="utf-8"), str(path))
    data = resolve_config_paths(data, path.parent)
    data = apply_overrides(data, overrides or [])
    return validate_config(data, str(path))


def validate_config(data: dict[str, Any], source: str = "config") -> StudyConfig:
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as error:
        raise UserError(format_validation_error(error, source)) from None


def config_to_dict(config: StudyConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")
