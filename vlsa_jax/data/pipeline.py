"""The grain input pipeline: prepared ArrayRecord shards -> host-local training batches.

    records -> shuffle(seed) -> repeat -> this process's shard -> decode and augment
    (random_map, seeded per element) -> batch (drop remainder) -> worker processes

Every random choice comes from grain's per-element generator, so a pipeline restored
from its saved state continues with exactly the batches it would have produced.
"""
import io
import pathlib

import grain
import numba
import numpy as np
from array_record.python import array_record_module
from PIL import Image

from vlsa_jax.data import media, records
from vlsa_jax.models.vlsa import AUDIO, VIDEO


def load_split(split_dir: str | pathlib.Path, config) -> list[str]:
    """The split's shard paths, after checking its manifest against the config and its shards.

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
    """One frame per equal temporal segment: random within it (training) or its centre (eval)."""
    edges = np.linspace(0, num_stored, num_frames + 1)
    if rng is None:
        return np.floor((edges[:-1] + edges[1:]) / 2).astype(int)
    return np.minimum(np.floor(rng.uniform(edges[:-1], edges[1:])).astype(int), num_stored - 1)


def random_crop_box(width: int, height: int, min_scale: float, rng: np.random.Generator):
    """A random square box covering [min_scale, 1] of the short side's square, anywhere."""
    side = min(width, height) * np.sqrt(rng.uniform(min_scale, 1.0))
    left, top = rng.uniform(0, width - side), rng.uniform(0, height - side)
    return left, top, left + side, top + side


def centre_crop_box(width: int, height: int):
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


# Fraction bits of the fixed-point resampling weights, as Pillow's Resample.c has them:
# a sum of uint8 x weight products fits an int32 with two bits to spare.
_PRECISION_BITS = 22


def bilinear_weights(in_size: int, start: float, end: float, out_size: int):
    """Pillow's BILINEAR weights for resampling [start, end) of an axis to `out_size`.

    The arithmetic of Pillow's precompute_coeffs and normalize_coeffs_8bpc
    (Resample.c), step for step: the box in float32, the support widened by the
    scale when shrinking, each output's taps normalised to sum 1, then rounded to
    `_PRECISION_BITS` fraction bits: the very weights Pillow's
    `Image.resize(..., BILINEAR, box=...)` applies.

    Returns:
      first: [out_size] int32, the input index of each output's first tap; every
        output has the same number of taps, `first + taps <= in_size`.
      weights: [out_size, taps] int32, zero where Pillow has no tap.
    """
    start, end = np.float32(start), np.float32(end)
    scale = float(end - start) / out_size  # the float32 difference, as Pillow's
    filter_scale = max(scale, 1.0)
    support = filter_scale  # the bilinear (triangle) filter's support is 1
    centre = float(start) + (np.arange(out_size) + 0.5) * scale
    low = np.maximum(np.trunc(centre - support + 0.5), 0).astype(np.int64)
    count = np.minimum(np.trunc(centre + support + 0.5), in_size).astype(np.int64) - low
    taps = int(count.max())
    offsets = np.arange(taps)
    distance = (low[:, None] + offsets - centre[:, None] + 0.5) * (1.0 / filter_scale)
    weights = np.where(offsets < count[:, None], np.maximum(1.0 - np.abs(distance), 0.0), 0.0)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.where(total != 0, weights / np.where(total != 0, total, 1.0), weights)
    fixed = np.trunc(0.5 + weights * (1 << _PRECISION_BITS)).astype(np.int32)
    # Outputs near the end of the axis start their taps earlier, zero weights in front,
    # so that every tap lies inside the axis; zero taps leave the integer sums as they are.
    shift = np.maximum(low + taps - in_size, 0)
    rows = np.arange(out_size)[:, None]
    fixed = np.where(offsets >= shift[:, None],
                     fixed[rows, np.maximum(offsets - shift[:, None], 0)], 0).astype(np.int32)
    return (low - shift).astype(np.int32), fixed


@numba.njit(cache=True, nogil=True)
def _clip8(total):
    value = total >> _PRECISION_BITS
    return 0 if value < 0 else (255 if value > 255 else value)


@numba.njit(cache=True, nogil=True)
def _resample(image, x_first, x_weights, y_first, y_weights, rows, out):
    """Separable fixed-point resampling of `image` into `out`, as Pillow's Resample.c.

    image: [H, W * 3] uint8 RGB rows; x_*, y_*: from `bilinear_weights`; rows:
    [R, out_w * 3] uint8 scratch (R >= the input rows the y taps span); out:
    [out_h, out_w * 3] uint8. The horizontal pass first, rounded to uint8, then the
    vertical one; loops run tap by tap over whole rows, which vectorises where
    Pillow's tap-innermost loops do not.
    """
    out_w, x_taps = x_weights.shape
    out_h, y_taps = y_weights.shape
    row0 = y_first[0]
    num_rows = y_first[out_h - 1] + y_taps - row0
    half = np.int32(1 << (_PRECISION_BITS - 1))
    acc = np.empty(out_w * 3, np.int32)
    for r in range(num_rows):
        src = image[row0 + r]
        for j in range(out_w * 3):
            acc[j] = half
        for t in range(x_taps):
            for x in range(out_w):
                weight = x_weights[x, t]
                at = (x_first[x] + t) * 3
                acc[3 * x] += np.int32(src[at]) * weight
                acc[3 * x + 1] += np.int32(src[at + 1]) * weight
                acc[3 * x + 2] += np.int32(src[at + 2]) * weight
        dst = rows[r]
        for j in range(out_w * 3):
            dst[j] = _clip8(acc[j])
    for y in range(out_h):
        for j in range(out_w * 3):
            acc[j] = half
        for t in range(y_taps):
            weight = y_weights[y, t]
            src = rows[y_first[y] + t - row0]
            for j in range(out_w * 3):
                acc[j] += np.int32(src[j]) * weight
        dst = out[y]
        for j in range(out_w * 3):
            dst[j] = _clip8(acc[j])


def decode_frames(jpegs, indices, size: int, box_fn, flip: bool) -> np.ndarray:
    """JPEG frames -> [T, size, size, 3] uint8, one crop box (and flip) for the whole clip.

    Each frame is cropped to the box and resized to size x size with Pillow's
    BILINEAR filter (antialiased when shrinking), then flipped left-right if `flip`.
    The values are those of `Image.resize(..., BILINEAR, box=box)` and
    FLIP_LEFT_RIGHT wherever Pillow runs its horizontal pass first, as it does for
    landscape frames; where it picks the vertical pass first (portrait frames, as a
    rule), they differ from Pillow's by rounding, at most one level. The resampling
    is `_resample`, compiled, straight into the output: Pillow's own resampler took
    nearly as long as decoding the JPEG (0.4 ms a frame at 224x224).
    """
    out = np.empty((len(indices), size, size, 3), np.uint8)
    flat_out = out.reshape(len(indices), size, size * 3)
    frame_size = None
    for i, index in enumerate(indices):
        image = Image.open(io.BytesIO(jpegs[index]))
        if image.mode != "RGB":
            image = image.convert("RGB")
        if frame_size is None:
            frame_size = width, height = image.size
            left, top, right, bottom = box_fn(width, height)
            x_first, x_weights = bilinear_weights(width, left, right, size)
            if flip:  # output column x takes the taps of column size - 1 - x
                x_first, x_weights = x_first[::-1].copy(), x_weights[::-1].copy()
            y_first, y_weights = bilinear_weights(height, top, bottom, size)
            rows = np.empty((y_first[-1] + y_weights.shape[1] - y_first[0], size * 3),
                            np.uint8)
        elif image.size != frame_size:
            raise ValueError(f"frame {index} is {image.size}, frame {indices[0]} "
                             f"{frame_size}: a record's frames share one size")
        pixels = np.asarray(image).reshape(height, width * 3)
        _resample(pixels, x_first, x_weights, y_first, y_weights, rows, flat_out[i])
    return out


class Preprocessor:
    """Turns one record into one model example (training augmentation or evaluation)."""

    def __init__(self, config, modalities: str, training: bool):
        self._video, self._audio = config.video, config.audio
        self._modalities = modalities
        self._training = training

    def __call__(self, data: bytes, rng: np.random.Generator | None = None) -> dict:
        record = records.decode_record(data)
        example = {}
        if "v" in self._modalities:
            example[VIDEO] = self._frames(record, rng)
        if "a" in self._modalities:
            # In float32 and in place: the values of (x - mean) / std, one array made.
            spectrogram = np.subtract(record.spectrogram, self._audio.norm_mean,
                                      dtype=np.float32)
            spectrogram /= np.float32(self._audio.norm_std)
            example[AUDIO] = spectrogram
        if "t" in self._modalities:
            caption = rng.integers(len(record.captions)) if self._training else 0
            example["text_ids"] = record.text_ids[caption]
            example["text_mask"] = record.text_mask[caption]
        return example

    def _frames(self, record: records.ClipRecord, rng) -> np.ndarray:
        training = self._training
        indices = segment_frame_indices(
            len(record.frames), self._video.num_frames, rng if training else None)
        if training:
            box_fn = lambda w, h: random_crop_box(w, h, self._video.min_crop_scale, rng)  # noqa: E731
        else:
            box_fn = centre_crop_box
        flip = training and self._video.random_flip and bool(rng.integers(2))
        # uint8: the model normalises frames on the device (models.vlsa.normalize_frames).
        return decode_frames(record.frames, indices, self._video.size, box_fn, flip)


def training_dataset(config, process_index: int = 0, process_count: int = 1):
    """Endless host-local training batches of `config.train.batch_size // process_count`."""
    source = grain.sources.ArrayRecordDataSource(load_split(config.data.train_split, config))
    dataset = (
        grain.MapDataset.source(source)
        .shuffle(seed=config.data.shuffle_seed)
        .repeat()[process_index::process_count]
        .random_map(Preprocessor(config, config.data.modalities, training=True),
                    seed=config.seed)
        .batch(config.train.batch_size // process_count, drop_remainder=True))
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

    Yields host-local batches of the media modalities of `config.data.modalities`,
    plus 'clip_index' [B] (the record's position in the split) and 'valid' [B].
    """
    media_only = "".join(m for m in config.data.modalities if m in "av")
    preprocess = Preprocessor(config, media_only, training=False)
    items = split_source(config, split_dir).map_with_index(
        lambda index, data: preprocess(data) | {"clip_index": np.int32(index)})
    return _padded_batches(items, batch_size, process_index, process_count)


def evaluation_captions(config, split_dir, batch_size: int, process_index: int = 0,
                        process_count: int = 1):
    """Every caption of every clip once: 'text_ids', 'text_mask' [B, L], 'clip_index' and
    'caption_index' [B] (which clip and which of its captions), and 'valid' [B]."""
    source = split_source(config, split_dir)
    # One pass decodes each record once; token ids are small enough to keep.
    captions = []
    for clip in range(len(source)):
        record = records.decode_record(source[clip])
        captions += [{"text_ids": record.text_ids[k], "text_mask": record.text_mask[k],
                      "clip_index": np.int32(clip), "caption_index": np.int32(k)}
                     for k in range(len(record.captions))]
    items = grain.MapDataset.source(captions)
    return _padded_batches(items, batch_size, process_index, process_count)
