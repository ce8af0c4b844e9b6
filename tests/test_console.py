"""The quiet console (trainer/cli.py, trainer/progress.py), through real processes.

What TensorFlow 2.21 prints while it loads comes from absl C++ logging, which writes every
message to stderr until `absl::InitializeLog()` is called, whatever TF_CPP_MIN_LOG_LEVEL says
(abseil/abseil-cpp#1957, "Messages with severity < threshold should always be ignored even if
not initialized"); hence the stderr filter these tests exercise.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap
import time

import pytest

from trainer import cli, progress

_REPO = pathlib.Path(__file__).resolve().parents[1]
# absl C++ log line: severity, MMDD, time, thread id, file:line] (abseil.io/docs/cpp/guides/logging)
_CPP_LOG_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] ")


def _run(args: list[str], timeout: float = 300, text: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the default console, not the test suite's setting
    return subprocess.run(
        [sys.executable, *args], cwd=_REPO, env=env, capture_output=True, text=text,
        timeout=timeout,
    )  # fmt: skip


def test_bad_input_prints_one_error_line_and_no_library_chatter(tmp_path):
    result = _run(["-m", "trainer.task", "--epochs=0", f"--job_dir={tmp_path / 'job'}"])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "epochs=0" in lines[0]
    assert result.stdout == ""


def test_verbosity_brings_the_library_logs_back(tmp_path):
    result = _run(
        ["-m", "trainer.task", "--epochs=0", f"--job_dir={tmp_path / 'job'}", "--verbosity=1"]
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert any(_CPP_LOG_LINE.match(line) for line in lines), result.stderr
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]]


_FILTERED_CHILD = textwrap.dedent(
    """
    import os, sys
    from trainer import cli
    cli.filter_stderr()
    for line in sys.argv[1:-1]:
        os.write(2, line.encode() + b"\\n")   # as C++ code writes: straight to fd 2
    print("warning: from Python", file=sys.stderr, flush=True)
    os.write(2, b"\\rEvaluating: 1/2")          # a progress redraw: no newline
    if sys.argv[-1] == "crash":
        os._exit(3)                              # no atexit: the filter must drain on its own
    raise SystemExit(4)
    """
)
_NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796180675.408618    6437 port.cc:153] oneDNN custom operations are on.",
    "W1202 03:06:58.135593    7001 graph_constructor.cc:846] Node 'Conv1_relu' has 1 outputs",
    # Seen in `make demo`: the int8 LiteRT conversion, the LiteRT runtime, a uint8 decode.
    "fully_quantize: 0, inference_type: 6, input_inference_type: UINT8, output_inference_type: "
    "FLOAT32",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "E0000 00:00:1796186747.477212   28350 util.cc:131] oneDNN supports DT_UINT8 only on "
    "platforms with AVX-512. Falling back to the default Eigen-based implementation if present.",
]
_KEPT = [
    "E1202 03:06:58.135593    7001 saver.cc:12] could not write the checkpoint",
    "I am not a log line",
    "Traceback (most recent call last):",
]


@pytest.mark.parametrize("ending", ["exit", "crash"])
def test_filter_drops_cpp_info_and_warnings_and_keeps_the_rest_in_order(ending):
    args = ["-c", _FILTERED_CHILD, *_NOISE[:2], *_KEPT, *_NOISE[2:], ending]
    result = _run(args, timeout=60, text=False)  # bytes: text mode would turn "\r" into "\n"
    assert result.returncode == (4 if ending == "exit" else 3)
    expected = "\n".join([*_KEPT, "warning: from Python", "\rEvaluating: 1/2"])
    assert result.stderr.decode() == expected


def test_cuinit_failure_is_dropped_only_where_no_nvidia_driver_is_installed():
    line = (
        "E0000 00:00:1796180784.710492    7792 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)"
    )
    assert re.match(cli.noise_pattern(gpu_driver_present=False), line)
    assert not re.match(cli.noise_pattern(gpu_driver_present=True), line)


def test_python_warnings_print_once_as_warning_lines():
    code = textwrap.dedent(
        """
        from trainer import cli
        cli.filter_stderr()  # what `python -m trainer.<module>` gets without asking
        import tensorflow as tf
        tf.get_logger()  # created before absl's handler: TensorFlow adds a handler of its own
        def main(argv):
            tf.get_logger().warning("the backbone is UNTRAINED")
            tf.get_logger().info("not for users")
        cli.run(main)
        """
    )
    result = _run(["-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stderr == "warning: the backbone is UNTRAINED\n"


@pytest.mark.parametrize(
    ("orig_argv", "module"),
    [
        (["python", "-m", "trainer.task", "--epochs=1"], "trainer.task"),
        (["python", "-X", "dev", "-mtfds_oregon.build"], "tfds_oregon.build"),
        (["python", "-u", "-m", "pytest", "-m", "slow"], "pytest"),
        (["python", "script.py", "-m", "trainer.task"], None),
        (["python", "-c", "pass", "-m", "trainer.task"], None),
    ],
)
def test_main_module_reads_the_interpreter_command_line(orig_argv, module):
    assert cli.main_module(orig_argv) == module


class _Stream:
    """A log file or pipe as progress sees it: text, and not a terminal."""

    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return False


def test_progress_in_a_log_prints_a_line_per_quarter_at_most_never_per_step():
    stream = _Stream()
    for _ in progress.track(range(1000), "Decoding", unit="images", stream=stream):
        pass
    assert stream.text.splitlines() == [stream.text.splitlines()[-1]]  # fast: the end only
    assert re.fullmatch(r"Decoding: 1000/1000 images in \d+\.\d s\n", stream.text)

    slow = _Stream()
    with progress.Progress("Training", total=1000, stream=slow, quiet_s=0) as bar:
        for _ in range(1000):
            bar.update()
    lines = slow.text.splitlines()
    assert [line.split(" after")[0] for line in lines[:3]] == [
        "Training: 250/1000 (25%)", "Training: 500/1000 (50%)", "Training: 750/1000 (75%)"
    ]  # fmt: skip
    assert lines[3].startswith("Training: 1000/1000 in") and len(lines) == 4


def test_progress_on_a_terminal_redraws_one_line():
    controller, terminal = os.openpty()  # a real terminal
    stream = os.fdopen(terminal, "w")
    with progress.Progress("Evaluating", total=3, unit="batches", stream=stream) as bar:
        for _ in range(3):
            time.sleep(0.11)  # longer than the redraw interval: each update redraws
            bar.update()
    output = b""
    while not output.endswith(b"\n"):  # a terminal hands its output over in pieces
        output += os.read(controller, 4096)
    stream.close()
    os.close(controller)
    output = output.decode().replace("\r\n", "\n")  # the terminal's own ONLCR translation
    assert output.count("\r") == 4 and output.count("\n") == 1  # three redraws, the final line
    assert output.rstrip().rsplit("\r", 1)[-1].startswith("Evaluating: 3/3 batches in")
