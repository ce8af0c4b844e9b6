"""Several workers for real: two `python -m trainer.task` processes on 127.0.0.1 train with
MultiWorkerMirroredStrategy on CPU.

First, over one epoch the two workers' input pipelines draw exactly the training split, each
example once (identified by file name), up to the dropped remainder, and each decodes only
the examples it delivers. A worker whose peer never starts fails within --startup_timeout.

First they start from TF_CONFIG and one is killed mid-run: the other must fail with a clear
error within the heartbeat timeout instead of hanging. Then both restart, described by
Vertex AI's CLUSTER_SPEC as Vertex does on a restart: they resume from the last backup, finish
with identical weights, only the chief writes the artefacts, and no temporary folder is left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import signal
import time

import pytest

from tests.fixtures.processes import (
    finish,
    free_ports,
    relative_files,
    running,
    tiny_training_flags,
    wait_until,
)

pytestmark = pytest.mark.slow

HEARTBEAT_TIMEOUT = 10  # Seconds; --worker_heartbeat_timeout for these runs.
STEPS = 3  # Per epoch: two processes on two shared cores make every multi-worker step slow.
_CHECKSUM = re.compile(r"final weights checksum: ([0-9a-f]{16})")


def tf_config(addresses: list[str], index: int) -> str:
    return json.dumps(
        {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    )


def vertex_cluster_spec(addresses: list[str], index: int) -> str:
    """Vertex AI's CLUSTER_SPEC: the chief alone in workerpool0, the others in workerpool1."""
    task = {"type": "workerpool0", "index": 0} if index == 0 else {"type": "workerpool1"}
    task.setdefault("index", index - 1)
    cluster = {"workerpool0": addresses[:1], "workerpool1": addresses[1:]}
    return json.dumps({"cluster": cluster, "task": task})


def test_two_workers_draw_the_training_split_once_and_decode_only_their_share(
    learnable_data_dir, tmp_path
):
    import tensorflow_datasets as tfds

    batch_size = 7  # Per worker: 2 x 7 = 14 a step, 17 steps = 238 of the 240 examples.
    ports = ",".join(map(str, free_ports(2)))
    outputs = [tmp_path / f"worker{index}.json" for index in (0, 1)]
    with contextlib.ExitStack() as stack:
        workers = [
            stack.enter_context(
                running(
                    [str(index), ports, learnable_data_dir, str(batch_size), str(out)],
                    tmp_path / f"log{index}.txt",
                    module="tests.fixtures.data_worker",
                )
            )
            for index, out in enumerate(outputs)
        ]
        results = [finish(w, tmp_path / f"log{i}.txt", 120) for i, w in enumerate(workers)]
    for result in results:
        assert result.returncode == 0, result.output[-3000:]
    drawn = [json.loads(out.read_text()) for out in outputs]

    # The file names of the training split, by the SHA-1 of their JPEG bytes.
    split = tfds.load(
        "oregon_wildlife/resized_256",
        split="train",
        data_dir=learnable_data_dir,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    names = {
        hashlib.sha1(example["image"]).hexdigest(): example["file_name"].decode()
        for example in tfds.as_numpy(split)
    }
    assert len(names) == 240
    files = [[names[digest] for digest in worker["decoded"]] for worker in drawn]
    for worker, worker_files in zip(drawn, files, strict=True):
        assert worker["steps"] == 17 and worker["batches"] == 17
        # Decoded only what it delivered: 17 batches of 7, no example twice.
        assert len(worker_files) == len(set(worker_files)) == 17 * batch_size
    assert not set(files[0]) & set(files[1])
    assert len(set(files[0]) | set(files[1])) == 240 - 2  # All but the dropped remainder.
    assert all(name.startswith("train/") for name in files[0] + files[1])


def test_two_workers_fail_fast_when_one_dies_then_resume_and_agree(
    learnable_data_dir, tiny_backbone, tmp_path
):
    shared = tmp_path / "shared"  # The chief's job_dir; checkpoints are shared by both.
    own = [shared, tmp_path / "worker1_job"]  # Worker 1's own job_dir must stay empty.

    def start(stack: contextlib.ExitStack, index: int, cluster_env: dict[str, str], log: str):
        flags = tiny_training_flags(
            learnable_data_dir,
            tiny_backbone,
            str(own[index]),
            strategy="auto",
            epochs=2,
            frozen_epochs=0,  # One phase (fine-tuning) is enough here, and quicker.
            steps_per_epoch=STEPS,
            worker_heartbeat_timeout=HEARTBEAT_TIMEOUT,
        )
        env = {
            **cluster_env,
            "AIP_CHECKPOINT_DIR": str(shared / "checkpoints"),
            "TMPDIR": str(scratch[index]),
        }
        scratch[index].mkdir()
        return stack.enter_context(running(flags, tmp_path / log, env))

    # --- Run 1 (TF_CONFIG): kill worker 1 during epoch 2. ---
    scratch = [tmp_path / "run1_tmp0", tmp_path / "run1_tmp1"]
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    backup = shared / "checkpoints" / "backup" / "fine_tune" / "chief" / "checkpoint"
    with contextlib.ExitStack() as stack:
        chief, worker = (
            start(stack, i, {"TF_CONFIG": tf_config(addresses, i)}, f"run1_{i}.txt") for i in (0, 1)
        )
        wait_until(backup.exists, 240, "the backup of epoch 1", processes=[chief, worker])
        worker.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        lost = finish(chief, tmp_path / "run1_0.txt", timeout=HEARTBEAT_TIMEOUT + 50)
        print(f"the chief stopped {time.monotonic() - killed_at:.1f} s after worker 1 died")
    assert lost.returncode == 75, lost.output[-3000:]
    assert len(lost.errors) == 1, lost.lines[-10:]
    assert lost.errors[0].startswith("error: lost contact with another worker")
    assert lost.errors[0].endswith("restart all workers with the same --job_dir to resume")
    assert not (shared / "metrics.json").exists()

    # --- Run 2 (Vertex CLUSTER_SPEC, chief + worker): resume and finish. ---
    scratch = [tmp_path / "run2_tmp0", tmp_path / "run2_tmp1"]
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    with contextlib.ExitStack() as stack:
        processes = [
            start(stack, i, {"CLUSTER_SPEC": vertex_cluster_spec(addresses, i)}, f"run2_{i}.txt")
            for i in (0, 1)
        ]
        results = [finish(p, tmp_path / f"run2_{i}.txt", 240) for i, p in enumerate(processes)]
    for result in results:
        assert result.returncode == 0, result.output[-3000:]
        resumed = f"resuming: state restored at epoch 1 step {STEPS} (optimizer step {STEPS})"
        assert resumed in result.output

    # Both hold identical weights at the end.
    checksums = [_CHECKSUM.findall(result.output) for result in results]
    assert len(checksums[0]) == 1 and checksums[0] == checksums[1]
    # Only the chief wrote the artefacts; worker 1's job_dir and temporary folders are empty.
    written = relative_files(shared, skip=["logs/"])
    expected = {"metrics.json", "config.json", "history.json", "model/saved_model.pb"}
    expected |= {"confusion_matrix.png", "predictions.png", "checkpoints/epochs/epoch-002.index"}
    assert expected <= written
    assert not [path for path in written if "workertemp" in path]
    assert relative_files(own[1]) == set()
    assert [relative_files(folder) for folder in scratch] == [set(), set()]
    config = json.loads((shared / "config.json").read_text())
    assert (config["strategy"], config["replicas"], config["global_batch_size"]) == (
        "multi_worker",
        2,
        8,
    )
