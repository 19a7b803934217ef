"""console.py: a stage's closing line says the GPU memory it hands the next stage, where CUDA is
in use, and only there (a CPU run never loads torch for it)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from localnova import console


def fake_torch(initialised: bool, allocated_bytes: int) -> SimpleNamespace:
    cuda = SimpleNamespace(is_initialized=lambda: initialised, memory_allocated=lambda: allocated_bytes)
    return SimpleNamespace(cuda=cuda)


def test_a_stage_on_the_gpu_says_what_memory_it_leaves_held(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", fake_torch(True, 1_250_000_000))
    monkeypatch.setattr(console, "GPU_MEMORY_AFTER_STAGE", {})
    with console.stage("answers m/base"):
        pass
    assert capsys.readouterr().out.splitlines()[-1].endswith("; GPU memory held 1.25 GB")
    assert console.GPU_MEMORY_AFTER_STAGE == {"answers m/base": 1.25}


def test_without_cuda_in_use_the_line_is_as_before(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", fake_torch(False, 0))
    monkeypatch.setattr(console, "GPU_MEMORY_AFTER_STAGE", {})
    with console.stage("judge f1"):
        pass
    assert "GPU memory" not in capsys.readouterr().out and console.GPU_MEMORY_AFTER_STAGE == {}
    monkeypatch.delitem(sys.modules, "torch")
    assert console.gpu_memory_held_gb() is None  # and torch is not imported to find out
    assert "torch" not in sys.modules
