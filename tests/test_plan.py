"""Ahead-of-time plans of the training step (vlsa_jax.plan): per-device memory, layouts, errors."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.helpers import ROOT, child_env, load_config
from vlsa_jax import plan
from vlsa_jax.data.pipeline import Preprocessor
from vlsa_jax.data.source import RandomBatchSource

MEMORY_FIELDS = ("argument_bytes", "output_bytes", "temp_bytes", "total_bytes")


@pytest.fixture(scope="module")
def tiny_rows():
    """Plans of the tiny model, batch 8, over the session's 8 CPU devices: dp, then fsdp."""
    config = load_config()
    assert config.train.batch_size == 8
    return plan.plan_rows(config, jax.devices()[:8], ["dp", "fsdp"], ["none"],
                          hbm=plan.HBM_GIB["TPU v5 lite"] * 2**30)


def test_plan_measures_every_layout(tiny_rows):
    dp, fsdp = tiny_rows
    assert (dp.layout, dp.mesh) == ("dp", {"data": 8, "fsdp": 1, "tensor": 1})
    assert (fsdp.layout, fsdp.mesh) == ("fsdp", {"data": 1, "fsdp": 8, "tensor": 1})
    for row in tiny_rows:
        assert row.error is None and row.remat == "none" and row.batch_per_device == 1
        assert all(getattr(row, field) > 0 for field in MEMORY_FIELDS), row
        assert row.fits is True and row.compile_s > 0


def test_fsdp_shards_the_parameters(tiny_rows):
    dp, fsdp = tiny_rows
    # The state (parameters and both Adam moments) is most of the arguments: replicated
    # under dp, split eight ways under fsdp.
    assert fsdp.argument_bytes < dp.argument_bytes / 2, (fsdp, dp)
    # The state is donated: its updated copy is written over the arguments.
    assert dp.alias_bytes > 0.9 * dp.output_bytes


def test_fsdp_keeps_the_batch_split_through_the_model(tiny_rows):
    dp, fsdp = tiny_rows
    # Both hold one example a device. Unconstrained, XLA gathered the batch for each
    # fsdp-sharded matmul: its temporaries were 1.9x dp's (5.6 against 2.9 MB), now
    # below them (no replicated gradients).
    assert fsdp.temp_bytes < dp.temp_bytes, (fsdp, dp)


def test_table_and_json_carry_every_row(tiny_rows):
    table = plan.format_table(tiny_rows)
    assert table.count("\n| dp |") == table.count("\n| fsdp |") == 1
    row = json.loads(json.dumps(tiny_rows[1].as_dict()))
    assert row["total_bytes"] == (row["argument_bytes"] + row["output_bytes"]
                                  - row["alias_bytes"] + row["temp_bytes"]
                                  + row["code_bytes"])


def test_a_plan_that_does_not_fit_says_so():
    row = plan.Plan("dp", "none", {"data": 4, "fsdp": 1, "tensor": 1}, 2, 1.0, hbm_bytes=100,
                    argument_bytes=60, output_bytes=50, alias_bytes=50, temp_bytes=41,
                    code_bytes=0)
    assert row.total_bytes == 101 and row.fits is False
    refused = plan.Plan("fsdp", "full", {"data": 1, "fsdp": 4, "tensor": 1}, 2, 1.0, 100,
                        error="RESOURCE_EXHAUSTED: Ran out of memory on HBM")
    assert refused.fits is False and refused.total_bytes is None
    table = plan.format_table([row, refused])
    assert "**no**" in table and table.endswith("fsdp, remat full: RESOURCE_EXHAUSTED: "
                                                "Ran out of memory on HBM")


@pytest.mark.parametrize("source", ["random", "records"])
def test_abstract_batch_matches_the_sources(source):
    config = load_config()
    config.data.source = source
    if source == "random":
        real = next(RandomBatchSource(config))
    else:
        real = Preprocessor(config, config.data.modalities, training=True)._empty_batch(
            config.train.batch_size)
    expected = {name: (array.shape, array.dtype) for name, array in real.items()}
    assert plan.batch_shapes(config) == expected
    mesh = jax.make_mesh((8, 1, 1), ("data", "fsdp", "tensor"), devices=jax.devices()[:8],
                         axis_types=(jax.sharding.AxisType.Auto,) * 3)
    batch = plan.abstract_batch(config, mesh)
    assert batch["audio"].sharding.spec[0] == ("data", "fsdp")


def test_topology_strings():
    assert plan.chip_count("v5e:16x16") == 256
    assert plan.chip_count("v4:4x4x4") == 64
    assert plan.chip_count("cpu:8") == 8
    for bad in ("v5e", "v5e:16by16", "cpu:", "cpu:0", "v4:0x4x4"):
        with pytest.raises(ValueError, match="GEN:AxB"):
            plan.chip_count(bad)
    assert len(plan.topology_devices("cpu:4")) == 4
    with pytest.raises(ValueError, match="needs 4096 CPU devices"):
        plan.topology_devices("cpu:4096")


def test_unavailable_topology_names_it_and_the_cpu_plan(monkeypatch):
    from jax.experimental import topologies

    def no_tpu(*args, **kwargs):
        raise RuntimeError("JAX TPU support not installed; cannot generate TPU topology.")

    monkeypatch.setattr(topologies, "get_topology_desc", no_tpu)
    with pytest.raises(plan.TopologyUnavailable) as raised:
        plan.topology_devices("v5e:16x16")
    message = str(raised.value)
    assert "--topology=v5e:16x16" in message and "JAX TPU support not installed" in message
    assert "--topology=cpu:256 --chip=v5e" in message


def test_hbm_of_chips():
    assert plan.hbm_bytes(jax.devices()) is None  # a CPU is no chip
    assert plan.hbm_bytes(jax.devices(), chip="v5e") == 16 * 2**30
    assert set(plan.CHIPS.values()) == set(plan.HBM_GIB)


def _run_plan(*args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "vlsa_jax.plan", "--config=configs/pretrain.py:variant=tiny",
         *args], cwd=ROOT, env=child_env(1), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_command_plans_a_cpu_topology():
    result = _run_plan("--topology=cpu:4", "--layouts=dp,fsdp", "--chip=v6e")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("plan: variant tiny, global batch 8")
    assert "topology cpu:4: 4 x cpu (HBM of a TPU v6 lite)" in result.stdout
    report = json.loads(lines[-1])
    dp, fsdp = report["rows"]
    assert dp["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1} and dp["fits"] is True
    assert fsdp["argument_bytes"] < dp["argument_bytes"]
    assert report["plan"]["devices"] == 4 and report["plan"]["parameters"] > 0


@pytest.mark.slow
def test_command_plans_a_tpu_topology_or_names_the_fallback():
    """With the TPU library (`.[tpu]`), a v5e:2x2 slice compiles on this CPU-only machine;
    without it, the command fails in one line that points at the CPU plan."""
    result = _run_plan("--topology=v5e:2x2", "--layouts=fsdp")
    if result.returncode == 0:
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["plan"]["device_kind"] == "TPU v5 lite"
        (row,) = report["rows"]
        assert row["hbm_bytes"] == 16 * 2**30 and row["fits"] is True
        assert np.all([row[field] > 0 for field in MEMORY_FIELDS])
    else:
        assert result.returncode == 1
        error = result.stderr.strip().splitlines()[-1]
        assert error.startswith("error: TopologyUnavailable: the TPU library cannot compile "
                                "for --topology=v5e:2x2"), error
        assert "--topology=cpu:4" in error


@pytest.mark.slow
def test_command_rejects_chip_with_a_tpu_topology():
    result = _run_plan("--topology=v5e:2x2", "--chip=v4", timeout=120)
    assert result.returncode == 2
    assert "--chip goes with --topology=cpu:N" in result.stderr
