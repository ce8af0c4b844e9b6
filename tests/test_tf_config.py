"""What the trainer makes of the cluster Vertex AI describes in TF_CONFIG and CLUSTER_SPEC.

Every example is the documented one, from "The format of CLUSTER_SPEC" and "The format of
TF_CONFIG" in https://cloud.google.com/vertex-ai/docs/training/distributed-training:
  - both variables are set on every replica of a distributed job (none on one replica);
  - CLUSTER_SPEC names pools workerpool0 (primary), 1 (workers), 2 (parameter servers or
    Reduction Server), 3 (evaluators);
  - TF_CONFIG maps task names chief, worker, ps or master to addresses, never evaluator; the
    primary's task type is "chief" or "master"; `task` carries trial and cloud fields.
"""

import json
import subprocess
import sys

import pytest

from infra import job_specs
from tests.fixtures.processes import REPO_ROOT
from trainer import distribute

# The documented CLUSTER_SPEC example, verbatim (addresses and all four pools).
DOC_CLUSTER_SPEC = {
    "cluster": {
        "workerpool0": ["cmle-training-workerpool0-ab-0:2222"],
        "workerpool1": [
            "cmle-training-workerpool1-ab-0:2222",
            "cmle-training-workerpool1-ab-1:2222",
        ],
        "workerpool2": [
            "cmle-training-workerpool2-ab-0:2222",
            "cmle-training-workerpool2-ab-1:2222",
        ],
        "workerpool3": [
            "cmle-training-workerpool3-ab-0:2222",
            "cmle-training-workerpool3-ab-1:2222",
            "cmle-training-workerpool3-ab-2:2222",
        ],
    },
    "environment": "cloud",
    "task": {"type": "workerpool0", "index": 0, "trial": "TRIAL_ID"},
    "job": {},
}
# The documented TF_CONFIG example: a trial of a job with a master, two workers and one ps,
# as seen on a worker.
DOC_TF_CONFIG = {
    "cluster": {
        "chief": ["training-workerpool0-ID1-0:2222"],
        "ps": ["training-workerpool2-ID1-0:2222"],
        "worker": ["training-workerpool1-ID1-0:2222", "training-workerpool1-ID1-1:2222"],
    },
    "environment": "cloud",
    "job": {},
    "task": {"cloud": "ID2", "index": 0, "trial": "1", "type": "worker"},
}


def test_documented_cluster_spec_keeps_the_training_tasks_only():
    """Pool 2 (parameter servers or reducers) and pool 3 (evaluators) run no collective ops of
    MultiWorkerMirroredStrategy: they must not be in its cluster."""
    assert distribute.resolve_tf_config({"CLUSTER_SPEC": json.dumps(DOC_CLUSTER_SPEC)}) == {
        "cluster": {
            "chief": ["cmle-training-workerpool0-ab-0:2222"],
            "worker": [
                "cmle-training-workerpool1-ab-0:2222",
                "cmle-training-workerpool1-ab-1:2222",
            ],
        },
        "task": {"type": "chief", "index": 0},
    }


def test_documented_tf_config_drops_ps_and_vertex_fields():
    tf_config = distribute.resolve_tf_config({"TF_CONFIG": json.dumps(DOC_TF_CONFIG)})
    assert tf_config == {
        "cluster": {
            "chief": ["training-workerpool0-ID1-0:2222"],
            "worker": ["training-workerpool1-ID1-0:2222", "training-workerpool1-ID1-1:2222"],
        },
        "task": {"type": "worker", "index": 0},
    }
    assert distribute.count_workers(tf_config) == 3
    assert not distribute.is_chief(tf_config)


@pytest.mark.parametrize("task_index", [0, 1])
def test_master_is_the_chief(task_index):
    """The page: "On your job's master worker, the value is set to either chief or master"."""
    tf_config = {
        "cluster": {"master": ["m-0:2222"], "worker": ["w-0:2222", "w-1:2222"]},
        "environment": "cloud",
        "task": {"type": "master", "index": 0},
    }
    on_master = distribute.resolve_tf_config({"TF_CONFIG": json.dumps(tf_config)})
    assert on_master["cluster"] == {"chief": ["m-0:2222"], "worker": ["w-0:2222", "w-1:2222"]}
    assert on_master["task"] == {"type": "chief", "index": 0}
    assert distribute.is_chief(on_master)
    on_worker = dict(tf_config, task={"type": "worker", "index": task_index})
    on_worker = distribute.resolve_tf_config({"TF_CONFIG": json.dumps(on_worker)})
    assert not distribute.is_chief(on_worker)
    assert distribute.choose_strategy_name("auto", on_worker, num_gpus=1) == "multi_worker"


def _vertex_env(pools: list[int], task_pool: int, task_index: int, ps_name: str = "ps") -> dict:
    """Both variables as Vertex AI sets them for worker pools of these replica counts."""
    addresses = {
        pool: [f"training-workerpool{pool}-x-{i}:2222" for i in range(count)]
        for pool, count in enumerate(pools)
        if count
    }
    cluster_spec = {
        "cluster": {f"workerpool{pool}": a for pool, a in addresses.items()},
        "environment": "cloud",
        "task": {"type": f"workerpool{task_pool}", "index": task_index},
    }
    names = {0: "chief", 1: "worker", 2: ps_name}  # TF_CONFIG never lists evaluators.
    tf_config = {
        "cluster": {names[pool]: a for pool, a in addresses.items() if pool in names},
        "environment": "cloud",
        "task": {"type": {**names, 3: "evaluator"}[task_pool], "index": task_index},
    }
    return {"CLUSTER_SPEC": json.dumps(cluster_spec), "TF_CONFIG": json.dumps(tf_config)}


@pytest.mark.parametrize(
    ("pools", "task_pool", "task_index"),
    [([1, 3], 0, 0), ([1, 3], 1, 2), ([1, 3, 2], 1, 0), ([1, 1, 2, 1], 0, 0), ([1, 0, 0, 1], 0, 0)],
)
def test_tf_config_and_cluster_spec_describe_the_same_training_cluster(
    pools, task_pool, task_index
):
    env = _vertex_env(pools, task_pool, task_index)
    from_tf_config = distribute.resolve_tf_config(env)
    from_cluster_spec = distribute.resolve_tf_config({"CLUSTER_SPEC": env["CLUSTER_SPEC"]})
    assert from_tf_config == from_cluster_spec
    assert distribute.count_workers(from_tf_config) == pools[0] + pools[1]
    assert distribute.is_chief(from_tf_config) == (task_pool == 0)


@pytest.mark.parametrize(("task_pool", "task_type"), [(2, "ps"), (3, "evaluator")])
def test_the_trainer_refuses_to_run_as_ps_or_evaluator_in_one_line(tmp_path, task_pool, task_type):
    """Our image belongs in pools 0 and 1 only; anywhere else it has nothing to do, and says so
    before touching any data (the data folder here does not even exist)."""
    env = _vertex_env([1, 1, 1, 1], task_pool, 0)
    command = [sys.executable, "-m", "trainer.task", f"--job_dir={tmp_path / 'job'}"]
    command.append(f"--data_dir={tmp_path / 'no-data'}")
    result = subprocess.run(
        command, cwd=REPO_ROOT, env={**_clean_env(), **env}, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"is a {task_type!r} task" in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "job").exists()


def test_reduction_server_job_gives_the_trainer_its_workers_and_nccl():
    """infra.submit's Reduction Server layout, as the replicas will see it: the trainer's
    cluster is chief + workers (the reducers are outside it), it picks MultiWorkerMirrored,
    and all-reduces with NCCL on GPU machines, the only path Reduction Server accelerates
    ("Prerequisites": "multi-host data-parallel training with GPUs using NCCL all-reduce")."""
    config = job_specs.JobConfig(
        "rs",
        "img",
        "gs://b/j",
        region="europe-west4",
        machine_type="a2-highgpu-8g",
        accelerator_type="NVIDIA_TESLA_A100",
        accelerator_count=8,
        replica_count=4,
        reduction_server_count=5,
    )
    pools = job_specs.create_custom_job(config).job_spec.worker_pool_specs
    assert [p.replica_count for p in pools] == [1, 3, 5]
    assert pools[2].container_spec.image_uri == (
        "europe-docker.pkg.dev/vertex-ai-restricted/training/reductionserver:latest"
    )
    assert not pools[2].machine_spec.accelerator_count  # "You do not use GPUs for the reducers."
    env = _vertex_env([p.replica_count for p in pools], task_pool=1, task_index=2)
    tf_config = distribute.resolve_tf_config(env)
    assert tf_config["task"] == {"type": "worker", "index": 2}
    assert set(tf_config["cluster"]) == {"chief", "worker"}
    assert distribute.count_workers(tf_config) == 4
    gpus = pools[1].machine_spec.accelerator_count
    assert distribute.choose_strategy_name("auto", tf_config, gpus) == "multi_worker"
    assert distribute.communication_implementation(gpus) == "NCCL"
    assert distribute.communication_implementation(0) == "AUTO"


def _clean_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "CLUSTER_SPEC")}
