"""Public checkpoints (vlsa_jax/pretrained.py): each test writes a small checkpoint with the
real Hugging Face key names and PyTorch layouts, loads it, and checks the model against an
independent NumPy forward pass of the architecture the checkpoint comes from."""
import json
import logging
import math

import jax
import numpy as np
import pytest
from flax import nnx
from huggingface_hub import constants as hub_constants
from safetensors.numpy import save_file

from tests.helpers import load_config, mesh_of
from vlsa_jax import state as state_lib
from vlsa_jax.modalities import AUDIO, MODALITIES, TEXT, VIDEO
from vlsa_jax.models.embeddings import patchify_audio, patchify_video
from vlsa_jax.models.vlsa import build_model
from vlsa_jax.pretrained import PretrainedError, load_public_weights

# The checkpoints' LayerNorm epsilon, as in the public configs; the model uses its own
# (1e-6), a difference far below the tolerance on activations of order one.
HF_EPS = 1e-12
TOL = dict(rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------
# The model under test: the tiny variant (encoder 2 x 64, 4 heads, MLP 128; decoder
# 1 x 32, 4 heads; 32 x 32 frames in 8 x 8 patches, a 4 x 4 grid), two frames.


def tiny_config():
    config = load_config("pretrain.py", "variant=tiny")
    config.video.num_frames = 2
    return config


def fresh_params(config):
    """(graphdef, the model's state, its parameters as a nested dict of arrays)."""
    graphdef, state = nnx.split(build_model(config, nnx.Rngs(0)))
    return graphdef, state, nnx.to_pure_dict(state)


def model_with(graphdef, state, params):
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


def loaded_model(config):
    """(the model with the public weights of `config.init` loaded, its parameters before)."""
    graphdef, state, params = fresh_params(config)
    return model_with(graphdef, state, load_public_weights(config, params)), params


# ------------------------------------------------------------------------------------
# Checkpoints in Hugging Face layout: Linear weights [out, in], Conv2d patch kernels
# [D, 3, p, p], positions [1, 1 + N, D] with the CLS position first.


def write_checkpoint(directory, tensors, config_json):
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
              str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config_json))
    return directory


class Tensors:
    """Random tensors under Hugging Face names, scaled to keep activations of order one."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.tensors = {}

    def normal(self, key, shape, scale):
        self.tensors[key] = self.rng.normal(0.0, scale, shape).astype(np.float32)

    def linear(self, name, d_in, d_out):
        self.normal(f"{name}.weight", (d_out, d_in), d_in**-0.5)
        self.normal(f"{name}.bias", (d_out,), 0.1)

    def layer_norm(self, name, dim, names=("weight", "bias")):
        self.tensors[f"{name}.{names[0]}"] = (
            1.0 + self.rng.normal(0.0, 0.1, dim)).astype(np.float32)
        self.normal(f"{name}.{names[1]}", (dim,), 0.1)

    def vit_layers(self, prefix, depth, width, mlp):
        for i in range(depth):
            layer = f"{prefix}{i}."
            self.layer_norm(layer + "layernorm_before", width)
            for name in ("query", "key", "value"):
                self.linear(f"{layer}attention.attention.{name}", width, width)
            self.linear(layer + "attention.output.dense", width, width)
            self.layer_norm(layer + "layernorm_after", width)
            self.linear(layer + "intermediate.dense", width, mlp)
            self.linear(layer + "output.dense", mlp, width)


def vit_tensors(prefix="vit.", width=64, depth=2, mlp=128, patch=8, grid=4, seed=0):
    """A ViT encoder (ViTModel names under `prefix`) at `grid` x `grid` patches."""
    t = Tensors(seed)
    t.normal(prefix + "embeddings.cls_token", (1, 1, width), 0.02)
    t.normal(prefix + "embeddings.position_embeddings", (1, 1 + grid * grid, width), 0.5)
    t.normal(prefix + "embeddings.patch_embeddings.projection.weight",
             (width, 3, patch, patch), (3 * patch * patch) ** -0.5)
    t.normal(prefix + "embeddings.patch_embeddings.projection.bias", (width,), 0.1)
    t.vit_layers(prefix + "encoder.layer.", depth, width, mlp)
    t.layer_norm(prefix + "layernorm", width)
    return t


def mae_tensors(grid=4, decoder_grid=4, width=64, decoder_width=32, patch=8):
    """ViTMAEForPreTraining: the encoder under 'vit.' and the decoder (1 x 32, MLP 64)."""
    t = vit_tensors(grid=grid, width=width, patch=patch)
    t.linear("decoder.decoder_embed", width, decoder_width)
    t.normal("decoder.mask_token", (1, 1, decoder_width), 0.5)
    t.normal("decoder.decoder_pos_embed", (1, 1 + decoder_grid**2, decoder_width), 0.5)
    t.vit_layers("decoder.decoder_layers.", 1, decoder_width, 2 * decoder_width)
    t.layer_norm("decoder.decoder_norm", decoder_width)
    t.linear("decoder.decoder_pred", decoder_width, patch * patch * 3)
    return t.tensors


def vit_config_json(model_type="vit_mae", heads=4, decoder_heads=4):
    return {"model_type": model_type, "architectures": ["ViTMAEForPreTraining"],
            "num_attention_heads": heads, "decoder_num_attention_heads": decoder_heads,
            "hidden_act": "gelu", "layer_norm_eps": HF_EPS, "norm_pix_loss": False}


def write_mae(tmp_path, **kwargs):
    return write_checkpoint(tmp_path / "vit-mae", mae_tensors(**kwargs), vit_config_json())


def bert_tensors(prefix="bert.", norm_names=("weight", "bias"), vocab=512, width=64,
                 max_positions=16):
    t = Tensors(1)
    e = prefix + "embeddings."
    t.normal(e + "word_embeddings.weight", (vocab, width), 1.0)
    t.normal(e + "position_embeddings.weight", (max_positions, width), 0.5)
    t.normal(e + "token_type_embeddings.weight", (2, width), 0.5)
    t.layer_norm(e + "LayerNorm", width, norm_names)
    t.linear(prefix + "encoder.layer.0.attention.self.query", width, width)
    t.normal("cls.predictions.bias", (vocab,), 0.1)
    return t.tensors


def write_bert(tmp_path, **kwargs):
    return write_checkpoint(
        tmp_path / "bert", bert_tensors(**kwargs),
        {"model_type": "bert", "architectures": ["BertForMaskedLM"], "layer_norm_eps": HF_EPS})


# ------------------------------------------------------------------------------------
# The NumPy reference: Hugging Face's ViT, ViTMAE decoder and BERT embeddings, float64.


def np_layer_norm(x, weight, bias, eps=HF_EPS):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


_erf = np.vectorize(math.erf)  # the exact GELU's


def ln(t, name):
    return t[f"{name}.weight"], t[f"{name}.bias"]


def np_linear(x, t, name):
    return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]


def np_attention(x, t, name, heads):
    b, s, d = x.shape

    def split(y):
        return y.reshape(b, s, heads, d // heads).transpose(0, 2, 1, 3)

    q, k, v = (split(np_linear(x, t, f"{name}.attention.{n}")) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    y = (weights @ v).transpose(0, 2, 1, 3).reshape(b, s, d)
    return np_linear(y, t, f"{name}.output.dense")


def np_vit_layer(x, t, layer, heads):
    """ViTLayer: pre-LN attention and MLP (exact GELU), each with a residual."""
    x = x + np_attention(np_layer_norm(x, *ln(t, layer + "layernorm_before")), t,
                         layer + "attention", heads)
    h = np_linear(np_layer_norm(x, *ln(t, layer + "layernorm_after")), t,
                  layer + "intermediate.dense")
    h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))
    return x + np_linear(h, t, layer + "output.dense")


def np_stack(x, t, layer_prefix, depth, final_norm, heads):
    for i in range(depth):
        x = np_vit_layer(x, t, f"{layer_prefix}{i}.", heads)
    return np_layer_norm(x, *ln(t, final_norm))


def np_patch_embedding(frames, conv, bias):
    """frames [B, T, H, W, 3] -> [B, T*(H/p)*(W/p), D]: Conv2d(stride p) on each frame in
    NCHW, the output grid flattened row by row, frame after frame."""
    b, t, h, w, c = frames.shape
    p = conv.shape[-1]
    images = frames.transpose(0, 1, 4, 2, 3)
    blocks = images.reshape(b, t, c, h // p, p, w // p, p)
    out = np.einsum("btcyixj,dcij->btyxd", blocks, conv) + bias
    return out.reshape(b, t * (h // p) * (w // p), -1)


def np_bilinear(grid, side):
    """[n, n, D] -> [side, side, D] as torch's interpolate(bilinear, align_corners=False)."""
    n = grid.shape[0]
    src = np.maximum((np.arange(side) + 0.5) * n / side - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    frac = src - lo
    rows = grid[lo] * (1 - frac)[:, None, None] + grid[hi] * frac[:, None, None]
    return rows[:, lo] * (1 - frac)[None, :, None] + rows[:, hi] * frac[None, :, None]


def np_grid_positions(table, side):
    """[1, 1 + n*n, D] -> [side*side, D]: CLS dropped, the grid resized."""
    grid = table[0, 1:]
    n = int(round(np.sqrt(grid.shape[0])))
    return np_bilinear(grid.reshape(n, n, -1), side).reshape(side * side, -1)


def frame_positions(temporal, spatial):
    """Our factorised video positions: [T, D] + [P, D] -> [T*P, D], frame-major."""
    return (temporal[:, None] + spatial[None]).reshape(-1, temporal.shape[-1])


def as64(tensors):
    return {k: v.astype(np.float64) for k, v in tensors.items()}


# ------------------------------------------------------------------------------------
# ViT and ViTMAE.


def test_vit_mae_encoder_matches_numpy_vit(tmp_path):
    config = tiny_config()
    tensors = mae_tensors()
    config.init.vit = str(write_checkpoint(tmp_path / "mae", tensors, vit_config_json()))
    model, fresh = loaded_model(config)
    frames = np.random.default_rng(2).normal(size=(2, 2, 32, 32, 3)).astype(np.float32)

    patches = patchify_video(frames, config.video.patch)
    ours = model.encode({VIDEO: (model.tokens(VIDEO, patches), None)})[VIDEO]

    t = as64(tensors)
    # The frame positions and the modality type are the model's own (not in a ViT).
    own = jax.tree.map(lambda x: np.asarray(x, np.float64), fresh)
    spatial = t["vit.embeddings.position_embeddings"][0, 1:]
    x = (np_patch_embedding(frames.astype(np.float64),
                            t["vit.embeddings.patch_embeddings.projection.weight"],
                            t["vit.embeddings.patch_embeddings.projection.bias"])
         + frame_positions(own["embeddings"][VIDEO]["positions"]["tables"][0], spatial)
         + own["modality_type"][MODALITIES.index(VIDEO)])
    expected = np_stack(x, t, "vit.encoder.layer.", 2, "vit.layernorm", heads=4)
    np.testing.assert_allclose(np.asarray(ours), expected, **TOL)


def test_vit_mae_decoder_matches_numpy_decoder(tmp_path):
    config = tiny_config()
    tensors = mae_tensors()
    config.init.vit = str(write_checkpoint(tmp_path / "mae", tensors, vit_config_json()))
    model, fresh = loaded_model(config)
    encoded = np.random.default_rng(3).normal(size=(2, 2 * 16, 64)).astype(np.float32)

    ours = model.reconstruct(VIDEO, encoded, None, None)

    t = as64(tensors)
    temporal = np.asarray(fresh["decoder_inputs"][VIDEO]["positions"]["tables"][0], np.float64)
    x = (np_linear(encoded.astype(np.float64), t, "decoder.decoder_embed")
         + frame_positions(temporal, t["decoder.decoder_pos_embed"][0, 1:]))
    x = np_stack(x, t, "decoder.decoder_layers.", 1, "decoder.decoder_norm", heads=4)
    expected = np_linear(x, t, "decoder.decoder_pred")  # MAE's pixels: row, column, channel
    np.testing.assert_allclose(np.asarray(ours), expected, **TOL)
    np.testing.assert_array_equal(model.decoder_inputs[VIDEO].mask_token[...],
                                  tensors["decoder.mask_token"].reshape(-1))


@pytest.mark.parametrize("grid", [6, 3])
def test_positions_resized_bilinearly(tmp_path, grid):
    config = tiny_config()
    tensors = mae_tensors(grid=grid, decoder_grid=grid)
    config.init.vit = str(write_checkpoint(tmp_path / "mae", tensors, vit_config_json()))
    model, _ = loaded_model(config)

    side = config.video.size // config.video.patch
    for ours, key in (
            (model.embeddings[VIDEO].positions.tables[1], "vit.embeddings.position_embeddings"),
            (model.decoder_inputs[VIDEO].positions.tables[1], "decoder.decoder_pos_embed")):
        np.testing.assert_allclose(ours[...], np_grid_positions(tensors[key], side), **TOL)


def test_plain_vit_fills_every_encoder_and_no_decoder(tmp_path):
    """A ViTModel (google/vit-base-patch16-224-in21k): no 'vit.' prefix, a pooler, no decoder;
    with one encoder per modality ('none'), each starts from it."""
    config = tiny_config()
    config.model.joint_modalities = "none"
    t = vit_tensors(prefix="")
    t.linear("pooler.dense", 64, 64)
    config.init.vit = str(write_checkpoint(
        tmp_path / "vit", t.tensors, vit_config_json(model_type="vit") | {
            "architectures": ["ViTModel"]}))
    graphdef, state, fresh = fresh_params(config)

    params = load_public_weights(config, fresh)

    assert len(params["encoders"]) == 3
    for encoder in params["encoders"].values():
        np.testing.assert_array_equal(encoder["blocks"]["fc1"]["kernel"][1],
                                      t.tensors["encoder.layer.1.intermediate.dense.weight"].T)
        np.testing.assert_array_equal(encoder["norm"]["scale"], t.tensors["layernorm.weight"])
    for before, after in zip(jax.tree.leaves(fresh["decoders"]),
                             jax.tree.leaves(params["decoders"])):
        np.testing.assert_array_equal(before, after)


def test_audio_from_vit_is_the_channel_mean(tmp_path):
    """The audio projection applied to a spectrogram patch is the image kernel, averaged over
    RGB, applied to the spectrogram as an image with frequency along the rows (CAV-MAE)."""
    config = tiny_config()
    tensors = mae_tensors()
    config.init.vit = str(write_checkpoint(tmp_path / "mae", tensors, vit_config_json()))
    config.init.audio_from_vit = True
    model, _ = loaded_model(config)
    spectrogram = np.random.default_rng(4).normal(size=(1, 32, 32)).astype(np.float32)

    ours = model.embeddings[AUDIO].proj(patchify_audio(spectrogram, config.audio.patch))

    conv = tensors["vit.embeddings.patch_embeddings.projection.weight"].astype(np.float64)
    bias = tensors["vit.embeddings.patch_embeddings.projection.bias"]
    p = config.audio.patch
    image = spectrogram[0].T.astype(np.float64)  # [freq, time]
    blocks = image.reshape(32 // p, p, 32 // p, p)  # [freq patch, i, time patch, j]
    expected = np.einsum("fitj,dij->tfd", blocks, conv.mean(axis=1)) + bias
    np.testing.assert_allclose(np.asarray(ours[0]), expected.reshape(-1, 64), **TOL)


def test_audio_from_vit_needs_a_vit():
    config = tiny_config()
    config.init.audio_from_vit = True
    with pytest.raises(PretrainedError, match="init.audio_from_vit"):
        load_public_weights(config, fresh_params(config)[2])


# ------------------------------------------------------------------------------------
# BERT.


@pytest.mark.parametrize("prefix, norm_names", [("bert.", ("weight", "bias")),
                                                ("", ("gamma", "beta"))])
def test_bert_text_embedding_matches_numpy_bert(tmp_path, prefix, norm_names):
    config = tiny_config()
    tensors = bert_tensors(prefix=prefix, norm_names=norm_names)
    config.init.bert = str(write_checkpoint(
        tmp_path / "bert", tensors, {"model_type": "bert", "layer_norm_eps": HF_EPS}))
    model, _ = loaded_model(config)
    ids = np.random.default_rng(5).integers(0, 512, size=(2, config.text.max_len))

    ours = model.embeddings[TEXT](ids)

    t = as64(tensors)
    e = prefix + "embeddings."
    x = (t[e + "word_embeddings.weight"][ids]
         + t[e + "position_embeddings.weight"][: config.text.max_len]
         + t[e + "token_type_embeddings.weight"][0])  # one segment: every token type 0
    expected = np_layer_norm(x, t[f"{e}LayerNorm.{norm_names[0]}"],
                             t[f"{e}LayerNorm.{norm_names[1]}"])
    np.testing.assert_allclose(np.asarray(ours), expected, **TOL)


# ------------------------------------------------------------------------------------
# Errors, logging, shardings, the Hub, the config.


def test_shape_mismatch_names_both_shapes(tmp_path):
    config = tiny_config()
    directory = write_checkpoint(tmp_path / "wide", mae_tensors(width=96), vit_config_json())
    config.init.vit = str(directory)
    with pytest.raises(PretrainedError) as error:
        load_public_weights(config, fresh_params(config)[2])
    message = str(error.value)
    assert str(directory / "model.safetensors") in message
    assert "vit.encoder.layer.{0..1}.layernorm_before.weight [2, 96]" in message
    assert "encoders/0/blocks/norm1/scale [2, 64]" in message


def test_heads_mismatch_is_an_error(tmp_path):
    config = tiny_config()
    config.init.vit = str(write_checkpoint(
        tmp_path / "mae", mae_tensors(), vit_config_json(heads=8)))
    with pytest.raises(PretrainedError, match=r"config.json: num_attention_heads is 8, "
                                              r"model.num_heads is 4"):
        load_public_weights(config, fresh_params(config)[2])


def test_other_architecture_names_the_expected_one(tmp_path):
    config = tiny_config()
    config.init.vit = str(write_bert(tmp_path))
    with pytest.raises(PretrainedError,
                       match=r"bert/config.json: model_type 'bert' is not one of vit, vit_mae"):
        load_public_weights(config, fresh_params(config)[2])


def test_missing_weights_file_is_named(tmp_path):
    config = tiny_config()
    directory = write_mae(tmp_path)
    (directory / "model.safetensors").unlink()
    config.init.vit = str(directory)
    with pytest.raises(PretrainedError, match=r"vit-mae/model.safetensors: no such file"):
        load_public_weights(config, fresh_params(config)[2])


def test_log_lists_filled_and_left_alone(tmp_path, caplog):
    config = tiny_config()
    config.init.vit = str(write_mae(tmp_path))
    config.init.bert = str(write_bert(tmp_path))
    config.init.audio_from_vit = True
    with caplog.at_level(logging.INFO):
        load_public_weights(config, fresh_params(config)[2])
    text = caplog.text
    filled, _, left = text.partition("left at their initialisation:")
    assert ("encoders/0/blocks/attn/query/kernel <- "
            "vit.encoder.layer.{0..1}.attention.attention.query.weight") in filled
    assert ("embeddings/video/proj/kernel <- "
            "vit.embeddings.patch_embeddings.projection.weight") in filled
    assert "embeddings/audio/proj/kernel <- vit.embeddings" in filled
    assert "heads/video/kernel <- decoder.decoder_pred.weight" in filled
    assert "decoder_inputs/video/mask_token <- decoder.mask_token" in filled
    assert "embeddings/text/norm/scale <- bert.embeddings.LayerNorm.weight" in filled
    for path in ("embeddings/video/positions/tables/0", "modality_type",
                 "heads/text/logits/kernel", "decoder_inputs/audio/proj/kernel"):
        assert f"    {path}\n" in left
    assert "vit.embeddings.cls_token" in left  # among the tensors not used
    assert "bert.encoder.layer.*.attention.self.query.weight" in left
    assert "layer_norm_eps 1e-12, the model's 1e-06" in left


def test_shardings_kept(tmp_path):
    config = tiny_config()
    config.init.vit = str(write_mae(tmp_path))
    mesh = mesh_of(config, data=2, fsdp=4)
    _, abstract = state_lib.abstract_params(config, mesh)
    params = jax.device_put(fresh_params(config)[2], jax.tree.map(lambda x: x.sharding, abstract))

    loaded = load_public_weights(config, params)

    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for before, after in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
        assert after.sharding == before.sharding and after.dtype == before.dtype


def test_nothing_to_load_returns_the_params():
    config = tiny_config()
    params = fresh_params(config)[2]
    assert load_public_weights(config, params) is params


def test_hub_name_offline_says_how_to_fetch(tmp_path, monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE and HF_HOME when imported: set its constants.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.chdir(tmp_path)  # no local directory of that name
    config = tiny_config()
    config.init.vit = "facebook/vit-mae-base"
    with pytest.raises(PretrainedError, match=(
            r"^init.vit: facebook/vit-mae-base is not in the Hugging Face cache.*"
            r"`hf download facebook/vit-mae-base config.json model.safetensors "
            r"--local-dir DIR` and pass DIR$")):
        load_public_weights(config, fresh_params(config)[2])


def test_init_public_config_arg():
    config = load_config("pretrain.py", "init=public")
    assert (config.init.vit, config.init.bert) == ("facebook/vit-mae-base", "bert-base-uncased")
    assert config.init.audio_from_vit
    with pytest.raises(ValueError, match="init=public needs variant=base"):
        load_config("pretrain.py", "variant=tiny,init=public")
