r"""Prepares a dataset split: annotations + media -> ArrayRecord shards + manifest.

    python -m vlsa_jax.data.prepare --dataset=msrvtt --annotations=videodatainfo.json \
        --media_dir=videos/ --output_dir=data/msrvtt --split=train \
        --config=configs/pretrain.py --num_workers=8

Clips are sorted by id and cut into fixed shards, so a re-run skips the shards that
are finished and never writes a clip twice. A clip that cannot be decoded is skipped
and listed in the manifest with its reason; nothing is zero-filled. Exit status: 0
when every clip was written, 3 when some failed, 1 when none was written.
"""
import dataclasses
import functools
import json
import os
import pathlib
import sys
import time
from collections.abc import Sequence

import ml_collections
import numpy as np
import tqdm
from absl import app, flags, logging
from array_record.python import array_record_module
from ml_collections import config_flags

from vlsa_jax.data import media, records
from vlsa_jax.data import tokenizer as tokenizer_lib
from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.data.datasets import get_adapter
from vlsa_jax.data.processes import worker_pool

TOKENIZER_DIR = "tokenizer"
_STAGES = ("decode", "spectrogram", "jpeg", "tokenize", "write")


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """Everything a worker needs to turn clips into records (picklable)."""

    media_dir: str
    modalities: str
    tokenizer: str  # a name or a directory load_tokenizer accepts
    max_len: int
    stored_frames: int
    stored_short_side: int
    audio: dict  # the config's audio section
    missing_audio: str

    @classmethod
    def from_config(cls, config, media_dir, modalities: str, tokenizer: str,
                    missing_audio: str) -> "PrepareOptions":
        return cls(
            media_dir=str(media_dir), modalities=modalities, tokenizer=tokenizer,
            max_len=config.text.max_len, stored_frames=config.video.stored_frames,
            stored_short_side=config.video.stored_short_side, audio=config.audio.to_dict(),
            missing_audio=missing_audio)


def prepare_split(config, dataset: str, annotations: str, media_dir: str, output_dir: str,
                  split: str, *, num_workers: int = 1, tokenizer: str | None = None,
                  missing_audio: str = "error", clips_per_shard: int = 256,
                  progress: bool = True) -> records.Manifest:
    """Writes `output_dir/split/` (shards and manifest) and returns its manifest."""
    adapter = get_adapter(dataset)
    clips = sorted(adapter.read(annotations, media_dir, split), key=lambda c: c.clip_id)
    output = pathlib.Path(output_dir)
    split_dir = output / split
    split_dir.mkdir(parents=True, exist_ok=True)

    tok_name = _resolve_tokenizer(tokenizer or config.text.tokenizer, clips, output, config)
    tok = tokenizer_lib.load_tokenizer(tok_name)
    tokenizer_lib.check_compatible(tok, config.text)

    options = PrepareOptions.from_config(
        config, media_dir, adapter.modalities, tok_name, missing_audio)
    num_shards = max(1, -(-len(clips) // clips_per_shard))
    jobs = [(str(split_dir / f"{split}-{i:05d}-of-{num_shards:05d}{records.SHARD_SUFFIX}"),
             clips[i * clips_per_shard:(i + 1) * clips_per_shard], options)
            for i in range(num_shards)]
    todo = [job for job in jobs if not _shard_done(job[0])]
    logging.info("%s/%s: %d clips in %d shards, %d to write", dataset, split, len(clips),
                 num_shards, len(todo))
    bar = tqdm.tqdm(total=sum(len(j[1]) for j in todo), unit="clip", disable=not progress)
    if num_workers > 1 and len(todo) > 1:
        with worker_pool(num_workers) as pool:
            for written in pool.imap_unordered(_write_shard, todo):
                bar.update(written)
    else:
        for job in todo:
            bar.update(_write_shard(job))
    bar.close()

    manifest = _manifest(dataset, split, adapter.modalities, jobs, tok, tok_name, output, config)
    manifest.save(split_dir)
    return manifest


def _resolve_tokenizer(spec: str, clips: Sequence[ClipAnnotation], output: pathlib.Path,
                       config) -> str:
    """'train' -> the WordPiece beside the records (trained on these captions if absent)."""
    if spec != "train":
        return spec
    directory = output / TOKENIZER_DIR
    if not (directory / "tokenizer.json").exists():
        captions = [c for clip in clips for c in clip.captions]
        logging.info("training a WordPiece of %d words on %d captions",
                     config.text.vocab_size, len(captions))
        tokenizer_lib.train_wordpiece(captions, config.text.vocab_size, directory)
    return str(directory)


def _shard_done(shard_path: str) -> bool:
    return os.path.exists(shard_path) and os.path.exists(shard_path + ".json")


# One tokenizer per worker process and name, loaded on first use.
worker_tokenizer = functools.cache(tokenizer_lib.load_tokenizer)


def _write_shard(job) -> int:
    """Writes one shard and its sidecar (ids written, failures, timings); returns #clips."""
    shard_path, clips, options = job
    tok = worker_tokenizer(options.tokenizer)
    timings = dict.fromkeys(_STAGES, 0.0)
    written, failures = [], []
    moments = [0, 0.0, 0.0]  # count, sum and sum of squares of spectrogram values
    writer = array_record_module.ArrayRecordWriter(
        # Uncompressed: JPEG frames and float16 spectrograms barely compress (4.5%),
        # and random reads then cost less than half as much.
        shard_path + ".tmp", "group_size:1,uncompressed")
    for clip in clips:
        try:
            record = make_record(clip, options, tok, timings)
        except media.MediaError as error:
            failures.append({"id": clip.clip_id, "reason": str(error)})
            continue
        if record.spectrogram is not None:
            values = record.spectrogram.astype(np.float64)
            moments = [moments[0] + values.size, moments[1] + values.sum(),
                       moments[2] + np.square(values).sum()]
        start = time.perf_counter()
        writer.write(records.encode_record(record))
        timings["write"] += time.perf_counter() - start
        written.append(clip.clip_id)
    writer.close()
    sidecar = {"clip_ids": written, "failures": failures, "timings": timings,
               "spectrogram_moments": moments}
    pathlib.Path(shard_path + ".json.tmp").write_text(json.dumps(sidecar))
    # The sidecar lands last: a shard without one is redone on the next run.
    os.replace(shard_path + ".tmp", shard_path)
    os.replace(shard_path + ".json.tmp", shard_path + ".json")
    return len(clips)


def make_record(clip: ClipAnnotation, options: PrepareOptions, tok,
                timings: dict[str, float]) -> records.ClipRecord:
    """Decodes one clip into a record; adds each stage's seconds to `timings`.

    Raises:
      media.MediaError: the clip cannot be used (the reason says why).
    """
    path = pathlib.Path(options.media_dir) / clip.path
    if not path.exists():
        raise media.MediaError(f"file not found: {clip.path}")
    audio_config = ml_collections.ConfigDict(options.audio)

    start = time.perf_counter()
    decoded = media.decode_clip(
        str(path), clip.start, clip.end, num_frames=options.stored_frames,
        short_side=options.stored_short_side, sample_rate=audio_config.sample_rate,
        clip_samples=audio_config.clip_samples, need_video="v" in options.modalities,
        need_audio="a" in options.modalities, missing_audio=options.missing_audio)
    timings["decode"] += time.perf_counter() - start

    start = time.perf_counter()
    spectrogram = None
    if "a" in options.modalities and decoded.audio is not None:
        spectrogram = media.spectrogram(decoded.audio, audio_config).astype(np.float16)
    timings["spectrogram"] += time.perf_counter() - start

    start = time.perf_counter()
    frames = None
    if "v" in options.modalities and decoded.frames is not None:
        frames = [records.encode_jpeg(frame) for frame in decoded.frames]
    timings["jpeg"] += time.perf_counter() - start

    start = time.perf_counter()
    text_ids = text_mask = None
    if "t" in options.modalities and clip.captions:
        text_ids, text_mask = tokenizer_lib.encode_captions(tok, clip.captions, options.max_len)
    timings["tokenize"] += time.perf_counter() - start

    return records.ClipRecord(
        clip_id=clip.clip_id, source=clip.path, start=clip.start, end=clip.end,
        captions=list(clip.captions), text_ids=text_ids, text_mask=text_mask, frames=frames,
        frame_times=None if frames is None else [float(t) for t in decoded.frame_times],
        spectrogram=spectrogram,
        audio_valid=None if spectrogram is None else tuple(decoded.audio_valid))


def _manifest(dataset, split, modalities, jobs, tok, tok_name, output, config):
    shards, failures, timings, num_clips = [], [], dict.fromkeys(_STAGES, 0.0), 0
    moments = np.zeros(3)
    for shard_path, _, _ in jobs:
        sidecar = json.loads(pathlib.Path(shard_path + ".json").read_text())
        failures += sidecar["failures"]
        moments += sidecar["spectrogram_moments"]
        for stage, seconds in sidecar["timings"].items():
            timings[stage] += seconds
        if sidecar["clip_ids"]:
            shards.append({"file": os.path.basename(shard_path),
                           "num_records": len(sidecar["clip_ids"])})
            num_clips += len(sidecar["clip_ids"])
    name = os.path.relpath(tok_name, output) if os.path.isdir(tok_name) else tok_name
    count = max(moments[0], 1)
    mean = moments[1] / count
    std = float(np.sqrt(max(moments[2] / count - mean**2, 0.0)))
    return records.Manifest(
        dataset=dataset, split=split, modalities=modalities, num_clips=num_clips,
        num_failed=len(failures), frontend=media.frontend_parameters(config.audio),
        frames={"stored_frames": config.video.stored_frames,
                "stored_short_side": config.video.stored_short_side},
        tokenizer={"name_or_path": name, "vocab_size": len(tok), "max_len": config.text.max_len,
                   **tokenizer_lib.special_token_ids(tok)},
        shards=shards, timings={k: round(v, 3) for k, v in timings.items()},
        spectrogram_stats={"mean": round(float(mean), 4), "std": round(std, 4)},
        failures=failures)


FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    manifest = prepare_split(
        FLAGS.config, FLAGS.dataset, FLAGS.annotations, FLAGS.media_dir, FLAGS.output_dir,
        FLAGS.split, num_workers=FLAGS.num_workers, tokenizer=FLAGS.tokenizer,
        missing_audio=FLAGS.missing_audio, clips_per_shard=FLAGS.clips_per_shard)
    for failure in manifest.failures:
        print(f"failed: {failure['id']}: {failure['reason']}", file=sys.stderr)
    print(f"{manifest.dataset}/{manifest.split}: wrote {manifest.num_clips} clips, "
          f"{manifest.num_failed} failed -> {pathlib.Path(FLAGS.output_dir) / manifest.split}")
    if manifest.num_clips == 0:
        sys.exit(1)
    sys.exit(3 if manifest.num_failed else 0)


if __name__ == "__main__":
    config_flags.DEFINE_config_file(
        "config", "configs/pretrain.py", "A get_config(arg) file: path[:key=value,...].",
        lock_config=True)
    flags.DEFINE_string("dataset", None, "Annotation format (vlsa_jax.data.datasets).")
    flags.DEFINE_string("annotations", None, "The dataset's annotation file.")
    flags.DEFINE_string("media_dir", None, "Directory the annotations' media paths are in.")
    flags.DEFINE_string("output_dir", None, "Records go to OUTPUT_DIR/SPLIT/.")
    flags.DEFINE_string("split", None, "Split name (the adapter says which exist).")
    flags.DEFINE_integer("num_workers", max(1, (os.cpu_count() or 1) - 1), "Processes.")
    flags.DEFINE_string("tokenizer", None,
                        "Overrides config.text.tokenizer: a name, a directory, or 'train'.")
    flags.DEFINE_enum("missing_audio", "error", ["error", "silence"],
                      "A clip without an audio stream: skip it ('error') or use silence.")
    flags.DEFINE_integer("clips_per_shard", 256, "Clips per ArrayRecord shard.")
    flags.mark_flags_as_required(["dataset", "annotations", "media_dir", "output_dir", "split"])
    app.run(main)
