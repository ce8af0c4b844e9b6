"""What every command-line entry point shares: a quiet console and one exit-code convention.

Every `python -m ...` entry point imports this module BEFORE TensorFlow (TensorFlow reads
TF_CPP_MIN_LOG_LEVEL once, when its C++ library loads) and ends with `cli.run(main)`.

Exit codes, the same for every command (README, "Console and exit codes"):
  0  done;
  1  a bug: Python's traceback (report it with the log);
  2  bad input or configuration: one line `error: ...` on stderr saying what to do;
  the trainer adds 3 (loss diverged), 75 (lost a worker) and 143 (preempted, state saved).

The console stays quiet unless `-v`/`--verbosity` asks for more (README, same section):
TensorFlow's C++ INFO and WARNING lines (its start-up banner, graph_constructor warnings) and
Python INFO logs are hidden; errors, and warnings a user must act on (printed by our own
code), still show.

Why a filter on file descriptor 2 as well as TF_CPP_MIN_LOG_LEVEL: since TensorFlow moved to
absl C++ logging, the lines logged while its libraries load (port.cc's oneDNN notice,
cudart_stub.cc's "Could not find cuda drivers", each printed once per library, with absl's
"All log messages before absl::InitializeLog() is called are written to STDERR") ignore
TF_CPP_MIN_LOG_LEVEL: absl writes every message to stderr until `absl::InitializeLog()` is
called, whatever the threshold (abseil/abseil-cpp#1718 and #1957 propose to change that, and
tensorflow/tensorflow#102212 to call it; none is in TensorFlow 2.21), and absl reads no
environment variable for it. Python cannot
call InitializeLog, so each entry point's stderr passes through a small child process that
drops C++ INFO/WARNING lines and passes everything else (Python tracebacks, `error:` lines,
C++ ERROR and FATAL lines) through unchanged. A child process, not a thread: a thread would
need the GIL, which C++ code may hold while it fills the pipe.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

EXIT_BUG = 1
EXIT_BAD_INPUT = 2


def _verbosity_requested(argv: Sequence[str]) -> bool:
    """Whether the command line asks for absl's -v/--verbosity (any value but the default)."""
    names = ("-v", "--v", "--verbosity")  # absl accepts its short name with one dash or two
    return any(arg in names or arg.startswith(tuple(f"{n}=" for n in names)) for arg in argv)


def quiet_console(argv: Sequence[str] | None = None) -> None:
    """Hides library chatter unless asked for; must run before TensorFlow is imported.

    An explicit TF_CPP_MIN_LOG_LEVEL in the environment always wins; 0 or 1 also keeps the
    C++ INFO/WARNING lines that the stderr filter would drop.
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
    if os.environ["TF_CPP_MIN_LOG_LEVEL"].strip() not in ("0", "1") and _is_entry_point():
        filter_stderr()


# Entry points are `python -m <package>.<module>` of these packages; under pytest or in a
# notebook the process's stderr belongs to someone else and is left alone.
_ENTRY_POINT_PACKAGES = ("trainer", "tfds_oregon", "infra", "benchmarks")


def _is_entry_point() -> bool:
    module = main_module(getattr(sys, "orig_argv", []))
    return module is not None and module.partition(".")[0] in _ENTRY_POINT_PACKAGES


def main_module(orig_argv: Sequence[str]) -> str | None:
    """The module that `python [options] -m MODULE ...` runs; None for a script or -c.

    Read from the interpreter's own command line (`sys.orig_argv`), not from `__main__`: while
    `python -m tfds_oregon.sample` imports the package `tfds_oregon` (which loads TensorFlow),
    `__main__` is not that module yet and `sys.argv[0]` is "-m".
    """
    args = iter(orig_argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, None)
        if arg.startswith("-m"):
            return arg[2:]
        if arg in ("-W", "-X"):  # the interpreter options that take a separate value
            next(args, None)
        elif arg == "-c" or arg == "-" or not arg.startswith("-"):
            return None
    return None


def noise_pattern(gpu_driver_present: bool) -> str:
    """The lines `filter_stderr` drops, as a regular expression matched at a line's start.

    absl/glog C++ lines look like `I0000 00:00:1796180675.408618    6437 port.cc:153] text`
    (severity I, W, E or F; month and day; time; thread id; file:line). INFO and WARNING go;
    ERROR and FATAL stay, except cuInit's failure where no NVIDIA driver is installed: on a
    CPU-only machine it says nothing a user can act on, on a GPU machine it explains why
    training runs on the CPU, and stays.
    """
    # Before absl::InitializeLog the time reads 00:00:<seconds since 1970>.<microseconds>.
    header = r"\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] "
    noise = [
        rf"[IW]{header}",
        r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    ]
    if not gpu_driver_present:
        noise.append(rf"E{header}failed call to cuInit: ")
    # Logged as ERROR but only informative: oneDNN's uint8 kernels need AVX-512 and Eigen's
    # run instead (the int8 LiteRT measurement, predict's uint8 decode).
    noise.append(rf"E{header}oneDNN supports DT_UINT8 only on platforms with AVX-512")
    # The TFLite converter and the LiteRT runtime print these with their own prefixes.
    noise += [r"fully_quantize: \d+, inference_type: ", r"INFO: Created TensorFlow Lite "]
    return "|".join(f"(?:{pattern})" for pattern in noise)


def _gpu_driver_present() -> bool:
    # The NVIDIA kernel driver creates both (also inside containers given a GPU).
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl"))


# The child process: copies stdin to stdout line by line, without the lines matching argv[1].
# A partial line (a progress bar's "\r" update) is passed on at once unless it could be the
# start of a C++ log line. It ignores SIGINT and SIGTERM (sent to the whole process group by
# Ctrl-C or a scheduler) so that the parent's last words still get through; it ends when
# every writer of the pipe has exited.
_FILTER_SOURCE = r"""
import os, re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
def write(data):
    while data:
        data = data[os.write(1, data):]
pending = b""
try:
    drop = re.compile(sys.argv[1].encode())
    while chunk := os.read(0, 1 << 16):
        *lines, pending = (pending + chunk).split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not drop.match(line))
        if pending and pending[:1] not in b"IWEF":
            out, pending = out + pending, b""
        write(out)
    if pending and not drop.match(pending):
        write(pending)
except BaseException:  # never lose the parent's stderr: copy the rest unfiltered
    write(pending)
    while chunk := os.read(0, 1 << 16):
        write(chunk)
    raise
"""


_stderr_filter: subprocess.Popen | None = None


def filter_stderr() -> None:
    """Routes this process's file descriptor 2 through the noise filter until it exits.

    Children started later inherit the filtered descriptor. POSIX only; a no-op elsewhere and
    when already filtering.
    """
    global _stderr_filter
    if os.name != "posix" or _stderr_filter is not None:
        return
    sys.stderr.flush()
    original = os.dup(2)
    try:
        child = subprocess.Popen(
            [sys.executable, "-S", "-c", _FILTER_SOURCE, noise_pattern(_gpu_driver_present())],
            stdin=subprocess.PIPE,
            stdout=original,
            stderr=original,
        )
    except OSError:  # no interpreter to start (a frozen app, a full process table): stay noisy
        os.close(original)
        return
    os.dup2(child.stdin.fileno(), 2)
    child.stdin.close()
    _stderr_filter = child
    atexit.register(_stop_filtering, original, child)


def _stop_filtering(original: int, child: subprocess.Popen) -> None:
    """Gives fd 2 back and waits until the filter has written out everything before it."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken: nothing to flush
            stream.flush()
    os.dup2(original, 2)  # Closes this process's end of the pipe: the filter reads EOF.
    os.close(original)
    # Longer only while a child process of ours still holds the pipe: then leave it running.
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=10)


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        # A message that starts on a new line (a banner) gets the prefix on a line of its own.
        separator = "" if text.startswith("\n") else " "
        return f"{record.levelname.lower()}:{separator}{text}"


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
            # `warning: ...`, like `error: ...`. absl's prefix (W1202 03:06:58.135593
            # 139772720556928 train.py:400]) is for log files, and the filter would take it
            # for one of the C++ lines it drops.
            absl_logging.get_absl_handler().setFormatter(_ConsoleFormatter())
        # TensorFlow gives its logger a handler of its own if it was created before absl put
        # one on the root logger (tensorflow/python/platform/tf_logging.py, get_logger); with
        # both, each TensorFlow warning would print twice.
        logging.getLogger("tensorflow").handlers.clear()
        try:
            return main(argv)
        except bad_input as error:
            fail(str(error))

    app.run(_main, flags_parser=parse_flags)
    raise AssertionError("app.run returned")  # It always exits.


quiet_console()
