"""The grain input pipeline: prepared ArrayRecord shards -> host-local training batches.

    records -> shuffle(seed) -> repeat -> this process's shard -> decode and augment
    (random_map, seeded per element) -> batch (drop remainder) -> worker processes

Every random choice comes from grain's per-element generator, so a pipeline restored
from its saved state continues with exactly the batches it would have produced.
"""
import pathlib

import cv2
import grain
import numpy as np
from array_record.python import array_record_module

from vlsa_jax.data import media, records
from vlsa_jax.models.vlsa import AUDIO, VIDEO

# One sample is one thread's work: grain's reader threads and worker processes are the
# parallelism, and OpenCV's own thread pool would only compete with them for the cores.
cv2.setNumThreads(1)


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
    edges = np.arange(num_frames + 1) * (num_stored / num_frames)
    if rng is None:
        return np.floor((edges[:-1] + edges[1:]) / 2).astype(int)
    return np.minimum(np.floor(rng.uniform(edges[:-1], edges[1:])).astype(int), num_stored - 1)


def random_crop_box(width: int, height: int, min_scale: float, rng: np.random.Generator):
    """A random square (left, top, side) covering [min_scale, 1] of the short side's
    square, anywhere in the frame."""
    side = max(1, round(min(width, height) * np.sqrt(rng.uniform(min_scale, 1.0))))
    return int(rng.integers(width - side + 1)), int(rng.integers(height - side + 1)), side


def centre_crop_box(width: int, height: int):
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> [H, W, 3] uint8 RGB (grey JPEGs too)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None:
        raise ValueError(f"undecodable JPEG frame ({len(data)} bytes)")
    return image


def decode_frames(jpegs, indices, size: int, box_fn, flip: bool) -> np.ndarray:
    """JPEG frames -> [T, size, size, 3] uint8, one crop box (and flip) for the whole clip.

    OpenCV decodes (1.4-2x faster than Pillow) and resizes (4x faster). Bilinear
    interpolation reads every source pixel up to a 2x shrink; beyond it, pixel-area
    averaging keeps the result from aliasing (it is 5x slower at shrinks like 256 -> 224,
    the common case, so only there). Flipping the small output is cheaper than
    resizing a flipped view.
    """
    out = np.empty((len(indices), size, size, 3), np.uint8)
    box = None
    for i, index in enumerate(indices):
        image = decode_jpeg(jpegs[index])
        if box is None:
            left, top, side = box = box_fn(image.shape[1], image.shape[0])
            interpolation = cv2.INTER_AREA if side >= 2 * size else cv2.INTER_LINEAR
        crop = image[top:top + side, left:left + side]
        if flip:
            cv2.flip(cv2.resize(crop, (size, size), interpolation=interpolation), 1, dst=out[i])
        else:
            cv2.resize(crop, (size, size), dst=out[i], interpolation=interpolation)
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
            spectrogram = record.spectrogram.astype(np.float32)
            example[AUDIO] = (spectrogram - self._audio.norm_mean) / self._audio.norm_std
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
