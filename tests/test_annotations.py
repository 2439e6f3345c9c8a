"""What a dataset adapter returns: one immutable, comparable annotation per clip."""
import dataclasses

import pytest

from vlsa_jax.data.annotations import ClipAnnotation


def test_the_span_defaults_to_the_whole_file():
    clip = ClipAnnotation("c0", "videos/c0.mp4", ("a caption",))
    assert (clip.start, clip.end) == (None, None)
    assert ClipAnnotation("c0", "videos/c0.mp4", ("a caption",), 1.5, None).start == 1.5


def test_annotations_are_values():
    clip = ClipAnnotation("c0", "c0.mp4", ("one", "two"), 0.0, 2.0)
    same = ClipAnnotation(clip_id="c0", path="c0.mp4", captions=("one", "two"), start=0.0,
                          end=2.0)
    assert clip == same and hash(clip) == hash(same)
    assert clip != dataclasses.replace(clip, captions=("one",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        clip.clip_id = "c1"
