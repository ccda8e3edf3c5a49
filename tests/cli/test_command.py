"""command: one line per user error, flags for parameter names, SIGTERM like Ctrl-C, quiet workers."""
from __future__ import annotations

import argparse
import errno
import os
import signal
import time
import warnings

import pytest

from mqsm_nnunet.command import MQSMWarning, UsageError, run_command, user_message, worker_pool


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mqsm_x")
    parser.add_argument("-i", dest="input_folder")
    parser.add_argument("--b0", type=float)
    return parser


def run(body, *argv: str) -> int:
    return run_command("mqsm_x", parser, body, list(argv))


def raises(error: BaseException):
    def body(args):
        raise error
    return body


def test_a_user_error_is_one_line_with_flags_exit_1(capsys):
    assert run(raises(ValueError("sub-001: field.nii.gz: bad; give `b0`,\nor `input_folder`"))) == 1
    assert capsys.readouterr().err == "mqsm_x: error: sub-001: field.nii.gz: bad; give --b0, or -i\n"


def test_os_errors_name_the_file_and_permission_errors_the_fix(capsys):
    assert run(raises(FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/a.nii.gz"))) == 1
    assert capsys.readouterr().err == "mqsm_x: error: /data/a.nii.gz: No such file or directory\n"
    message = user_message(PermissionError(errno.EACCES, "Permission denied", "/data"))
    assert message == "/data: Permission denied; check its permissions or choose another path"


def test_usage_errors_and_bad_flags_stay_argparse_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(raises(UsageError("`b0` needs `input_folder`")))
    assert exit_info.value.code == 2 and "mqsm_x: error: --b0 needs -i" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run(lambda args: 0, "--b0", "three")
    assert exit_info.value.code == 2


def test_warnings_are_one_line_in_the_command_format(capsys):
    def body(args):
        warnings.warn("doubtful `b0`", MQSMWarning)
    assert run(body) == 0
    assert capsys.readouterr().err == "mqsm_x: warning: doubtful --b0\n"


@pytest.mark.parametrize("sig, status, how", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_sigterm_and_ctrl_c_run_the_same_cleanup(capsys, sig, status, how):
    cleaned = []

    def body(args):
        try:
            os.kill(os.getpid(), sig)
            time.sleep(5)
        finally:
            cleaned.append(True)
    assert run(body) == status and cleaned == [True]
    assert capsys.readouterr().err == f"mqsm_x: interrupted ({how}); nothing half-written was left behind\n"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored afterwards


def test_a_forked_child_dies_on_sigterm_as_by_default():
    """nnU-Net's fork pools end their workers with SIGTERM: a worker forked from a command must have
    the default disposition (a handler needs the child's Python to run; a stuck child cannot)."""
    from mqsm_nnunet.command import _raise_terminated
    def body(args):
        assert signal.getsignal(signal.SIGTERM) is _raise_terminated
        child = os.fork()
        if child == 0:
            if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
                os._exit(3)
            time.sleep(10)
            os._exit(0)
        time.sleep(0.2)
        os.kill(child, signal.SIGTERM)
        _, status = os.waitpid(child, 0)
        return 0 if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM else 1
    assert run(body) == 0


def _ignored_signals(_) -> int:
    with open(f"/proc/{os.getpid()}/status") as stream:
        return int(next(line for line in stream if line.startswith("SigIgn:")).split()[1], 16)


def test_pool_workers_ignore_ctrl_c_from_the_start():
    with worker_pool(1) as pool:
        mask = pool.apply(_ignored_signals, (None,))
    assert mask & (1 << (signal.SIGINT - 1))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _process_group(_) -> int:
    return os.getpgrp()


def test_pool_workers_leave_the_commands_process_group():
    """A SIGTERM to the command's group (a job scheduler's) must not kill a worker holding the pool's
    queue lock: the pool's shutdown would then wait forever."""
    with worker_pool(2) as pool:
        groups = set(pool.map(_process_group, range(4)))
    assert os.getpgrp() not in groups
