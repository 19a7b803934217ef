"""How a paid Bedrock run stops and what it says as it starts and ends.

Signals: SIGTERM, SIGHUP (the terminal closed, the SSH session dropped) and SIGQUIT end a run
the way Ctrl-C does, through the code that deletes its hosting. Stopping: hosting deleted
(or kept with --keep-hosting and named), and a customization job still training stopped when
the user stopped the run (Ctrl-C, a signal, the budget) unless --keep-customization-jobs.
Saying: at the start, what the account already holds for the study (an earlier run killed
where it could not act, a lost state file); at the end, every way the run ends, what it leaves
in the account with what each thing costs and the cleanup command (bedrock/leftovers.py). The
lines go to the run log too: after SIGHUP no terminal reads them.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from localnova.aws.clients import AwsClients, aws_error_line, is_aws_error
from localnova.aws.state import BedrockState
from localnova.bedrock.customization import stop_running_jobs
from localnova.bedrock.hosting import HostingLeft, cleanup_command, hosting_left_line, release_hosting
from localnova.bedrock.inventory import Inventory, ask_account, scope_of_config
from localnova.bedrock.leftovers import left_lines, what_is_left
from localnova.bedrock.reconcile import reconcile
from localnova.budget import BudgetExceeded
from localnova.config import StudyConfig
from localnova.console import tell
from localnova.costs import VectorStorePrice, prices_for
from localnova.errors import UserError

log = logging.getLogger(__name__)

# The signals that end a paid run as Ctrl-C does (those this platform has): SIGTERM (kill, a
# scheduler), SIGHUP (the terminal closed, the SSH session dropped), SIGQUIT (Ctrl-\).
INTERRUPTING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name))


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """While a paid run is in progress, SIGTERM, SIGHUP and SIGQUIT end it the way Ctrl-C does:
    through the code that deletes its hosting, not past it (their default is to die on the spot,
    hosting billing on). The first one raises KeyboardInterrupt; any later one is written to the
    run log and ignored, so that it cannot cut short the deletion the first one started."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[str] = []

    def interrupt(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if received:
            log.warning("%s while the run stops after %s: ignored, so that deleting what bills finishes", name, received[0])
            return
        received.append(name)
        raise KeyboardInterrupt(f"terminated ({name})")

    previous = {number: signal.signal(number, interrupt) for number in INTERRUPTING_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def tell_on_stderr(text: str) -> None:
    tell(text, sys.stderr)


def say_what_is_left(
    config: StudyConfig, state: BedrockState, clients: AwsClients, report: Callable[[str], None], heading: str
) -> BaseException | None:
    """Ask the account what the study holds, merge it with the state file, and hand `report`
    the lines (each thing with its cost, the cleanup command), after `heading`. A failure to
    ask (refused, cut off) falls back to the state file and says so; a KeyboardInterrupt while
    asking is returned for the caller to raise once the lines are out."""
    assert config.bedrock is not None
    inventory: Inventory | None = None
    why, interrupted = "", None
    try:
        reconcile(state, clients)  # a finished job's custom model, hosting gone: written down first
        inventory = ask_account(clients, scope_of_config(config), state)
    except BaseException as error:
        if not isinstance(error, KeyboardInterrupt | Exception):
            raise
        interrupted = error if isinstance(error, KeyboardInterrupt) else None
        if not (interrupted or is_aws_error(error)):
            raise
        why = reason(error)
    left = what_is_left(state, inventory, prices_for(config), VectorStorePrice.from_settings(config.bedrock.knowledge_base))
    lines = left_lines(left, inventory, config.name, cleanup_command(config.study_dir), why)
    report("\n".join([heading, *lines]) if heading else "\n".join(lines))
    return interrupted


def say_at_start(config: StudyConfig, state: BedrockState, clients: AwsClients, report: Callable[[str], None]) -> None:
    """Before anything is created: what the account already holds for the study (an earlier run
    killed where it could not act, a lost state file, another checkout), when it holds anything."""
    assert config.bedrock is not None
    inventory = ask_account(clients, scope_of_config(config), state)
    left = what_is_left(state, inventory, prices_for(config), VectorStorePrice.from_settings(config.bedrock.knowledge_base))
    if left or inventory.unasked:
        lines = left_lines(left, inventory, config.name, cleanup_command(config.study_dir))
        report("\n".join(["before this run starts:", *lines, "  (this run reuses what it would create under the same name)"]))


def reason(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return f"interrupted{' (' + str(error) + ')' if str(error) else ''}"
    if is_aws_error(error):
        return aws_error_line(error)
    return str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"


def after_stop(
    error: BaseException,
    config: StudyConfig,
    state: BedrockState,
    clients: AwsClients,
    keep_hosting: bool,
    keep_jobs: bool = False,
    report: Callable[[str], None] | None = None,
) -> BaseException:
    """What a run that stops early ends with: its hosting deleted (or, with --keep-hosting,
    named with its cost per hour and the cleanup command), a customization job still training
    stopped when the user stopped the run (Ctrl-C, a signal, the budget) unless `keep_jobs`,
    and one line for the user."""
    hosted = [resource.label() for resource in state.live_hosting()]
    result = _release_or_keep_hosting(error, config, state, clients, keep_hosting)
    deleted = [label for label in hosted if not any(r.label() == label for r in state.live_hosting())]
    if deleted and report is not None:  # said first: after SIGHUP the run log is where it is read
        report("\n".join(f"deleted {label} as the run stopped ({reason(error)})" for label in deleted))
    if isinstance(error, KeyboardInterrupt | BudgetExceeded) and not keep_jobs:
        try:
            stopped = stop_running_jobs(state, clients)
        except BaseException as stop_error:  # noqa: BLE001 - the lines below say what is left either way
            if not isinstance(stop_error, KeyboardInterrupt) and not is_aws_error(stop_error):
                raise
            stopped = [f"stopping the customization jobs was cut off ({reason(stop_error)}); the lines below name them"]
        if stopped and report is not None:
            report("\n".join(stopped + ["  (--keep-customization-jobs keeps them training, and a rerun waits for them)"]))
    return result


def _release_or_keep_hosting(
    error: BaseException, config: StudyConfig, state: BedrockState, clients: AwsClients, keep_hosting: bool
) -> BaseException:
    live = state.live_hosting()
    if keep_hosting and live:
        kept = "; ".join(resource.label() for resource in live)
        return UserError(
            f"{reason(error)}; hosting kept as asked (--keep-hosting): {kept}; delete it with {cleanup_command(config.study_dir)}"
        )
    try:
        release_hosting(state, clients)
    except HostingLeft as left:
        return HostingLeft(f"{reason(error)}; {left}")
    except BaseException:
        still = state.live_hosting()
        if not still:
            raise
        return HostingLeft(f"{reason(error)}; " + hosting_left_line(state, [f"{r.label()}: its deletion was cut off" for r in still]))
    if is_aws_error(error):
        return UserError(f"{aws_error_line(error)}; no hosting is left running; fix the cause and run the same command again to resume")
    return error
