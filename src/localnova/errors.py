"""The one error type a user can cause (config, paths, data), and the one way it ends a command.

Every entry point (`localnova`, `python -m localnova.serve`, `python -m localnova.finetune.launch`)
runs through `exit_on_user_error`: a UserError becomes one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class UserError(Exception):
    """A problem with the user's input: bad config, missing file, malformed data."""


class PartialBatch(Exception):
    """A backend's batch in which some requests were answered before one failed: `results`
    maps the index of each answered request to its result, `error` is the failure. The store
    commits the answered ones (they were paid for) before raising `error`."""

    def __init__(self, results: dict[int, Any], error: BaseException):
        super().__init__(str(error))
        self.results = results
        self.error = error


def exit_on_user_error(func: Callable[..., int | None], *args: Any, **kwargs: Any) -> int:
    """Run `func(*args, **kwargs)` and return its exit code (None counts as 0). A UserError
    prints `localnova: error: <message>` on stderr and returns 2; Ctrl-C prints how to resume
    and returns 130. Other exceptions pass through with their traceback."""
    try:
        code = func(*args, **kwargs)
    except UserError as error:
        print(f"localnova: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print("localnova: interrupted; run the same command again to resume", file=sys.stderr)
        return INTERRUPTED_EXIT
    return 0 if code is None else int(code)
