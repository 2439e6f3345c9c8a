"""Scalar metrics: each written step is one JSON line of `metrics.jsonl`."""
import json
import struct

import numpy as np
from tensorboardX.proto import event_pb2

from vlsa_jax import metric_writers
from vlsa_jax.metric_writers import MetricWriter


def test_each_step_is_a_json_line_of_its_values(tmp_path):
    workdir = tmp_path / "run"
    writer = MetricWriter(str(workdir))
    writer.write(2, {"loss": np.float32(1.5), "eval/train/t2v/R@1": 25})
    writer.write(4, {"loss": 0.75})
    writer.close()
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 2, "loss": 1.5, "eval/train/t2v/R@1": 25.0},
        {"step": 4, "loss": 0.75},
    ]


def _lines(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_a_torn_last_line_is_cut_off_before_appending(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(metric_writers.logging, "warning", lambda *a: warnings.append(a[0] % a[1:]))
    (tmp_path / "metrics.jsonl").write_text('{"step": 2, "loss": 1.5}\n{"step": 4, "lo')
    writer = MetricWriter(str(tmp_path))
    writer.write(4, {"loss": 0.75})
    writer.close()
    assert _lines(tmp_path) == [{"step": 2, "loss": 1.5}, {"step": 4, "loss": 0.75}]
    assert len(warnings) == 1 and "partial last line (15 bytes)" in warnings[0]


def test_readers_skip_unreadable_lines_with_one_warning_naming_them(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(metric_writers.logging, "warning", lambda *a: warnings.append(a[0] % a[1:]))
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1, "loss": 2.0}\n\xff\xfe garbage\n{"step": 2\n'
                     b'[1, 2]\n{"step": 3, "loss": 1.0}\n')
    assert list(metric_writers.read_metrics(path)) == [
        {"step": 1, "loss": 2.0}, {"step": 3, "loss": 1.0}]
    assert warnings == [f"{path}: skipped 3 unreadable line(s): 2, 3, 4"]


def test_a_resumed_run_does_not_log_a_step_again(tmp_path):
    first = MetricWriter(str(tmp_path))
    first.write(2, {"loss": 1.0})
    first.write(2, {"eval/test/t2v/R@1": 10.0})
    first.close()
    again = MetricWriter(str(tmp_path))
    again.write(2, {"loss": 1.0})  # repeated after resuming from an earlier checkpoint
    again.write(2, {"eval/test/t2v/R@1": 10.0})
    again.write(4, {"loss": 0.5})
    again.close()
    assert [sorted(r) for r in _lines(tmp_path)] == [
        ["loss", "step"], ["eval/test/t2v/R@1", "step"], ["loss", "step"]]


def test_tensorboard_gets_names_it_accepts(tmp_path):
    assert metric_writers.tensorboard_name("eval/test/t2v/R@1") == "eval/test/t2v/R_at_1"
    assert metric_writers.tensorboard_name("loss/global") == "loss/global"
    writer = MetricWriter(str(tmp_path))
    writer.write(1, {"eval/test/t2v/R@1": 5.0})
    writer.close()
    assert _event_tags(tmp_path / "tensorboard") == ["eval/test/t2v/R_at_1"]


def _event_tags(directory) -> list[str]:
    """The summary tags of the TensorBoard event files in `directory` (TFRecord framing:
    length u64, its CRC u32, an Event proto, its CRC u32)."""
    tags = []
    for path in directory.glob("events.out.tfevents.*"):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            tags += [value.tag for value in event.summary.value]
            offset += 12 + length + 4
    return tags
