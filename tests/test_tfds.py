"""TFDS builders: real media in, the preparation's records out, no TensorFlow needed."""
import csv
import json
import logging
import sys
import types

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python import array_record_module

from tests.helpers import load_config
from tests.media_fixtures import write_clip, write_truncated
from vlsa_jax.data import pipeline, prepare, records, tokenizer as tokenizer_lib
from vlsa_jax.data.tfds_builders import (
    AudiocapsRecords,
    MsrvttRecords,
    RecordsConfig,
    tfds_records_source,
)

# video_id -> (MSR-VTT split, captions); video3's file is truncated.
MSRVTT_VIDEOS = {
    "video0": ("train", ["a grey screen slowly brightens", "frames getting lighter"]),
    "video1": ("train", ["a steady tone over a plain picture"]),
    "video2": ("test", ["bright grey video with a beep", "a beeping blank clip"]),
    "video3": ("train", ["this file was cut in half"]),
}
# (youtube_id, start_time, caption) rows per AudioCaps CSV; no val.csv.
AUDIOCAPS_ROWS = {
    "train": [("abc", "30", "a high beep rings"), ("def", "0", "a whistle sounds loudly")],
    "test": [("ghi", "10", "a low hum"), ("ghi", "10", "an electric tone hums quietly")],
}
# Media files found by the adapter's stem rules: id_start, id, and Y-prefixed id.
AUDIOCAPS_FILES = ("abc_30.mp4", "nested/Ydef.mp4", "ghi.mp4")
CONFIG_NAME = "tiny"


def _write_msrvtt(manual_dir):
    videos = manual_dir / MsrvttRecords.MEDIA_DIR
    videos.mkdir(parents=True)
    for i, video_id in enumerate(MSRVTT_VIDEOS):
        write_clip(videos / f"{video_id}.mp4", seconds=1.0, tone_hz=300.0 + 100 * i)
    write_truncated(videos / "video3.mp4")
    info = {
        "videos": [{"video_id": v, "split": split} for v, (split, _) in MSRVTT_VIDEOS.items()],
        "sentences": [{"video_id": v, "caption": caption, "sen_id": i}
                      for v, (_, captions) in MSRVTT_VIDEOS.items()
                      for i, caption in enumerate(captions)],
    }
    (manual_dir / "videodatainfo.json").write_text(json.dumps(info))
    with open(manual_dir / MsrvttRecords.JSFUSION_FILE, "w", newline="") as f:
        csv.writer(f).writerows([["key", "vid_key", "video_id", "sentence"],
                                 ["ret0", "msr7", "video2", "a bright beeping clip"]])


def _write_audiocaps(manual_dir):
    audio = manual_dir / AudiocapsRecords.MEDIA_DIR
    for i, name in enumerate(AUDIOCAPS_FILES):
        (audio / name).parent.mkdir(parents=True, exist_ok=True)
        write_clip(audio / name, seconds=1.0, video=False, tone_hz=500.0 + 200 * i)
    for split, rows in AUDIOCAPS_ROWS.items():
        with open(manual_dir / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
            writer.writerows((f"{split}{i}", *row) for i, row in enumerate(rows))


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Both datasets built with the tiny config and a WordPiece trained on their captions."""
    root = tmp_path_factory.mktemp("tfds")
    msrvtt_dir, audiocaps_dir = root / "msrvtt", root / "audiocaps"
    _write_msrvtt(msrvtt_dir)
    _write_audiocaps(audiocaps_dir)
    config = load_config()
    captions = [c for _, texts in MSRVTT_VIDEOS.values() for c in texts]
    captions += [row[2] for rows in AUDIOCAPS_ROWS.values() for row in rows]
    tokenizer_lib.train_wordpiece(captions, config.text.vocab_size, root / "tokenizer")
    config.text.tokenizer = str(root / "tokenizer")

    warnings = _Warnings()
    logging.getLogger("absl").addHandler(warnings)
    try:
        for builder_cls, manual_dir in ((MsrvttRecords, msrvtt_dir),
                                        (AudiocapsRecords, audiocaps_dir)):
            builder = builder_cls(data_dir=root / "data",
                                  config=RecordsConfig(name=CONFIG_NAME, run_config=config))
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    finally:
        logging.getLogger("absl").removeHandler(warnings)
    return types.SimpleNamespace(config=config, root=root, data_dir=root / "data",
                                 msrvtt_dir=msrvtt_dir, warnings=warnings.messages)


def _records(built, name, split):
    """{clip id: record} of a built split, read through `tfds.data_source`."""
    examples = tfds.data_source(f"{name}/{CONFIG_NAME}", split=split, data_dir=built.data_dir,
                                download=False)
    out = {}
    for example in examples:
        record = records.decode_record(example["record"])
        assert example["clip_id"].decode() == record.clip_id
        out[record.clip_id] = record
    return out


def test_msrvtt_splits_hold_the_decodable_clips(built):
    info = tfds.builder(f"msrvtt_records/{CONFIG_NAME}", data_dir=built.data_dir).info
    # 'val' has no videos here, and TFDS cannot hold an empty split.
    assert set(info.splits) == {"train", "test", "1k-A", "9k"}
    assert sorted(_records(built, "msrvtt_records", "train")) == ["video0", "video1"]
    assert list(_records(built, "msrvtt_records", "1k-A")) == ["video2"]
    # 9k: the JSON's videos outside the 1k-A list (video3 cannot be decoded), with all
    # their captions, from every official split.
    nine_k = _records(built, "msrvtt_records", "9k")
    assert sorted(nine_k) == ["video0", "video1"]
    assert nine_k["video0"].captions == MSRVTT_VIDEOS["video0"][1]
    test = _records(built, "msrvtt_records", "test")["video2"]
    config = built.config
    assert test.captions == MSRVTT_VIDEOS["video2"][1]
    assert test.text_ids.shape == (2, config.text.max_len)
    assert len(test.frames) == len(test.frame_times) == config.video.stored_frames
    assert test.spectrogram.shape == (config.audio.frames, config.audio.bins)
    assert test.spectrogram.dtype == np.float16
    assert json.loads(info.config_description.removeprefix("Records made with "))[
        "frames"] == {"stored_frames": config.video.stored_frames,
                      "stored_short_side": config.video.stored_short_side}


@pytest.mark.parametrize("files, splits", [
    (["videodatainfo.json", "MSRVTT_JSFUSION_test.csv"], {"1k-A", "9k"}),
    (["videodatainfo.json", "MSRVTT_train.9k.csv"], {"9k"}),
    (["train_val_videodatainfo.json", "test_videodatainfo.json", "MSRVTT_train.9k.csv",
      "MSRVTT_JSFUSION_test.csv"], {"1k-A", "9k"}),
    # 2017's files hold test videos beyond the 10,000: 9k needs the list there.
    (["train_val_videodatainfo.json", "test_videodatainfo.json",
      "MSRVTT_JSFUSION_test.csv"], {"1k-A"}),
    (["videodatainfo.json"], set()),
])
def test_msrvtt_splits_beside_the_official_ones(built, tmp_path, files, splits):
    for name in files:
        (tmp_path / name).touch()
    builder = MsrvttRecords(data_dir=tmp_path / "data",
                            config=RecordsConfig(name=CONFIG_NAME, run_config=built.config))
    found = builder._annotation_files(str(tmp_path))
    assert found.keys() == {"train", "val", "test"} | splits
    if "9k" in splits:
        assert found["9k"] == str(tmp_path)  # the adapter reads 9k from the folder


def test_undecodable_clip_is_skipped_and_logged(built):
    skipped = sorted(m for m in built.warnings if "video3" in m)
    # Once in each split that holds it.
    assert [m.split(": skipped")[0] for m in skipped] == ["msrvtt_records/9k",
                                                           "msrvtt_records/train"], skipped
    assert "video3" not in _records(built, "msrvtt_records", "train")


def test_records_are_those_of_the_preparation(built):
    output = built.root / "prepared"
    manifest = prepare.prepare_split(
        built.config, "msrvtt", str(built.msrvtt_dir), str(built.msrvtt_dir / "videos"),
        str(output), "train", progress=False)
    prepared = {}
    for path in manifest.shard_paths(output / "train"):
        reader = array_record_module.ArrayRecordReader(path)
        prepared.update((records.decode_record(data).clip_id, data) for data in reader.read_all())
        reader.close()
    examples = tfds.data_source(f"msrvtt_records/{CONFIG_NAME}", split="train",
                                data_dir=built.data_dir, download=False)
    assert {e["clip_id"].decode(): e["record"] for e in examples} == prepared


def test_audiocaps_records_carry_audio_and_text(built):
    train = _records(built, "audiocaps_records", "train")
    assert sorted(train) == ["abc_30", "def_0"]
    test = _records(built, "audiocaps_records", "test")["ghi_10"]
    config = built.config
    assert test.captions == [row[2] for row in AUDIOCAPS_ROWS["test"]]
    assert test.text_ids.shape == (2, config.text.max_len)
    assert test.frames is None and not test.has_video
    assert test.spectrogram.shape == (config.audio.frames, config.audio.bins)
    with pytest.raises(ValueError, match="val"):
        tfds_records_source(f"audiocaps_records/{CONFIG_NAME}", "val", built.data_dir)


@pytest.mark.parametrize("name, modalities", [("msrvtt_records", "avt"),
                                              ("audiocaps_records", "at")])
def test_records_source_feeds_grain_and_the_preprocessor(built, name, modalities):
    source = tfds_records_source(f"{name}/{CONFIG_NAME}", "train", built.data_dir)
    assert len(source) == 2
    records.decode_record(source[1])
    config = built.config
    dataset = grain.MapDataset.source(source).random_map(
        pipeline.Preprocessor(config, modalities, training=True), seed=0)
    example = dataset[0]
    if "v" in modalities:
        v = config.video
        canvas = v.stored_short_side  # the crop, resized on the device
        assert example["video"].shape == (v.num_frames, canvas, canvas, 3)
        assert example["video_crop"].shape == (2,)
    assert example["audio"].shape == (config.audio.frames, config.audio.bins)
    assert example["text_ids"].shape == example["text_mask"].shape == (config.text.max_len,)


def test_nothing_imported_tensorflow(built):
    del built  # Built and read by then.
    assert "tensorflow" not in sys.modules


def test_a_tokenizer_trained_at_preparation_is_refused():
    with pytest.raises(ValueError, match="tokenizer='train' is not supported"):
        RecordsConfig(name="tiny", run_config=load_config())
