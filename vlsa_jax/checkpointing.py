"""Orbax checkpoints of the whole training state plus the data source's position.

One CheckpointManager item holds parameters, optimizer state, step and RNG
('state'); a second holds the data source's position ('data'), so a restored run
continues with the exact next batch.
"""
import pathlib

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves every `every_steps` steps (and when asked), keeps the newest `keep`."""

    def __init__(self, directory: str, checkpoint_config):
        self.every_steps = checkpoint_config.every_steps
        self._manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=checkpoint_config.keep,
                enable_async_checkpointing=checkpoint_config.async_save,
                create=True))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

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

    def close(self) -> None:
        """Waits for pending asynchronous saves to finish."""
        self._manager.wait_until_finished()
        self._manager.close()


def find_checkpoint(path: str | pathlib.Path) -> pathlib.Path:
    """A step's checkpoint folder from a run's workdir, its checkpoints folder, or the step's.

    Raises:
      FileNotFoundError: when `path` holds no checkpoint.
    """
    path = pathlib.Path(path)
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
      path: a run's workdir, its checkpoints folder, or one step's folder.
      abstract_params: nested dict of `jax.ShapeDtypeStruct`s with shardings.
      allow_missing: leave out parameters the checkpoint lacks (a head that
        fine-tuning adds) instead of failing.

    Returns:
      (params, missing, step): the restored parameters (without the missing
      ones), the '/'-joined paths of those missing, and the checkpoint's step.

    Raises:
      ValueError: a parameter's shape differs from the checkpoint's, or one is
        missing and `allow_missing` is False.
    """
    step_dir = find_checkpoint(path)
    stored = ocp.PyTreeCheckpointer().metadata(step_dir / "state").item_metadata["params"]
    stored_shapes = {_name(p): tuple(x.shape)
                     for p, x in jax.tree_util.tree_flatten_with_path(stored)[0]}
    missing = []
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
        name = _name(key_path)
        if name not in stored_shapes:
            missing.append(name)
        elif stored_shapes[name] != tuple(leaf.shape):
            raise ValueError(f"{step_dir}: parameter {name} has shape {stored_shapes[name]}, "
                             f"the model's is {tuple(leaf.shape)}; is it the same model config?")
    if missing and not allow_missing:
        raise ValueError(f"{step_dir}: the checkpoint lacks {len(missing)} parameters of the "
                         f"model, e.g. {missing[0]}; is it the same model config?")
    target = {"params": _without(abstract_params, set(missing))}
    restored = ocp.PyTreeCheckpointer().restore(
        step_dir / "state", args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))
    return restored["params"], missing, int(step_dir.name)


def _name(key_path) -> str:
    """'encoder/layers/0/kernel': a parameter's path, with list indices and dict keys alike
    (the checkpoint stores the integer keys of NNX's pure dicts as strings)."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in key_path)


def _without(tree, names: set[str], prefix: str = ""):
    """A nested dict without the leaves whose `_name` path is in `names`."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            kept = _without(value, names, f"{path}/")
            if kept:
                out[key] = kept
        elif path not in names:
            out[key] = value
    return out
