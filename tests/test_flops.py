"""The analytic FLOP count (vlsa_jax.flops) against XLA's cost analysis of the same step.

The reference is `jax.jit(train_step).lower(...).cost_analysis()['flops']`: XLA's
count of the whole jitted training step (forward, backward, optimizer) as written,
before optimisation; lowering needs no compile, so it takes seconds whatever the
widths. XLA counts the body of a loop once, and the encoder and decoder layers run
under `nnx.scan` (a loop over the layers), so the step is lowered with the scans
fully unrolled: `nnx.scan` is patched to `unroll=True` for the test, which makes
`lax.scan` emit every layer in line (no loop). The model is not changed otherwise.

The configs have the base model's widths and sequence lengths with 2 encoder and 2
decoder layers, and the counts agree within 3%: XLA also counts elementwise work
(LayerNorms, softmaxes, GELUs, the optimizer; under 1% at these widths), and the
analytic count's one known overcount, the backward pass of the patch projections
(3 x forward, though their input needs no gradient), is up to 2-3% of a step
without LPMM. At the tiny variant's widths (64 and 32) elementwise work is about 8%.
"""
import functools
import pathlib

import jax
import pytest
from flax import nnx

from vlsa_jax import config_lib, flops, sharding, train
from vlsa_jax.config_validation import validate_config
from vlsa_jax.data.source import random_batch
from vlsa_jax.modalities import modalities_of

_CONFIG = pathlib.Path(__file__).parents[1] / "configs" / "pretrain.py"


def _config(variant="base", batch_size=2, **overrides):
    config = config_lib.load_config_module(_CONFIG).get_config(
        f"variant={variant},batch_size={batch_size}")
    for field, value in overrides.items():
        section, name = field.split("__")
        config[section][name] = value
    return config


def _base_widths(**overrides):
    """The base model's widths and inputs with 2 encoder and 2 decoder layers."""
    return _config(model__depth=2, model__decoder_depth=2, **overrides)


@pytest.fixture
def unrolled_scans(monkeypatch):
    """Every `nnx.scan` unrolls its loop, so that XLA counts each layer."""
    monkeypatch.setattr(nnx, "scan", functools.partial(nnx.scan, unroll=True))


def xla_flops(config) -> float:
    """XLA's FLOP count of the jitted training step of `config`, on one device."""
    validate_config(config, 1)
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    training = train.setup_training(config, mesh)
    batch = {name: jax.ShapeDtypeStruct(array.shape, array.dtype)
             for name, array in random_batch(
                 config, 0, modalities_of(config.data.modalities)).items()}
    return training.step.lower(training.state.abstract, batch).cost_analysis()["flops"]


@pytest.mark.parametrize("overrides", [
    {},  # the default objective: LPMM + unimodal GAM on masked inputs
    {"gam__masked_inputs": False},
    {"gam__features": "joint"},
    {"gam__features": "joint", "gam__masked_inputs": False},
    {"loss__lpmm": False},
    {"gam__shifted_audio_negatives": (0.25, 0.75), "gam__reversed_video_negatives": True},
    {"matching__head": "joint_pass", "matching__negatives": "hard"},
    {"model__joint_modalities": "none", "model__decoder_sharing": "none", "loss__vtm": True},
], ids=lambda overrides: ",".join(f"{k}={v}" for k, v in overrides.items()) or "default")
def test_matches_xla_cost_analysis(unrolled_scans, overrides):
    config = _base_widths(**overrides)
    analytic, reference = flops.model_flops_per_step(config), xla_flops(config)
    assert analytic == pytest.approx(reference, rel=0.03)


def test_matches_xla_cost_analysis_tiny(unrolled_scans):
    config = _config("tiny", batch_size=4)
    analytic, reference = flops.model_flops_per_step(config), xla_flops(config)
    # XLA also counts elementwise work, a larger share at widths 64 and 32.
    assert reference > analytic
    assert analytic == pytest.approx(reference, rel=0.12)


def test_base_step_at_batch_2():
    config = _config()
    # 1.94 TFLOP, of which the video decoder over all 1568 tokens is the largest pass.
    assert flops.model_flops_per_step(config) == pytest.approx(1.941e12, rel=1e-3)
    parts = flops.flops_breakdown(config)
    assert max(parts, key=parts.get) == "decoder/video"
    assert flops.model_flops_per_step(config) == pytest.approx(3 * sum(parts.values()))


def test_stack_formula():
    # One layer over S = 2 tokens of width 1 and MLP 1: 8 S + 4 S + 4 S^2.
    assert flops.stack_flops(2, 1, 1, 1) == 8 * 2 + 4 * 2 + 4 * 4
    assert flops.stack_flops(3, 5, 4, 7) == 4 * flops.stack_flops(3, 5, 1, 7)


def test_token_counts_follow_the_masks():
    total, kept = flops.token_counts(_config())
    assert total == {"video": 8 * 196, "audio": 256, "text": 40}
    assert kept == {"video": 8 * 49, "audio": 64, "text": 40}  # 75% of each frame dropped
    total, _ = flops.token_counts(_config(data__modalities="at"))
    assert set(total) == {"audio", "text"}


@pytest.mark.parametrize("overrides", [
    {"model__remat_policy": "full"},
    {"model__decoder_sharing": "none"},
    {"model__attention_impl": "cudnn"},
])
def test_settings_that_change_no_model_flops(overrides):
    assert (flops.model_flops_per_step(_config(**overrides))
            == flops.model_flops_per_step(_config()))


def test_switches_add_their_passes():
    default = flops.flops_breakdown(_config())
    unmasked = flops.flops_breakdown(_config(gam__masked_inputs=False))
    assert unmasked["encoder/global_video"] > 3.9 * default["encoder/global_video"]
    assert unmasked["patch_projection/video"] == 2 * default["patch_projection/video"]
    joint = flops.flops_breakdown(_config(gam__features="joint"))
    assert not any(key.startswith("encoder/global") for key in joint)
    no_lpmm = flops.flops_breakdown(_config(loss__lpmm=False))
    assert not any(key.startswith(("decoder/", "head/", "encoder/lpmm")) for key in no_lpmm)
    negatives = flops.flops_breakdown(_config(gam__shifted_audio_negatives=(0.25, 0.75)))
    assert negatives["encoder/desync_audio"] == default["encoder/global_audio"]
    bf16 = _config()
    bf16.dtype = "bfloat16"
    assert flops.model_flops_per_step(bf16) == flops.model_flops_per_step(_config())
