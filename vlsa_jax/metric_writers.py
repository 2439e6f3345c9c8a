"""Scalar metrics to `metrics.jsonl` and TensorBoard event files (tensorboardX, no TensorFlow)."""
import json
import pathlib

import jax
import tensorboardX


class MetricWriter:
    """Writes one JSON line per logged step and the same scalars to TensorBoard.

    Only process 0 writes; other processes get a writer that does nothing, so the
    training loop needs no branches.
    """

    def __init__(self, workdir: str, enabled: bool | None = None):
        self._enabled = jax.process_index() == 0 if enabled is None else enabled
        if self._enabled:
            path = pathlib.Path(workdir)
            path.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(path / "metrics.jsonl", "a")
            self._tensorboard = tensorboardX.SummaryWriter(str(path / "tensorboard"))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self._enabled:
            return
        scalars = {name: float(value) for name, value in scalars.items()}
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()
        for name, value in scalars.items():
            self._tensorboard.add_scalar(name, value, step)
        self._tensorboard.flush()

    def close(self) -> None:
        if self._enabled:
            self._jsonl.close()
            self._tensorboard.close()
