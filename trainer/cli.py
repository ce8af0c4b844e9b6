"""What every command-line entry point shares: a quiet console and one exit-code convention.

Every `python -m ...` entry point imports this module BEFORE TensorFlow (TensorFlow reads
TF_CPP_MIN_LOG_LEVEL once, when its C++ library loads) and ends with `cli.run(main)`.

Exit codes, the same for every command (README, "Exit codes"):
  0  done;
  1  a bug: Python's traceback (report it with the log);
  2  bad input or configuration: one line `error: ...` on stderr saying what to do;
  the trainer adds 3 (loss diverged), 75 (lost a worker) and 143 (preempted, state saved).

The console stays quiet unless `-v`/`--verbosity` asks for more: TensorFlow's C++ INFO and
WARNING lines (its start-up banner, graph_constructor warnings) and Python INFO logs are hidden;
errors, and warnings a user must act on (printed by our own code), still show.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

EXIT_BUG = 1
EXIT_BAD_INPUT = 2


def _verbosity_requested(argv: Sequence[str]) -> bool:
    """Whether the command line asks for absl's -v/--verbosity (any value but the default)."""
    return any(
        arg in ("-v", "--verbosity") or arg.startswith(("-v=", "--verbosity=")) for arg in argv
    )


def quiet_console(argv: Sequence[str] | None = None) -> None:
    """Hides library chatter unless asked for; must run before TensorFlow is imported.

    An explicit TF_CPP_MIN_LOG_LEVEL in the environment always wins.
    """
    if _verbosity_requested(sys.argv if argv is None else argv):
        return
    # 2: C++ errors only. The start-up banner (cpu_feature_guard, cuda_dnn) and the
    # graph_constructor warnings on SavedModel loads are INFO and WARNING lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow and TFDS log through Python's logging ("tensorflow", "absl"); INFO lines such
    # as the SavedModel saver's 12,480-character list of variable names are not for users.
    for name in ("tensorflow", "absl", "tensorflow_datasets", "h5py"):
        logging.getLogger(name).setLevel(logging.WARNING)


def fail(message: str, exit_code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Prints `message` as ONE line `error: ...` on stderr and exits with `exit_code`."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(exit_code)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag or a missing --flagfile reported in one line."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(f"{str(error).removeprefix('ERROR:: ')} (--helpshort lists the flags)")


def run(
    main: Callable[[list[str]], int | None],
    bad_input: tuple[type[BaseException], ...] = (ValueError,),
) -> NoReturn:
    """absl's `app.run(main)` under the convention above.

    Flag errors and the `bad_input` exceptions that `main` raises end in one `error:` line and
    exit 2; `main`'s return value is the exit code; anything else is a bug (traceback, exit 1).
    """
    from absl import app
    from absl import logging as absl_logging

    def _main(argv: list[str]) -> int | None:
        if not _verbosity_requested(sys.argv):
            absl_logging.set_verbosity(absl_logging.WARNING)
        try:
            return main(argv)
        except bad_input as error:
            fail(str(error))

    app.run(_main, flags_parser=parse_flags)
    raise AssertionError("app.run returned")  # It always exits.


quiet_console()
