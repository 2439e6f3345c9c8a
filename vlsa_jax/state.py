"""The training state: model structure, abstract state, shardings, sharded init, loading.

Everything that builds, places or reads the model's parameters goes through here:
training builds the whole state abstractly and initialises it straight into its
shardings (nothing is allocated unsharded); evaluation, export, search and the demo's
pictures read a checkpoint's parameters with `load_params`.
"""
import dataclasses
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from flax import nnx

from vlsa_jax import checkpointing, sharding
from vlsa_jax.data import records
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

    # A copy of the caller's, with the checkpoint's audio normalisation
    # (`audio_norm_of_checkpoint`); one_device=True: its mesh set to one device.
    config: ml_collections.ConfigDict
    mesh: jax.sharding.Mesh
    graphdef: nnx.GraphDef
    params: dict
    step_dir: pathlib.Path  # the step's checkpoint folder, or the weights file
    step: int

    @property
    def shardings(self):
        return jax.tree.map(lambda x: x.sharding, self.params)


def load_params(config, path, one_device: bool = False) -> LoadedParams:
    """The parameters of the checkpoint at `path`, restored into their shardings.

    Only parameters are read: the optimizer state, RNG and data position stay on disk.

    Args:
      config: the model's config.
      path: a run's workdir, its checkpoints folder, or one step's folder (the newest
        step of a workdir is taken); or a weights file (`*.safetensors`, written by
        `vlsa_jax.export_weights`).
      one_device: place them whole on the first device (a handful of queries or clips
        needs no more), instead of over the mesh of `config.mesh`.

    Raises:
      FileNotFoundError: `path` holds no checkpoint.
      ValueError: the checkpoint's parameters do not fit the model of `config`.
    """
    config = config.copy_and_resolve_references()
    devices = None
    if one_device:
        config.mesh.data = config.mesh.fsdp = config.mesh.tensor = 1
        devices = jax.devices()[:1]
    mesh = sharding.make_mesh(config.mesh, devices)
    graphdef, abstract = abstract_params(config, mesh)
    step_dir = checkpointing.find_checkpoint(path)
    audio_norm_of_checkpoint(config, step_dir)
    if checkpointing.is_weights_file(step_dir):
        _warn_of_another_model(config, step_dir)
    params, _, step = checkpointing.restore_params(step_dir, abstract)
    logging.info("restored the parameters of step %d from %s", step, step_dir)
    return LoadedParams(config, mesh, graphdef, params, step_dir, step)


def _warn_of_another_model(config, weights_file) -> None:
    """Warns of the `model` fields that differ from those the weights file was exported
    with: some (the number of heads) change the model without changing a shape."""
    exported = json.loads(checkpointing.weights_metadata(weights_file)["config"]).get("model", {})
    ours = json.loads(json.dumps(config.model.to_dict()))
    differing = [f"model.{k} ({exported[k]!r} there, {v!r} here)" for k, v in ours.items()
                 if k in exported and exported[k] != v]
    if differing:
        logging.warning("%s was exported with another model config: %s", weights_file,
                        ", ".join(differing))


def initial_params(path, fresh_params, abstract):
    """`fresh_params` with every parameter that the checkpoint at `path` holds replaced.

    `path` is a run's workdir, its checkpoints folder, one step's folder, or a weights
    file (`*.safetensors`, written by `vlsa_jax.export_weights`). Parameters the
    checkpoint lacks (a matching head the fine-tuning objective adds) keep their fresh
    initialisation; the optimizer state is never read.

    Raises:
      ValueError: a parameter's shape differs from the checkpoint's.
    """
    restored, missing, step = checkpointing.restore_params(path, abstract, allow_missing=True)
    logging.info("initial weights: step %d of %s%s", step, path,
                 f"; fresh: {', '.join(missing)}" if missing else "")

    def merge(fresh, loaded):
        return {k: merge(v, loaded.get(k, {})) if isinstance(v, dict) else loaded.get(k, v)
                for k, v in fresh.items()}

    return merge(fresh_params, restored)


# ----------------------------------------------------------------------------------
# Audio normalisation: parameters go with the spectrogram statistics they were trained on.


def resolve_audio_norm(config) -> None:
    """Fills in `audio.norm_mean` / `audio.norm_std` as training is to use them, in place.

    With `audio.norm_from_data` they are the data's: those that the checkpoint of
    `init.checkpoint` was trained with (`audio_norm_of_checkpoint`), else the training
    split's statistics (its manifest's `spectrogram_stats`) when training reads prepared
    records with audio. Random batches are drawn already normalised and a split without
    audio has no statistics: there, as without `norm_from_data`, the values set stay.
    Logs the values used.

    In place, so that the run's config.json (a checkpoint's config) and whatever the
    caller does next with `config` (evaluate, export) use what training used.

    Raises:
      FileNotFoundError: the training split has no manifest.
    """
    audio, split = config.audio, config.data.train_split
    from_checkpoint = bool(config.init.checkpoint) and audio_norm_of_checkpoint(
        config, config.init.checkpoint)
    if not audio.norm_from_data:
        source = "as set: audio.norm_from_data is off"
    elif from_checkpoint:
        source = f"those {config.init.checkpoint} was trained with"
    elif config.data.source != "records":
        source = "as set: random batches are drawn normalised"
    else:
        manifest = records.Manifest.load(split)
        if "a" in manifest.modalities:
            audio.norm_mean = float(manifest.spectrogram_stats["mean"])
            audio.norm_std = float(manifest.spectrogram_stats["std"])
            source = f"the statistics of {split}"
        else:
            source = f"as set: {split} has no audio"
    logging.info("audio normalisation: mean %r, std %r (%s)", audio.norm_mean,
                 audio.norm_std, source)


def audio_norm_of_checkpoint(config, path) -> bool:
    """Gives `config` the audio normalisation the checkpoint at `path` was trained with.

    In place, with `audio.norm_from_data`; without it the values set stay, and a
    warning names both where they differ from the checkpoint's.

    Args:
      config: the run config.
      path: as `checkpointing.find_checkpoint` takes it.

    Returns:
      Whether the checkpoint records its values; a warning says so when it does not.
    """
    trained = trained_config(path)
    trained_audio = (trained or {}).get("audio", {})
    if "norm_mean" not in trained_audio or "norm_std" not in trained_audio:
        logging.warning("%s records no audio normalisation (no config.json of the run that "
                        "wrote it); audio.norm_mean and audio.norm_std are not taken from it",
                        path)
        return False
    audio = config.audio
    theirs = float(trained_audio["norm_mean"]), float(trained_audio["norm_std"])
    if audio.norm_from_data:
        audio.norm_mean, audio.norm_std = theirs
    elif (audio.norm_mean, audio.norm_std) != theirs:
        logging.warning(
            "audio.norm_mean, audio.norm_std = %r, %r as set (audio.norm_from_data is off), "
            "but %s was trained with %r, %r", audio.norm_mean, audio.norm_std, path, *theirs)
    return True


def trained_config(path) -> dict | None:
    """The config, as JSON values, of the run that wrote the checkpoint at `path`.

    A step's folder WORKDIR/checkpoints/STEP was written by the run whose config is
    WORKDIR/config.json (train.py writes it); a weights file carries its run's config.

    Returns:
      The config, or None where there is none.
    """
    step_dir = checkpointing.find_checkpoint(path)
    if checkpointing.is_weights_file(step_dir):
        return json.loads(checkpointing.weights_metadata(step_dir)["config"])
    run_config = step_dir.parent.parent / "config.json"
    if step_dir.parent.name != "checkpoints" or not run_config.exists():
        return None
    return json.loads(run_config.read_text())
