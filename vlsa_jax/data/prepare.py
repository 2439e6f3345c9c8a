r"""Prepares a dataset split: annotations + media -> ArrayRecord shards + manifest.

    python -m vlsa_jax.data.prepare --dataset=msrvtt --annotations=videodatainfo.json \
        --media_dir=videos/ --output_dir=data/msrvtt --split=train \
        --config=configs/pretrain.py --num_workers=8

Clips are sorted by id and cut into fixed shards, so a re-run skips the shards that
are finished and never writes a clip twice. Each shard's sidecar and the manifest
record a fingerprint of the inputs (the annotations' sha256 and the preparation
parameters); a re-run with other inputs is refused, naming what differs, unless
`--overwrite` rebuilds the split. A clip that cannot be used (undecodable media, a
caption that is not UTF-8, a path that leads out of the media folder) is skipped and
listed in the manifest with its reason; nothing is zero-filled.

Exit status: 0 when every clip was written, 3 when some failed, 1 when none was
written, 2 when the inputs were refused (a missing file, a split without clips,
changed inputs): then stderr holds one line, `error: ...` (`--debug` shows the
traceback instead).
"""
import collections
import dataclasses
import functools
import glob
import hashlib
import json
import os
import pathlib
import sys
import time
from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np
import tqdm
from absl import app, flags, logging
from array_record.python import array_record_module
from ml_collections import config_flags

from vlsa_jax import cli
from vlsa_jax.data import media, records
from vlsa_jax.data import tokenizer as tokenizer_lib
from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.data.datasets import common, get_adapter
from vlsa_jax.data.processes import worker_pool

TOKENIZER_DIR = "tokenizer"
_STAGES = ("decode", "spectrogram", "jpeg", "tokenize", "write")
CAPTION_ERRORS = ("strict", "replace")
# What bad inputs raise (a missing file, annotations or a split the adapter refuses,
# changed inputs, a tokenizer that cannot be loaded): the command prints one line.


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
    caption_errors: str = "strict"  # a caption that is not UTF-8: one of CAPTION_ERRORS
    allow_outside_media_dir: bool = False  # may a clip's path lead out of media_dir

    def __post_init__(self):
        if self.caption_errors not in CAPTION_ERRORS:
            raise ValueError(f"caption_errors={self.caption_errors!r} is not one of "
                             f"{', '.join(CAPTION_ERRORS)}")

    @classmethod
    def from_config(cls, config, media_dir, modalities: str, tokenizer: str,
                    missing_audio: str, *, caption_errors: str = "strict",
                    allow_outside_media_dir: bool = False) -> "PrepareOptions":
        return cls(
            media_dir=str(media_dir), modalities=modalities, tokenizer=tokenizer,
            max_len=config.text.max_len, stored_frames=config.video.stored_frames,
            stored_short_side=config.video.stored_short_side, audio=config.audio.to_dict(),
            missing_audio=missing_audio, caption_errors=caption_errors,
            allow_outside_media_dir=allow_outside_media_dir)


def prepare_split(config, dataset: str, annotations: str, media_dir: str, output_dir: str,
                  split: str, *, num_workers: int = 1, tokenizer: str | None = None,
                  missing_audio: str = "error", clips_per_shard: int = 256,
                  progress: bool = True, overwrite: bool = False,
                  caption_errors: str = "strict",
                  allow_outside_media_dir: bool = False) -> records.Manifest:
    """Writes `output_dir/split/` (shards and manifest) and returns its manifest.

    Args:
      config: the run config (its text, video and audio sections).
      dataset: the adapter's name (vlsa_jax.data.datasets).
      annotations: the annotation file (or folder) the adapter reads.
      media_dir: the folder the clips' media paths are relative to.
      output_dir: the split goes to `output_dir/split/`.
      split: the split to prepare.
      num_workers: processes that write shards.
      tokenizer: overrides config.text.tokenizer: a name, a directory or 'train'.
      missing_audio: a clip without an audio stream: 'error' skips it, 'silence'
        keeps it with silence.
      clips_per_shard: clips per ArrayRecord shard.
      progress: whether to show a progress bar.
      overwrite: remove the split's shards and manifest first and prepare it anew;
        without it, a split prepared from other inputs is refused.
      caption_errors: a caption that is not UTF-8: 'strict' skips its clip (a
        failure), 'replace' keeps it with U+FFFD for each invalid byte and logs a
        warning.
      allow_outside_media_dir: accept paths that lead out of media_dir (absolute
        ones elsewhere, or '..'); without it such clips fail.

    Returns:
      The split's manifest (also saved in the split folder).

    Raises:
      FileNotFoundError: `annotations` or `media_dir` does not exist.
      ValueError: the split has no clips (nothing is written), the split folder
        holds records of other inputs and `overwrite` is False, or the adapter
        refuses the annotations.
      tokenizer_lib.TokenizerError: the tokenizer cannot be loaded or does not fit.
    """
    _check_inputs_exist(annotations, media_dir)
    adapter = get_adapter(dataset)
    clips = sorted(adapter.read(annotations, media_dir, split), key=lambda c: c.clip_id)
    if not clips:
        raise ValueError(f"{annotations}: split {split!r} has no clips; nothing written")
    output = pathlib.Path(output_dir)
    split_dir = output / split

    tok_name = _resolve_tokenizer(tokenizer or config.text.tokenizer, clips, output, config,
                                  caption_errors)
    tok = tokenizer_lib.load_tokenizer(tok_name)
    tokenizer_lib.check_compatible(tok, config.text)

    options = PrepareOptions.from_config(
        config, media_dir, adapter.modalities, tok_name, missing_audio,
        caption_errors=caption_errors, allow_outside_media_dir=allow_outside_media_dir)
    fingerprint = _fingerprint(annotations, dataset, split, options, clips_per_shard)
    if overwrite:
        _remove_split(split_dir, split)
    else:
        _check_fingerprints(split_dir, split, fingerprint)
    split_dir.mkdir(parents=True, exist_ok=True)

    num_shards = -(-len(clips) // clips_per_shard)
    jobs = [(str(split_dir / f"{split}-{i:05d}-of-{num_shards:05d}{records.SHARD_SUFFIX}"),
             clips[i * clips_per_shard:(i + 1) * clips_per_shard], options, fingerprint)
            for i in range(num_shards)]
    _write_shards(jobs, num_workers, progress, f"{dataset}/{split}")

    manifest = _manifest(dataset, split, adapter.modalities, jobs, tok, tok_name, output,
                         config, fingerprint)
    manifest.save(split_dir)
    return manifest


def _check_inputs_exist(annotations: str, media_dir: str) -> None:
    """Raises FileNotFoundError, naming the path, if either input is missing."""
    if not os.path.exists(annotations):
        raise FileNotFoundError(f"annotations not found: {annotations}")
    if not os.path.isdir(media_dir):
        raise FileNotFoundError(f"media_dir not found (no such folder): {media_dir}")


def _resolve_tokenizer(spec: str, clips: Sequence[ClipAnnotation], output: pathlib.Path,
                       config, caption_errors: str) -> str:
    """'train' -> the WordPiece beside the records (trained on these captions if absent).

    Captions that are not UTF-8 are left out under caption_errors='strict' (their
    clips fail) and trained on with U+FFFD under 'replace'.
    """
    if spec != "train":
        return spec
    directory = output / TOKENIZER_DIR
    if not (directory / "tokenizer.json").exists():
        captions = []
        for clip in clips:
            try:
                captions += _checked_captions(clip, caption_errors)
            except media.MediaError:
                continue
        logging.info("training a WordPiece of %d words on %d captions",
                     config.text.vocab_size, len(captions))
        tokenizer_lib.train_wordpiece(captions, config.text.vocab_size, directory)
    return str(directory)


def _fingerprint(annotations: str, dataset: str, split: str, options: PrepareOptions,
                 clips_per_shard: int) -> dict:
    """What the split's shards depend on: the annotations' bytes and every parameter."""
    frontend = media.frontend_parameters(ml_collections.ConfigDict(options.audio))
    parameters = {
        "dataset": dataset, "split": split, "modalities": options.modalities,
        "media_dir": os.path.abspath(options.media_dir),
        **{f"audio.{name}": value for name, value in frontend.items()},
        "video.stored_frames": options.stored_frames,
        "video.stored_short_side": options.stored_short_side,
        "text.max_len": options.max_len, "tokenizer": _tokenizer_identity(options.tokenizer),
        "missing_audio": options.missing_audio, "caption_errors": options.caption_errors,
        "allow_outside_media_dir": options.allow_outside_media_dir,
        "clips_per_shard": clips_per_shard,
    }
    return {"annotations_sha256": _sha256(annotations), "parameters": parameters}


def _tokenizer_identity(name_or_path: str) -> str:
    """A tokenizer directory's content hash ('sha256:...'), or the hub name."""
    return f"sha256:{_sha256(name_or_path)}" if os.path.isdir(name_or_path) else name_or_path


def _sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes; of a folder, of its files' names and bytes.

    A folder's subfolders are not read (an MSR-VTT folder holds its videos/).
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(f"{file.name}\0{_sha256(file)}\0".encode())
    return digest.hexdigest()


def _check_fingerprints(split_dir: pathlib.Path, split: str, fingerprint: dict) -> None:
    """Refuses to add to a split folder whose shards or manifest other inputs made.

    Raises:
      ValueError: one line naming what differs and saying to pass --overwrite.
    """
    for recorded in _recorded_fingerprints(split_dir, split):
        differences = _differences(recorded, fingerprint)
        if differences:
            raise ValueError(f"{split_dir} holds records prepared from other inputs "
                             f"({'; '.join(differences)}); pass --overwrite to rebuild "
                             "the split")


def _recorded_fingerprints(split_dir: pathlib.Path, split: str) -> list[dict | None]:
    """The fingerprints of the finished shards' sidecars and of the manifest, if any."""
    sidecars = sorted(split_dir.glob(f"{glob.escape(split)}-*{records.SHARD_SUFFIX}.json"))
    found = [json.loads(path.read_text()).get("fingerprint") for path in sidecars]
    if (split_dir / records.MANIFEST).exists():
        found.append(records.Manifest.load(split_dir).fingerprint)
    return found


def _differences(recorded: dict | None, wanted: dict) -> list[str]:
    """What differs between two fingerprints, in words; empty when they agree."""
    if recorded is None:
        return ["no fingerprint recorded: made by an older version"]
    found = []
    if recorded["annotations_sha256"] != wanted["annotations_sha256"]:
        found.append("annotations differ")
    old, new = recorded["parameters"], wanted["parameters"]
    changed = [f"{name} {old.get(name)!r} -> {new.get(name)!r}"
               for name in [*new, *(name for name in old if name not in new)]
               if old.get(name) != new.get(name)]
    if changed:
        found.append(f"parameters differ: {', '.join(changed)}")
    return found


def _remove_split(split_dir: pathlib.Path, split: str) -> None:
    """Removes the split's manifest and shards (with sidecars and partial files) only."""
    shards = split_dir.glob(f"{glob.escape(split)}-*{records.SHARD_SUFFIX}*")
    removed = [path for path in [split_dir / records.MANIFEST, *shards] if path.exists()]
    for path in removed:
        path.unlink()
    if removed:
        logging.info("%s: removed %d files of an earlier preparation (overwrite)", split_dir,
                     len(removed))


def _write_shards(jobs: list[tuple], num_workers: int, progress: bool, name: str) -> None:
    """Writes the shards that are not finished, showing clips done of the split's total."""
    todo = [job for job in jobs if not _shard_done(job[0])]
    total = sum(len(job[1]) for job in jobs)
    to_write = sum(len(job[1]) for job in todo)
    logging.info("%s: %d clips in %d shards; %d shards (%d clips) to write", name, total,
                 len(jobs), len(todo), to_write)
    with tqdm.tqdm(total=total, initial=total - to_write, desc=name, unit="clip",
                   disable=not progress) as bar:
        if num_workers > 1 and len(todo) > 1:
            with worker_pool(num_workers) as pool:
                for written in pool.imap_unordered(_write_shard, todo):
                    bar.update(written)
        else:
            for job in todo:
                bar.update(_write_shard(job))


def _shard_done(shard_path: str) -> bool:
    return os.path.exists(shard_path) and os.path.exists(shard_path + ".json")


# One tokenizer per worker process and name, loaded on first use.
worker_tokenizer = functools.cache(tokenizer_lib.load_tokenizer)


def _write_shard(job) -> int:
    """Writes one shard and its sidecar; returns the number of clips in the shard.

    The sidecar holds the ids written, the failures, the timings, the spectrogram
    moments and the inputs' fingerprint.
    """
    shard_path, clips, options, fingerprint = job
    tok = worker_tokenizer(options.tokenizer)
    timings = dict.fromkeys(_STAGES, 0.0)
    written, failures = [], []
    moments = [0, 0.0, 0.0]  # count, sum and sum of squares of spectrogram values
    writer = array_record_module.ArrayRecordWriter(
        # Uncompressed: JPEG frames and float16 spectrograms barely compress (4.5%),
        # and random reads then cost less than half as much.
        shard_path + ".tmp", "group_size:1,uncompressed")
    for clip, record in _records_in_order(clips, options, tok, timings):
        if isinstance(record, media.MediaError):
            failures.append({"id": clip.clip_id, "reason": str(record)})
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
               "spectrogram_moments": moments, "fingerprint": fingerprint}
    pathlib.Path(shard_path + ".json.tmp").write_text(json.dumps(sidecar))
    # The sidecar lands last: a shard without one is redone on the next run.
    os.replace(shard_path + ".tmp", shard_path)
    os.replace(shard_path + ".json.tmp", shard_path + ".json")
    return len(clips)


def _records_in_order(clips: Sequence[ClipAnnotation], options: PrepareOptions, tok,
                      timings: dict[str, float]):
    """(clip, its record or the MediaError of its failure) for each clip, in order.

    Clips that cut spans from one media file (the same path) are made together by
    `make_records`, which decodes the file once, when the first of them comes up; the
    records of the others wait for their turn as records (JPEG frames), not as
    decoded frames.
    """
    by_path = collections.defaultdict(list)
    for index, clip in enumerate(clips):
        by_path[clip.path].append(index)
    made = {}  # index into clips -> record or MediaError, made ahead of its turn
    for index, clip in enumerate(clips):
        if index not in made:
            group = by_path[clip.path]
            for position, result in make_records([clips[i] for i in group], options, tok,
                                                 timings):
                made[group[position]] = result
        yield clip, made.pop(index)


def make_record(clip: ClipAnnotation, options: PrepareOptions, tok,
                timings: dict[str, float]) -> records.ClipRecord:
    """Decodes one clip into a record; adds each stage's seconds to `timings`.

    Raises:
      media.MediaError: the clip cannot be used (the reason says why): its media, a
        caption that is not UTF-8 under caption_errors='strict', an id or path that
        is not UTF-8, or a path that leads out of the media folder.
    """
    [(_, record)] = make_records([clip], options, tok, timings)
    if isinstance(record, media.MediaError):
        raise record
    return record


def make_records(clips: Sequence[ClipAnnotation], options: PrepareOptions, tok,
                 timings: dict[str, float]
                 ) -> Iterator[tuple[int, records.ClipRecord | media.MediaError]]:
    """Records of clips that cut spans from one media file, decoding the file once.

    Each record is the one `make_record` makes of its clip alone; the file is decoded
    in one pass for all of them (media.decode_spans). Adds each stage's seconds to
    `timings`.

    Args:
      clips: clips with the same `path`.
      options, tok, timings: as `make_record`.

    Yields:
      (index into clips, its record or the MediaError that says why it cannot be
      used, as make_record raises it), once for every clip, as they are made.

    Raises:
      ValueError: the clips do not share one path.
    """
    if len({clip.path for clip in clips}) > 1:
        raise ValueError(f"clips of several media files: {sorted({c.path for c in clips})}")
    usable = []  # (index, clip, checked captions)
    for index, clip in enumerate(clips):
        try:
            path = _media_path(clip, options)
            captions = _checked_captions(clip, options.caption_errors)
        except media.MediaError as error:
            yield index, error
            continue
        if captions != clip.captions:
            logging.warning("%s: %s; replaced with U+FFFD (caption_errors=replace)",
                            clip.clip_id, "; ".join(_utf8_errors(clip.captions)))
        usable.append((index, clip, captions))
    if not usable:
        return
    audio_config = ml_collections.ConfigDict(options.audio)
    spans = media.decode_spans(
        str(path), [(clip.start, clip.end) for _, clip, _ in usable],
        num_frames=options.stored_frames, short_side=options.stored_short_side,
        sample_rate=audio_config.sample_rate, clip_samples=audio_config.clip_samples,
        need_video="v" in options.modalities, need_audio="a" in options.modalities,
        missing_audio=options.missing_audio)
    for position, decoded in _timed(spans, timings, "decode"):
        index, clip, captions = usable[position]
        if isinstance(decoded, media.MediaError):
            yield index, decoded
        else:
            yield index, _record(clip, captions, decoded, options, audio_config, tok, timings)


def _timed(iterator: Iterator, timings: dict[str, float], stage: str) -> Iterator:
    """Yields what `iterator` yields, adding the seconds spent in it to timings[stage]."""
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        finally:
            timings[stage] += time.perf_counter() - start
        yield item


def _record(clip: ClipAnnotation, captions: tuple[str, ...], decoded: media.DecodedClip,
            options: PrepareOptions, audio_config, tok,
            timings: dict[str, float]) -> records.ClipRecord:
    """The record of a decoded clip: spectrogram, JPEG frames and token ids."""
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
    if "t" in options.modalities and captions:
        text_ids, text_mask = tokenizer_lib.encode_captions(tok, captions, options.max_len)
    timings["tokenize"] += time.perf_counter() - start

    return records.ClipRecord(
        clip_id=clip.clip_id, source=clip.path, start=clip.start, end=clip.end,
        captions=list(captions), text_ids=text_ids, text_mask=text_mask, frames=frames,
        frame_times=None if frames is None else [float(t) for t in decoded.frame_times],
        spectrogram=spectrogram,
        audio_valid=None if spectrogram is None else tuple(decoded.audio_valid))


def _media_path(clip: ClipAnnotation, options: PrepareOptions) -> pathlib.Path:
    """The clip's media file, after checking its id and path.

    The path is normalised lexically ('a/../b' is 'b', wherever 'a' links to), so
    the file checked is the file opened; links in the folder are followed as usual.

    Raises:
      media.MediaError: the id or path is not UTF-8, the path leads out of the media
        folder (unless options.allow_outside_media_dir), or the file does not exist.
    """
    for what, text in (("clip id", clip.clip_id), ("path", clip.path)):
        if problem := common.utf8_error(text):
            raise media.MediaError(f"{what} {text!r}: {problem}")
    root = os.path.abspath(options.media_dir)
    path = os.path.abspath(os.path.join(root, clip.path))
    if not options.allow_outside_media_dir and os.path.commonpath([root, path]) != root:
        raise media.MediaError(f"path {clip.path!r} leads out of the media folder "
                               "(--allow_outside_media_dir allows it)")
    if not os.path.exists(path):
        raise media.MediaError(f"file not found: {clip.path}")
    return pathlib.Path(path)


def _checked_captions(clip: ClipAnnotation, caption_errors: str) -> tuple[str, ...]:
    """The clip's captions, with bytes that are not UTF-8 replaced by U+FFFD if allowed.

    Args:
      clip: as an adapter read it (invalid bytes kept as surrogate escapes).
      caption_errors: 'strict' or 'replace'.

    Raises:
      media.MediaError: a caption is not UTF-8 and caption_errors is 'strict'.
    """
    errors = _utf8_errors(clip.captions)
    if errors and caption_errors == "strict":
        raise media.MediaError(f"{errors[0]} (--caption_errors=replace keeps it)")
    return tuple(common.replace_invalid_utf8(caption) for caption in clip.captions)


def _utf8_errors(captions: Sequence[str]) -> list[str]:
    """'caption N: <what is not UTF-8>' for each caption that is not UTF-8."""
    return [f"caption {number}: {problem}" for number, caption in enumerate(captions, start=1)
            if (problem := common.utf8_error(caption))]


def _manifest(dataset, split, modalities, jobs, tok, tok_name, output, config, fingerprint):
    shards, failures, timings, num_clips = [], [], dict.fromkeys(_STAGES, 0.0), 0
    moments = np.zeros(3)
    for shard_path, *_ in jobs:
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
        failures=failures, fingerprint=fingerprint)


FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    manifest = prepare_split(
        FLAGS.config, FLAGS.dataset, FLAGS.annotations, FLAGS.media_dir, FLAGS.output_dir,
        FLAGS.split, num_workers=FLAGS.num_workers, tokenizer=FLAGS.tokenizer,
        missing_audio=FLAGS.missing_audio, clips_per_shard=FLAGS.clips_per_shard,
        overwrite=FLAGS.overwrite, caption_errors=FLAGS.caption_errors,
        allow_outside_media_dir=FLAGS.allow_outside_media_dir)
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
    flags.DEFINE_bool("overwrite", False,
                      "Remove the split's shards and manifest first and prepare it anew "
                      "(needed when the annotations or parameters changed).")
    flags.DEFINE_enum("caption_errors", "strict", list(CAPTION_ERRORS),
                      "A caption that is not UTF-8: skip its clip ('strict') or replace "
                      "each invalid byte with U+FFFD and warn ('replace').")
    flags.DEFINE_bool("allow_outside_media_dir", False,
                      "Accept media paths that lead out of --media_dir (absolute paths "
                      "elsewhere, '..').")
    flags.mark_flags_as_required(["dataset", "annotations", "media_dir", "output_dir", "split"])
    cli.run(main)
