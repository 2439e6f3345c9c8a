"""Scalar metrics to `metrics.jsonl` and TensorBoard event files (tensorboardX, no TensorFlow).

`metrics.jsonl` is append-only, one JSON object per line: `{"step": N, name: value, ...}`.
A crash mid-write can leave a torn last line; the next writer cuts it off (and says so)
before appending, and `read_metrics` skips any line it cannot read with one warning.
"""
import json
import pathlib
import re
from collections.abc import Iterator

import jax
import tensorboardX
from absl import logging

METRICS_FILE = "metrics.jsonl"


def tensorboard_name(name: str) -> str:
    """A metric name TensorBoard accepts ([A-Za-z0-9_./-]): 'eval/test/t2v/R@1' ->
    'eval/test/t2v/R_at_1'. metrics.jsonl keeps the names as they are."""
    return re.sub(r"[^A-Za-z0-9_./-]", "_", name.replace("@", "_at_"))


class MetricWriter:
    """Writes one JSON line per logged step and the same scalars to TensorBoard.

    Only process 0 writes; other processes get a writer that does nothing, so the
    training loop needs no branches. A record whose step and names are already in the
    file (a resumed run repeating steps after its checkpoint) is not written again.
    """

    def __init__(self, workdir: str, enabled: bool | None = None):
        self._enabled = jax.process_index() == 0 if enabled is None else enabled
        if self._enabled:
            path = pathlib.Path(workdir)
            path.mkdir(parents=True, exist_ok=True)
            self._path = path / METRICS_FILE
            _cut_torn_tail(self._path)
            self._logged = {(r["step"], frozenset(r)) for r in read_metrics(self._path)
                            if "step" in r}
            self._jsonl = open(self._path, "a", encoding="utf-8")
            self._tensorboard = tensorboardX.SummaryWriter(str(path / "tensorboard"))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self._enabled:
            return
        record = {"step": step, **{name: float(value) for name, value in scalars.items()}}
        key = (step, frozenset(record))
        if key in self._logged:
            return
        self._logged.add(key)
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in scalars.items():
            self._tensorboard.add_scalar(tensorboard_name(name), float(value), step)
        self._tensorboard.flush()

    def close(self) -> None:
        if self._enabled:
            self._jsonl.close()
            self._tensorboard.close()


def _cut_torn_tail(path: pathlib.Path) -> None:
    """Truncates a last line without its newline: a write that a crash interrupted."""
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as file:
        file.truncate(keep)
    logging.warning("%s: cut off a partial last line (%d bytes) that an interrupted write "
                    "left", path, len(data) - keep)


def read_metrics(path) -> Iterator[dict]:
    """The records of a metrics.jsonl file, in order; unreadable lines are skipped with
    one warning that names the file and their line numbers."""
    path = pathlib.Path(path)
    if not path.exists():
        return
    bad = []
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                bad.append(number)
                continue
            if isinstance(record, dict):
                yield record
            else:
                bad.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        logging.warning("%s: skipped %d unreadable line(s): %s", path, len(bad), shown)
