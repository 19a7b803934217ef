"""What a person sees while a study runs, and the run log that keeps everything else.

The console gets one line when a stage starts and one when it ends (with its time), and a
progress bar (count, rate, ETA) while it runs. Bars go to stderr and only to a terminal, never
with --quiet. Libraries' logs and warnings (transformers' deprecations, the Trainer's per-step
dicts) go to the run log in the study folder, which keeps every record at every level; `-v`
shows them on the console too.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RUN_LOG_FILE = "run.log"
# Libraries that log through their own logger with their own console handler; their records
# are sent through ours instead, so they reach the run log and, with -v only, the console.
LIBRARY_LOGGERS = ("transformers", "sentence_transformers", "peft", "trl", "accelerate", "datasets", "huggingface_hub")

log = logging.getLogger("localnova.console")


class _Settings:
    verbose = False
    quiet = False
    run_log: logging.Handler | None = None


settings = _Settings()


class _ConsoleFilter(logging.Filter):
    """Our own warnings and errors always; our info and libraries' records only with -v."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == log.name:
            return False  # stage lines are printed as they are, not as log records
        ours = record.name == "localnova" or record.name.startswith("localnova.")
        if settings.verbose:
            return record.levelno >= logging.INFO
        return record.levelno >= (logging.WARNING if ours else logging.ERROR)


def configure(verbose: bool = False, quiet: bool = False) -> None:
    """Set up the console for one command: where records go, and whether bars show."""
    settings.verbose, settings.quiet = verbose, quiet
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in [h for h in root.handlers if getattr(h, "_localnova_console", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ConsoleFilter())
    handler._localnova_console = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # warnings.warn (FutureWarning, DeprecationWarning) become records of "py.warnings".
    logging.captureWarnings(True)
    # transformers' own bars (loading weights) and tqdm bars of libraries stay off the console;
    # ours pass disable= explicitly.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def bars_enabled() -> bool:
    return not settings.quiet and sys.stderr.isatty()


def route_library_logs() -> None:
    """Send the libraries' records through the root logger (run log; console with -v) instead of
    their own stderr handlers. Called once the libraries are imported, by the code that imports
    them, since transformers installs its handler on import."""
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                library.removeHandler(handler)
        library.propagate = True
        library.setLevel(logging.INFO if settings.verbose or settings.run_log is not None else logging.WARNING)
    silence_library_bars()


def silence_library_bars() -> None:
    """Turn off the progress bars of libraries already imported, by their own switches:
    HF_HUB_DISABLE_PROGRESS_BARS (configure) reaches transformers only when set before it is
    imported, and a bar made with plain tqdm (transformers' GGUF conversion) only obeys
    TQDM_DISABLE, which cli.main sets before tqdm is first imported."""
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].utils.logging.disable_progress_bar()


class _RunLogHandler(logging.Handler):
    """Appends to <folder>/run.log once the study folder exists, holding the records until then:
    a run refused by a check (bad config, unknown model) leaves no folder behind."""

    def __init__(self, path: Path):
        super().__init__(logging.DEBUG)
        self.path, self.held, self.stream = path, [], None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            if self.stream is None and self.path.parent.is_dir():
                self.stream = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open until close()
                self.stream.writelines(self.held)
                self.held = []
            if self.stream is None:
                self.held.append(line)
            else:
                self.stream.write(line)
                self.stream.flush()
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)

    def close(self) -> None:
        if self.stream is None and self.held and self.path.parent.is_dir():
            self.stream = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            self.stream.writelines(self.held)
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        super().close()


def open_run_log(folder: Path) -> Path:
    """Append every record from now on (ours and the libraries', info and up; debug too with
    -v) to <folder>/run.log, from when the study folder exists; returns its path."""
    close_run_log()
    path = folder / RUN_LOG_FILE
    handler = _RunLogHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    # Info and up from everyone; debug only with -v (some libraries' debug records are floods).
    logging.getLogger().setLevel(logging.DEBUG if settings.verbose else logging.INFO)
    settings.run_log = handler
    route_library_logs()
    return path


def close_run_log() -> None:
    if settings.run_log is not None:
        logging.getLogger().removeHandler(settings.run_log)
        settings.run_log.close()
        settings.run_log = None


def finish() -> None:
    """Close the run log and take our console handler off the root logger (a process that calls
    the CLI more than once, a test, must not keep writing to an old stderr)."""
    close_run_log()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_localnova_console", False)]:
        root.removeHandler(handler)


def say(line: str) -> None:
    """One line for the person running the command (stdout, so `> log` keeps it), also logged."""
    log.info(line)
    if not settings.quiet:
        from tqdm import tqdm  # on first use: tqdm reads TQDM_DISABLE once, when imported

        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()


def tell(text: str, stream: Any = None) -> None:
    """Lines that must reach the person even when the terminal is gone (a run ended by SIGHUP
    says what it deleted and what is left): written to the run log, then to `stream` (stdout
    by default), where a write to a closed terminal is ignored."""
    log.info(text)
    try:
        print(text, file=stream or sys.stdout, flush=True)
    except OSError:
        pass


@contextmanager
def stage(name: str, timings: dict[str, float] | None = None) -> Iterator[None]:
    """A stage of the study: a line as it starts, one with its time as it ends (or fails), and
    its seconds added to `timings[name]` for summary.json."""
    say(f"> {name}")
    started = time.perf_counter()
    outcome = "failed"
    try:
        yield
        outcome = "done"
    finally:
        seconds = time.perf_counter() - started
        if timings is not None:
            timings[name] = round(timings.get(name, 0.0) + seconds, 3)
        held = gpu_memory_held_gb()
        if held is None:
            say(f"  {outcome}: {name} in {format_seconds(seconds)}")
        else:
            GPU_MEMORY_AFTER_STAGE[name] = held
            say(f"  {outcome}: {name} in {format_seconds(seconds)}; GPU memory held {held:.2f} GB")


# GB of GPU memory that torch's tensors hold as each stage ends, once torch has started CUDA:
# what a stage hands the next (a model left loaded shows here). scripts/gpu_smoke_steps.py reads it.
GPU_MEMORY_AFTER_STAGE: dict[str, float] = {}


def gpu_memory_held_gb() -> float | None:
    """Memory allocated by torch's tensors on the current GPU, or None where CUDA is not in use
    (looked up, never imported: a CPU run must not load torch for this)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.memory_allocated() / 1e9, 2)


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


def progress(total: int, description: str, unit: str = "call", enabled: bool = True) -> Any:
    """A bar with count, rate and ETA on a terminal; a silent stand-in elsewhere, with --quiet,
    and when not `enabled`."""
    from tqdm import tqdm

    disable = not (enabled and bars_enabled())
    return tqdm(total=total, desc=description, unit=unit, disable=disable, dynamic_ncols=True, file=sys.stderr, leave=False)
