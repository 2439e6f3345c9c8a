"""Tests for the VLSA model and the pre-training objective under every ablation switch.

Shapes are checked with `jax.eval_shape`, which traces without compiling, so every
configuration costs well under a second; only building the tiny model and the
text-padding test compile. The objective's own behaviour is tested in
tests/test_objective.py, parameter counts in tests/test_param_count.py; both share
this file's config, batches and tiny model.
"""
import functools
import itertools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vlsa_jax import config_lib
from vlsa_jax.models.transformer import REMAT_POLICY_NAMES
from vlsa_jax.models.vlsa import GROUPINGS, VLSA, abstract_model, model_inputs
from vlsa_jax.objective import pretraining_loss

_CONFIG_PATH = pathlib.Path(__file__).resolve().parents[1] / "configs" / "pretrain.py"
_MODALITIES = ("video", "text", "audio")
# Encoder (or decoder) stacks per grouping: the shared one plus one per modality left out.
_NUM_STACKS = {"avt": 1, "vt": 2, "at": 2, "av": 2, "none": 3}
_PAIR_TERMS = ("nce", "match", "match_accuracy", "retrieval_accuracy")
_BATCH_SIZE = 4
# The tiny model runs only a few times: LLVM optimisation would cost more time
# than it saves (it halves compile time on CPU).
_QUICK_COMPILE = {"xla_backend_optimization_level": 0}


@functools.cache
def _config_module():
    return config_lib.load_config_module(_CONFIG_PATH)


def _config(variant="tiny", overrides=None):
    """The pre-training config of `variant`, with flattened `overrides` ('loss.gam': False)."""
    config = _config_module().get_config(f"variant={variant}")
    config.update_from_flattened_dict(overrides or {})
    return config


def _random_batch(config, batch_size=_BATCH_SIZE, without=()):
    """A random tri-modal batch whose rows have 0, 3, 6, ... padding tokens at the end.

    Args:
      config: the run config (input sizes).
      batch_size: B.
      without: 'video' and/or 'text': what the batch lacks, as a dataset without them gives.
    """
    rng = np.random.default_rng(0)
    length = config.text.max_len
    lengths = np.maximum(length - 3 * np.arange(batch_size), 1)
    batch = {
        "video": rng.integers(
            0, 256, (batch_size, config.video.num_frames, config.video.size, config.video.size, 3),
            dtype=np.uint8),
        "audio": rng.standard_normal(
            (batch_size, config.audio.frames, config.audio.bins), dtype=np.float32),
        # Ids 0-3 are the tiny variant's special tokens.
        "text_ids": rng.integers(4, config.text.vocab_size, (batch_size, length), dtype=np.int32),
        "text_mask": (np.arange(length) < lengths[:, None]).astype(np.int32),
    }
    if "video" in without:
        del batch["video"]
    if "text" in without:
        del batch["text_ids"], batch["text_mask"]
    return batch


def _expected_pairs(config, modalities=_MODALITIES):
    """Names of the global pairs the config trains that `modalities` can form."""
    pairs = [("audio", "video"), ("audio", "text")] if config.loss.gam else []
    pairs += [("video", "text")] if config.loss.vtm else []
    return {"_".join(pair) for pair in pairs if set(pair) <= set(modalities)}


def _expected_metrics(config, modalities=_MODALITIES):
    """The metric keys `pretraining_loss` returns for a batch carrying `modalities`."""
    keys = {"loss", "loss/local", "loss/global"}
    if config.loss.lpmm:
        keys |= {f"local/{m}" for m in modalities}
    pairs = _expected_pairs(config, modalities)
    keys |= {f"global/{pair}/{term}" for pair in pairs for term in _PAIR_TERMS}
    if "audio_video" in pairs:
        for modality, on in (("audio", config.gam.shifted_audio_negatives),
                             ("video", config.gam.reversed_video_negatives)):
            if on:
                keys.add(f"global/audio_video/{modality}_sync_accuracy")
    if pairs:
        keys.add("temperature")
    return keys


def _split(model):
    """(graphdef, params, rest): gradients are taken with respect to `params` only."""
    return nnx.split(model, nnx.Param, ...)


def _loss_fn(graphdef, rest, config):
    """`pretraining_loss` as a pure function of (params, batch, key)."""

    def loss_fn(params, batch, key):
        return pretraining_loss(nnx.merge(graphdef, params, rest), batch, key, config)

    return loss_fn


@pytest.fixture(scope="module")
def tiny():
    """The default tiny config and a concrete model built from it."""
    config = _config()
    graphdef = nnx.graphdef(abstract_model(config))
    # One compiled initialisation is much faster than initialising eagerly, op by op.
    with nnx.use_eager_sharding(False):
        state = jax.jit(
            lambda: nnx.state(VLSA(config, rngs=nnx.Rngs(0))),
            compiler_options=_QUICK_COMPILE)()
    return config, nnx.merge(graphdef, state)


# --- Shapes under every ablation switch, traced without compiling.

_ABLATIONS = {
    "default": {},
    **{f"joint_modalities={g}": {"model.joint_modalities": g} for g in GROUPINGS if g != "avt"},
    **{f"decoder_sharing={g}": {"model.decoder_sharing": g} for g in GROUPINGS if g != "avt"},
    **{
        f"lpmm={lpmm},gam={gam},vtm={vtm}": {
            "loss.lpmm": lpmm, "loss.gam": gam, "loss.vtm": vtm}
        for lpmm, gam, vtm in itertools.product((True, False), repeat=3)
        # Skips the default and the configuration with nothing to train.
        if (lpmm, gam, vtm) not in ((True, True, False), (False, False, False))
    },
    "gam.features=joint": {"gam.features": "joint"},
    # Without LPMM the joint features come from a joint pass of their own.
    "gam.features=joint,lpmm=False": {"gam.features": "joint", "loss.lpmm": False},
    "gam.masked_inputs=False": {"gam.masked_inputs": False},
    # Nothing needs masks: the objective skips masking altogether.
    "gam.masked_inputs=False,lpmm=False": {"gam.masked_inputs": False, "loss.lpmm": False},
    "matching.head=joint_pass": {"matching.head": "joint_pass"},
    "matching.head=joint_pass,vtm=True": {"matching.head": "joint_pass", "loss.vtm": True},
    "matching.negatives=hard": {"matching.negatives": "hard"},
    "gam.shifted_audio_negatives": {"gam.shifted_audio_negatives": (0.25, 0.75)},
    "gam.reversed_video_negatives": {"gam.reversed_video_negatives": True},
    "desynchronised_negatives,masked_inputs=False": {
        "gam.shifted_audio_negatives": (0.25, 0.75), "gam.reversed_video_negatives": True,
        "gam.masked_inputs": False},
    "loss.patch_reduction=sum": {"loss.patch_reduction": "sum"},
    "loss.learnable_temperature=True": {"loss.learnable_temperature": True},
    # Remat policies act on the backward pass: see test_gradient_shapes.
}


def _check_structure(model, config):
    assert len(model.encoders) == _NUM_STACKS[config.model.joint_modalities]
    if config.loss.lpmm:
        assert len(model.decoders) == _NUM_STACKS[config.model.decoder_sharing]
    else:
        for part in ("decoders", "decoder_inputs", "heads"):
            assert not hasattr(model, part), part
    assert set(model.matching_heads) == _expected_pairs(config)
    assert hasattr(model, "log_temperature") == config.loss.learnable_temperature


@pytest.mark.parametrize("overrides", list(_ABLATIONS.values()), ids=list(_ABLATIONS))
def test_ablation_shapes(overrides):
    config = _config(overrides=overrides)
    model = abstract_model(config)
    _check_structure(model, config)
    graphdef, params, rest = _split(model)
    batch = _random_batch(config)

    loss, metrics = jax.eval_shape(
        _loss_fn(graphdef, rest, config), params, batch, jax.random.key(0))
    assert (loss.shape, loss.dtype) == ((), jnp.float32)
    assert set(metrics) == _expected_metrics(config)
    for name, value in metrics.items():
        assert (value.shape, value.dtype) == ((), jnp.float32), name

    def embed(params, inputs, text_valid):
        return nnx.merge(graphdef, params, rest).global_embeddings(inputs, text_valid)

    embeddings = jax.eval_shape(
        embed, params, model_inputs(batch, config), batch["text_mask"].astype(bool))
    assert set(embeddings) == set(_MODALITIES)
    for modality, embedding in embeddings.items():
        assert embedding.shape == (_BATCH_SIZE, config.model.width), modality


# Switches that change the backward pass: what each layer keeps, the temperature's gradient.
_BACKWARD_ABLATIONS = {
    **{f"remat_policy={p}": {"model.remat_policy": p} for p in REMAT_POLICY_NAMES},
    "loss.learnable_temperature=True": {"loss.learnable_temperature": True},
}


@pytest.mark.parametrize(
    "overrides", list(_BACKWARD_ABLATIONS.values()), ids=list(_BACKWARD_ABLATIONS))
def test_gradient_shapes(overrides):
    config = _config(overrides=overrides)
    graphdef, params, rest = _split(abstract_model(config))
    value_and_grad = jax.value_and_grad(_loss_fn(graphdef, rest, config), has_aux=True)
    (loss, _), grads = jax.eval_shape(
        value_and_grad, params, _random_batch(config), jax.random.key(0))
    assert (loss.shape, loss.dtype) == ((), jnp.float32)
    assert jax.tree.map(lambda g: (g.shape, g.dtype), grads) == jax.tree.map(
        lambda p: (p.shape, p.dtype), params)


# --- Text padding: run on the tiny model.


def test_text_padding_is_masked(tiny):
    config, model = tiny
    graphdef, params, rest = _split(model)
    batch = _random_batch(config)
    ids, mask = batch["text_ids"], batch["text_mask"]
    valid = mask.astype(bool)
    assert not valid.all(), "the batch needs padded rows"

    @functools.partial(jax.jit, compiler_options=_QUICK_COMPILE)
    def embed_fn(params, token_ids):
        model = nnx.merge(graphdef, params, rest)
        return model.global_embeddings({"text": token_ids}, valid)["text"]

    def embed(token_ids):
        return np.asarray(embed_fn(params, token_ids))

    # A different id in [4, vocab) at every position.
    other = (ids - 3) % (config.text.vocab_size - 4) + 4
    reference = embed(ids)
    np.testing.assert_allclose(
        embed(np.where(valid, ids, other)), reference, rtol=0, atol=1e-6)

    # Row 1 is padded; its first token is real.
    changed = ids.copy()
    changed[1, 0] = other[1, 0]
    changed_embedding = embed(changed)
    assert np.abs(changed_embedding[1] - reference[1]).max() > 1e-4
    # Rows do not see each other.
    np.testing.assert_allclose(
        np.delete(changed_embedding, 1, axis=0), np.delete(reference, 1, axis=0),
        rtol=0, atol=1e-6)

