"""The pre-training objective on the tiny model: datasets that lack a modality, the
global embeddings the loss takes (clean captions, as retrieval), and the
desynchronised audio-video negatives (rotated audio, reversed video).

The batches, the model and the loss as a pure function of the parameters come from
tests/test_model.py, which checks the objective's shapes under every ablation switch.
"""
import functools

import jax
import numpy as np
import pytest
from flax import nnx

from tests import test_model
from tests.test_model import (_MODALITIES, _QUICK_COMPILE, _expected_metrics, _loss_fn,
                              _random_batch, _split)
from vlsa_jax.models.embeddings import masked_mean
from vlsa_jax.models.vlsa import model_inputs
from vlsa_jax.objective import (desynchronised_embeddings, global_embeddings, global_sources,
                                local_losses, mask_modalities, quietest_rotation)

# The tiny config and a concrete model built from it.
tiny = test_model.tiny


@pytest.mark.parametrize("missing", ["video", "text"])
def test_missing_modality_gives_finite_loss(tiny, missing):
    config, model = tiny
    graphdef, params, rest = _split(model)
    batch = _random_batch(config, without=(missing,))
    loss_fn = jax.jit(_loss_fn(graphdef, rest, config), compiler_options=_QUICK_COMPILE)
    loss, metrics = loss_fn(params, batch, jax.random.key(0))

    present = [m for m in _MODALITIES if m != missing]
    assert set(metrics) == _expected_metrics(config, present)
    assert f"local/{missing}" not in metrics
    assert not any(key.startswith("global/") and missing in key for key in metrics)
    # The audio pair that remains is still trained.
    remaining_pair = "audio_text" if missing == "video" else "audio_video"
    assert {"local/audio", f"global/{remaining_pair}/nce"} <= set(metrics)
    assert np.isfinite(loss)
    for name, value in metrics.items():
        assert np.isfinite(value), name


def _loss_embeddings(model, config):
    """A jitted (params, batch, mask key) -> (the global embeddings `pretraining_loss`
    takes, retrieval's embeddings, the pools of an unmasked joint pass)."""
    graphdef, _, rest = _split(model)

    @functools.partial(jax.jit, compiler_options=_QUICK_COMPILE)
    def embed(params, batch, key):
        model = nnx.merge(graphdef, params, rest)
        inputs = model_inputs(batch, config)
        text_valid = batch["text_mask"].astype(bool)
        # The objective's own steps, in its order.
        masked = mask_modalities(model, inputs, text_valid, key, config)
        joint = local_losses(model, masked, inputs, text_valid, config)[1]
        sources = global_sources(model, masked, inputs, text_valid, config)
        clean = {m: (model.tokens(m, x), text_valid if m == "text" else None)
                 for m, x in inputs.items()}
        encoded = model.encode(clean)
        return (global_embeddings(model, sources, joint, config),
                model.global_embeddings(inputs, text_valid),
                {m: masked_mean(encoded[m], clean[m][1]) for m in encoded})

    return embed


def _close(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() < 1e-5


@pytest.mark.parametrize("features, masked_inputs", [
    ("unimodal", True), ("unimodal", False), ("joint", False), ("joint", True)])
def test_the_global_loss_embeds_text_as_retrieval_does(tiny, features, masked_inputs):
    config, model = tiny
    config = config.copy_and_resolve_references()
    config.gam.features, config.gam.masked_inputs = features, masked_inputs
    _, params, _ = _split(model)
    embed = _loss_embeddings(model, config)
    batch = _random_batch(config)
    (first, retrieval, unmasked_joint), (second, *_) = (
        embed(params, batch, jax.random.key(k)) for k in (0, 1))

    if features == "joint" and masked_inputs:
        # Eq. 6 literally: the pools of the LPMM pass, whose inputs change with the mask
        # (its text BERT-masked, as that pass reads it).
        for modality in _MODALITIES:
            assert not _close(first[modality], second[modality]), modality
        return
    # Whatever the mask: the clean caption (masking it would save nothing).
    assert _close(first["text"], second["text"])
    for modality in ("video", "audio"):
        # MAE-masked inputs (a quarter of the patches) change with the mask; full ones do not.
        assert _close(first[modality], second[modality]) != masked_inputs, modality
    if features == "unimodal":
        # What retrieval sees: the text always, video and audio when unmasked.
        assert _close(first["text"], retrieval["text"])
        for modality in ("video", "audio"):
            assert _close(first[modality], retrieval[modality]) != masked_inputs, modality
    else:
        # An unmasked joint pass of its own, not the LPMM pass.
        for modality in _MODALITIES:
            assert _close(first[modality], unmasked_joint[modality]), modality


def test_desynchronised_clips_are_rotated_audio_and_reversed_video(tiny):
    config, model = tiny
    config = config.copy_and_resolve_references()
    config.gam.masked_inputs = False
    config.gam.shifted_audio_negatives = (0.5, 0.5)  # exactly half the frames
    config.gam.reversed_video_negatives = True
    graphdef, params, rest = _split(model)
    batch = _random_batch(config)
    batch = {"audio": batch["audio"], "video": batch["video"]}

    @functools.partial(jax.jit, compiler_options=_QUICK_COMPILE)
    def embed(params, batch):
        model = nnx.merge(graphdef, params, rest)
        return (desynchronised_embeddings(model, batch, model_inputs(batch, config),
                                          jax.random.key(0), config),
                model.global_embeddings(model_inputs(batch, config)))

    desynced, plain = embed(params, batch)
    # The interior rotated by half its length; half a patch at either end stays put.
    edge = config.audio.patch // 2
    audio = batch["audio"].copy()
    interior = audio[:, edge:-edge]
    audio[:, edge:-edge] = np.roll(interior, interior.shape[1] // 2, axis=1)
    _, expected = embed(params, {"audio": audio, "video": batch["video"][:, ::-1]})
    for modality in ("audio", "video"):
        np.testing.assert_allclose(desynced[modality], expected[modality], rtol=1e-5,
                                   atol=1e-5, err_msg=modality)
        assert np.abs(desynced[modality] - plain[modality]).max() > 1e-3, modality


def test_the_quietest_rotation_is_chosen_as_a_loop_over_candidates_does():
    rng = np.random.default_rng(0)
    spectrogram = rng.normal(size=(6, 20, 4)).astype(np.float32)
    spectrogram[0, 12:15] += 9  # a loud note: a cut near frame 13 goes through it
    candidates = rng.integers(4, 17, (6, 5))
    candidates[0] = [7, 7, 12, 6, 15]  # cuts at frames 13, 13, 8, 14, 5
    margin = 2

    def loop(clip, shifts):
        loudness = clip.mean(axis=1)
        cut = [max(loudness[(20 - shift + d) % 20] for d in range(-margin, margin))
               for shift in shifts]
        return shifts[int(np.argmin(cut))]

    chosen = np.asarray(quietest_rotation(spectrogram, candidates, margin))
    np.testing.assert_array_equal(chosen, [loop(c, k) for c, k in zip(spectrogram, candidates)])
    assert chosen[0] in (12, 15)  # the cuts clear of the note


@pytest.mark.parametrize("overrides, negatives", [
    ({"gam.shifted_audio_negatives": (0.25, 0.75)}, ("audio",)),
    ({"gam.reversed_video_negatives": True}, ("video",)),
], ids=["shifted_audio", "reversed_video"])
def test_desynchronised_negatives_join_the_audio_video_pair_alone(tiny, overrides, negatives):
    config, model = tiny
    graphdef, params, rest = _split(model)
    batch, key = _random_batch(config), jax.random.key(1)
    desync_config = config.copy_and_resolve_references()
    desync_config.update_from_flattened_dict(overrides)
    plain, desynced = (
        jax.jit(_loss_fn(graphdef, rest, c), compiler_options=_QUICK_COMPILE)(params, batch, key)[1]
        for c in (config, desync_config))
    # More candidates: a larger audio-video loss; every other term the same.
    assert desynced["global/audio_video/nce"] > plain["global/audio_video/nce"]
    for modality in negatives:
        assert 0 <= desynced.pop(f"global/audio_video/{modality}_sync_accuracy") <= 1
    for name in set(plain) - {"global/audio_video/nce", "loss/global", "loss"}:
        np.testing.assert_allclose(desynced[name], plain[name], rtol=1e-6, err_msg=name)
    assert set(desynced) == set(plain)
