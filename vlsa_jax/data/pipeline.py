"""The grain input pipeline: prepared ArrayRecord shards -> host-local training batches.

    records -> shuffle(seed) -> repeat -> this process's shard -> decode the record and
    make its random choices (random_map, seeded per element) -> batch (drop remainder):
    decode and crop the frames into the batch's arrays -> worker processes

The host decodes and crops; the crops travel in square canvases with their side and
flip ('video_crop'), and the model resizes and mirrors them on the device
(models.frames). Every random choice comes from grain's per-element generator, so a
pipeline restored from its saved state continues with exactly the batches it would have
produced. Why the work is split so, and what each stage costs:
docs/performance.md#input-pipeline-and-preparation.
"""
import collections
import dataclasses
import pathlib
import sys
import threading
from typing import Callable

import grain
import numpy as np
import simplejpeg
from array_record.python import array_record_module

from vlsa_jax.data import media, records
from vlsa_jax.modalities import (
    AUDIO, CAPTION_INDEX, CLIP_INDEX, TEXT_IDS, TEXT_MASK, VIDEO, VIDEO_CROP)


def load_split(split_dir: str | pathlib.Path, config) -> list[str]:
    """Checks a prepared split against the config and returns its shard paths.

    The manifest must carry the config's modalities and match its front-end, stored-frame
    and text.max_len parameters, and every shard must hold the records the manifest lists.

    Raises:
      ValueError: naming the config field the records disagree with, or the shard
        that is missing or corrupt.
    """
    manifest = records.Manifest.load(split_dir)
    missing = set(config.data.modalities) - set(manifest.modalities)
    if missing:
        raise ValueError(
            f"data.modalities: {config.data.modalities!r} asks for {''.join(sorted(missing))!r}, "
            f"which {split_dir} ({manifest.dataset}, {manifest.modalities!r}) does not carry")
    records.check_matches_config(
        manifest, media.frontend_parameters(config.audio),
        {"stored_frames": config.video.stored_frames,
         "stored_short_side": config.video.stored_short_side},
        config.text.max_len)
    paths = manifest.shard_paths(split_dir)
    for path, shard in zip(paths, manifest.shards):
        _check_shard(path, shard["num_records"])
    return paths


def _check_shard(path: str, num_records: int) -> None:
    # A damaged ArrayRecord file opens as an empty one: compare with the manifest's count.
    if not pathlib.Path(path).exists():
        raise ValueError(f"{path}: shard listed in the manifest is missing")
    try:
        reader = array_record_module.ArrayRecordReader(path)
        found = reader.num_records()
        reader.close()
    except RuntimeError as error:
        raise ValueError(f"{path}: corrupt shard: {error}; prepare the split again") from None
    if found != num_records:
        raise ValueError(f"{path}: corrupt shard: {found} readable records, the manifest "
                         f"lists {num_records}; prepare the split again")


def segment_frame_indices(num_stored: int, num_frames: int,
                          rng: np.random.Generator | None) -> np.ndarray:
    """Picks one frame index per equal temporal segment of `num_stored` frames.

    Args:
      num_stored: the frames the record holds.
      num_frames: the segments, one frame each.
      rng: draws a random frame within each segment (training); None takes each
        segment's centre (evaluation).

    Returns:
      [num_frames] int frame indices, one per segment, in order.
    """
    edges = np.arange(num_frames + 1) * (num_stored / num_frames)
    if rng is None:
        return np.floor((edges[:-1] + edges[1:]) / 2).astype(int)
    return np.minimum(np.floor(rng.uniform(edges[:-1], edges[1:])).astype(int), num_stored - 1)


def random_crop_box(width: int, height: int, min_scale: float, rng: np.random.Generator):
    """A random square crop of a width x height frame, anywhere in it.

    Its area is a random fraction in [min_scale, 1] of the short side's square.

    Returns:
      (left, top, side) in pixels.
    """
    side = max(1, round(min(width, height) * np.sqrt(rng.uniform(min_scale, 1.0))))
    return int(rng.integers(width - side + 1)), int(rng.integers(height - side + 1)), side


def centre_crop_box(width: int, height: int):
    """The largest square in the frame's centre: (left, top, side) in pixels."""
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def decode_jpeg(data: bytes, buffer: np.ndarray | None = None) -> np.ndarray:
    """Decodes a JPEG (grey ones too) straight to RGB, with libjpeg-turbo (simplejpeg).

    Args:
      data: the JPEG's bytes.
      buffer: a uint8 array to decode into, if given: a reused buffer spares a new array,
        and its page faults, per frame (docs/performance.md).

    Returns:
      [H, W, 3] uint8 RGB, written into `buffer` when given.

    Raises:
      ValueError: the bytes are not a decodable JPEG.
    """
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=buffer)
    except ValueError as error:
        raise ValueError(f"undecodable JPEG frame ({len(data)} bytes): {error}") from None


class FrameDecoder:
    """Decodes JPEG frames into one buffer, grown to the largest frame seen.

    Not thread-safe: one per batch (grain's reader threads each build their own batches).
    """

    def __init__(self):
        self._buffer = np.empty(0, np.uint8)

    def __call__(self, data: bytes) -> np.ndarray:
        height, width = jpeg_size(data)
        if self._buffer.size < height * width * 3:
            self._buffer = np.empty(height * width * 3, np.uint8)
        return decode_jpeg(data, self._buffer)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) of a JPEG, from its header alone."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as error:
        raise ValueError(f"undecodable JPEG frame ({len(data)} bytes): {error}") from None
    return height, width


def crop_frames(jpegs, indices, box: tuple[int, int, int], out: np.ndarray,
                decoder: FrameDecoder | None = None) -> np.ndarray:
    """Decodes JPEG frames and copies the same square of each into a canvas of `out`.

    Each crop goes to the top-left corner of its canvas and the rest is zeroed, so that
    a batch depends on its examples alone, whichever buffer it reuses.

    Args:
      jpegs: the record's JPEG frames.
      indices: the frames to decode, one per canvas.
      box: (left, top, side) of the square, the same for every frame.
      out: [T, C, C, 3] uint8 canvases (C >= side), written in place.
      decoder: decodes the frames; a new FrameDecoder if None.

    Returns:
      `out`.
    """
    decoder = decoder or FrameDecoder()
    left, top, side = box
    for i, index in enumerate(indices):
        out[i, :side, :side] = decoder(jpegs[index])[top:top + side, left:left + side]
    out[:, side:] = 0
    out[:, :side, side:] = 0
    return out


class ReusedArrays:
    """Batch arrays handed out again once nothing but this pool refers to them.

    A batch at the paper's sizes is about 60 MB, which glibc maps afresh for every
    batch and faults in page by page as it is written (docs/performance.md). An array
    is reused only when the pool holds its sole reference, so a batch that is still
    anywhere downstream (grain's read-ahead buffer, the training loop, a view of it,
    a jax array made from it, which keeps a reference) is never overwritten.
    """

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._pools = collections.defaultdict(list)  # batch size -> [{name: array}]
        self._lock = threading.Lock()  # grain's reader threads share one Preprocessor
        # What an array held by one dict alone counts here: interpreters differ.
        self._idle_count = max(_reference_counts({"probe": np.empty(0)}))

    def get(self, size: int, make: Callable[[int], dict]) -> dict:
        """A batch of `size` arrays: an idle one from the pool, else `make(size)`'s."""
        with self._lock:
            pool = self._pools[size]
            for arrays in pool:
                if max(_reference_counts(arrays)) <= self._idle_count:
                    return dict(arrays)
            arrays = make(size)
            if len(pool) < self._capacity:
                pool.append(arrays)
            return dict(arrays)

    def __getstate__(self):  # worker processes start with an empty pool
        return {"capacity": self._capacity}

    def __setstate__(self, state):
        self.__init__(state["capacity"])


def _reference_counts(arrays: dict) -> list[int]:
    return [sys.getrefcount(array) for array in arrays.values()]


@dataclasses.dataclass(frozen=True)
class Plan:
    """One example's record and the choices made for it.

    The choices are random in training and fixed in evaluation (centre frames and crop,
    first caption).
    """

    record: records.ClipRecord
    frame_indices: np.ndarray | None = None
    crop_box: tuple[int, int, int] | None = None  # left, top, side
    flip: bool = False
    caption: int = 0


class Preprocessor:
    """Turns records into model examples (training augmentation or evaluation), in two steps.

    `plan` decodes a record and makes its random choices, from grain's per-example
    generator; `batch` decodes and crops the planned frames straight into the batch's
    arrays, with one frame buffer: no per-example arrays to allocate and then copy.
    Frames leave as 'video' [B, T, C, C, 3] uint8 canvases (C = video.stored_short_side,
    which bounds every crop) with 'video_crop' [B, 2] int32 (side, flip).
    """

    def __init__(self, config, modalities: str, training: bool):
        self._video, self._audio, self._text = config.video, config.audio, config.text
        self._modalities = modalities
        self._training = training
        # Batches alive at once: grain's read-ahead (2 per thread), one being built per
        # thread, and the one or two the training loop holds.
        self._arrays = ReusedArrays(3 * config.data.read_threads + 2)

    def __call__(self, data: bytes, rng: np.random.Generator | None = None) -> dict:
        """One record -> one example (the arrays of a batch of one, without its axis)."""
        return {name: array[0] for name, array in self.batch([self.plan(data, rng)]).items()}

    def plan(self, data: bytes, rng: np.random.Generator | None = None) -> Plan:
        """Decodes a record and makes its choices, from `rng` in training."""
        record = records.decode_record(data)
        choices = {}
        if "v" in self._modalities:
            training, video = self._training, self._video
            indices = segment_frame_indices(
                len(record.frames), video.num_frames, rng if training else None)
            flip = training and video.random_flip and bool(rng.integers(2))
            height, width = jpeg_size(record.frames[indices[0]])
            box = (random_crop_box(width, height, video.min_crop_scale, rng) if training
                   else centre_crop_box(width, height))
            choices.update(frame_indices=indices, crop_box=box, flip=flip)
        if "t" in self._modalities and self._training:
            choices["caption"] = int(rng.integers(len(record.captions)))
        return Plan(record, **choices)

    def batch(self, plans) -> dict:
        """Planned examples -> a batch: each array with a leading axis of len(plans)."""
        arrays = self._arrays.get(len(plans), self._empty_batch)
        decoder = FrameDecoder()
        for row, plan in enumerate(plans):
            record = plan.record
            if VIDEO in arrays:
                crop_frames(record.frames, plan.frame_indices, plan.crop_box,
                            arrays[VIDEO][row], decoder)
                arrays[VIDEO_CROP][row] = plan.crop_box[2], plan.flip
            if AUDIO in arrays:
                spectrogram = arrays[AUDIO][row]
                np.subtract(record.spectrogram, self._audio.norm_mean, out=spectrogram,
                            dtype=np.float32)
                spectrogram /= self._audio.norm_std
            if TEXT_IDS in arrays:
                arrays[TEXT_IDS][row] = record.text_ids[plan.caption]
                arrays[TEXT_MASK][row] = record.text_mask[plan.caption]
        return arrays

    def _empty_batch(self, size: int) -> dict:
        video, audio, max_len = self._video, self._audio, self._text.max_len
        arrays = {}
        if "v" in self._modalities:
            # uint8: the model resizes and normalises frames on the device (models.frames).
            canvas = video.stored_short_side
            arrays[VIDEO] = np.empty((size, video.num_frames, canvas, canvas, 3), np.uint8)
            arrays[VIDEO_CROP] = np.empty((size, 2), np.int32)
        if "a" in self._modalities:
            arrays[AUDIO] = np.empty((size, audio.frames, audio.bins), np.float32)
        if "t" in self._modalities:
            arrays[TEXT_IDS] = np.empty((size, max_len), np.int32)
            arrays[TEXT_MASK] = np.empty((size, max_len), np.int32)
        return arrays


def training_dataset(config, process_index: int = 0, process_count: int = 1):
    """Endless host-local training batches of `config.train.batch_size // process_count`."""
    source = grain.sources.ArrayRecordDataSource(load_split(config.data.train_split, config))
    preprocessor = Preprocessor(config, config.data.modalities, training=True)
    dataset = (
        grain.MapDataset.source(source)
        .shuffle(seed=config.data.shuffle_seed)
        .repeat()[process_index::process_count]
        .random_map(preprocessor.plan, seed=config.seed)
        .batch(config.train.batch_size // process_count, drop_remainder=True,
               batch_fn=preprocessor.batch))
    # Elements here are whole batches: grain's default read-ahead of 500 would hold
    # hundreds of them (tens of GB at the paper's sizes).
    iterable = dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=config.data.read_threads,
        prefetch_buffer_size=2 * config.data.read_threads))
    if config.data.workers > 0:
        iterable = iterable.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=config.data.workers))
    return iterable


def split_source(config, split_dir) -> grain.MapDataset:
    """The split's record bytes in record order, after `load_split`'s checks."""
    return grain.MapDataset.source(
        grain.sources.ArrayRecordDataSource(load_split(split_dir, config)))


def _padded_batches(items: grain.MapDataset, batch_size: int, process_index: int,
                    process_count: int):
    """This process's share of `items` in batches of `batch_size`, each with 'valid' [B] bool.

    The last batches are padded with copies of a real item, marked invalid, so that
    every item is seen exactly once and every process yields the same number of
    batches (global arrays need every process to contribute).
    """
    share = items[process_index::process_count]
    per_process = -(-len(items) // process_count)
    for first in range(0, max(per_process, 1), batch_size):
        real = [share[i] for i in range(first, min(first + batch_size, len(share)))]
        padding = [real[0] if real else items[0]] * (batch_size - len(real))
        batch = {name: np.stack([item[name] for item in real + padding])
                 for name in (real + padding)[0]}
        batch["valid"] = np.arange(batch_size) < len(real)
        yield batch


def evaluation_clips(config, split_dir, batch_size: int, process_index: int = 0,
                     process_count: int = 1):
    """Every clip of the split once, in record order: centre crop, uniformly spaced frames.

    Returns:
      An iterator of host-local batches of the media modalities of
      `config.data.modalities`, plus 'clip_index' [B] (the record's position in the
      split) and 'valid' [B] bool.
    """
    media_only = "".join(m for m in config.data.modalities if m in "av")
    preprocess = Preprocessor(config, media_only, training=False)
    items = split_source(config, split_dir).map_with_index(
        lambda index, data: preprocess(data) | {CLIP_INDEX: np.int32(index)})
    return _padded_batches(items, batch_size, process_index, process_count)


def evaluation_captions(config, split_dir, batch_size: int, process_index: int = 0,
                        process_count: int = 1):
    """Every caption of every clip of the split once.

    Returns:
      An iterator of host-local batches of 'text_ids', 'text_mask' [B, L], 'clip_index'
      and 'caption_index' [B] (which clip and which of its captions), and 'valid' [B]
      bool.
    """
    source = split_source(config, split_dir)
    # One pass decodes each record once; token ids are small enough to keep.
    captions = []
    for clip in range(len(source)):
        record = records.decode_record(source[clip])
        captions += [{TEXT_IDS: record.text_ids[k], TEXT_MASK: record.text_mask[k],
                      CLIP_INDEX: np.int32(clip), CAPTION_INDEX: np.int32(k)}
                     for k in range(len(record.captions))]
    items = grain.MapDataset.source(captions)
    return _padded_batches(items, batch_size, process_index, process_count)
