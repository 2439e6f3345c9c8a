"""The entry point, run as users run it: a subprocess through the local launcher."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import ROOT, child_env

pytestmark = pytest.mark.slow


def _metrics(workdir):
    return [json.loads(line) for line in open(workdir / "metrics.jsonl")]


def test_local_launcher_trains_and_resumes(tmp_path):
    # The training tests' schedule (num_steps=200) and mesh (8 devices): their compiled
    # programs are reused through the compilation cache.
    command = ["bash", str(ROOT / "launch" / "local.sh"), str(tmp_path),
               "configs/pretrain.py:variant=tiny,num_steps=200",
               "--config.train.log_every_steps=2", "--config.train.stop_after_steps=4",
               "--config.train.stop_after_steps=2"]
    subprocess.run(command, cwd=ROOT, env=child_env(8), check=True, capture_output=True)
    assert [m["step"] for m in _metrics(tmp_path)] == [2]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]

    result = subprocess.run(command[:-1], cwd=ROOT, env=child_env(8), check=True,
                            capture_output=True, text=True)
    assert "resuming from the checkpoint of step 2" in result.stderr
    assert [m["step"] for m in _metrics(tmp_path)] == [2, 4]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["variant"] == "tiny" and config["train"]["stop_after_steps"] == 4


def test_bad_config_fails_before_any_work_naming_the_field(tmp_path):
    for flag, field in [("--config.train.batch_size=6", "train.batch_size"),
                        ("--config.mesh.data=16", "mesh")]:
        result = subprocess.run(
            [sys.executable, "-m", "vlsa_jax.main", "--config=configs/pretrain.py:variant=tiny",
             f"--workdir={tmp_path / 'run'}", flag],
            cwd=ROOT, env=child_env(4), capture_output=True, text=True)
        assert result.returncode != 0
        assert f"ConfigError: {field}:" in result.stderr, result.stderr[-2000:]
        assert not (tmp_path / "run").exists()


def test_two_processes_train_like_one(tmp_path):
    """Two processes of 4 devices each, joined by jax.distributed, match one process of 8."""
    args = ["-m", "vlsa_jax.main", "--config=configs/pretrain.py:variant=tiny,num_steps=200",
            "--config.train.stop_after_steps=2", "--config.train.log_every_steps=1",
            # Audio and text only: the same multi-process path at half the compile time.
            "--config.data.modalities=at"]
    single = tmp_path / "single"
    subprocess.run([sys.executable, *args, f"--workdir={single}"], cwd=ROOT, env=child_env(8),
                   check=True, capture_output=True)

    multi = tmp_path / "multi"
    env = child_env(4) | {"JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
    port = 20000 + os.getpid() % 20000
    processes = [
        subprocess.Popen(
            [sys.executable, *args, f"--workdir={multi}", "--distributed",
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
             f"--process_id={i}"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    for ours, theirs in zip(_metrics(multi), _metrics(single), strict=True):
        np.testing.assert_allclose(ours["loss"], theirs["loss"], rtol=1e-5)
        np.testing.assert_allclose(ours["grad_norm"], theirs["grad_norm"], rtol=1e-5)


def test_eval_export_and_search_entry_points(trained_run):
    config, workdir, records = trained_run
    split = str(records / "train")
    common = [sys.executable, "-m", "vlsa_jax.main", "--config=configs/pretrain.py:variant=tiny",
              f"--workdir={workdir}", f"--config.eval.splits={split}"]
    result = subprocess.run(common + ["--mode=eval"], cwd=ROOT, env=child_env(8), check=True,
                            capture_output=True, text=True)
    assert "retrieval at step 2 (zero_shot, captions: all)" in result.stdout
    assert all(f" {d} " in result.stdout for d in ("t2v", "a2t", "v2a", "va2t"))
    assert json.loads((workdir / "eval" / "train" / "metrics.json").read_text())["step"] == 2

    subprocess.run(common + ["--mode=export"], cwd=ROOT, env=child_env(8), check=True,
                   capture_output=True)
    result = subprocess.run(
        [sys.executable, "-m", "vlsa_jax.search", f"--export_dir={workdir / 'export'}",
         "--split=train", f"--video={records.parent / 'media' / 'clip2.mp4'}",
         "--target=video", "--top_k=3"],
        cwd=ROOT, env=child_env(1), check=True, capture_output=True, text=True)
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[0].split()[-1] == "clip2", result.stdout


def test_several_fake_cpu_devices_get_a_thread_pool_for_their_collectives():
    # What the entry points do first, after importing everything they import.
    probe = ("import os, jax, jax.numpy as jnp\n"
             "import vlsa_jax.main, vlsa_jax.demo.sweep\n"
             "from vlsa_jax import sharding\n"
             "sharding.enlarge_cpu_thread_pool()\n"
             "jnp.ones(4).block_until_ready()\n"
             "print(jax.device_count(), os.environ.get('PJRT_NPROC'),"
             " len(os.listdir('/proc/self/task')))\n")
    seen = {}
    for devices, preset in ((8, None), (1, None), (8, "16")):
        env = child_env(devices)
        env.pop("PJRT_NPROC", None)
        if preset:
            env["PJRT_NPROC"] = preset
        result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, check=True,
                                capture_output=True, text=True)
        count, nproc, threads = result.stdout.split()
        seen[devices, preset] = int(count), nproc, int(threads)
    assert seen[8, None][:2] == (8, "64")
    assert seen[1, None][:2] == (1, "None")  # a single device keeps the default pool
    assert seen[8, "16"][:2] == (8, "16")  # the user's setting stands
    # The pool is really larger: XLA starts its threads from the setting.
    assert seen[8, None][2] > seen[8, "16"][2] + 40


def test_two_processes_stop_together_when_one_is_preempted(tmp_path):
    """SIGTERM to one of two processes: both save the same step, both exit 0, and both
    resume from it."""
    args = [sys.executable, "-m", "vlsa_jax.main",
            "--config=configs/pretrain.py:variant=tiny,num_steps=200",
            "--config.train.log_every_steps=1", "--config.checkpoint.every_steps=100",
            "--config.data.modalities=at", f"--workdir={tmp_path}", "--distributed",
            "--num_processes=2"]
    env = child_env(4) | {"JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}

    def start(port, stop_after):
        return [subprocess.Popen(
            args + [f"--coordinator_address=127.0.0.1:{port}", f"--process_id={i}",
                    f"--config.train.stop_after_steps={stop_after}"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"stderr{port}_{i}.txt", "w"))
            for i in range(2)]

    def finish(processes, port):
        def stderr():
            return [(tmp_path / f"stderr{port}_{i}.txt").read_text() for i in range(2)]
        try:
            for process in processes:
                process.wait(timeout=600)
        except subprocess.TimeoutExpired:
            for process in processes:
                process.kill()
            pytest.fail("timed out:\n" + "\n".join(text[-1500:] for text in stderr()))
        return stderr()

    port = 20000 + (os.getpid() + 7) % 20000
    processes = start(port, 150)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert time.monotonic() < deadline and processes[0].poll() is None, "no progress"
        time.sleep(0.5)
    processes[1].send_signal(signal.SIGTERM)
    outputs = finish(processes, port)
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    saved = sorted(int(name) for name in os.listdir(tmp_path / "checkpoints"))
    assert len(saved) == 1 and 3 <= saved[0] < 150, saved
    for output in outputs:
        assert f"stopped at step {saved[0]} with its checkpoint saved" in output

    resumed = start(port + 1, saved[0] + 2)
    outputs = finish(resumed, port + 1)
    assert [p.returncode for p in resumed] == [0, 0], outputs[0][-2000:]
    for output in outputs:
        assert f"resuming from the checkpoint of step {saved[0]}" in output
