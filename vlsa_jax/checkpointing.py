"""Orbax checkpoints of the whole training state plus the data source's position.

One CheckpointManager item holds parameters, optimizer state, step and RNG
('state'); a second holds the data source's position ('data'), so a restored run
continues with the exact next batch. Orbax writes each step into a temporary folder
and renames it when complete, so an interrupted save leaves no step behind; a step
damaged afterwards (a truncated file, a deleted folder) is set aside by
`restore_latest`, and the run resumes from the one before it.

A weights file (`save_weights`, `python -m vlsa_jax.export_weights`) holds the
parameters alone in one safetensors file, with the run's config as metadata; every
reader of parameters (`find_checkpoint`, `restore_params`) takes one where it takes a
checkpoint.
"""
import json
import os
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy
from absl import logging
from safetensors import safe_open

# The suffix of a step folder that did not read back: kept for inspection, never deleted,
# and no longer a step to Orbax.
UNREADABLE_SUFFIX = ".unreadable"
# A weights file: its suffix, and the 'format' of its metadata.
WEIGHTS_SUFFIX = ".safetensors"
WEIGHTS_FORMAT = "vlsa_jax"


class Checkpointer:
    """Saves every `every_steps` steps (and when asked), keeps the newest `keep`."""

    def __init__(self, directory: str, checkpoint_config):
        self.every_steps = checkpoint_config.every_steps
        self._manager = ocp.CheckpointManager(
            # Orbax saves only to absolute paths; a relative --workdir is the user's cwd.
            pathlib.Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=checkpoint_config.keep,
                enable_async_checkpointing=checkpoint_config.async_save,
                create=True))

    def save(self, step: int, state, source) -> None:
        """Saves `state` (a pytree of arrays) and `source.get_state()` at `step`."""
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(source.get_state())), force=True)

    def restore(self, step: int, abstract_state, source):
        """Restores the state at `step` into `abstract_state`'s shardings; repositions `source`."""
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore()))
        source.set_state(restored["data"])
        return restored["state"]

    def restore_latest(self, abstract_state, source):
        """The newest checkpoint that reads back completely, or None when there is none.

        A newer step that fails to read is named with the reason in a warning and
        renamed `<step>.unreadable` (kept on disk), so that the run resumes from the step
        before it and can save that step again later.

        Returns:
          The restored state, or None: no checkpoint at all.

        Raises:
          RuntimeError: no step reads back, naming the newest's reason; nothing is set
            aside, since a config that no longer fits the checkpoints fails them all.
        """
        failures = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                state = self.restore(step, abstract_state, source)
            except Exception as error:  # Orbax and TensorStore raise many kinds on damage.
                failures.append((step, _first_line(error)))
                continue
            for bad_step, reason in failures:
                aside = self._set_aside(bad_step)
                logging.warning("checkpoint of step %d does not read back (%s); kept as %s, "
                                "resuming from step %d", bad_step, reason, aside, step)
            if failures:
                self._manager.reload()
            return state
        if failures:
            step, reason = failures[0]
            raise RuntimeError(
                f"{self._manager.directory}: no checkpoint reads back; the newest, step "
                f"{step}: {reason}. If the config changed since they were written, train in "
                "a new --workdir")
        return None

    def _set_aside(self, step: int) -> pathlib.Path:
        folder = pathlib.Path(self._manager.directory) / str(step)
        aside = folder.with_name(folder.name + UNREADABLE_SUFFIX)
        count = 1
        while aside.exists():
            count += 1
            aside = folder.with_name(f"{folder.name}{UNREADABLE_SUFFIX}{count}")
        folder.rename(aside)
        return aside

    def close(self) -> None:
        """Waits for pending asynchronous saves to finish."""
        self._manager.wait_until_finished()
        self._manager.close()


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def find_checkpoint(path: str | pathlib.Path) -> pathlib.Path:
    """A step's checkpoint folder from a run's workdir, its checkpoints folder, or the step's;
    a weights file (`*.safetensors`) is its own checkpoint.

    Raises:
      FileNotFoundError: when `path` holds no checkpoint.
    """
    path = pathlib.Path(path)
    if is_weights_file(path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such weights file")
        return path
    if (path / "state").is_dir():
        return path
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    steps = [p for p in path.iterdir() if p.name.isdigit() and (p / "state").is_dir()] \
        if path.is_dir() else []
    if not steps:
        raise FileNotFoundError(f"{path}: no checkpoint (expected a run's workdir, its "
                                "'checkpoints' folder, or one step's folder)")
    return max(steps, key=lambda p: int(p.name))


def restore_params(path: str | pathlib.Path, abstract_params, allow_missing: bool = False):
    """Parameters of a checkpoint, restored into `abstract_params`' shardings.

    Only parameters are read: the optimizer state, RNG and data position stay on
    disk, so the checkpoint may come from a run with another optimizer or data.

    Args:
      path: a run's workdir, its checkpoints folder, one step's folder, or a weights file.
      abstract_params: nested dict of `jax.ShapeDtypeStruct`s with shardings.
      allow_missing: leave out parameters the checkpoint lacks (a head that
        fine-tuning adds) instead of failing.

    Returns:
      (params, missing, step): the restored parameters (without the missing
      ones), the '/'-joined paths of those missing, and the checkpoint's step.

    Raises:
      ValueError: a parameter's shape differs from the checkpoint's, or one is
        missing and `allow_missing` is False; a `.safetensors` file that
        `save_weights` did not write.
    """
    step_dir = find_checkpoint(path)
    if is_weights_file(step_dir):
        return _restore_weights(step_dir, abstract_params, allow_missing)
    # The handler reads the item folder alone; a Checkpointer would also look for step
    # metadata inside it and warn that there is none.
    handler = ocp.PyTreeCheckpointHandler()
    stored = handler.metadata(step_dir / "state").tree["params"]
    stored_shapes = {_name(p): tuple(x.shape)
                     for p, x in jax.tree_util.tree_flatten_with_path(stored)[0]}
    missing = _missing_params(step_dir, stored_shapes, abstract_params, allow_missing)
    target = {"params": _without(abstract_params, set(missing))}
    restored = handler.restore(
        step_dir / "state", args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))
    handler.close()
    return restored["params"], missing, int(step_dir.name)


def _missing_params(source, stored_shapes: dict, abstract_params, allow_missing: bool,
                    sep: str = "/") -> list[str]:
    """The `sep`-joined names of the parameters of `abstract_params` that `source` lacks.

    Args:
      source: the checkpoint or weights file, for the errors.
      stored_shapes: its parameters' shapes by their `_name(path, sep)`.
      abstract_params: the model's parameters, as `jax.ShapeDtypeStruct`s.
      allow_missing: whether a parameter may be missing.

    Raises:
      ValueError: a parameter's shape differs, or one is missing and `allow_missing` is
        False.
    """
    missing = []
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
        name = _name(key_path, sep)
        if name not in stored_shapes:
            missing.append(name)
        elif stored_shapes[name] != tuple(leaf.shape):
            raise ValueError(f"{source}: parameter {name} has shape {stored_shapes[name]}, "
                             f"the model's is {tuple(leaf.shape)}; is it the same model config?")
    if missing and not allow_missing:
        raise ValueError(f"{source}: the checkpoint lacks {len(missing)} parameters of the "
                         f"model, e.g. {missing[0]}; is it the same model config?")
    return missing


def is_weights_file(path: str | pathlib.Path) -> bool:
    """Whether `path` names a weights file (by its suffix) rather than an Orbax checkpoint."""
    return pathlib.Path(path).suffix == WEIGHTS_SUFFIX


def save_weights(path: str | pathlib.Path, params, config: dict, step: int) -> int:
    """Writes `params` as float32 tensors of one safetensors file, `config` and `step` as
    its metadata.

    Tensors are named by their parameter's path joined with '.'
    (`encoders.0.blocks.attn.query.kernel`); readers match them to the model's tree, so
    the integer keys of NNX's pure dicts come back as integers. The file appears whole or
    not at all.

    Args:
      path: the file to write, ending in `.safetensors`.
      params: nested dict of arrays.
      config: the run's config, as a dict of JSON values.
      step: the step the parameters come from.

    Returns:
      The number of tensors written.

    Raises:
      ValueError: a key holds a '.'.
    """
    path = pathlib.Path(path)
    tensors = {}
    for key_path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
        if any("." in str(getattr(k, "key", "")) for k in key_path):
            raise ValueError(f"parameter {_name(key_path)}: a key holds a '.', the separator "
                             "of tensor names")
        tensors[_name(key_path, ".")] = np.ascontiguousarray(jax.device_get(value), np.float32)
    metadata = {"format": WEIGHTS_FORMAT, "step": str(step), "config": json.dumps(config)}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    safetensors.numpy.save_file(tensors, partial, metadata=metadata)
    os.replace(partial, path)
    return len(tensors)


def weights_metadata(path: str | pathlib.Path) -> dict:
    """The metadata of a weights file: 'format', 'step' and 'config' (the run's, as JSON).

    Raises:
      ValueError: `save_weights` did not write the file (e.g. a Hugging Face model's).
    """
    with safe_open(path, framework="np") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: not a weights file of vlsa_jax (python -m "
                         "vlsa_jax.export_weights writes them); public ViT/BERT weights go "
                         "through init.vit / init.bert")
    return metadata


def _restore_weights(path: pathlib.Path, abstract_params, allow_missing: bool):
    """`restore_params` of a weights file: its tensors, checked against the model's shapes
    and placed into `abstract_params`' shardings; tensors the model lacks are ignored."""
    step = int(weights_metadata(path)["step"])
    with safe_open(path, framework="np") as f:
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
        missing = _missing_params(path, shapes, abstract_params, allow_missing, sep=".")

        def place(key_path, leaf):
            tensor = np.asarray(f.get_tensor(_name(key_path, ".")), leaf.dtype)
            return jax.device_put(tensor, leaf.sharding)

        params = jax.tree_util.tree_map_with_path(
            place, _without(abstract_params, set(missing), sep="."))
    return params, missing, step


def _name(key_path, sep: str = "/") -> str:
    """'encoder/layers/0/kernel': a parameter's path, with list indices and dict keys alike
    (the checkpoint stores the integer keys of NNX's pure dicts as strings)."""
    return sep.join(str(getattr(k, "key", getattr(k, "idx", k))) for k in key_path)


def _without(tree, names: set[str], prefix: str = "", sep: str = "/"):
    """A nested dict without the leaves whose `_name(path, sep)` is in `names`."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            kept = _without(value, names, f"{path}{sep}", sep)
            if kept:
                out[key] = kept
        elif path not in names:
            out[key] = value
    return out
