"""The modality names, their config letters, and the letters -> modalities mapping."""
import pytest

from vlsa_jax.modalities import AUDIO, FUSED, LETTERS, MODALITIES, TEXT, VIDEO, modalities_of


def test_the_joint_sequence_order_is_video_text_audio():
    assert MODALITIES == (VIDEO, TEXT, AUDIO) == ("video", "text", "audio")


@pytest.mark.parametrize("letters, modalities", [
    ("avt", ("video", "text", "audio")),
    ("tva", ("video", "text", "audio")),  # always in joint-sequence order
    ("at", ("text", "audio")),
    ("av", ("video", "audio")),
    ("v", ("video",)),
    ("", ()),
])
def test_modalities_of_letters(letters, modalities):
    assert modalities_of(letters) == modalities


def test_each_modality_has_its_own_letter_and_fused_needs_video_and_audio():
    assert {m: LETTERS[m] for m in MODALITIES} == {VIDEO: "v", TEXT: "t", AUDIO: "a"}
    for modality in MODALITIES:
        assert modalities_of(LETTERS[modality]) == (modality,)
    assert FUSED == "video+audio"
    assert modalities_of(LETTERS[FUSED]) == (VIDEO, AUDIO)
