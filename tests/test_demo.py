"""The demo command end to end, at the smallest size: every stage runs and leaves its output."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, child_env, load_config
from vlsa_jax.demo import run as demo
from vlsa_jax.config_validation import validate_config

# The sweep tests' size: the compiled programs are shared through the cache.
_SMALLEST = "steps=2,clips=16,test_clips=8,sync_clips=4"


def test_demo_config_is_valid_and_sized_for_a_cpu():
    config = load_config("demo.py", "")
    validate_config(config, 1)
    assert config.train.num_steps == 800 and config.demo.num_train == 512
    assert config.gam.reversed_video_negatives
    assert config.demo.eval_every_steps == 100 and not config.eval.every_steps
    quick = load_config("demo.py", "quick=true")
    validate_config(quick, 1)
    assert quick.train.num_steps == 200 and quick.demo.num_test == 32
    assert load_config("demo.py", "quick=true,steps=5").train.num_steps == 5
    assert not config.video.random_flip  # captions say left and right


@pytest.mark.slow
def test_demo_runs_every_stage_and_reuses_them(tmp_path, capsys):
    config = load_config("demo.py", _SMALLEST)
    config.demo.workers = 1
    config.demo.eval_every_steps = 1
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
    # The sweep ran during training too, so the curves show R@1 over the steps.
    logged = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert {line["step"] for line in logged if "eval/test/t2v/R@1" in line} == {1, 2}
    summary = json.loads((workdir / "demo_summary.json").read_text())
    assert "linear probe" in out
    assert set(summary["probe"]) == {"video", "audio", "majority"}
    for modality in ("video", "audio"):
        assert set(summary["probe"][modality]) == set(demo.PROBED_ATTRIBUTES)
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


@pytest.mark.slow
def test_the_quick_demo_learns(tmp_path):
    """The reduced demo, run as a user runs it (one device, about 1.5 minutes on 2 cores),
    retrieves well above chance: text->video, text->audio and video->audio."""
    command = [sys.executable, "-m", "vlsa_jax.main", "--config=configs/demo.py:quick=true",
               f"--workdir={tmp_path}", "--config.demo.pictures=False"]
    subprocess.run(command, cwd=ROOT, env=child_env(1, optimize=True), check=True,
                   capture_output=True)
    test = json.loads((tmp_path / "eval" / "test" / "metrics.json").read_text())
    chance = demo.chance_r1(test)
    assert chance["t2v"] == pytest.approx(100 / 32)
    for direction in ("t2v", "t2a", "v2a"):
        assert test[f"{direction}/R@1"] >= 3 * chance[direction], (direction, test)


def _write_sync_exports(directory, video, audio, twins):
    clips = [f"c{i}" for i in range(len(video))]
    shifted = [c + "_shifted" for c in clips][::-1]  # the copies' own order
    for split, ids, arrays in (("sync_hard", clips, {"video": video, "audio": audio}),
                               ("sync_hard_shifted", shifted, {"audio": twins[::-1]})):
        (directory / f"{split}_ids.json").write_text(
            json.dumps({"clips": ids, "text": [], "captions": []}))
        for name, array in arrays.items():
            np.save(directory / f"{split}_{name}.npy", array.astype(np.float32))
    (directory / "manifest.json").write_text(json.dumps({"step": 1}))


def test_synchrony_test_tells_the_own_audio_from_its_shifted_copy(tmp_path):
    rng = np.random.default_rng(0)
    # Unit rows, as exported.
    audio, twins = (x / np.linalg.norm(x, axis=1, keepdims=True)
                    for x in (rng.normal(size=(6, 8)) for _ in range(2)))
    # Videos that match their own audio: every one first, never the copy.
    _write_sync_exports(tmp_path, audio, audio, twins)
    sync = demo.synchrony_test(tmp_path)
    assert sync["twin_accuracy"] == 100 and sync["twin_first_r1"] == 0
    assert sync["v2a_r1_without_copies"] == 100 and sync["timing_blind_r1"] == 50
    # Videos that match the shifted copies: the copy first every time.
    _write_sync_exports(tmp_path, twins, audio, twins)
    sync = demo.synchrony_test(tmp_path)
    assert sync["twin_accuracy"] == 0 and sync["twin_first_r1"] == 100
