"""The training state: model structure, abstract state, shardings, sharded init, loading.

Everything that builds, places or reads the model's parameters goes through here:
training builds the whole state abstractly and initialises it straight into its
shardings (nothing is allocated unsharded); evaluation, export, search and the demo's
pictures read a checkpoint's parameters with `load_params`.
"""
import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from flax import nnx

from vlsa_jax import checkpointing, sharding
from vlsa_jax.models.vlsa import abstract_model, build_model


def model_structure(config):
    """(graphdef, logical PartitionSpecs of the parameters), without allocating anything."""
    graphdef, params = nnx.split(abstract_model(config))
    return graphdef, nnx.to_pure_dict(nnx.get_partition_spec(params))


def abstract_params(config, mesh):
    """(graphdef, the parameters as ShapeDtypeStructs carrying their NamedShardings)."""
    graphdef, logical_specs = model_structure(config)
    abstract = jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(abstract_model(config))))
    shardings = sharding.param_shardings(
        abstract, logical_specs, config.mesh.logical_axis_rules, mesh)
    return graphdef, _with_shardings(abstract, shardings)


def init_state(config, tx: optax.GradientTransformation, seed_key):
    """The training state: step, parameters (a plain nested dict), optimizer state, RNG."""
    param_key, train_key = jax.random.split(seed_key)
    params = nnx.to_pure_dict(nnx.state(build_model(config, nnx.Rngs(params=param_key))))
    return {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params),
            "rng": train_key}


def state_shardings(config, tx: optax.GradientTransformation, abstract_state, mesh):
    """Shardings of the whole state: parameters by the config's logical-axis rules, each
    optimizer moment like its parameter (`optax.tree_map_params`), the rest replicated."""
    _, logical_specs = model_structure(config)
    params = sharding.param_shardings(
        abstract_state["params"], logical_specs, config.mesh.logical_axis_rules, mesh)
    replicated = sharding.replicated(mesh)
    opt_state = optax.tree_map_params(
        tx, lambda _, param_sharding: param_sharding, abstract_state["opt_state"], params,
        transform_non_params=lambda _: replicated)
    return {"step": replicated, "params": params, "opt_state": opt_state, "rng": replicated}


@dataclasses.dataclass
class ShardedState:
    """The training state's abstract shapes and shardings, and its sharded initialiser."""

    abstract: dict  # pytree of jax.ShapeDtypeStruct, each with its sharding
    shardings: dict  # the same tree of NamedShardings
    init: callable  # seed key -> state, initialised straight into `shardings`


def sharded_state(config, tx: optax.GradientTransformation, mesh) -> ShardedState:
    """Builds the state abstractly, shards it by rule and jits its initialisation."""
    seed_key = seed_key_of(config)
    abstract = jax.eval_shape(functools.partial(init_state, config, tx), seed_key)
    shardings = state_shardings(config, tx, abstract, mesh)
    init = jax.jit(functools.partial(init_state, config, tx), out_shardings=shardings)
    return ShardedState(_with_shardings(abstract, shardings), shardings, init)


def seed_key_of(config) -> jax.Array:
    """The raw key every run of `config.seed` starts from."""
    return jax.random.key_data(jax.random.key(config.seed))


def _with_shardings(abstract, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract, shardings)


@dataclasses.dataclass
class LoadedParams:
    """A checkpoint's parameters, placed on `mesh`, with the config they go with."""

    config: ml_collections.ConfigDict  # one_device=True: its mesh set to one device
    mesh: jax.sharding.Mesh
    graphdef: nnx.GraphDef
    params: dict
    step_dir: pathlib.Path

    @property
    def step(self) -> int:
        return int(self.step_dir.name)

    @property
    def shardings(self):
        return jax.tree.map(lambda x: x.sharding, self.params)


def load_params(config, path, one_device: bool = False) -> LoadedParams:
    """The parameters of the checkpoint at `path`, restored into their shardings.

    Only parameters are read: the optimizer state, RNG and data position stay on disk.

    Args:
      config: the model's config.
      path: a run's workdir, its checkpoints folder, or one step's folder (the newest
        step of a workdir is taken).
      one_device: place them whole on the first device (a handful of queries or clips
        needs no more), instead of over the mesh of `config.mesh`.

    Raises:
      FileNotFoundError: `path` holds no checkpoint.
      ValueError: the checkpoint's parameters do not fit the model of `config`.
    """
    devices = None
    if one_device:
        config = config.copy_and_resolve_references()
        config.mesh.data = config.mesh.fsdp = config.mesh.tensor = 1
        devices = jax.devices()[:1]
    mesh = sharding.make_mesh(config.mesh, devices)
    graphdef, abstract = abstract_params(config, mesh)
    step_dir = checkpointing.find_checkpoint(path)
    params, _, _ = checkpointing.restore_params(step_dir, abstract)
    logging.info("restored the parameters of step %s from %s", step_dir.name, step_dir)
    return LoadedParams(config, mesh, graphdef, params, step_dir)


def initial_params(path, fresh_params, abstract):
    """`fresh_params` with every parameter that the checkpoint at `path` holds replaced.

    Parameters the checkpoint lacks (a matching head the fine-tuning objective adds)
    keep their fresh initialisation; the optimizer state is never read.
    """
    restored, missing, step = checkpointing.restore_params(path, abstract, allow_missing=True)
    logging.info("initial weights: step %d of %s%s", step, path,
                 f"; fresh: {', '.join(missing)}" if missing else "")

    def merge(fresh, loaded):
        return {k: merge(v, loaded.get(k, {})) if isinstance(v, dict) else loaded.get(k, v)
                for k, v in fresh.items()}

    return merge(fresh_params, restored)
