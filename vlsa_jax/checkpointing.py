"""Orbax checkpoints of the whole training state plus the data source's position.

One CheckpointManager item holds parameters, optimizer state, step and RNG
('state'); a second holds the data source's position ('data'), so a restored run
continues with the exact next batch. Orbax writes each step into a temporary folder
and renames it when complete, so an interrupted save leaves no step behind; a step
damaged afterwards (a truncated file, a deleted folder) is set aside by
`restore_latest`, and the run resumes from the one before it.
"""
import pathlib

import jax
import orbax.checkpoint as ocp
from absl import logging

# The suffix of a step folder that did not read back: kept for inspection, never deleted,
# and no longer a step to Orbax.
UNREADABLE_SUFFIX = ".unreadable"


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
    # The handler reads the item folder alone; a Checkpointer would also look for step
    # metadata inside it and warn that there is none.
    handler = ocp.PyTreeCheckpointHandler()
    stored = handler.metadata(step_dir / "state").tree["params"]
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
    restored = handler.restore(
        step_dir / "state", args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))
    handler.close()
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
