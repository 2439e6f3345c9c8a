"""Device mesh, logical-axis rules, and the shardings of parameters and batches.

Parameters carry logical axis names ('embed', 'mlp', 'heads', 'vocab', 'layers', ...);
`config.mesh.logical_axis_rules` maps each name onto a mesh axis or None. Batches
are split over ('data', 'fsdp'): FSDP shards the batch like data parallelism and,
in addition, the parameters and optimizer state.
"""
import math
import os
import re

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vlsa_jax.config_validation import resolve_mesh_shape
from vlsa_jax.models.vlsa import abstract_model

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
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


def logical_to_mesh_spec(logical: P, shape, rules, mesh) -> P:
    """Maps a spec of logical names onto mesh axes.

    A dimension stays unsharded when its rule is None, when its mesh axis is
    already used by an earlier dimension of the same array, or when its size does
    not divide evenly over that axis.
    """
    rules = dict(rules)
    used, out = set(), []
    for dim, name in enumerate(tuple(logical) + (None,) * (len(shape) - len(logical))):
        if name is None:
            out.append(None)
            continue
        if name not in rules:
            raise ValueError(f"mesh.logical_axis_rules: no rule for logical axis {name!r}")
        axes = rules[name]
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        size = math.prod(mesh.shape[a] for a in axes)
        if not axes or used & set(axes) or shape[dim] % size:
            out.append(None)
        else:
            used |= set(axes)
            out.append(axes[0] if len(axes) == 1 else axes)
    return P(*out)


def param_shardings(abstract_params, logical_specs, rules, mesh):
    """NamedShardings for a params tree from its tree of logical PartitionSpecs."""
    return jax.tree.map(
        lambda x, spec: NamedSharding(mesh, logical_to_mesh_spec(spec, x.shape, rules, mesh)),
        abstract_params, logical_specs, is_leaf=lambda s: isinstance(s, P))


def model_structure(config):
    """(graphdef, logical PartitionSpecs of the parameters), without allocating anything."""
    graphdef, params = nnx.split(abstract_model(config))
    return graphdef, nnx.to_pure_dict(nnx.get_partition_spec(params))


def sharded_abstract_params(config, mesh):
    """(graphdef, the parameters as ShapeDtypeStructs carrying their NamedShardings)."""
    graphdef, logical_specs = model_structure(config)
    abstract = jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(abstract_model(config))))
    shardings = param_shardings(abstract, logical_specs, config.mesh.logical_axis_rules, mesh)
    return graphdef, jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)


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
