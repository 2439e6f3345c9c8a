"""The tri-modal record schema (one ArrayRecord record per clip) and the split manifest.

A record is a msgpack map (no pickle): clip id, source path and span, every caption
with its token ids, the stored frames as JPEG, the spectrogram as float16, and
modality-presence flags. Each split directory holds its shards and `manifest.json`:
counts, the front-end, frame and tokenizer parameters the records were made with,
the shard list, per-stage timings, every clip that failed with its reason, and the
fingerprint of the preparation's inputs (vlsa_jax.data.prepare).
"""
import dataclasses
import io
import json
import pathlib
from typing import Any

import msgpack
import numpy as np
from PIL import Image

MANIFEST = "manifest.json"
SHARD_SUFFIX = ".array_record"
JPEG_QUALITY = 90


@dataclasses.dataclass
class ClipRecord:
    """One prepared clip. Arrays are None where the clip lacks the modality."""

    clip_id: str
    source: str
    start: float | None
    end: float | None
    captions: list[str]
    text_ids: np.ndarray | None  # [num_captions, max_len] int32
    text_mask: np.ndarray | None  # [num_captions, max_len] int32, 1 on real tokens
    frames: list[bytes] | None  # JPEG-encoded RGB frames
    frame_times: list[float] | None  # seconds, one per frame
    spectrogram: np.ndarray | None  # [frames, bins] float16
    audio_valid: tuple[int, int] | None  # [first, last) samples of real signal in the window

    @property
    def has_video(self) -> bool:
        return self.frames is not None

    @property
    def has_audio(self) -> bool:
        return self.spectrogram is not None

    @property
    def has_text(self) -> bool:
        return self.text_ids is not None and len(self.captions) > 0


def encode_jpeg(frame: np.ndarray) -> bytes:
    """frame: [H, W, 3] uint8 RGB -> JPEG bytes."""
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _pack_array(array: np.ndarray | None):
    if array is None:
        return None
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}


def _unpack_array(packed) -> np.ndarray | None:
    if packed is None:
        return None
    return np.frombuffer(packed["data"], dtype=np.dtype(packed["dtype"])).reshape(packed["shape"])


def encode_record(record: ClipRecord) -> bytes:
    """Serialises a clip to bytes (msgpack)."""
    return msgpack.packb({
        "clip_id": record.clip_id, "source": record.source,
        "start": record.start, "end": record.end, "captions": record.captions,
        "text_ids": _pack_array(record.text_ids), "text_mask": _pack_array(record.text_mask),
        "frames": record.frames, "frame_times": record.frame_times,
        "spectrogram": _pack_array(record.spectrogram),
        "audio_valid": None if record.audio_valid is None else list(record.audio_valid),
        "has_video": record.has_video, "has_audio": record.has_audio,
        "has_text": record.has_text,
    }, use_bin_type=True)


def decode_record(data: bytes) -> ClipRecord:
    """The inverse of `encode_record`."""
    raw = msgpack.unpackb(data, raw=False)
    return ClipRecord(
        clip_id=raw["clip_id"], source=raw["source"], start=raw["start"], end=raw["end"],
        captions=raw["captions"], text_ids=_unpack_array(raw["text_ids"]),
        text_mask=_unpack_array(raw["text_mask"]), frames=raw["frames"],
        frame_times=raw["frame_times"], spectrogram=_unpack_array(raw["spectrogram"]),
        audio_valid=None if raw["audio_valid"] is None else tuple(raw["audio_valid"]))


@dataclasses.dataclass
class Manifest:
    """What a prepared split holds and how it was made."""

    dataset: str
    split: str
    modalities: str
    num_clips: int
    num_failed: int
    frontend: dict[str, Any]  # vlsa_jax.data.media.frontend_parameters
    frames: dict[str, Any]  # stored_frames, stored_short_side
    tokenizer: dict[str, Any]  # name_or_path, vocab_size, max_len, special ids
    shards: list[dict[str, Any]]  # {"file": name, "num_records": n}
    timings: dict[str, float]  # seconds per stage, summed over clips
    spectrogram_stats: dict[str, float]  # mean and std over every value (audio.norm_*)
    failures: list[dict[str, str]]  # {"id": clip id, "reason": why}
    # {"annotations_sha256": hex, "parameters": {name: value}}; None before it was recorded.
    fingerprint: dict[str, Any] | None = None

    def save(self, split_dir: str | pathlib.Path) -> None:
        path = pathlib.Path(split_dir) / MANIFEST
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, split_dir: str | pathlib.Path) -> "Manifest":
        path = pathlib.Path(split_dir) / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{path}: no manifest; prepare the split first "
                                    "(python -m vlsa_jax.data.prepare ...)")
        return cls(**json.loads(path.read_text()))

    def tokenizer_source(self, split_dir: str | pathlib.Path) -> str:
        """The tokenizer the records were made with: a hub name, or its directory (which
        the manifest holds relative to the folder the split was prepared into)."""
        name = self.tokenizer["name_or_path"]
        local = pathlib.Path(split_dir).parent / name
        return str(local) if local.is_dir() else name

    def shard_paths(self, split_dir: str | pathlib.Path) -> list[str]:
        return [str(pathlib.Path(split_dir) / s["file"]) for s in self.shards]


def check_matches_config(manifest: Manifest, expected_frontend: dict[str, Any],
                         expected_frames: dict[str, Any], max_len: int) -> None:
    """Refuses records made with other parameters than the config's, naming the field.

    Raises:
      ValueError: '<config field>: records have X, the config has Y'.
    """
    comparisons = [(f"audio.{k}", manifest.frontend.get(k), v)
                   for k, v in expected_frontend.items()]
    comparisons += [(f"video.{k}", manifest.frames.get(k), v) for k, v in expected_frames.items()]
    comparisons.append(("text.max_len", manifest.tokenizer.get("max_len"), max_len))
    for field, stored, wanted in comparisons:
        if stored != wanted:
            raise ValueError(
                f"{field}: the records of {manifest.dataset}/{manifest.split} were prepared "
                f"with {stored!r}, the config has {wanted!r}; prepare them again or set "
                f"--config.{field}={stored!r}")
