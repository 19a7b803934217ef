"""Availability of heavy optional packages, in one place.

A feature that needs a missing package raises a UserError that says what to install.
"""

from __future__ import annotations

import importlib.util
from functools import cache

from localnova.errors import UserError

# package import name -> what to install to get it
INSTALL_HINTS = {
    "torch": "pip install torch==2.13.0 (CPU) or see README for the CUDA build",
    "transformers": "pip install 'localnova'",
    "sentence_transformers": "pip install 'localnova'",
    "faiss": "pip install faiss-cpu (or the gpu extra: pip install 'localnova[gpu]')",
    "peft": "pip install 'localnova'",
    "trl": "pip install 'localnova'",
    "vllm": "pip install 'localnova[gpu]' (needs CUDA)",
    "bitsandbytes": "pip install 'localnova[gpu]' (needs CUDA)",
    "boto3": "pip install 'localnova[bedrock]'",
    "openai": "pip install 'localnova'",
}


@cache
def is_available(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def require(package: str, feature: str) -> None:
    """Raise a UserError naming what to install when `package` is missing."""
    if not is_available(package):
        hint = INSTALL_HINTS.get(package, f"pip install {package}")
        raise UserError(f"{feature} needs the package {package!r}: {hint}")


@cache
def cuda_available() -> bool:
    if not is_available("torch"):
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


def gpu_description() -> str:
    """What GPUs this process sees, for the run's record ("none" without CUDA)."""
    if not cuda_available():
        return "none"
    import torch

    return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
