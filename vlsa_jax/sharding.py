"""Device mesh, logical-axis rules, and the shardings of parameters and batches.

Parameters carry logical axis names ('embed', 'mlp', 'heads', 'vocab', 'layers', ...);
`config.mesh.logical_axis_rules` maps each name onto a mesh axis or None. Batches
are split over ('data', 'fsdp'): FSDP shards the batch like data parallelism and,
in addition, the parameters and optimizer state. Inside the model, `constrain` pins
activations to the same layout (rows over the batch axes, attention heads and MLP
units as their parameters), so that XLA neither gathers the batch onto every device
nor guesses the tensor-parallel split.
"""
import contextlib
import contextvars
import math
import numbers
import os
import re

import jax
import numpy as np
from absl import logging
from flax.linen import spmd as flax_spmd
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vlsa_jax.config_lib import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
# The logical name of an activation's batch dimension (always over BATCH_AXES).
BATCH = "batch"
# Threads of XLA's CPU pool per fake CPU device (see enlarge_cpu_thread_pool).
CPU_THREADS_PER_DEVICE = 8


def fake_cpu_device_count() -> int:
    """The CPU devices asked for by JAX_NUM_CPU_DEVICES or XLA's host device-count flag."""
    flag = re.search(r"--xla_force_host_platform_device_count=(\d+)",
                     os.environ.get("XLA_FLAGS", ""))
    return max(jax.config.jax_num_cpu_devices, int(flag.group(1)) if flag else 1, 1)


def enlarge_cpu_thread_pool() -> None:
    """Gives XLA's CPU thread pool room for the collectives of several fake CPU devices.

    XLA's CPU runtime may start a device's next collective before its previous one has
    finished, each blocking a thread of one pool that all fake devices share, sized
    max(cores, devices): eight devices on a laptop can exhaust it and deadlock. PJRT_NPROC
    sizes that pool; a value the user set is kept, and a single device is left alone. Must
    run before JAX initialises its backends (the first device query).
    """
    devices = fake_cpu_device_count()
    if devices > 1 and "PJRT_NPROC" not in os.environ:
        os.environ["PJRT_NPROC"] = str(CPU_THREADS_PER_DEVICE * devices)


def make_mesh(mesh_config, devices=None) -> jax.sharding.Mesh:
    """A mesh of `MESH_AXES` sized from the config (-1 takes the remaining devices).

    Auto axis types: with Explicit axes (jax's default) a product such as
    `audio @ video.T` over batch-sharded operands is rejected.
    """
    devices = jax.devices() if devices is None else devices
    shape = resolve_mesh_shape(mesh_config, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                         devices=devices)


def resolve_mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
    """The (data, fsdp, tensor) mesh shape, with a -1 axis given the devices left over.

    Args:
      mesh_config: has `data`, `fsdp` and `tensor`, each a positive int or -1;
        at most one of them may be -1.
      num_devices: the number of devices; the mesh must use all of them.

    Returns:
      The sizes of the ('data', 'fsdp', 'tensor') axes, whose product is `num_devices`.

    Raises:
      ConfigError: on field `mesh.<axis>` for a bad size, on `mesh` when no mesh
        of that shape covers `num_devices` devices.
    """
    sizes = {axis: mesh_config[axis] for axis in MESH_AXES}
    for axis, size in sizes.items():
        if (isinstance(size, bool) or not isinstance(size, numbers.Integral)
                or (size < 1 and size != -1)):
            raise ConfigError(
                f"mesh.{axis}", f"{size!r} must be a positive int, or -1 for the devices "
                "the other axes leave")
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ConfigError(
            "mesh", f"{' and '.join(f'mesh.{axis}' for axis in free)} are -1; at most one "
            "axis may be")
    if free:
        fixed_axes = [axis for axis in MESH_AXES if axis not in free]
        fixed = math.prod(sizes[axis] for axis in fixed_axes)
        if num_devices % fixed:
            raise ConfigError(
                "mesh", f"{' x '.join(fixed_axes)} = {fixed} does not divide the "
                f"{num_devices} available devices")
        sizes[free[0]] = num_devices // fixed
    total = math.prod(sizes.values())
    if total != num_devices:
        raise ConfigError(
            "mesh", f"data x fsdp x tensor = {total} needs {total} devices, "
            f"{num_devices} are available")
    return tuple(int(sizes[axis]) for axis in MESH_AXES)


def param_shardings(abstract_params, logical_specs, rules, mesh):
    """NamedShardings of a parameter tree from its tree of logical PartitionSpecs.

    Flax's rules helper maps each logical name onto its mesh axes (a mesh axis that an
    earlier dimension of the same array took is not used again). A dimension whose size
    those axes do not divide is left replicated, and logged by name.
    """
    names = {name for name, _ in rules}

    def shard(path, x, logical):
        unknown = [name for name in logical if name is not None and name not in names]
        if unknown:
            raise ConfigError("mesh.logical_axis_rules", f"no rule for logical axis "
                              f"{unknown[0]!r} (of parameter {jax.tree_util.keystr(path)})")
        spec, undivided = _mesh_spec(x.shape, logical, rules, mesh)
        for dim in undivided:
            logging.info("%s: dimension %d (%s, size %d) is not divisible over its mesh "
                         "axes; left replicated", jax.tree_util.keystr(path), dim,
                         logical[dim], x.shape[dim])
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(shard, abstract_params, logical_specs)


def _mesh_spec(shape, logical, rules, mesh) -> tuple[P, list[int]]:
    """The PartitionSpec of an array from its logical axis names, and the dimensions
    left replicated because their mesh axes do not divide them."""
    spec = list(flax_spmd.logical_to_mesh_axes(tuple(logical), rules))
    spec += [None] * (len(shape) - len(spec))
    undivided = [dim for dim, axes in enumerate(spec)
                 if shape[dim] % math.prod(mesh.shape[a] for a in _axis_tuple(axes))]
    for dim in undivided:
        spec[dim] = None
    return P(*spec), undivided


def _axis_tuple(axes) -> tuple[str, ...]:
    return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)


# (mesh, rules) while a step is traced under `activation_sharding`; None otherwise.
_ACTIVATION_LAYOUT = contextvars.ContextVar("activation_layout", default=None)


@contextlib.contextmanager
def activation_sharding(mesh, rules):
    """Within it, `constrain` lays activations out on `mesh` by the parameters' `rules`.

    Enter it inside the function being jitted: the constraints are placed as the step
    is traced.
    """
    token = _ACTIVATION_LAYOUT.set((mesh, ((BATCH, BATCH_AXES), *rules)))
    try:
        yield
    finally:
        _ACTIVATION_LAYOUT.reset(token)


def constrain(x: jax.Array, logical: tuple[str | None, ...]) -> jax.Array:
    """`x` pinned to the mesh axes its logical names map onto, under `activation_sharding`.

    Args:
      x: an activation.
      logical: a name per dimension: `BATCH`, a parameter axis name ('heads', 'mlp',
        ...), or None (never split). A dimension its mesh axes do not divide stays whole.

    Returns:
      x, constrained; unchanged outside `activation_sharding` (one device, evaluation).
    """
    layout = _ACTIVATION_LAYOUT.get()
    if layout is None:
        return x
    mesh, rules = layout
    spec, _ = _mesh_spec(x.shape, logical, rules, mesh)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def batch_sharding(mesh) -> NamedSharding:
    """Leading (batch) axis split over the data-parallel axes, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local_batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Assembles each process's rows into global arrays sharded over the batch axes."""
    sharding = batch_sharding(mesh)
    return {name: jax.make_array_from_process_local_data(sharding, array)
            for name, array in local_batch.items()}
