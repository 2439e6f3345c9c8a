"""The demo command end to end, at the smallest size: every stage runs and leaves its output."""
import json

import numpy as np
import pytest

from tests.helpers import load_config
from vlsa_jax import demo
from vlsa_jax.config_validation import validate_config

# The sweep tests' size: the compiled programs are shared through the cache.
_SMALLEST = "steps=2,clips=16,test_clips=8,sync_clips=4"


def test_demo_config_is_valid_and_sized_for_a_cpu():
    config = load_config("demo.py", "")
    validate_config(config, 1)
    assert config.train.num_steps == 600 and config.demo.num_train == 512
    assert not config.video.random_flip  # captions say left and right


def test_demo_runs_every_stage_and_reuses_them(tmp_path, capsys):
    config = load_config("demo.py", _SMALLEST)
    config.demo.workers = 1
    workdir = tmp_path / "demo"
    results = demo.run(config, str(workdir))
    out = capsys.readouterr().out
    assert "R@1 / chance" in out and "blind to timing" in out

    assert set(results) == {"test", "sync_hard", "sync_hard_shifted"}
    assert results["test"]["t2v/num_gallery"] == 8
    # sync_hard: the shifted copies' audio joins the video->audio gallery only.
    assert results["sync_hard"]["v2a/num_gallery"] == 8
    assert results["sync_hard"]["a2v/num_gallery"] == 4
    for split in results:
        assert (workdir / "eval" / split / "metrics.json").exists()
    assert np.load(workdir / "export" / "test_video.npy", allow_pickle=False).shape[0] == 8
    for picture in ("training_curves", "reconstructions", "tsne"):
        assert (workdir / "pictures" / f"{picture}.png").stat().st_size > 1000
    summary = json.loads((workdir / "demo_summary.json").read_text())
    assert 0 <= summary["synchrony"]["twin_accuracy"] <= 100
    assert summary["synchrony"]["timing_blind_r1"] == pytest.approx(
        summary["synchrony"]["v2a_r1_without_copies"] / 2)

    # A second run reuses the corpus, the records and the final checkpoint.
    corpus = workdir / "data" / "sync_shapes" / "train.jsonl"
    shard = next((workdir / "data" / "records" / "train").glob("*.array_record"))
    before = corpus.stat().st_mtime_ns, shard.stat().st_mtime_ns
    demo.run(load_config("demo.py", _SMALLEST), str(workdir))
    assert (corpus.stat().st_mtime_ns, shard.stat().st_mtime_ns) == before
    steps = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")
             if "loss" in json.loads(line)]
    assert steps == [2]  # not trained again
