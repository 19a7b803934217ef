"""The backend registry: the one list of backend names and where each lives.

Backends are imported only when asked for, so `localnova --help` and `localnova report` never
import torch, vllm or boto3.
"""

from __future__ import annotations

import difflib
import importlib

from localnova.backends.base import Backend
from localnova.config import ModelConfig
from localnova.errors import UserError

# name -> "module:class". config.ModelConfig.backend lists the same names (a test checks).
BACKENDS: dict[str, str] = {
    "transformers": "localnova.backends.transformers_backend:TransformersBackend",
    "vllm": "localnova.backends.vllm_backend:VLLMBackend",
    "openai": "localnova.backends.openai_backend:OpenAIBackend",
    "bedrock": "localnova.backends.bedrock_backend:BedrockBackend",
    "simulated": "localnova.backends.simulated:SimulatedBackend",
}


def backend_class(name: str) -> type[Backend]:
    """The class registered under `name`; importing its module loads no model."""
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, list(BACKENDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown backend {name!r}{hint}; known: {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_backend(model: ModelConfig, adapter_path: str | None = None) -> Backend:
    """Build the backend that `model.backend` names, loading `model.model` (and an adapter)."""
    return backend_class(model.backend)(model, adapter_path=adapter_path)
