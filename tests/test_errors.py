"""One way every entry point ends on a user's mistake: one line, exit code 2."""

from __future__ import annotations

import pytest

from localnova.errors import UserError, exit_on_user_error


def _raise(error: BaseException) -> int:
    raise error


def test_a_user_error_is_one_line_and_exit_code_2(capsys):
    assert exit_on_user_error(_raise, UserError("configs/x.yaml: config file not found")) == 2
    assert capsys.readouterr().err == "localnova: error: configs/x.yaml: config file not found\n"


def test_ctrl_c_says_how_to_resume_and_exits_130(capsys):
    assert exit_on_user_error(_raise, KeyboardInterrupt()) == 130
    assert capsys.readouterr().err == "localnova: interrupted; run the same command again to resume\n"


def test_the_function_s_own_exit_code_passes_through_and_bugs_keep_their_traceback(capsys):
    assert exit_on_user_error(lambda: 3) == 3
    assert exit_on_user_error(lambda code=0: None) == 0
    assert exit_on_user_error(lambda a, b=0: a + b, 1, b=4) == 5
    with pytest.raises(ZeroDivisionError):
        exit_on_user_error(lambda: 1 / 0)
    assert capsys.readouterr().err == ""
