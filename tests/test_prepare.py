"""Preparation: real media in, ArrayRecord shards and a manifest out; failures named, resumable,
and inputs checked (changed inputs, empty splits, invalid captions and paths, missing files)."""
import collections
import csv
import hashlib
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from array_record.python import array_record_module

from tests.data_helpers import CAPTIONS, GOOD_CLIPS, prepared_split, write_corpus
from tests.helpers import load_config
from tests.media_fixtures import write_clip, write_truncated
from vlsa_jax import cli
from vlsa_jax.data import media, prepare, records
from vlsa_jax.data.datasets import get_adapter


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
    annotations = (output.parent / "annotations.csv").read_bytes()
    assert manifest.fingerprint["annotations_sha256"] == hashlib.sha256(annotations).hexdigest()
    parameters = manifest.fingerprint["parameters"]
    assert parameters["audio.n_fft"] == config.audio.n_fft
    assert parameters["caption_errors"] == "strict"
    assert parameters["tokenizer"].startswith("sha256:")


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


def _prepare_again(config, tmp_path, **kwargs):
    return prepare.prepare_split(
        config, "generic", str(tmp_path / "annotations.csv"), str(tmp_path / "media"),
        str(tmp_path / "records"), "train", clips_per_shard=2, progress=False, **kwargs)


def test_rerun_with_other_inputs_is_refused_until_overwrite(tmp_path):
    config, _, output = prepared_split(tmp_path, clips_per_shard=2)
    split_dir = output / "train"
    before = {p.name: p.stat().st_mtime_ns for p in split_dir.iterdir()}
    with pytest.raises(ValueError, match=r"parameters differ: missing_audio 'error' -> "
                       r"'silence'.*pass --overwrite"):
        _prepare_again(config, tmp_path, missing_audio="silence")
    annotations = tmp_path / "annotations.csv"
    annotations.write_text("".join(annotations.read_text().splitlines(keepends=True)[:4]))
    with pytest.raises(ValueError, match=r"\(annotations differ\); pass --overwrite"):
        _prepare_again(config, tmp_path)
    os.remove(split_dir / records.MANIFEST)  # as if the run had died: the shards still say
    with pytest.raises(ValueError, match="annotations differ"):
        _prepare_again(config, tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in split_dir.iterdir()} == {
        name: mtime for name, mtime in before.items() if name != records.MANIFEST}

    rebuilt = _prepare_again(config, tmp_path, overwrite=True)
    assert (rebuilt.num_clips, rebuilt.num_failed) == (3, 0)
    shards = [f"train-0000{i}-of-00002{records.SHARD_SUFFIX}" for i in range(2)]
    assert sorted(os.listdir(split_dir)) == sorted(
        [records.MANIFEST, *shards, *(f"{name}.json" for name in shards)])
    assert sorted(_read_all(split_dir, rebuilt)) == list(GOOD_CLIPS[:3])
    mtimes = [os.path.getmtime(p) for p in rebuilt.shard_paths(split_dir)]
    again = _prepare_again(config, tmp_path)  # the same inputs: nothing left to do
    assert again == rebuilt
    assert [os.path.getmtime(p) for p in again.shard_paths(split_dir)] == mtimes


def test_records_of_an_older_version_are_refused(tmp_path):
    config, manifest, output = prepared_split(tmp_path, clips_per_shard=2)
    for path in manifest.shard_paths(output / "train"):
        os.remove(path + ".json")  # left to be redone; the manifest alone says
    manifest.fingerprint = None
    manifest.save(output / "train")
    with pytest.raises(ValueError, match="no fingerprint recorded.*--overwrite"):
        _prepare_again(config, tmp_path)


def test_split_without_clips_writes_nothing(tmp_path):
    annotations = tmp_path / "header_only.csv"
    annotations.write_text("id,path,caption\n")
    (tmp_path / "media").mkdir()
    with pytest.raises(ValueError, match=f"^{annotations}: split 'train' has no clips"):
        prepare.prepare_split(load_config(), "generic", str(annotations),
                              str(tmp_path / "media"), str(tmp_path / "out"), "train",
                              progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_inputs_are_named(tmp_path):
    annotations = write_corpus(tmp_path, bad=False)
    with pytest.raises(FileNotFoundError, match="annotations not found: .*nope.csv"):
        prepare.prepare_split(load_config(), "generic", str(tmp_path / "nope.csv"),
                              str(tmp_path / "media"), str(tmp_path / "out"), "train")
    with pytest.raises(FileNotFoundError, match="media_dir not found.*elsewhere"):
        prepare.prepare_split(load_config(), "generic", str(annotations),
                              str(tmp_path / "elsewhere"), str(tmp_path / "out"), "train")


def _write_faulty_corpus(directory):
    """The good clips, plus a caption with a Latin-1 byte and two paths out of media/."""
    annotations = write_corpus(directory, bad=False)
    outside = shutil.copy(directory / "media" / "clip0.mp4", directory / "outside.mp4")
    with open(annotations, "ab") as f:
        f.write(b"latin1,clip1.mp4,caf\xe9 scene\n"
                b"dotdot,../outside.mp4,up and out\n"
                + f"absolute,{outside},an absolute path\n".encode())
    return annotations


def _prepare_faulty(directory, **kwargs):
    return prepare.prepare_split(
        load_config(), "generic", str(_write_faulty_corpus(directory)),
        str(directory / "media"), str(directory / "out"), "train", progress=False, **kwargs)


def test_invalid_captions_and_outside_paths_fail_per_clip(tmp_path):
    manifest = _prepare_faulty(tmp_path)
    assert manifest.num_clips == len(GOOD_CLIPS)
    reasons = {f["id"]: f["reason"] for f in manifest.failures}
    assert reasons["latin1"] == ("caption 1: byte 0xe9 at character 3 is not UTF-8 "
                                 "(--caption_errors=replace keeps it)")
    assert reasons["dotdot"] == ("path '../outside.mp4' leads out of the media folder "
                                 "(--allow_outside_media_dir allows it)")
    assert "leads out of the media folder" in reasons["absolute"]
    assert manifest.num_failed == 3


def test_caption_errors_replace_and_outside_paths_allowed(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        manifest = _prepare_faulty(tmp_path, caption_errors="replace",
                                   allow_outside_media_dir=True)
    assert (manifest.num_clips, manifest.num_failed) == (len(GOOD_CLIPS) + 3, 0)
    assert manifest.fingerprint["parameters"]["caption_errors"] == "replace"
    written = _read_all(tmp_path / "out" / "train", manifest)
    assert written["latin1"].captions == ["caf\ufffd scene"]
    assert written["dotdot"].source == "../outside.mp4"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["latin1: caption 1: byte 0xe9 at character 3 is not UTF-8; "
                        "replaced with U+FFFD (caption_errors=replace)"]


def test_missing_audio_as_silence_is_an_explicit_option(tmp_path):
    config = load_config()
    annotations = write_corpus(tmp_path)
    manifest = prepare.prepare_split(
        config, "generic", str(annotations), str(tmp_path / "media"), str(tmp_path / "out"),
        "train", progress=False, missing_audio="silence")
    assert "silent_film" not in {f["id"] for f in manifest.failures}
    record = _read_all(tmp_path / "out" / "train", manifest)["silent_film"]
    assert record.audio_valid == (0, 0)


def test_spans_of_one_file_are_decoded_together_into_the_same_records(tmp_path, monkeypatch):
    """Clips cut from one film: one decoding pass per film and shard, and the records
    (bytes and order) and failures that each clip made alone gives."""
    media_dir = tmp_path / "media"
    media_dir.mkdir()
    write_clip(media_dir / "film.mp4", seconds=12.0, fps=10, tone_hz=500.0)
    write_clip(media_dir / "other.mp4", seconds=1.5)
    write_truncated(media_dir / "broken.mp4")
    clips = [("a_film", "film.mp4", 6.0, 8.0), ("b_other", "other.mp4", "", ""),
             ("c_film", "film.mp4", 0.5, 2.5), ("d_film", "film.mp4", 2.0, 4.0),
             ("e_broken", "broken.mp4", 0.0, 0.5), ("f_broken", "broken.mp4", 0.5, 1.0),
             ("g_film", "film.mp4", 30.0, 31.0), ("h_film", "film.mp4", "", "")]
    # The corpus's captions: a WordPiece needs a hundred tokens.
    captions = "|".join(caption for texts in CAPTIONS.values() for caption in texts)
    annotations = tmp_path / "annotations.csv"
    with open(annotations, "w", newline="") as f:
        csv.writer(f).writerows([("id", "path", "captions", "start", "end"),
                                 *((name, path, captions, start, end)
                                   for name, path, start, end in clips)])
    decoded_files = []
    decode_spans = media.decode_spans
    monkeypatch.setattr(media, "decode_spans", lambda path, spans, **kwargs: (
        decoded_files.append(os.path.basename(path)) or decode_spans(path, spans, **kwargs)))

    config = load_config()
    manifest = prepare.prepare_split(
        config, "generic", str(annotations), str(media_dir), str(tmp_path / "out"), "train",
        clips_per_shard=5, progress=False)
    # Shard 0 holds a to e, shard 1 f to h.
    assert decoded_files == ["film.mp4", "other.mp4", "broken.mp4", "broken.mp4", "film.mp4"]
    assert {f["id"]: f["reason"].split(":")[0] for f in manifest.failures} == {
        "e_broken": "truncated or corrupt file", "f_broken": "truncated or corrupt file",
        "g_film": "span starts at 30.000 s, past the end of the file (12.000 s)"}

    split_dir = tmp_path / "out" / "train"
    written = []
    for path in manifest.shard_paths(split_dir):
        reader = array_record_module.ArrayRecordReader(path)
        written += reader.read_all()
        reader.close()
    options = prepare.PrepareOptions.from_config(
        config, media_dir, "avt", str(tmp_path / "out" / manifest.tokenizer["name_or_path"]),
        "error")
    tok = prepare.worker_tokenizer(options.tokenizer)
    alone = []
    for clip in sorted(get_adapter("generic").read(str(annotations), str(media_dir), "train"),
                       key=lambda clip: clip.clip_id):
        try:
            record = prepare.make_record(clip, options, tok, collections.defaultdict(float))
        except media.MediaError:
            continue
        alone.append(records.encode_record(record))
    assert [records.decode_record(r).clip_id for r in written] == [
        "a_film", "b_other", "c_film", "d_film", "h_film"]
    assert written == alone


def _run_cli(annotations, directory, *flags):
    return subprocess.run(
        [sys.executable, "-m", "vlsa_jax.data.prepare", "--dataset=generic",
         f"--annotations={annotations}", f"--media_dir={directory / 'media'}",
         f"--output_dir={directory / 'out'}", "--split=train", "--num_workers=2",
         "--clips_per_shard=3", "--config=configs/pretrain.py:variant=tiny", *flags],
        cwd=os.path.dirname(os.path.dirname(__file__)), capture_output=True, text=True,
        # Without PyTorch, transformers warns on import; the checks are of prepare's output.
        env=dict(os.environ, JAX_PLATFORMS="cpu", TRANSFORMERS_NO_ADVISORY_WARNINGS="1"))


@pytest.mark.slow
def test_cli_reports_counts_and_exit_status(tmp_path):
    annotations = write_corpus(tmp_path)
    result = _run_cli(annotations, tmp_path)
    assert result.returncode == 3, result.stderr[-2000:]
    assert f"wrote {len(GOOD_CLIPS)} clips, 4 failed" in result.stdout
    assert "failed: truncated:" in result.stderr


@pytest.mark.slow
def test_cli_error_is_one_line_unless_debug(tmp_path):
    (tmp_path / "media").mkdir()
    missing = tmp_path / "nope.csv"
    result = _run_cli(missing, tmp_path)
    assert result.returncode == cli.USAGE_ERROR
    assert result.stderr.splitlines() == [
        f"error: FileNotFoundError: annotations not found: {missing}"]
    debug = _run_cli(missing, tmp_path, "--debug")
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr
