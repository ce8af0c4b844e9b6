"""Vertex AI job specs as protos: one machine, several machines, and a tuning study.

Pure functions: they take explicit arguments, touch no network and no flags, and return
`google.cloud.aiplatform_v1` messages, so the exact job a user submits can be printed
(`python -m infra.submit --dry_run`) and tested offline.

Cluster layout (https://cloud.google.com/vertex-ai/docs/training/distributed-training):
worker pool 0 is the chief (one replica), pool 1 the other workers, pool 2 the optional
Reduction Server. Vertex AI publishes the cluster as TF_CONFIG and CLUSTER_SPEC, which
`trainer.distribute` turns into MultiWorkerMirroredStrategy's cluster; with one machine
and several GPUs the trainer picks MirroredStrategy.

Every training replica gets `--min_gpus=<GPUs per machine>`, so a container that sees fewer
GPUs than were paid for stops at start-up instead of training on the CPU.
"""

from __future__ import annotations

import dataclasses
import json

from google.cloud import aiplatform_v1 as vertex
from google.protobuf import duration_pb2

# Google's prebuilt Reduction Server (all-reduce over CPU-only nodes), published in three
# multi-regions; "Train using Reduction Server" in
# https://cloud.google.com/vertex-ai/docs/training/distributed-training lists exactly these.
REDUCTION_SERVER_IMAGE = (
    "{multi_region}-docker.pkg.dev/vertex-ai-restricted/training/reductionserver:latest"
)
# Artifact Registry multi-region nearest to a Vertex AI region (by the region's prefix).
_MULTI_REGIONS = {"europe": "europe", "asia": "asia", "australia": "asia", "me": "asia"}
# The tuning objective: the metric tag the trainer reports through cloudml-hypertune.
TUNING_METRIC = "accuracy"

_NO_ACCELERATOR = "ACCELERATOR_TYPE_UNSPECIFIED"

# Which GPUs each machine family takes, and how many per machine. From Compute Engine's GPU
# machine types (https://cloud.google.com/compute/docs/gpus) and Vertex AI's
# https://cloud.google.com/vertex-ai/docs/training/configure-compute#gpu-compatibility-table.
# Accelerator-optimized machines come with a fixed GPU count, named by their machine type.
_FIXED_GPUS = {
    "NVIDIA_L4": {
        "g2-standard-4": 1,
        "g2-standard-8": 1,
        "g2-standard-12": 1,
        "g2-standard-16": 1,
        "g2-standard-32": 1,
        "g2-standard-24": 2,
        "g2-standard-48": 4,
        "g2-standard-96": 8,
    },
    "NVIDIA_TESLA_A100": {
        **{f"a2-highgpu-{n}g": n for n in (1, 2, 4, 8)},
        "a2-megagpu-16g": 16,
    },
    "NVIDIA_A100_80GB": {f"a2-ultragpu-{n}g": n for n in (1, 2, 4, 8)},
    "NVIDIA_H100_80GB": {f"a3-highgpu-{n}g": n for n in (1, 2, 4, 8)},
    "NVIDIA_H100_MEGA_80GB": {"a3-megagpu-8g": 8},
    "NVIDIA_H200_141GB": {"a3-ultragpu-8g": 8},
    "NVIDIA_B200": {"a4-highgpu-8g": 8},
    "NVIDIA_GB200": {"a4x-highgpu-4g": 4},
    "NVIDIA_RTX_PRO_6000": {
        "g4-standard-48": 1,
        "g4-standard-96": 2,
        "g4-standard-192": 4,
        "g4-standard-384": 8,
    },
}
# N1 machines take 1, 2, 4 (or 8) of these GPUs, with at most this many vCPUs per GPU count.
_N1_GPUS = {
    "NVIDIA_TESLA_T4": {1: 48, 2: 48, 4: 96},
    "NVIDIA_TESLA_V100": {1: 12, 2: 24, 4: 48, 8: 96},
    "NVIDIA_TESLA_P100": {1: 16, 2: 32, 4: 96},
    "NVIDIA_TESLA_P4": {1: 24, 2: 48, 4: 96},
}
# Machine families whose boot disk must be Hyperdisk: Persistent Disk is not offered there.
# The SDK's DiskSpec (google/cloud/aiplatform_v1/types/machine_resources.py): "For non-A3U
# machines, the default value is pd-ssd, for A3U machines, the default value is
# hyperdisk-balanced"; A4, A4X and G4 take Hyperdisk only as well
# (https://cloud.google.com/compute/docs/disks#disk-types, "Machine series support").
_HYPERDISK_FAMILIES = ("a3-ultragpu", "a4-highgpu", "a4x-highgpu", "g4-standard")


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """What a training job runs on and where it writes; shared by every job kind.

    Attributes:
      display_name: name shown in the console.
      region: Vertex AI region the job runs in (chooses the Reduction Server image).
      image_uri: the training container (infra/Dockerfile, pushed by cloudbuild.yaml).
      job_dir: gs:// folder for checkpoints, logs, metrics and the model
        (Vertex AI's base_output_directory; the trainer gets it as --job_dir).
      machine_type: Compute Engine machine type of every training replica.
      accelerator_type: an `aiplatform_v1.AcceleratorType` name, or "" for none.
      accelerator_count: GPUs per replica.
      replica_count: training machines in all (chief + workers).
      reduction_server_count: Reduction Server replicas (0: none); needs replica_count > 1.
      reduction_server_machine_type: machine type of the Reduction Server replicas.
      service_account: e-mail of the account the job runs as ("" for Vertex's default).
      spot: run on Spot VMs (cheaper; preemptible, so the trainer resumes from checkpoints).
      tensorboard: Vertex AI TensorBoard resource name to stream logs to ("" for none).
      timeout_hours: the job is stopped after this long.
      trainer_args: arguments passed through to `python -m trainer.task`.
    """

    display_name: str
    image_uri: str
    job_dir: str
    region: str = "us-central1"
    machine_type: str = "n1-standard-8"
    accelerator_type: str = "NVIDIA_TESLA_T4"
    accelerator_count: int = 1
    replica_count: int = 1
    reduction_server_count: int = 0
    reduction_server_machine_type: str = "n1-highcpu-16"
    service_account: str = ""
    spot: bool = False
    tensorboard: str = ""
    timeout_hours: float = 24.0
    trainer_args: tuple[str, ...] = ()


def validate_config(config: JobConfig) -> None:
    """Raises ValueError naming the first bad value of `config`."""
    if not config.job_dir.startswith("gs://"):
        raise ValueError(f"job_dir {config.job_dir!r} must be a gs:// path: Vertex AI writes there")
    if config.replica_count < 1:
        raise ValueError(f"replica_count {config.replica_count} must be at least 1")
    accelerator = config.accelerator_type or _NO_ACCELERATOR
    if accelerator not in vertex.AcceleratorType.__members__:
        known = ", ".join(n for n in vertex.AcceleratorType.__members__ if n != _NO_ACCELERATOR)
        raise ValueError(f"unknown accelerator_type {accelerator!r}; expected one of {known}")
    if accelerator != _NO_ACCELERATOR and config.accelerator_count < 1:
        raise ValueError(f"accelerator_count {config.accelerator_count} must be >= 1 with a GPU")
    if accelerator != _NO_ACCELERATOR:
        check_machine(config.machine_type, accelerator, config.accelerator_count)
    if config.reduction_server_count and config.replica_count < 2:
        raise ValueError("a Reduction Server needs replica_count >= 2 (it reduces across machines)")
    if config.tensorboard and not config.service_account:
        raise ValueError("a TensorBoard instance needs --service_account (a Vertex AI rule)")
    if any(arg.startswith("--job_dir") for arg in config.trainer_args):
        raise ValueError("pass --job_dir to infra.submit, not to the trainer: it is set per job")


def check_machine(machine_type: str, accelerator_type: str, accelerator_count: int) -> None:
    """Raises ValueError, naming the valid choices, unless the machine takes these GPUs."""
    if accelerator_type in _FIXED_GPUS:
        machines = _FIXED_GPUS[accelerator_type]
        if machines.get(machine_type) == accelerator_count:
            return
        choices = ", ".join(f"{m} with {n}" for m, n in machines.items())
        raise ValueError(
            f"{machine_type} with {accelerator_count} x {accelerator_type} is not a machine "
            f"Vertex AI offers; {accelerator_type} comes as {choices}"
        )
    if accelerator_type in _N1_GPUS:
        max_vcpus = _N1_GPUS[accelerator_type]
        counts = ", ".join(str(n) for n in max_vcpus)
        if not machine_type.startswith("n1-"):
            raise ValueError(
                f"{accelerator_type} attaches to n1-* machines only, not {machine_type}"
            )
        if accelerator_count not in max_vcpus:
            raise ValueError(f"{accelerator_type}: accelerator_count must be one of {counts}")
        vcpus = int(machine_type.rsplit("-", 1)[-1])
        if vcpus > max_vcpus[accelerator_count]:
            raise ValueError(
                f"{machine_type} has {vcpus} vCPUs, more than {accelerator_count} x "
                f"{accelerator_type} allow ({max_vcpus[accelerator_count]}); use a smaller n1 "
                "machine or more GPUs"
            )
        return
    raise ValueError(f"accelerator_type {accelerator_type} is not one this project trains on")


def boot_disk_type(machine_type: str) -> str:
    """The boot disk type a machine family accepts: hyperdisk-balanced where Persistent Disk
    is not offered, else pd-ssd."""
    return "hyperdisk-balanced" if machine_type.startswith(_HYPERDISK_FAMILIES) else "pd-ssd"


def reduction_server_image(region: str) -> str:
    """Google's Reduction Server image from the multi-region nearest to `region`."""
    return REDUCTION_SERVER_IMAGE.format(
        multi_region=_MULTI_REGIONS.get(region.split("-", 1)[0], "us")
    )


def create_machine_spec(config: JobConfig) -> vertex.MachineSpec:
    """The machine of every training replica: type, GPU type and GPUs per machine."""
    if not config.accelerator_type or config.accelerator_type == _NO_ACCELERATOR:
        return vertex.MachineSpec(machine_type=config.machine_type)
    return vertex.MachineSpec(
        machine_type=config.machine_type,
        accelerator_type=vertex.AcceleratorType[config.accelerator_type],
        accelerator_count=config.accelerator_count,
    )


def create_worker_pool_specs(
    config: JobConfig, container: vertex.ContainerSpec
) -> list[vertex.WorkerPoolSpec]:
    """Chief pool, then (several machines) the worker pool and the Reduction Server pool."""
    machine = create_machine_spec(config)
    disk = vertex.DiskSpec(
        boot_disk_type=boot_disk_type(config.machine_type), boot_disk_size_gb=100
    )

    def training_pool(replicas: int) -> vertex.WorkerPoolSpec:
        return vertex.WorkerPoolSpec(
            container_spec=container, machine_spec=machine, replica_count=replicas, disk_spec=disk
        )

    pools = [training_pool(1)]
    if config.replica_count > 1:
        pools.append(training_pool(config.replica_count - 1))
    if config.reduction_server_count:
        pools.append(
            vertex.WorkerPoolSpec(
                container_spec=vertex.ContainerSpec(
                    image_uri=reduction_server_image(config.region)
                ),
                machine_spec=vertex.MachineSpec(machine_type=config.reduction_server_machine_type),
                replica_count=config.reduction_server_count,
            )
        )
    return pools


def create_custom_job_spec(config: JobConfig, per_trial: bool = False) -> vertex.CustomJobSpec:
    """The CustomJobSpec of a training run (`per_trial`: one run of a tuning study).

    A run gets `--job_dir=<config.job_dir>`. Trials share one argument list yet each must
    write to its own folder, so a trial gets no --job_dir: Vertex AI sets each trial's
    AIP_MODEL_DIR=<job_dir>/<trial id>/model and trainer.task takes its parent as job_dir.
    Both get `--min_gpus` (GPUs per machine) first, so the user's own flags still win.
    """
    validate_config(config)
    gpus = config.accelerator_count if config.accelerator_type not in ("", _NO_ACCELERATOR) else 0
    args = [f"--min_gpus={gpus}", *config.trainer_args]
    if not per_trial:
        args.insert(0, f"--job_dir={config.job_dir}")
    container = vertex.ContainerSpec(image_uri=config.image_uri, args=args)
    strategy = (
        vertex.Scheduling.Strategy.SPOT if config.spot else vertex.Scheduling.Strategy.STANDARD
    )
    spec = vertex.CustomJobSpec(
        worker_pool_specs=create_worker_pool_specs(config, container),
        base_output_directory=vertex.GcsDestination(output_uri_prefix=config.job_dir),
        scheduling=vertex.Scheduling(
            timeout=duration_pb2.Duration(seconds=int(config.timeout_hours * 3600)),
            # A preempted or failed worker restarts the whole job; the trainer resumes.
            restart_job_on_worker_restart=config.replica_count > 1,
            strategy=strategy,
        ),
        service_account=config.service_account,
        tensorboard=config.tensorboard,
    )
    return spec


def create_custom_job(config: JobConfig) -> vertex.CustomJob:
    """A CustomJob: one machine (MirroredStrategy) or several (MultiWorkerMirroredStrategy)."""
    return vertex.CustomJob(
        display_name=config.display_name, job_spec=create_custom_job_spec(config)
    )


def create_study_spec(
    learning_rate: tuple[float, float] = (1e-4, 1e-2),
    batch_sizes: tuple[int, ...] = (32, 64, 128),
    dropout: tuple[float, float] = (0.0, 0.5),
) -> vertex.StudySpec:
    """Maximise validation `accuracy` over learning rate (log scale), batch size and dropout.

    The parameter ids are the trainer's flag names: Vertex AI appends each trial's values to
    the container's arguments. Every value travels as a double (the API's discrete and integer
    values are doubles; python-aiplatform#866), so the trainer gets `--batch_size 64.0` and
    its integer flags take integral floats. The trainer reports `accuracy` at every epoch end,
    so the median rule can stop a trial that is already behind the completed ones.
    """
    for name, (low, high) in (("learning_rate", learning_rate), ("dropout", dropout)):
        if not low < high:
            raise ValueError(f"{name} range ({low}, {high}) must have low < high")
    parameter = vertex.StudySpec.ParameterSpec
    scale = parameter.ScaleType
    return vertex.StudySpec(
        metrics=[
            vertex.StudySpec.MetricSpec(
                metric_id=TUNING_METRIC, goal=vertex.StudySpec.MetricSpec.GoalType.MAXIMIZE
            )
        ],
        parameters=[
            parameter(
                parameter_id="learning_rate",
                double_value_spec=parameter.DoubleValueSpec(
                    min_value=learning_rate[0], max_value=learning_rate[1]
                ),
                scale_type=scale.UNIT_LOG_SCALE,
            ),
            parameter(
                parameter_id="batch_size",
                discrete_value_spec=parameter.DiscreteValueSpec(values=sorted(batch_sizes)),
                scale_type=scale.UNIT_LINEAR_SCALE,
            ),
            parameter(
                parameter_id="dropout",
                double_value_spec=parameter.DoubleValueSpec(
                    min_value=dropout[0], max_value=dropout[1]
                ),
                scale_type=scale.UNIT_LINEAR_SCALE,
            ),
        ],
        # Vertex AI's default Bayesian optimisation (Vizier) is ALGORITHM_UNSPECIFIED.
        algorithm=vertex.StudySpec.Algorithm.ALGORITHM_UNSPECIFIED,
        # A trial scores its best epoch, as the SDK's HyperparameterTuningJob does by default.
        measurement_selection_type=vertex.StudySpec.MeasurementSelectionType.BEST_MEASUREMENT,
        # Stop a trial whose best value is below the median of the completed trials' running
        # averages at the same step (the trainer's step is the epoch: comparable across batch
        # sizes, which optimizer steps are not).
        median_automated_stopping_spec=vertex.StudySpec.MedianAutomatedStoppingSpec(
            use_elapsed_duration=False
        ),
    )


def create_tuning_job(
    config: JobConfig,
    study_spec: vertex.StudySpec,
    max_trial_count: int = 12,
    parallel_trial_count: int = 3,
) -> vertex.HyperparameterTuningJob:
    """A HyperparameterTuningJob whose trials are `config`'s training run."""
    if not 1 <= parallel_trial_count <= max_trial_count:
        raise ValueError(
            f"parallel_trial_count {parallel_trial_count} must be in [1, max_trial_count "
            f"{max_trial_count}]"
        )
    return vertex.HyperparameterTuningJob(
        display_name=config.display_name,
        study_spec=study_spec,
        max_trial_count=max_trial_count,
        parallel_trial_count=parallel_trial_count,
        max_failed_trial_count=max(1, max_trial_count // 4),
        trial_job_spec=create_custom_job_spec(config, per_trial=True),
    )


def to_json(job: vertex.CustomJob | vertex.HyperparameterTuningJob) -> str:
    """The job as the JSON that Vertex AI's REST API takes (camelCase, enums as names)."""
    text = type(job).to_json(
        job, use_integers_for_enums=False, always_print_fields_with_no_presence=False
    )
    return json.dumps(json.loads(text), indent=2, sort_keys=True)
