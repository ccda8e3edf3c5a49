"""How every mqsm command ends: one line per user error, warnings as one line each, the same
cleanup for Ctrl-C and SIGTERM, and worker pools that die quietly with their command.

- A user error (`ValueError`, `OSError`: bad data, a missing file, no permission) is printed as
  one line `<command>: error: <message>` and the command exits 1, never with a traceback. The
  library names what is wrong (subject, file) and the fix; where the fix is an argument it names
  the Python parameter in backticks (`b0`), and `run_command` turns those into the command's flags
  (`--b0`: an argparse option whose `dest` is the parameter's name), so only the command line
  speaks of flags. Bad flags stay argparse's business (usage line, exit 2).
- The command's modules are imported inside `run_command` (the CLI modules import only this
  one at the top), so Ctrl-C during start-up is reported like any other interrupt.
- Warnings are printed as `<command>: warning: <message>`.
- SIGTERM is raised in the main thread as `Terminated` (a `KeyboardInterrupt`), so the same
  `finally` blocks that clean up after Ctrl-C (hidden build folders, temporary files, worker pools)
  run for both; the command then exits 130 (SIGINT) or 143 (SIGTERM) with one line.
- A command whose last act is to publish one result (mqsm_convert renaming the dataset into place)
  calls `publishing_result` just before: from there to its exit, Ctrl-C and SIGTERM are ignored. So
  an interrupt at any moment leaves either the previous state (exit 130 / 143) or the complete new
  result (exit 0), never the new result behind a failure status.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import multiprocessing.pool
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence

USER_ERRORS = (ValueError, OSError)
"""What a user can cause and fix: reported in one line, exit status 1."""


class MQSMWarning(UserWarning):
    """Base of our warnings: something was changed or looks doubtful, but the run goes on."""


class UsageError(ValueError):
    """Flags that do not go together: reported by argparse (usage line, exit 2) like any bad flag."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that cleanup code runs the same way."""


def speak_flags(text: str, flags: Mapping[str, str] | None = None) -> str:
    """`text` on one line, with backticked parameter names replaced by their command-line `flags`."""
    for name, flag in (flags or {}).items():
        text = text.replace(f"`{name}`", flag)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def user_message(error: BaseException, flags: Mapping[str, str] | None = None) -> str:
    """One line for a user error: an OS error as `file: reason` (a permission error with its fix),
    backticked parameter names replaced by their `flags`."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
        if isinstance(error, PermissionError):
            text += "; check its permissions or choose another path"
    else:
        text = str(error) or type(error).__name__
    return speak_flags(text, flags)


def _show_warning(prog: str, flags: Mapping[str, str] | None):
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        from tqdm import tqdm  # keeps progress bars intact

        tqdm.write(f"{prog}: warning: {speak_flags(str(message), flags)}", file=sys.stderr)
    return show


def _raise_terminated(signum, frame):
    raise Terminated()


class _Publishing:
    """Whether a command is running (`run_command`) and has begun publishing its result."""

    running = False
    begun = False


def publishing_result() -> None:
    """The running command is about to make its result visible: ignore Ctrl-C and SIGTERM from here to
    its end (see the module docstring). A no-op outside `run_command` (library calls, tests) and off
    the main thread."""
    if _Publishing.running and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _Publishing.begun = True


@contextlib.contextmanager
def _interrupt_handling(in_process: bool) -> Iterator[None]:
    """SIGTERM raises `Terminated` inside; afterwards the handlers are restored, except in a command's
    own process after `publishing_result` (it is about to exit: a late signal must not kill it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT), signal.signal(signal.SIGTERM, _raise_terminated)
    _Publishing.running, _Publishing.begun = True, False
    try:
        yield
    finally:
        if in_process or not _Publishing.begun:
            for signum, handler in zip((signal.SIGINT, signal.SIGTERM), previous):
                if handler is not None:   # None: a handler Python did not install; nothing to put back
                    signal.signal(signum, handler)
        _Publishing.running = _Publishing.begun = False


class _StockSigtermAcrossFork:
    """Processes forked from a command (nnU-Net's fork pools) are born with SIGTERM's default.

    Their pool ends them with SIGTERM. A handled SIGTERM needs the child's Python to run, and a child
    forked from a threaded parent can be stuck on a lock it inherited before it runs any Python, so
    the pool would wait for it forever. So the default disposition is in place while the parent
    forks (a few microseconds, during which a SIGTERM ends the parent without clean-up) and the
    parent's handler comes back right after.
    """

    previous = None

    @classmethod
    def before(cls) -> None:
        if signal.getsignal(signal.SIGTERM) is _raise_terminated:
            cls.previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)

    @classmethod
    def after_in_parent(cls) -> None:
        if cls.previous is not None:
            signal.signal(signal.SIGTERM, cls.previous)
            cls.previous = None

    @classmethod
    def after_in_child(cls) -> None:
        cls.previous = None


os.register_at_fork(before=_StockSigtermAcrossFork.before, after_in_parent=_StockSigtermAcrossFork.after_in_parent,
                    after_in_child=_StockSigtermAcrossFork.after_in_child)


def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Parameter name -> flag: each option's `dest` and its first option string (`-np`, `--b0`)."""
    return {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}


def run_command(prog: str, build_parser: Callable[[], argparse.ArgumentParser],
                body: Callable[[argparse.Namespace], int | None], argv: Sequence[str] | None = None) -> int:
    """Parse `argv` with the parser from `build_parser` and run `body(args)`; returns the exit status
    (0, or what `body` returns; 1 for a user error; 130 / 143 when interrupted by SIGINT / SIGTERM),
    printing errors and warnings as one line with the parser's flags for parameter names."""
    flags: dict[str, str] = {}
    with warnings.catch_warnings(), _interrupt_handling(in_process=argv is not None):
        warnings.simplefilter("always", MQSMWarning)
        warnings.showwarning = _show_warning(prog, flags)
        try:
            parser = build_parser()
            flags.update(flags_of(parser))
            args = parser.parse_args(argv)
            try:
                status = body(args)
            except UsageError as error:
                parser.error(speak_flags(str(error), flags))
        except KeyboardInterrupt as interrupt:
            how = "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C"
            print(f"{prog}: interrupted ({how}); nothing half-written was left behind", file=sys.stderr)
            return 143 if isinstance(interrupt, Terminated) else 130
        except USER_ERRORS as error:
            print(f"{prog}: error: {user_message(error, flags)}", file=sys.stderr)
            return 1
    return 0 if status is None else int(status)


def _own_process_group() -> None:
    """Pool worker initializer: leave the command's process group (see `worker_pool`)."""
    os.setpgrp()


@contextlib.contextmanager
def worker_pool(processes: int) -> Iterator[multiprocessing.pool.Pool]:
    """A spawn pool whose workers leave the command's process group as they start, so that Ctrl-C at
    a terminal and a SIGTERM to the group (a job scheduler's) reach only the main process, which
    terminates them when the block is left: no traceback per worker, and no hang. (A worker killed
    by such a signal while it waits for a task dies holding the pool's task-queue lock, and the
    pool's own shutdown then waits for that lock forever.)

    SIGINT is ignored while the workers are started (an ignored signal stays ignored across exec,
    unlike a handler set later), for the moments before a worker has left the group; a worker that a
    SIGTERM kills then holds no lock yet, and the main process is leaving anyway.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pool = multiprocessing.get_context("spawn").Pool(processes, initializer=_own_process_group)
    finally:
        signal.signal(signal.SIGINT, previous)
    with pool:
        yield pool
