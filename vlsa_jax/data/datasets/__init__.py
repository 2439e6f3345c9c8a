"""Annotation adapters: each public dataset's annotation format as `ClipAnnotation`s.

An adapter reads `(annotations_path, media_dir, split)` into one annotation per
clip of the split. Every adapter decodes its files as UTF-8, keeping an invalid byte
as an escape in the field it belongs to (the preparation then refuses that clip, or
replaces the byte with --caption_errors=replace), keeps empty captions as '', and
raises ValueError for a split it does not know (naming the valid ones) and for a clip
id that repeats within the split. Media paths are relative to media_dir unless the
annotations give absolute ones; the preparation joins them, refuses those that leave
it, and reports missing files per clip.
"""
import dataclasses
from collections.abc import Callable

from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.data.datasets import (
    audiocaps,
    generic,
    howto100m,
    lsmdc,
    msrvtt,
    sounddescs,
    youcook2,
)


@dataclasses.dataclass(frozen=True)
class DatasetAdapter:
    """A dataset's annotation reader and the modalities its clips carry.

    Attributes:
      name: the registry key, as given in configs and on the command line.
      modalities: letters of the modalities, 'avt' for videos with audio and
        captions, 'at' for audio with captions.
      read: (annotations_path, media_dir, split) -> annotations.
    """

    name: str
    modalities: str
    read: Callable[[str, str, str], list[ClipAnnotation]]


ADAPTERS: dict[str, DatasetAdapter] = {
    adapter.name: adapter for adapter in (
        # Generic lists are mostly videos; an audio-only list still reads fine,
        # the config's data.modalities says what the data carries.
        DatasetAdapter(generic.NAME, "avt", generic.read),
        DatasetAdapter(msrvtt.NAME, "avt", msrvtt.read),
        DatasetAdapter(lsmdc.NAME, "avt", lsmdc.read),
        DatasetAdapter(youcook2.NAME, "avt", youcook2.read),
        DatasetAdapter(howto100m.NAME, "avt", howto100m.read),
        DatasetAdapter(audiocaps.NAME, "at", audiocaps.read),
        DatasetAdapter(sounddescs.NAME, "at", sounddescs.read),
    )
}


def get_adapter(name: str) -> DatasetAdapter:
    """The adapter registered as `name`.

    Raises:
      ValueError: no such adapter; the message lists the known names.
    """
    if name not in ADAPTERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name]


def read_annotations(name: str, annotations_path: str, media_dir: str,
                     split: str) -> list[ClipAnnotation]:
    """Reads the annotations of one split of dataset `name` (see `get_adapter`)."""
    return get_adapter(name).read(annotations_path, media_dir, split)
