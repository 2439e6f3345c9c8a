"""Orbax checkpoints of the whole training state plus the data source's position.

One CheckpointManager item holds parameters, optimizer state, step and RNG
('state'); a second holds the data source's position ('data'), so a restored run
continues with the exact next batch.
"""
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
