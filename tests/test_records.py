"""The record schema round-trips, and a manifest that disagrees with the config is refused."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from vlsa_jax.data import records


def _record(**overrides):
    values = dict(
        clip_id="clip-1", source="videos/clip-1.mp4", start=1.5, end=4.0,
        captions=["a red ball bounces", "ünïcode ok"],
        text_ids=np.arange(24, dtype=np.int32).reshape(2, 12),
        text_mask=np.ones((2, 12), np.int32),
        frames=[records.encode_jpeg(np.full((8, 10, 3), 200, np.uint8))] * 3,
        frame_times=[1.6, 2.5, 3.4],
        spectrogram=np.random.default_rng(0).standard_normal((32, 32)).astype(np.float16),
        audio_valid=(100, 8000))
    values.update(overrides)
    return records.ClipRecord(**values)


def test_record_round_trip():
    record = _record()
    decoded = records.decode_record(records.encode_record(record))
    assert decoded.clip_id == record.clip_id and decoded.captions == record.captions
    assert (decoded.start, decoded.end, decoded.audio_valid) == (1.5, 4.0, (100, 8000))
    np.testing.assert_array_equal(decoded.text_ids, record.text_ids)
    assert decoded.spectrogram.dtype == np.float16
    np.testing.assert_array_equal(decoded.spectrogram, record.spectrogram)
    assert decoded.frames == record.frames and decoded.frame_times == record.frame_times
    assert decoded.has_video and decoded.has_audio and decoded.has_text


def test_absent_modalities_round_trip_as_absent():
    record = _record(frames=None, frame_times=None, spectrogram=None, audio_valid=None,
                     captions=[], text_ids=None, text_mask=None)
    decoded = records.decode_record(records.encode_record(record))
    assert not (decoded.has_video or decoded.has_audio or decoded.has_text)


def test_jpeg_keeps_the_frame():
    frame = np.random.default_rng(1).integers(0, 255, (48, 64, 3)).astype(np.uint8)
    frame[:] = frame.mean(axis=(0, 1), keepdims=True).astype(np.uint8)  # flat: JPEG-exact
    decoded = np.asarray(Image.open(io.BytesIO(records.encode_jpeg(frame))))
    assert decoded.shape == frame.shape
    assert np.abs(decoded.astype(int) - frame).max() <= 2


def _manifest():
    return records.Manifest(
        dataset="generic", split="train", modalities="avt", num_clips=3, num_failed=1,
        frontend={"frontend": "sop_logfreq", "sample_rate": 11025, "n_fft": 1022},
        frames={"stored_frames": 8, "stored_short_side": 40},
        tokenizer={"name_or_path": "tokenizer", "vocab_size": 300, "max_len": 12},
        shards=[{"file": "train-00000-of-00001.array_record", "num_records": 3}],
        timings={"decode": 1.0}, spectrogram_stats={"mean": -4.2, "std": 3.1},
        failures=[{"id": "bad", "reason": "empty file"}])


def test_manifest_round_trip_and_config_check(tmp_path):
    _manifest().save(tmp_path)
    manifest = records.Manifest.load(tmp_path)
    assert manifest == _manifest()
    assert manifest.shard_paths(tmp_path) == [str(tmp_path / "train-00000-of-00001.array_record")]
    frontend = {"frontend": "sop_logfreq", "sample_rate": 11025, "n_fft": 1022}
    frames = {"stored_frames": 8, "stored_short_side": 40}
    records.check_matches_config(manifest, frontend, frames, max_len=12)
    with pytest.raises(ValueError, match=r"^audio.n_fft: .*1022.*510"):
        records.check_matches_config(manifest, frontend | {"n_fft": 510}, frames, 12)
    with pytest.raises(ValueError, match=r"^video.stored_frames:"):
        records.check_matches_config(manifest, frontend, frames | {"stored_frames": 16}, 12)
    with pytest.raises(ValueError, match=r"^text.max_len:"):
        records.check_matches_config(manifest, frontend, frames, max_len=40)


def test_manifest_fingerprint_round_trips_and_is_none_in_older_manifests(tmp_path):
    fingerprint = {"annotations_sha256": "ab" * 32, "parameters": {"split": "train"}}
    manifest = _manifest()
    manifest.fingerprint = fingerprint
    manifest.save(tmp_path)
    assert records.Manifest.load(tmp_path).fingerprint == fingerprint
    older = json.loads((tmp_path / records.MANIFEST).read_text())
    del older["fingerprint"]
    (tmp_path / records.MANIFEST).write_text(json.dumps(older))
    assert records.Manifest.load(tmp_path).fingerprint is None


def test_missing_manifest_says_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="vlsa_jax.data.prepare"):
        records.Manifest.load(tmp_path)
