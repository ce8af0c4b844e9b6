"""Distribution strategy and precision policy: chosen from the machine, overridable by flags.

Pure functions decide (`choose_strategy_name`, `choose_precision`, `resolve_tf_config`,
`communication_implementation`, `check_gpus`) so they
can be tested from an environment dict; `create_strategy` and `set_precision_policy` act.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

# Private, but the only way to tune how fast MultiWorkerMirroredStrategy notices a lost worker.
from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.python.eager import context

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")

# Vertex AI names its worker pools in CLUSTER_SPEC; TF_CONFIG names task types. Pool 0 holds
# the chief, pool 1 the workers, pool 2 parameter servers or Reduction Server replicas (their
# own image), pool 3 evaluators ("Configure a distributed training job" and "The format of
# CLUSTER_SPEC" in https://cloud.google.com/vertex-ai/docs/training/distributed-training).
_VERTEX_POOL_TO_TASK_TYPE = {
    "workerpool0": "chief",
    "workerpool1": "worker",
    "workerpool2": "ps",
    "workerpool3": "evaluator",
}
# The tasks that run this trainer (MultiWorkerMirroredStrategy). Vertex AI's TF_CONFIG calls the
# chief either "chief" or "master" (same page, "The format of TF_CONFIG"); TF knows "chief".
_TRAINING_TASK_TYPES = ("chief", "worker")
_TASK_TYPE_ALIASES = {"master": "chief"}
# Seconds without a heartbeat after which a worker counts as lost (TF's own default is 10 s).
DEFAULT_HEARTBEAT_TIMEOUT = 60
# Seconds the workers wait at start-up for all of them to join (issue 10). TF's own default is
# an hour; a worker that never starts should fail the job long before that.
DEFAULT_STARTUP_TIMEOUT = 300
# Tensor cores (and so a float16 speed-up) start at Volta, compute capability 7.0.
_MIN_FLOAT16_CAPABILITY = (7, 0)


def cluster_spec_to_tf_config(cluster_spec: Mapping) -> dict:
    """Converts Vertex AI's CLUSTER_SPEC (parsed JSON) into a normalized TF_CONFIG dict."""
    unknown = set(cluster_spec["cluster"]) - set(_VERTEX_POOL_TO_TASK_TYPE)
    if unknown or cluster_spec["task"]["type"] not in _VERTEX_POOL_TO_TASK_TYPE:
        raise ValueError(f"CLUSTER_SPEC names unknown worker pools: {cluster_spec}")
    task = cluster_spec["task"]
    return normalize_tf_config(
        {
            "cluster": {
                _VERTEX_POOL_TO_TASK_TYPE[pool]: addresses
                for pool, addresses in cluster_spec["cluster"].items()
            },
            "task": {"type": _VERTEX_POOL_TO_TASK_TYPE[task["type"]], "index": task.get("index")},
        }
    )


def normalize_tf_config(tf_config: Mapping) -> dict:
    """The training cluster of a TF_CONFIG dict as MultiWorkerMirroredStrategy needs it.

    "master" becomes "chief"; parameter servers and Reduction Server replicas ("ps") and
    evaluators are left out of the cluster (they run no collective ops of ours, and an
    unexpected job there breaks the strategy's set-up); Vertex AI's extra fields (environment,
    job, trial, cloud) are dropped. Raises ValueError when this replica is not a chief or
    worker: this trainer has nothing to do as a parameter server or evaluator.
    """
    cluster = {}
    for job, addresses in tf_config.get("cluster", {}).items():
        job = _TASK_TYPE_ALIASES.get(job, job)
        if job in _TRAINING_TASK_TYPES and addresses:
            cluster[job] = list(addresses)
    task = tf_config.get("task", {})
    task_type = _TASK_TYPE_ALIASES.get(task.get("type"), task.get("type"))
    if task_type is None:  # A one-task cluster may leave the task out.
        task_type = next(iter(cluster), "chief")
    if task_type not in _TRAINING_TASK_TYPES:
        raise ValueError(
            f"this replica is a {task_type!r} task, but the trainer runs only as chief or "
            "worker (MultiWorkerMirroredStrategy): use worker pools 0 and 1 for the trainer; "
            "pool 2 takes only the Reduction Server image (as infra.submit builds it)"
        )
    return {"cluster": cluster, "task": {"type": task_type, "index": int(task.get("index") or 0)}}


def resolve_tf_config(env: Mapping[str, str]) -> dict | None:
    """The training cluster from TF_CONFIG, else from Vertex's CLUSTER_SPEC, else None (one
    machine). Vertex AI sets both on every replica of a distributed job; they describe the same
    cluster, and both are normalized the same way (`normalize_tf_config`)."""
    if env.get("TF_CONFIG"):
        return normalize_tf_config(json.loads(env["TF_CONFIG"]))
    if env.get("CLUSTER_SPEC"):
        return cluster_spec_to_tf_config(json.loads(env["CLUSTER_SPEC"]))
    return None


def communication_implementation(num_gpus: int) -> str:
    """All-reduce implementation of MultiWorkerMirroredStrategy: NCCL on GPUs, else AUTO.

    TF's AUTO picks gRPC ring all-reduce even on GPUs. NCCL is faster between GPU machines, and
    Vertex AI's Reduction Server only works through NCCL: its plugin replaces NCCL's all-reduce
    ("Prerequisites" under Reduction Server in
    https://cloud.google.com/vertex-ai/docs/training/distributed-training).
    """
    return "NCCL" if num_gpus > 0 else "AUTO"


def count_workers(tf_config: Mapping | None) -> int:
    """Number of training tasks (chief + workers) in a TF_CONFIG dict."""
    if not tf_config:
        return 1
    cluster = tf_config.get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def is_chief(tf_config: Mapping | None) -> bool:
    """True on the task that writes final artefacts (the chief, or worker 0 without a chief)."""
    if count_workers(tf_config) <= 1:
        return True
    task = tf_config["task"]
    has_chief = bool(tf_config["cluster"].get("chief"))
    if has_chief:
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


def choose_strategy_name(requested: str, tf_config: Mapping | None, num_gpus: int) -> str:
    """Picks the strategy: several workers → multi_worker, several GPUs → mirrored, else default."""
    if requested not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {requested!r}; expected one of {', '.join(STRATEGIES)}."
        )
    if requested != "auto":
        return requested
    if count_workers(tf_config) > 1:
        return "multi_worker"
    return "mirrored" if num_gpus > 1 else "default"


def choose_precision(requested: str, gpu_capabilities: Sequence[tuple[int, int]]) -> str:
    """Picks the Keras dtype policy: mixed_float16 when every GPU has tensor cores, else float32."""
    if requested not in PRECISIONS:
        raise ValueError(
            f"Unknown precision {requested!r}; expected one of {', '.join(PRECISIONS)}."
        )
    if requested != "auto":
        return requested
    if gpu_capabilities and all(cc >= _MIN_FLOAT16_CAPABILITY for cc in gpu_capabilities):
        return "mixed_float16"
    return "float32"


def check_gpus(min_gpus: int, num_gpus: int) -> None:
    """Raises ValueError when the machine shows fewer GPUs than it was given (`min_gpus`, set
    by infra.submit from the job's accelerator count): a broken CUDA/cuDNN stack in the image
    makes TensorFlow fall back to the CPU silently, on a paid GPU machine."""
    if num_gpus < min_gpus:
        raise ValueError(
            f"TensorFlow sees {num_gpus} GPU(s) but this machine should have {min_gpus} "
            f"(--min_gpus): the image's CUDA/cuDNN do not match TensorFlow {tf.__version__}'s "
            f"build (CUDA {_build_info('cuda_version')}, cuDNN {_build_info('cudnn_version')}) "
            "or the driver; fix the image (infra/Dockerfile) before paying for GPU hours"
        )


def _build_info(key: str) -> str:
    return str(tf.sysconfig.get_build_info().get(key, "none"))


def local_gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capabilities of the visible GPUs (empty on CPU)."""
    gpus = tf.config.list_physical_devices("GPU")
    details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
    return [tuple(d.get("compute_capability", (0, 0))) for d in details]


def create_strategy(
    name: str,
    tf_config: Mapping | None = None,
    heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT,
    startup_timeout: int = DEFAULT_STARTUP_TIMEOUT,
) -> tf.distribute.Strategy:
    """Creates the tf.distribute strategy `name` (one of STRATEGIES except 'auto').

    Must run before any other TensorFlow op when `name` is 'multi_worker': collective ops are
    configured at start-up. Its all-reduce is NCCL when the machine has GPUs
    (`communication_implementation`). There `heartbeat_timeout` (seconds) bounds how long the
    workers wait for one that died or froze before all fail with an UnavailableError.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if tf_config:
            configure_coordination_service(tf_config, heartbeat_timeout)
        implementation = communication_implementation(len(tf.config.list_physical_devices("GPU")))
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation[implementation]
        )
        with startup_deadline(tf_config, startup_timeout):
            return tf.distribute.MultiWorkerMirroredStrategy(
                cluster_resolver=_cluster_resolver(tf_config), communication_options=options
            )
    raise ValueError(f"Cannot create strategy {name!r}; resolve 'auto' with choose_strategy_name.")


def configure_coordination_service(tf_config: Mapping, heartbeat_timeout: int) -> None:
    """Sets up the coordination service MultiWorkerMirroredStrategy would, but with our
    heartbeat timeout: a worker silent that long is declared lost and every other worker's
    next collective fails, instead of waiting forever. A killed worker is usually noticed
    sooner, when its connections reset. Call before the strategy and any other TF op.
    """
    cluster = tf_config["cluster"]
    jobs = [job for job in ("chief", "worker") if cluster.get(job)]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{jobs[0]}/replica:0/task:0",  # As MultiWorkerMirroredStrategy.
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(cluster[job]))
            for job in jobs
        ],
        heartbeat_timeout_in_ms=heartbeat_timeout * 1000,
    )


@contextlib.contextmanager
def startup_deadline(tf_config: Mapping | None, timeout: int) -> Iterator[None]:
    """Ends the process with one `error:` line when the block (the strategy's start-up, which
    waits for every worker) lasts over `timeout` seconds; exit status 137 (SIGKILL).

    MultiWorkerMirroredStrategy waits for the other workers in C++ with no limit we can set:
    the coordination service's cluster_register_timeout_in_ms did not bound it (TF 2.21,
    tried), the call holds the GIL (so no Python thread or signal handler runs meanwhile) and
    TF catches SIGTERM itself. So a tiny watchdog process does it; closing its stdin (our
    exit from the block, or our death) dismisses it. Nothing has been written yet.
    """
    if count_workers(tf_config) < 2:
        yield
        return
    cluster = ", ".join(
        address for job in ("chief", "worker") for address in tf_config["cluster"].get(job, [])
    )
    message = (
        f"error: not every worker joined within {timeout} s (cluster: {cluster}); start all "
        "of them, or raise --startup_timeout"
    )
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout), message],
        stdin=subprocess.PIPE,
    )
    try:
        yield
    finally:
        watchdog.stdin.close()
        watchdog.wait()


# Waits `timeout` s for its stdin to close; if it has not, says so and kills the parent.
_WATCHDOG = """
import os, select, signal, sys
parent, timeout, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if not select.select([sys.stdin], [], [], timeout)[0]:
    sys.stderr.write(message + "\\n")
    sys.stderr.flush()
    os.kill(parent, signal.SIGKILL)
"""


def weights_checksum(model: tf_keras.Model) -> str:
    """A short digest of all of `model`'s weights (trainable or not), in a fixed order.

    Reading weights may be a collective op under MultiWorkerMirroredStrategy: call it on
    every worker, at the same point.
    """
    digest = hashlib.sha256()
    for value in model.get_weights():
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:16]


def _cluster_resolver(tf_config: Mapping | None) -> tf.distribute.cluster_resolver.ClusterResolver:
    """A resolver from an explicit TF_CONFIG dict, so Vertex's CLUSTER_SPEC works unchanged."""
    if tf_config is None:
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(tf_config["cluster"]),
        task_type=tf_config["task"]["type"],
        task_id=int(tf_config["task"]["index"]),
        rpc_layer="grpc",
    )


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Sets the global Keras dtype policy for the duration of the block, then restores it."""
    previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def chief_or_temporary_dir(final_dir: str, chief: bool) -> Iterator[str]:
    """Yields `final_dir` on the chief; elsewhere a throw-away folder removed afterwards.

    Standard MultiWorkerMirroredStrategy pattern: every worker runs the same save code (saving
    may need collective ops), but only the chief's copy is kept.
    """
    if chief:
        yield final_dir
        return
    scratch = tempfile.mkdtemp(prefix="worker-scratch-")
    try:
        yield os.path.join(scratch, os.path.basename(final_dir.rstrip("/")) or "out")
    finally:
        tf.io.gfile.rmtree(scratch)
