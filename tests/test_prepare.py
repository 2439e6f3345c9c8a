"""Preparation: real media in, ArrayRecord shards and a manifest out; failures named, resumable."""
import os
import subprocess
import sys

import numpy as np
import pytest
from array_record.python import array_record_module

from tests.data_helpers import CAPTIONS, GOOD_CLIPS, prepared_split, write_corpus
from tests.helpers import load_config
from vlsa_jax.data import prepare, records


def _read_all(split_dir, manifest):
    out = {}
    for path in manifest.shard_paths(split_dir):
        reader = array_record_module.ArrayRecordReader(path)
        for data in reader.read_all():
            record = records.decode_record(data)
            assert record.clip_id not in out, "a clip was written twice"
            out[record.clip_id] = record
        reader.close()
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepared_split(tmp_path_factory.mktemp("prepare"), bad=True, clips_per_shard=3)


def test_good_clips_become_records(prepared):
    config, manifest, output = prepared
    assert manifest.num_clips == len(GOOD_CLIPS)
    written = _read_all(output / "train", manifest)
    assert sorted(written) == list(GOOD_CLIPS)
    record = written["clip0"]
    assert record.captions == CAPTIONS["clip0"]
    assert record.text_ids.shape == (2, config.text.max_len)
    assert len(record.frames) == config.video.stored_frames
    assert record.spectrogram.shape == (config.audio.frames, config.audio.bins)
    assert record.spectrogram.dtype == np.float16
    first, last = record.audio_valid
    assert 0 <= first < last <= config.audio.clip_samples


def test_failures_are_named_with_reasons(prepared):
    _, manifest, _ = prepared
    reasons = {f["id"]: f["reason"] for f in manifest.failures}
    assert set(reasons) == {"empty", "truncated", "silent_film", "missing"}
    assert "audio" in reasons["silent_film"]
    assert "not found" in reasons["missing"]
    assert manifest.num_failed == 4


def test_manifest_records_parameters_and_timings(prepared):
    config, manifest, output = prepared
    assert manifest.frontend["n_fft"] == config.audio.n_fft
    assert manifest.frames == {"stored_frames": config.video.stored_frames,
                               "stored_short_side": config.video.stored_short_side}
    assert manifest.tokenizer["name_or_path"] == prepare.TOKENIZER_DIR
    assert (output / prepare.TOKENIZER_DIR / "tokenizer.json").exists()
    assert manifest.timings["decode"] > 0
    assert np.isfinite(manifest.spectrogram_stats["std"]) and manifest.spectrogram_stats["std"] > 0


def test_rerun_skips_finished_shards_and_redoes_unfinished_ones(tmp_path):
    config, manifest, output = prepared_split(tmp_path, clips_per_shard=2)
    split_dir = output / "train"
    shards = manifest.shard_paths(split_dir)
    mtimes = [os.path.getmtime(p) for p in shards]
    os.remove(shards[1] + ".json")  # as if the run died while finishing shard 1
    again = prepare.prepare_split(
        config, "generic", str(tmp_path / "annotations.csv"), str(tmp_path / "media"),
        str(output), "train", clips_per_shard=2, progress=False)
    assert [os.path.getmtime(p) for p in shards][::2] == mtimes[::2]
    assert os.path.getmtime(shards[1]) > mtimes[1]
    assert again.num_clips == len(GOOD_CLIPS)
    assert sorted(_read_all(split_dir, again)) == list(GOOD_CLIPS)


def test_missing_audio_as_silence_is_an_explicit_option(tmp_path):
    config = load_config()
    annotations = write_corpus(tmp_path)
    manifest = prepare.prepare_split(
        config, "generic", str(annotations), str(tmp_path / "media"), str(tmp_path / "out"),
        "train", progress=False, missing_audio="silence")
    assert "silent_film" not in {f["id"] for f in manifest.failures}
    record = _read_all(tmp_path / "out" / "train", manifest)["silent_film"]
    assert record.audio_valid == (0, 0)


@pytest.mark.slow
def test_cli_reports_counts_and_exit_status(tmp_path):
    annotations = write_corpus(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "vlsa_jax.data.prepare", "--dataset=generic",
         f"--annotations={annotations}", f"--media_dir={tmp_path / 'media'}",
         f"--output_dir={tmp_path / 'out'}", "--split=train", "--num_workers=2",
         "--clips_per_shard=3", "--config=configs/pretrain.py:variant=tiny"],
        cwd=os.path.dirname(os.path.dirname(__file__)), capture_output=True, text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode == 3, result.stderr[-2000:]
    assert f"wrote {len(GOOD_CLIPS)} clips, 4 failed" in result.stdout
    assert "failed: truncated:" in result.stderr
