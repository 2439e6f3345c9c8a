r"""Ahead-of-time plans of the training step for a pod slice, compiled without its chips.

    python -m vlsa_jax.plan --config=configs/pretrain.py --config.dtype=bfloat16 \
        --topology=v5e:16x16 --layouts=dp,fsdp --remat=none,full
    python -m vlsa_jax.plan --config=configs/pretrain.py:variant=tiny --topology=cpu:8

The training step of `vlsa_jax.train` (`setup_training`: the same jitted function,
shardings and donation as a run) is lowered with an abstract state and batch
(ShapeDtypeStructs that carry their shardings) and compiled for the devices of a
topology, as MaxText's ahead-of-time compile does:

- `GEN:AxB[xC]` (GEN one of v4, v5e, v5p, v6e; e.g. v4:4x4x4 is a v4-128, v5e:16x16 a
  v5litepod-256): abstract TPU devices from `jax.experimental.topologies`, one per chip
  (v4 as megacore, like a v4 slice's `jax.devices()`), compiled by the TPU runtime
  library (`pip install -e ".[tpu]"`) on a machine with no TPU;
- `cpu:N`: N fake CPU devices, the same plan compiled by XLA's CPU backend, for where the
  TPU library is missing (its numbers are the CPU compiler's, not the TPU's).

Each layout x remat policy is one compile, one row: per-device memory from
`compiled.memory_analysis()` (arguments, outputs, the part of the outputs aliased to
donated arguments, temporaries, generated code), their total, whether it fits the
chip's HBM, and the compile time; then one JSON line with the same figures. The TPU
compiler refuses a program that does not fit a chip: that row gives its error instead.
"""
import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from jax.experimental import topologies
from ml_collections import config_flags

from vlsa_jax import cli, param_count, sharding, train
from vlsa_jax.config_validation import validate_config
from vlsa_jax.modalities import (
    AUDIO, TEXT, TEXT_IDS, TEXT_MASK, VIDEO, VIDEO_CROP, modalities_of)

FLAGS = flags.FLAGS

# HBM per JAX device (one chip: v4 and v5p as megacore) in GiB, from Google's public Cloud
# TPU system-architecture pages (cloud.google.com/tpu/docs/v4, v5e, v5p, v6e), keyed by
# `device.device_kind`.
HBM_GIB = {"TPU v4": 32, "TPU v5 lite": 16, "TPU v5": 95, "TPU v6 lite": 32}
# --chip names (the topology's generation) -> device kind.
CHIPS = {"v4": "TPU v4", "v5e": "TPU v5 lite", "v5p": "TPU v5", "v6e": "TPU v6 lite"}
# get_topology_desc options per generation: v4 chips run as one device each (megacore),
# as on a real v4 slice; by default the library lists each of their two TensorCores.
_TOPOLOGY_OPTIONS = {"v4": {"chip_config_name": "megacore"}}
_TPU_TOPOLOGY = re.compile(r"(\w+):([1-9]\d*(?:x[1-9]\d*)*)")
_CPU_TOPOLOGY = re.compile(r"cpu:([1-9]\d*)")

# Mesh sizes of each named layout; 'config' keeps the config's own mesh.
LAYOUTS = {
    "dp": {"data": -1, "fsdp": 1, "tensor": 1},
    "fsdp": {"data": 1, "fsdp": -1, "tensor": 1},
    "config": {},
}


class TopologyUnavailable(RuntimeError):
    """The TPU library cannot give (or compile for) a topology on this machine."""

    def __init__(self, topology: str, error: BaseException):
        cause = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        generation = topology.split(":")[0]
        chip = f" --chip={generation}" if generation in CHIPS else ""
        super().__init__(
            f"the TPU library cannot compile for --topology={topology} here: {cause}; plan "
            f"the same step on the CPU backend over fake devices instead, with "
            f"--topology=cpu:{chip_count(topology)}{chip}")


@dataclasses.dataclass
class Plan:
    """One compile of the step: its layout and what each device holds (bytes)."""

    layout: str
    remat: str
    mesh: dict[str, int]
    batch_per_device: int
    compile_s: float
    hbm_bytes: int | None  # the chip's HBM; None on CPU without --chip
    argument_bytes: int | None = None
    output_bytes: int | None = None
    alias_bytes: int | None = None  # outputs written into donated arguments
    temp_bytes: int | None = None
    code_bytes: int | None = None
    error: str | None = None  # the compiler's refusal (out of memory), if any

    @property
    def total_bytes(self) -> int | None:
        """Arguments + outputs - aliased + temporaries + code: what the step needs at once."""
        if self.error is not None:
            return None
        return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
                + self.code_bytes)

    @property
    def fits(self) -> bool | None:
        """Whether the step fits the chip's HBM; None where no chip is known."""
        if self.error is not None:
            return False
        if self.hbm_bytes is None:
            return None
        return self.total_bytes <= self.hbm_bytes

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "total_bytes": self.total_bytes, "fits": self.fits}


def chip_count(topology: str) -> int:
    """The devices of a topology string: the product of its sizes ('v5e:16x16' -> 256)."""
    cpu = _CPU_TOPOLOGY.fullmatch(topology)
    if cpu:
        return int(cpu.group(1))
    tpu = _TPU_TOPOLOGY.fullmatch(topology)
    if not tpu:
        raise ValueError(f"--topology={topology!r} is not GEN:AxB[xC] (e.g. v5e:16x16, "
                         "v4:4x4x4) or cpu:N")
    return math.prod(int(size) for size in tpu.group(2).split("x"))


def prepare_runtime(topology: str) -> None:
    """Settings that must precede JAX's first device query; called first by `main`.

    `cpu:N` asks for N CPU devices. Nothing runs on an accelerator, so JAX's backends
    are limited to the CPU (unless JAX_PLATFORMS says otherwise): the TPU library,
    where installed, is loaded for the topology alone, with no lock on a chip that is
    not there.
    """
    chip_count(topology)  # a malformed topology fails here, before JAX starts
    cpu = _CPU_TOPOLOGY.fullmatch(topology)
    if cpu:
        jax.config.update("jax_num_cpu_devices", int(cpu.group(1)))
    if "JAX_PLATFORMS" not in os.environ:
        jax.config.update("jax_platforms", "cpu")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # Another JAX process on this machine may hold libtpu's lock file; we need no chip.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def topology_devices(topology: str) -> list:
    """The devices of `topology`: abstract TPU devices, or this process's first N CPUs.

    Raises:
      ValueError: a malformed topology, or fewer CPU devices than `cpu:N` asks for.
      TopologyUnavailable: the TPU library is missing or rejects the topology.
    """
    count = chip_count(topology)
    if _CPU_TOPOLOGY.fullmatch(topology):
        devices = jax.devices("cpu")
        if len(devices) < count:
            raise ValueError(
                f"--topology={topology} needs {count} CPU devices; this process has "
                f"{len(devices)} (set jax_num_cpu_devices before JAX starts, as "
                "`python -m vlsa_jax.plan` does)")
        return devices[:count]
    generation = topology.split(":")[0]
    try:
        return list(topologies.get_topology_desc(
            topology, "tpu", **_TOPOLOGY_OPTIONS.get(generation, {})).devices)
    except Exception as error:  # the library's own errors: not installed, bad topology
        raise TopologyUnavailable(topology, error) from error


def hbm_bytes(devices, chip: str | None = None) -> int | None:
    """HBM per device: of the TPU devices' kind, or of `chip` (v5e, ...) for CPU devices."""
    kind = CHIPS[chip] if chip else devices[0].device_kind
    return HBM_GIB[kind] * 2**30 if kind in HBM_GIB else None


def layout_config(config: ml_collections.ConfigDict, layout: str,
                  remat: str | None) -> ml_collections.ConfigDict:
    """A copy of `config` with the mesh of `layout` and, unless None, the remat policy."""
    if layout not in LAYOUTS:
        raise ValueError(f"--layouts: {layout!r} is not one of {sorted(LAYOUTS)}")
    config = config.copy_and_resolve_references()
    for axis, size in LAYOUTS[layout].items():
        config.mesh[axis] = size
    if remat is not None:
        config.model.remat_policy = remat
    return config


def batch_shapes(config) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Name -> (shape, dtype) of a global training batch, as `config.data.source` gives it.

    Prepared records give each clip's frames as square canvases of the stored short side
    with their crop ('video_crop'), which the model resizes on the device
    (`data.pipeline.Preprocessor`); random batches give frames at the model's size.
    """
    size, modalities = config.train.batch_size, modalities_of(config.data.modalities)
    shapes = {}
    if VIDEO in modalities:
        video = config.video
        side = video.stored_short_side if config.data.source == "records" else video.size
        shapes[VIDEO] = ((size, video.num_frames, side, side, 3), np.dtype(np.uint8))
        if config.data.source == "records":
            shapes[VIDEO_CROP] = ((size, 2), np.dtype(np.int32))
    if AUDIO in modalities:
        shapes[AUDIO] = ((size, config.audio.frames, config.audio.bins), np.dtype(np.float32))
    if TEXT in modalities:
        for name in (TEXT_IDS, TEXT_MASK):
            shapes[name] = ((size, config.text.max_len), np.dtype(np.int32))
    return shapes


def abstract_batch(config, mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch as ShapeDtypeStructs split over the mesh's batch axes."""
    batch_sharding = sharding.batch_sharding(mesh)
    return {name: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
            for name, (shape, dtype) in batch_shapes(config).items()}


def plan_step(config: ml_collections.ConfigDict, devices, layout: str = "config",
              hbm: int | None = None) -> Plan:
    """Compiles the training step of `config` (its own mesh over `devices`) and measures it.

    Args:
      config: the run config, with the mesh and remat policy to plan.
      devices: the devices to compile for (abstract TPU devices or CPU devices).
      layout: the row's layout name.
      hbm: HBM per device in bytes, for the fit; None leaves it open.

    Returns:
      The plan; on a compiler's out-of-memory refusal, its error and no figures.

    Raises:
      ConfigError: the config does not fit the devices (e.g. the batch over the mesh).
    """
    validate_config(config, len(devices))
    mesh = sharding.make_mesh(config.mesh, devices)
    data, fsdp, _ = (mesh.shape[axis] for axis in sharding.MESH_AXES)
    row = Plan(layout, config.model.remat_policy, dict(mesh.shape),
               config.train.batch_size // (data * fsdp), 0.0, hbm)
    training = train.setup_training(config, mesh)
    start = time.perf_counter()
    try:
        compiled = training.step.lower(
            training.state.abstract, abstract_batch(config, mesh)).compile()
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        row.error = str(error).strip().splitlines()[0]
        row.compile_s = time.perf_counter() - start
        return row
    row.compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    row.argument_bytes = memory.argument_size_in_bytes
    row.output_bytes = memory.output_size_in_bytes
    row.alias_bytes = memory.alias_size_in_bytes
    row.temp_bytes = memory.temp_size_in_bytes
    row.code_bytes = memory.generated_code_size_in_bytes
    return row


def plan_rows(config, devices, layouts: Sequence[str] = ("config",),
              remats: Sequence[str | None] = (None,), hbm: int | None = None) -> list[Plan]:
    """One `plan_step` per layout x remat policy (None: the config's policy)."""
    rows = []
    for layout in layouts:
        for remat in remats:
            row_config = layout_config(config, layout, remat)
            logging.info("compiling the step: layout %s, remat %s, %d devices", layout,
                         row_config.model.remat_policy, len(devices))
            rows.append(plan_step(row_config, devices, layout, hbm))
    return rows


def model_flops(config) -> float | None:
    """Model FLOPs of one step (`vlsa_jax.flops`), or None where that module is absent."""
    try:
        from vlsa_jax import flops  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return float(flops.model_flops_per_step(config))


def _size(num_bytes: int | None) -> str:
    if num_bytes is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes} B"


def format_table(rows: Sequence[Plan]) -> str:
    """The rows as a Markdown table; a refused compile's error follows the table."""
    header = ("layout", "remat", "mesh (data x fsdp x tensor)", "batch/device", "arguments",
              "outputs", "aliased", "temporaries", "code", "total", "HBM", "fits",
              "compile s")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for row in rows:
        fits = {True: "yes", False: "**no**", None: "?"}[row.fits]
        cells = (row.layout, row.remat, " x ".join(str(n) for n in row.mesh.values()),
                 row.batch_per_device, _size(row.argument_bytes), _size(row.output_bytes),
                 _size(row.alias_bytes), _size(row.temp_bytes), _size(row.code_bytes),
                 _size(row.total_bytes), _size(row.hbm_bytes), fits, f"{row.compile_s:.1f}")
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
        if row.error:
            notes.append(f"{row.layout}, remat {row.remat}: {row.error}")
    return "\n".join(lines + [""] + notes if notes else lines)


def describe(config, topology: str, devices, chip: str | None) -> dict:
    """What the plan is of: config, topology, devices, parameters and model FLOPs."""
    kind = CHIPS[chip] if chip else devices[0].device_kind
    return {"variant": config.variant, "batch_size": config.train.batch_size,
            "dtype": config.dtype, "topology": topology, "devices": len(devices),
            "device_kind": devices[0].device_kind, "chip": kind,
            "parameters": param_count.count_parameters(config)["total"],
            "model_flops_per_step": model_flops(config)}


def format_header(info: dict) -> str:
    chip = "" if info["chip"] == info["device_kind"] else f" (HBM of a {info['chip']})"
    flops = info["model_flops_per_step"]
    lines = [
        f"plan: variant {info['variant']}, global batch {info['batch_size']}, "
        f"activations {info['dtype']}, {info['parameters'] / 1e6:.2f}M parameters",
        f"topology {info['topology']}: {info['devices']} x {info['device_kind']}{chip}"]
    if flops is not None:
        lines.append(f"model FLOPs per step {flops:.4g} ({flops / info['devices']:.4g} "
                     "per device)")
    lines.append("memory per device, from the compiled step (total = arguments + outputs "
                 "- aliased + temporaries + code):")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.chip and FLAGS.chip not in CHIPS:
        raise app.UsageError(f"--chip={FLAGS.chip!r} is not one of {sorted(CHIPS)}")
    if FLAGS.chip and not _CPU_TOPOLOGY.fullmatch(FLAGS.topology):
        raise app.UsageError(f"--chip goes with --topology=cpu:N; {FLAGS.topology} names "
                             "its chip itself")
    prepare_runtime(FLAGS.topology)
    devices = topology_devices(FLAGS.topology)
    config = FLAGS.config
    info = describe(config, FLAGS.topology, devices, FLAGS.chip)
    print(format_header(info), flush=True)
    rows = plan_rows(config, devices, FLAGS.layouts, FLAGS.remat or [None],
                     hbm_bytes(devices, FLAGS.chip))
    print(format_table(rows))
    print(json.dumps({"plan": info, "rows": [row.as_dict() for row in rows]}))


if __name__ == "__main__":
    # Defined only when run as a program, so that importing this module beside another
    # program's `--config` flag (in tests) does not clash.
    config_flags.DEFINE_config_file(
        "config", None, "A get_config(arg) file: path[:key=value,...].", lock_config=True)
    flags.DEFINE_string("topology", None, "GEN:AxB[xC] (v4:4x4x4, v5e:16x16, v5p:4x4x4, "
                        "v6e:8x8) or cpu:N (N fake CPU devices).")
    flags.DEFINE_list("layouts", ["config"], f"Mesh layouts, one compile each: "
                      f"{', '.join(LAYOUTS)} (dp: mesh.data=-1; fsdp: mesh.fsdp=-1, data=1; "
                      "config: the config's mesh).")
    flags.DEFINE_list("remat", [], "model.remat_policy values, one compile each with every "
                      "layout (default: the config's).")
    flags.DEFINE_string("chip", None, "With --topology=cpu:N: the chip (v4, v5e, v5p, v6e) "
                        "whose HBM the plan is held against.")
    flags.mark_flags_as_required(["config", "topology"])
    cli.run(main)
