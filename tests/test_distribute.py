"""Strategy and precision choice (pure functions of the environment), and real multi-replica
training on two logical CPU devices, in a subprocess: logical devices must be configured
before TensorFlow initialises, which has already happened in the pytest process. And the
start-up bound: a worker whose peer never starts fails within --startup_timeout."""

import json
import os
import signal
import textwrap
import time

import pytest

from tests.fixtures.processes import (
    finish,
    free_ports,
    run_python,
    running,
    tiny_training_flags,
)
from trainer import distribute

_VERTEX_CLUSTER_SPEC = {
    "cluster": {
        "workerpool0": ["chief-0:2222"],
        "workerpool1": ["worker-0:2222", "worker-1:2222"],
    },
    "environment": "cloud",
    "task": {"type": "workerpool1", "index": 1, "trial": ""},
    "job": "{}",
}


def test_vertex_cluster_spec_becomes_tf_config():
    tf_config = distribute.cluster_spec_to_tf_config(_VERTEX_CLUSTER_SPEC)
    assert tf_config == {
        "cluster": {"chief": ["chief-0:2222"], "worker": ["worker-0:2222", "worker-1:2222"]},
        "task": {"type": "worker", "index": 1},
    }


def test_tf_config_wins_over_cluster_spec_and_absence_means_one_machine():
    own = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}
    env = {"TF_CONFIG": json.dumps(own), "CLUSTER_SPEC": json.dumps(_VERTEX_CLUSTER_SPEC)}
    assert distribute.resolve_tf_config(env) == own
    assert distribute.resolve_tf_config({"CLUSTER_SPEC": json.dumps(_VERTEX_CLUSTER_SPEC)})[
        "task"
    ] == {"type": "worker", "index": 1}
    assert distribute.resolve_tf_config({}) is None


@pytest.mark.parametrize(
    "requested, env, gpus, expected",
    [
        ("auto", {}, 0, "default"),
        ("auto", {}, 1, "default"),
        ("auto", {}, 4, "mirrored"),
        ("auto", {"CLUSTER_SPEC": json.dumps(_VERTEX_CLUSTER_SPEC)}, 1, "multi_worker"),
        # A single-task TF_CONFIG (Vertex sets one for one-replica jobs) is not multi-worker.
        (
            "auto",
            {"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"]}, "task": {"type": "chief"}})},
            2,
            "mirrored",
        ),
        ("default", {"CLUSTER_SPEC": json.dumps(_VERTEX_CLUSTER_SPEC)}, 8, "default"),
        ("mirrored", {}, 0, "mirrored"),
    ],
)
def test_strategy_follows_cluster_then_gpus_unless_overridden(requested, env, gpus, expected):
    tf_config = distribute.resolve_tf_config(env)
    assert distribute.choose_strategy_name(requested, tf_config, gpus) == expected


def test_chief_is_the_chief_task_or_worker_zero():
    with_chief = distribute.cluster_spec_to_tf_config(_VERTEX_CLUSTER_SPEC)
    assert not distribute.is_chief(with_chief)
    assert distribute.is_chief({**with_chief, "task": {"type": "chief", "index": 0}})
    workers_only = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}
    assert distribute.is_chief(workers_only)
    assert not distribute.is_chief({**workers_only, "task": {"type": "worker", "index": 1}})
    assert distribute.is_chief(None)


@pytest.mark.parametrize(
    "requested, capabilities, expected",
    [
        ("auto", [], "float32"),
        ("auto", [(7, 0)], "mixed_float16"),
        ("auto", [(8, 0), (8, 0)], "mixed_float16"),
        ("auto", [(6, 1)], "float32"),  # Pascal: no tensor cores, float16 would be slower.
        ("auto", [(8, 0), (6, 0)], "float32"),
        ("mixed_bfloat16", [], "mixed_bfloat16"),
        ("float32", [(9, 0)], "float32"),
    ],
)
def test_precision_auto_needs_tensor_cores(requested, capabilities, expected):
    assert distribute.choose_precision(requested, capabilities) == expected


def test_unknown_names_raise_value_errors_naming_them():
    with pytest.raises(ValueError, match="'tpu'"):
        distribute.choose_strategy_name("tpu", None, 0)
    with pytest.raises(ValueError, match="'fp8'"):
        distribute.choose_precision("fp8", [])


def test_non_chief_writes_to_a_scratch_folder_that_is_removed(tmp_path):
    final = str(tmp_path / "model")
    with distribute.chief_or_temporary_dir(final, chief=False) as folder:
        os.makedirs(folder)
        open(os.path.join(folder, "x"), "w").close()
        scratch = os.path.dirname(folder)
    assert not os.path.exists(scratch) and not os.path.exists(final)
    with distribute.chief_or_temporary_dir(final, chief=True) as folder:
        assert folder == final


_TWO_REPLICAS = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np, tf_keras
    from trainer import backbones, distribute, models, train
    from trainer.config import TrainConfig

    backbone_path, data_dir, job_dir = sys.argv[1:4]
    images = np.random.default_rng(0).uniform(size=(8, 32, 32, 3)).astype("float32")
    labels = np.arange(8) % 20

    def one_sgd_step(strategy, initial=None):
        with strategy.scope():
            backbone, _ = backbones.create_backbone(backbone_path, 32)
            # No dropout and BatchNorm in inference mode: nothing random, nothing batch-local.
            model = models.create_model(backbone, 20, 32, dropout_rate=0.0)
            models.unfreeze_backbone(model)
            loss = models.SparseCategoricalCrossentropyWithSmoothing(20)
            model.compile(tf_keras.optimizers.SGD(0.5), loss)
        if initial is not None:
            model.set_weights(initial)
        start = model.get_weights()
        model.fit(tf.data.Dataset.from_tensor_slices((images, labels)).batch(8), verbose=0)
        return start, model.get_weights(), strategy.num_replicas_in_sync

    start, one, _ = one_sgd_step(tf.distribute.get_strategy())
    _, two, replicas = one_sgd_step(distribute.create_strategy("mirrored"), start)
    config = TrainConfig(
        data_dir=data_dir, backbone=backbone_path, image_size=32, batch_size=4, epochs=1,
        frozen_epochs=0, steps_per_epoch=2, strategy="mirrored", precision="float32",
        export_formats=("saved_model",),  # LiteRT: tests/test_tflite_export.py.
    ).validate()
    metrics = train.train_and_evaluate(config, job_dir)
    print("RESULT " + json.dumps({
        "replicas": replicas,
        "max_diff": max(float(np.abs(a - b).max()) for a, b in zip(one, two)),
        "max_change": max(float(np.abs(a - b).max()) for a, b in zip(one, start)),
        "test_top1": metrics["top1"],
    }))
    """
)


@pytest.mark.slow
def test_two_replicas_match_one_and_the_trainer_runs_mirrored(
    tiny_backbone, learnable_data_dir, tmp_path
):
    job_dir = tmp_path / "job"
    run = run_python(
        "-c", _TWO_REPLICAS, tiny_backbone, learnable_data_dir, str(job_dir), timeout=900
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT ")[-1])
    assert result["replicas"] == 2
    assert result["max_change"] > 1e-3  # The step really moved the weights...
    assert result["max_diff"] < 1e-4  # ...and identically with the batch split over 2 replicas.
    config = json.loads((job_dir / "config.json").read_text())
    assert (config["strategy"], config["replicas"], config["global_batch_size"]) == (
        "mirrored",
        2,
        8,
    )
    assert 0.0 <= result["test_top1"] <= 1.0
    assert (job_dir / "metrics.json").exists() and (job_dir / "model" / "saved_model.pb").exists()


_ONE_WORKER_MWMS = textwrap.dedent(
    """
    import json, os, sys
    import tensorflow as tf
    from trainer import distribute
    tf_config = distribute.resolve_tf_config(os.environ)
    strategy = distribute.create_strategy("multi_worker", tf_config)
    resolver = strategy.cluster_resolver
    print("RESULT " + json.dumps({
        "multi_worker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
        "replicas": strategy.num_replicas_in_sync,
        "task": [resolver.task_type, resolver.task_id],
        "chief": distribute.is_chief(tf_config),
        "communication": strategy.extended._communication_options.implementation.name,
    }))
    """
)


def test_vertex_cluster_spec_creates_a_multi_worker_strategy(unused_tcp_port):
    # One chief only, so it needs no peers; enough to run the CLUSTER_SPEC -> strategy path.
    spec = {
        "cluster": {"workerpool0": [f"localhost:{unused_tcp_port}"]},
        "task": {"type": "workerpool0", "index": 0},
    }
    env = {"TF_CONFIG": None, "CLUSTER_SPEC": json.dumps(spec)}
    run = run_python("-c", _ONE_WORKER_MWMS, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT ")[-1])
    assert result == {
        "multi_worker": True,
        "replicas": 1,
        "task": ["chief", 0],
        "chief": True,
        # No GPU here: NCCL needs GPUs, so AUTO (ring); tests/test_tf_config.py covers the
        # choice, and a GPU machine gets NCCL from the same create_strategy.
        "communication": "AUTO",
    }


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _tf_config(addresses: list[str], index: int) -> str:
    return json.dumps(
        {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    )


@pytest.mark.slow
def test_a_worker_whose_peer_never_starts_fails_within_the_startup_timeout(
    learnable_data_dir, tiny_backbone, tmp_path
):
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]  # Worker 1 never starts.
    flags = tiny_training_flags(
        learnable_data_dir, tiny_backbone, str(tmp_path / "job"), strategy="multi_worker",
        startup_timeout=5,
    )  # fmt: skip
    with running(flags, tmp_path / "log.txt", {"TF_CONFIG": _tf_config(addresses, 0)}) as chief:
        started = time.monotonic()
        result = finish(chief, tmp_path / "log.txt", timeout=120)
    print(f"the chief stopped after {time.monotonic() - started:.1f} s (imports included)")
    assert result.returncode == -signal.SIGKILL, result.output[-3000:]
    assert result.errors == [
        f"error: not every worker joined within 5 s (cluster: {', '.join(addresses)}); "
        "start all of them, or raise --startup_timeout"
    ]
    assert not (tmp_path / "job" / "config.json").exists()
