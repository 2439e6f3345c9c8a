"""The launchers of launch/: their dry runs (DRY_RUN=1) print the commands and the device
and batch arithmetic and run nothing; their real launches, with srun, scontrol, gcloud
and python stood in for, run the commands the dry runs print."""
import os
import pathlib
import re
import stat
import subprocess

import pytest

from tests.helpers import ROOT, child_env

# What each dry run needs to read a config: the entry point's imports, a few seconds.
needs_config = pytest.mark.slow

_LAUNCH_VARIABLES = ("DRY_RUN", "NUM_DEVICES", "ACCELERATOR_TYPE", "CHIPS_PER_HOST")


def _env(**variables) -> dict[str, str]:
    """The test session's JAX settings (8 CPU devices), free of any SLURM job or launcher
    setting of the environment the tests run in."""
    env = {name: value for name, value in child_env(8).items()
           if not name.startswith("SLURM_") and name not in _LAUNCH_VARIABLES}
    env.update(variables)
    return env


def _start(script: str, *args: str, dry_run: bool = True, **variables: str):
    env = _env(**variables)
    if dry_run:
        env["DRY_RUN"] = "1"
    return subprocess.Popen(["bash", str(ROOT / "launch" / script), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _launch(script: str, *args: str, dry_run: bool = True, **variables: str):
    return _finish(_start(script, *args, dry_run=dry_run, **variables))


FOUR_NODES_OF_EIGHT_GPUS = {"SLURM_NNODES": "4", "SLURM_GPUS_PER_NODE": "8"}
TPU_ARGS = ("my-tpu", "us-central2-b", "gs://bucket/run", "configs/pretrain.py",
            "--config.video.mean=(0.5, 0.5, 0.5)")
# The dry runs that read a config: (script, arguments after WORKDIR or the TPU's, variables).
DRY_RUNS = {
    "local": ("local.sh", ("configs/pretrain.py:variant=tiny,num_steps=200",
                           "--config.train.stop_after_steps=4"), {}),
    "slurm": ("slurm_gpu.sbatch", ("configs/pretrain.py",), FOUR_NODES_OF_EIGHT_GPUS),
    "slurm header": ("slurm_gpu.sbatch", ("configs/pretrain.py:variant=small,fsdp=4,tensor=2",),
                     {}),
    "slurm batch_size=100": ("slurm_gpu.sbatch", ("configs/pretrain.py",
                             "--config.train.batch_size=100"), FOUR_NODES_OF_EIGHT_GPUS),
    "slurm tensor=3": ("slurm_gpu.sbatch", ("configs/pretrain.py", "--config.mesh.tensor=3"),
                       FOUR_NODES_OF_EIGHT_GPUS),
    "tpu v4-128": ("tpu_pod.sh", (), {"ACCELERATOR_TYPE": "v4-128"}),
    "tpu v5litepod-256": ("tpu_pod.sh", (), {"ACCELERATOR_TYPE": "v5litepod-256"}),
}


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """(WORKDIR, name -> result) of DRY_RUNS, started at once: each spends its few seconds
    importing the entry point."""
    workdir = tmp_path_factory.mktemp("launch") / "run"
    started = {}
    for name, (script, args, variables) in DRY_RUNS.items():
        leading = TPU_ARGS if script == "tpu_pod.sh" else (str(workdir),)
        started[name] = _start(script, *leading, *args, **variables)
    return workdir, {name: _finish(process) for name, process in started.items()}


def _arithmetic(stdout: str) -> dict[str, str]:
    """The dry run's `name: value` lines."""
    return dict(re.findall(r"^([a-z][a-z ]*): +(.*)$", stdout, re.MULTILINE))


def _errors(stderr: str) -> list[str]:
    """stderr without absl's log lines."""
    return [line for line in stderr.splitlines() if not re.match(r"[IWE]\d{4} ", line)]


def _stand_in(directory, name: str, body: str) -> None:
    """An executable `name` in `directory` (put first on PATH) running bash `body`."""
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _recording_python(bin_dir, record) -> None:
    """A `python` that records its arguments (NUL-separated) and JAX_LOCAL_DEVICE_IDS, one
    file per SLURM task."""
    _stand_in(bin_dir, "python",
              f'printf "%s\\0" "$@" > "{record}.${{SLURM_PROCID:-0}}"\n'
              f'echo "${{JAX_LOCAL_DEVICE_IDS:-}}" > "{record}.${{SLURM_PROCID:-0}}.ids"')


def _recorded(record, task: int = 0) -> list[str]:
    return pathlib.Path(f"{record}.{task}").read_text().split("\0")[:-1]


@needs_config
def test_local_dry_run(dry_runs):
    workdir, results = dry_runs
    result = results["local"]
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "dry run: nothing is run",
        "command:",
        f"  python -m vlsa_jax.main '--config=configs/pretrain.py:variant=tiny,num_steps=200' "
        f"--workdir={workdir} --config.train.stop_after_steps=4"]
    assert _arithmetic(result.stdout) == {
        "dry run": "nothing is run",
        "mode": "train",
        "hosts": "1 (this machine)",
        "devices": "8 = 1 host x 8 devices",
        "mesh": "data 8 x fsdp 1 x tensor 1 (config: data -1, fsdp 1, tensor 1)",
        "global batch": "8 (train.batch_size)",
        "per device": "1 = 8 / 8 (data x fsdp)",
        "per host": "8 = 8 / 1 host",
        "steps": "200 (train.num_steps); this run stops after step 4 (train.stop_after_steps)",
        "examples seen": "1600 = 8 x 200",
    }
    assert not workdir.exists()


@needs_config
def test_slurm_dry_run_four_nodes_of_eight_gpus(dry_runs):
    workdir, results = dry_runs
    result = results["slurm"]
    assert result.returncode == 0, result.stderr[-2000:]
    task = ("python -m vlsa_jax.main --distributed --coordinator_address=HEAD_NODE:PORT "
            f"--num_processes=4 --config=configs/pretrain.py --workdir={workdir} "
            "--config.dtype=bfloat16 --config.model.attention_impl=cudnn")
    lines = result.stdout.splitlines()
    assert lines[:8] == [
        "dry run: nothing is run",
        "srun, from the batch script (on the job's first node):",
        "  JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7 srun --ntasks-per-node=1 bash -c "
        f"""'exec "$@" --process_id="$SLURM_PROCID"' task {task}""",
        "each task (one per node, SLURM_PROCID = 0..3) runs:",
        f"  task 0: {task} --process_id=0",
        "  ... (tasks 1..2 alike, with their own --process_id)",
        f"  task 3: {task} --process_id=3",
        "  (HEAD_NODE: the job's first node; PORT = 61440 + SLURM_JOB_ID % 4096)"]
    arithmetic = _arithmetic(result.stdout)
    assert arithmetic["hosts"] == "4 (SLURM nodes, one task each)"
    assert arithmetic["devices"] == "32 = 4 hosts x 8 GPUs"
    assert arithmetic["mesh"] == "data 32 x fsdp 1 x tensor 1 (config: data -1, fsdp 1, tensor 1)"
    assert arithmetic["global batch"] == "2048 (train.batch_size)"
    assert arithmetic["per device"] == "64 = 2048 / 32 (data x fsdp)"
    assert arithmetic["per host"] == "512 = 2048 / 4 hosts"
    assert arithmetic["steps"] == "200000 (train.num_steps)"
    assert arithmetic["examples seen"] == "409600000 = 2048 x 200000 (409.6M)"
    assert not workdir.exists()


@needs_config
def test_slurm_dry_run_defaults_to_the_sbatch_header(dry_runs):
    """2 nodes x 8 GPUs, as the #SBATCH lines say; fsdp and tensor axes split the mesh."""
    result = dry_runs[1]["slurm header"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--num_processes=2 " in result.stdout
    assert "task 1: " in result.stdout and "task 2: " not in result.stdout
    arithmetic = _arithmetic(result.stdout)
    assert arithmetic["devices"] == "16 = 2 hosts x 8 GPUs"
    assert arithmetic["mesh"] == "data 2 x fsdp 4 x tensor 2 (config: data -1, fsdp 4, tensor 2)"
    assert arithmetic["per device"] == (
        "256 = 2048 / 8 (data x fsdp; the 2 devices of a tensor group share their rows)")
    assert arithmetic["per host"] == "1024 = 2048 / 2 hosts"


@needs_config
@pytest.mark.parametrize("name, error", [
    ("slurm batch_size=100", "error: ConfigError: train.batch_size: 100 is not "
     "divisible by the data-parallel size 32 (mesh.data x mesh.fsdp)"),
    ("slurm tensor=3", "error: ConfigError: mesh: fsdp x tensor = 3 does not divide "
     "the 32 available devices"),
])
def test_slurm_dry_run_fails_in_one_line_naming_the_field(dry_runs, name, error):
    result = dry_runs[1][name]
    assert result.returncode == 2
    assert result.stdout == ""
    assert _errors(result.stderr) == [error]


@needs_config
@pytest.mark.parametrize("accelerator, hosts, devices, per_device, per_host", [
    # 128 TensorCores: 64 chips (one JAX device each) on 16 hosts of 4.
    ("v4-128", 16, "64 = 16 hosts x 4 chips", "32 = 2048 / 64", "128 = 2048 / 16 hosts"),
    ("v5litepod-256", 64, "256 = 64 hosts x 4 chips", "8 = 2048 / 256",
     "32 = 2048 / 64 hosts"),
])
def test_tpu_dry_run(dry_runs, accelerator, hosts, devices, per_device, per_host):
    result = dry_runs[1][f"tpu {accelerator}"]
    assert result.returncode == 0, result.stderr[-2000:]
    remote = ("cd ~/vlsa_jax && python -m vlsa_jax.main --distributed "
              "--config=configs/pretrain.py --workdir=gs://bucket/run --config.dtype=bfloat16 "
              "'--config.video.mean=(0.5, 0.5, 0.5)'")
    assert result.stdout.splitlines()[:5] == [
        "dry run: nothing is run",
        "gcloud, from this machine, runs the command on every worker:",
        "  gcloud compute tpus tpu-vm ssh my-tpu --zone=us-central2-b --worker=all "
        f'--command="{remote}"',
        f"each worker (0..{hosts - 1}, one process each) runs:",
        f"  {remote}"]
    arithmetic = _arithmetic(result.stdout)
    assert arithmetic["hosts"] == f"{hosts} (TPU worker VMs, one process each)"
    assert arithmetic["devices"] == devices
    assert arithmetic["per device"] == f"{per_device} (data x fsdp)"
    assert arithmetic["per host"] == per_host
    assert arithmetic["examples seen"] == "409600000 = 2048 x 200000 (409.6M)"


@pytest.mark.parametrize("variables, error", [
    ({}, "error: the dry run needs ACCELERATOR_TYPE, the slice's type (e.g. v4-128): gcloud "
         "compute tpus tpu-vm describe my-tpu --zone=us-central2-b "
         "--format='value(acceleratorType)'"),
    ({"ACCELERATOR_TYPE": "v9-8"}, "error: ACCELERATOR_TYPE=v9-8: unknown TPU version v9 "
     "(v2, v3, v4, v5p, v5litepod, v6e)"),
    ({"ACCELERATOR_TYPE": "v4"}, "error: ACCELERATOR_TYPE=v4 is not VERSION-COUNT (e.g. "
     "v4-128)"),
    ({"ACCELERATOR_TYPE": "v5litepod-16", "CHIPS_PER_HOST": "3"},
     "error: ACCELERATOR_TYPE=v5litepod-16: its 16 chips do not fill hosts of 3 chips "
     "(CHIPS_PER_HOST)"),
])
def test_tpu_dry_run_needs_a_known_slice(variables, error):
    result = _launch("tpu_pod.sh", *TPU_ARGS, **variables)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [error]


def test_launches_run_the_commands_the_dry_runs_print(tmp_path):
    """Stand-ins for python, srun, scontrol and gcloud record what the launchers run."""
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    _recording_python(bin_dir, record)
    path = f"{bin_dir}:{os.environ['PATH']}"
    spec = "configs/pretrain.py:variant=tiny,num_steps=200"

    # Local: the entry point, with the flags as given.
    result = _launch("local.sh", "/w", spec, "--config.train.log_every_steps=2",
                     dry_run=False, PATH=path)
    assert result.returncode == 0, result.stderr
    assert _recorded(record) == ["-m", "vlsa_jax.main", f"--config={spec}", "--workdir=/w",
                                 "--config.train.log_every_steps=2"]

    # SLURM: srun runs one task per node, each with its own --process_id.
    _stand_in(bin_dir, "srun", 'while [[ $1 == --* ]]; do shift; done\n'
              'for (( i = 0; i < SLURM_NNODES; i++ )); do SLURM_PROCID=$i "$@" || exit; done')
    _stand_in(bin_dir, "scontrol", 'echo node01; echo node02')
    result = _launch("slurm_gpu.sbatch", "/w", spec, "--config.train.log_every_steps=2",
                     dry_run=False, PATH=path, SLURM_JOB_ID="1234",
                     SLURM_JOB_NODELIST="node[01-02]", SLURM_NNODES="2",
                     SLURM_GPUS_PER_NODE="a100:4")
    assert result.returncode == 0, result.stderr
    for task in (0, 1):
        assert _recorded(record, task) == [
            "-m", "vlsa_jax.main", "--distributed",
            f"--coordinator_address=node01:{61440 + 1234 % 4096}", "--num_processes=2",
            f"--config={spec}", "--workdir=/w", "--config.dtype=bfloat16",
            "--config.model.attention_impl=cudnn", "--config.train.log_every_steps=2",
            f"--process_id={task}"]
        assert open(f"{record}.{task}.ids").read() == "0,1,2,3\n"

    # Outside a job (and not a dry run) the SLURM script refuses to start.
    result = _launch("slurm_gpu.sbatch", "/w", dry_run=False, PATH=path)
    assert result.returncode == 2 and result.stderr.startswith("error: not inside a SLURM job")

    # TPU pod: gcloud gets --worker=all and one command, which a worker's shell runs.
    _stand_in(bin_dir, "gcloud", f'printf "%s\\0" "$@" > "{tmp_path}/gcloud"')
    mean = "--config.video.mean=(0.5, 0.5, 0.5)"
    result = _launch("tpu_pod.sh", "my-tpu", "us-central2-b", "gs://b/run", spec, mean,
                     dry_run=False, PATH=path)
    assert result.returncode == 0, result.stderr
    gcloud = (tmp_path / "gcloud").read_text().split("\0")[:-1]
    assert gcloud[:7] == ["compute", "tpus", "tpu-vm", "ssh", "my-tpu",
                          "--zone=us-central2-b", "--worker=all"]
    assert len(gcloud) == 8 and gcloud[7].startswith("--command=cd ~/vlsa_jax && ")
    home = tmp_path / "home"
    (home / "vlsa_jax").mkdir(parents=True)
    subprocess.run(["bash", "-c", gcloud[7].removeprefix("--command=")], check=True,
                   env={**_env(PATH=path), "HOME": str(home)})
    assert _recorded(record) == ["-m", "vlsa_jax.main", "--distributed", f"--config={spec}",
                                 "--workdir=gs://b/run", "--config.dtype=bfloat16", mean]
