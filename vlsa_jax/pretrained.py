"""Public checkpoints in Hugging Face layout -> the model's initial parameters.

`config.init.vit` names a ViT (google/vit-base-patch16-224-in21k) or ViTMAE
(facebook/vit-mae-base) checkpoint and `config.init.bert` a BERT one (bert-base-uncased):
a directory holding `config.json` and `model.safetensors`, or a Hub name resolved through
the Hugging Face cache. Tensors are read with safetensors' NumPy API, never a pickle, and
converted from PyTorch layouts to the model's:

- ViT / ViTMAE encoder -> every encoder stack (blocks and final LayerNorm), the video
  patch projection and the spatial table of the video positions (CLS position dropped,
  the grid resized when the model's differs);
- ViTMAE decoder -> every decoder stack, the video decoder input (projection, mask token,
  spatial positions) and the video pixel head;
- `init.audio_from_vit` -> the audio patch projection, from the image one;
- BERT embeddings -> the text embedding (words, positions, LayerNorm).

Everything else keeps its initialisation; the log lists what was filled and what was not.
"""
import dataclasses
import json
import math
import pathlib
import re
from typing import Callable

import einops
import jax
import numpy as np
from absl import logging
from huggingface_hub import errors as hub_errors
from huggingface_hub import snapshot_download
from safetensors import safe_open

from vlsa_jax.modalities import AUDIO, TEXT, VIDEO

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
VIT_TYPES, BERT_TYPES = ("vit", "vit_mae"), ("bert",)
# A Hub model id: 'name' or 'owner/name'.
_HUB_NAME = re.compile(r"[\w.-]+(/[\w.-]+)?")

# Our block parameter -> the tensor of one Hugging Face ViT layer (ViTLayer, ViTMAELayer).
_BLOCK_TENSORS = {
    ("norm1", "scale"): "layernorm_before.weight",
    ("norm1", "bias"): "layernorm_before.bias",
    ("attn", "query", "kernel"): "attention.attention.query.weight",
    ("attn", "query", "bias"): "attention.attention.query.bias",
    ("attn", "key", "kernel"): "attention.attention.key.weight",
    ("attn", "key", "bias"): "attention.attention.key.bias",
    ("attn", "value", "kernel"): "attention.attention.value.weight",
    ("attn", "value", "bias"): "attention.attention.value.bias",
    ("attn", "out", "kernel"): "attention.output.dense.weight",
    ("attn", "out", "bias"): "attention.output.dense.bias",
    ("norm2", "scale"): "layernorm_after.weight",
    ("norm2", "bias"): "layernorm_after.bias",
    ("fc1", "kernel"): "intermediate.dense.weight",
    ("fc1", "bias"): "intermediate.dense.bias",
    ("fc2", "kernel"): "output.dense.weight",
    ("fc2", "bias"): "output.dense.bias",
}

ParamPath = tuple  # a parameter's keys in the params dict: ('encoders', 0, 'norm', 'scale')


class PretrainedError(ValueError):
    """A public checkpoint cannot be found, read, or fitted to the model."""


@dataclasses.dataclass(frozen=True)
class Source:
    """Checkpoint tensors converted into one parameter's layout."""

    name: str  # for the log and errors, e.g. 'vit.encoder.layer.{0..11}.output.dense.weight'
    keys: tuple[str, ...]  # every tensor read
    shape: tuple[int, ...]  # in the checkpoint (layers first for a stack)
    value: np.ndarray  # in the parameter's layout


Sources = dict[ParamPath, Source]  # what one checkpoint fills


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One public checkpoint directory: its config.json and the tensors of its safetensors."""

    directory: pathlib.Path
    config: dict
    keys: frozenset[str]

    @property
    def file(self) -> pathlib.Path:
        return self.directory / WEIGHTS_FILE

    def tensor(self, key: str) -> np.ndarray:
        if key not in self.keys:
            raise PretrainedError(f"{self.file}: no tensor {key!r}")
        with safe_open(self.file, framework="np") as f:
            return f.get_tensor(key)

    def source(self, key: str, convert: Callable[[np.ndarray], np.ndarray] = np.asarray,
               how: str = "") -> Source:
        """Reads the tensor `key` and converts it into a parameter's layout.

        Args:
          key: the tensor's name in the checkpoint.
          convert: checkpoint layout -> the parameter's.
          how: what `convert` does beyond changing the layout, for the log ('' if nothing).

        Raises:
          PretrainedError: the tensor is missing, or `convert` rejects its shape.
        """
        tensor = self.tensor(key)
        try:
            value = convert(tensor)
        except ValueError as error:
            raise PretrainedError(f"{self.file}: {key} {list(tensor.shape)}: {error}") from None
        return Source(f"{key} ({how})" if how else key, (key,), tensor.shape, value)


# ------------------------------------------------------------------------------------
# Finding and reading a checkpoint.


def resolve_directory(name: str, field: str) -> pathlib.Path:
    """Finds a checkpoint: a local directory, or a Hub name's snapshot in the Hugging Face
    cache (only config.json and model.safetensors, downloaded on first use where the Hub
    can be reached).

    Raises:
      PretrainedError: `name` is neither a directory nor a model the cache holds or the
        Hub gives; offline, the message says how to fetch it.
    """
    path = pathlib.Path(name).expanduser()
    if path.is_dir():
        return path
    if not _HUB_NAME.fullmatch(name):
        raise PretrainedError(f"init.{field}: no directory {name!r}")
    try:
        return pathlib.Path(snapshot_download(name, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]))
    except hub_errors.LocalEntryNotFoundError:
        # Offline (HF_HUB_OFFLINE=1) or no connection, and not in the cache.
        raise PretrainedError(
            f"init.{field}: {name} is not in the Hugging Face cache and the Hub cannot be "
            f"reached; fetch it once with `hf download {name} {CONFIG_FILE} {WEIGHTS_FILE} "
            f"--local-dir DIR` and pass DIR") from None
    except hub_errors.RepositoryNotFoundError:
        raise PretrainedError(
            f"init.{field}: {name!r} is neither a directory nor a model on the Hub") from None


def read_checkpoint(name: str, field: str, model_types: tuple[str, ...]) -> Checkpoint:
    """Opens the checkpoint `name` (a directory or Hub name) of `config.init.<field>`.

    Raises:
      PretrainedError: a file is missing, or config.json's model_type is not one of
        `model_types`.
    """
    directory = resolve_directory(name, field)
    config_file = directory / CONFIG_FILE
    for required in (config_file, directory / WEIGHTS_FILE):
        if not required.is_file():
            raise PretrainedError(f"{required}: no such file (init.{field} needs "
                                  f"{CONFIG_FILE} and {WEIGHTS_FILE})")
    config = json.loads(config_file.read_text())
    model_type = config.get("model_type")
    if model_type not in model_types:
        raise PretrainedError(
            f"{config_file}: model_type {model_type!r} is not one of {', '.join(model_types)}, "
            f"which init.{field} expects")
    with safe_open(directory / WEIGHTS_FILE, framework="np") as f:
        keys = frozenset(f.keys())
    return Checkpoint(directory, config, keys)


# ------------------------------------------------------------------------------------
# PyTorch layouts -> ours.


def linear_kernel(weight: np.ndarray) -> np.ndarray:
    """Transposes an nn.Linear weight [out, in] into our kernel [in, out]."""
    return weight.T


def video_patch_kernel(conv: np.ndarray) -> np.ndarray:
    """Turns a Conv2d patch kernel [D, 3, p, p] into our linear kernel [p*p*3, D].

    Rows follow `embeddings.patchify_video`: pixel row, pixel column, then channel.
    """
    return einops.rearrange(conv, "d c p1 p2 -> (p1 p2 c) d")


def audio_patch_kernel(conv: np.ndarray) -> np.ndarray:
    """Turns a Conv2d image patch kernel [D, 3, p, p] into our audio kernel [p*p, D].

    The mean over the 3 input channels, as CAV-MAE initialises its audio branch. The
    spectrogram is seen as an image as CAV-MAE and AST see it: frequency along the rows,
    time along the columns; our audio patches are time-major (`patchify_audio`).
    """
    return einops.rearrange(conv.mean(axis=1), "d f t -> (t f) d")


def resize_grid(grid: np.ndarray, side: int) -> np.ndarray:
    """Resizes a grid [n, n, D] to [side, side, D], bilinear with half-pixel centres.

    The same as PyTorch's `interpolate(mode='bilinear', align_corners=False)`, hence no
    antialiasing when shrinking.
    """
    if grid.shape[0] == side:
        return grid
    resized = jax.image.resize(grid, (side, side, grid.shape[-1]), "linear", antialias=False)
    return np.asarray(resized)


def spatial_positions(table: np.ndarray, side: int) -> np.ndarray:
    """Turns ViT positions [1, 1+n*n, D] (CLS first, then the n x n grid row by row) into
    our spatial table [side*side, D], in the same row-major patch order."""
    grid = table.reshape(-1, table.shape[-1])[1:]
    n = math.isqrt(grid.shape[0])
    if n * n != grid.shape[0]:
        raise ValueError(f"{grid.shape[0]} positions after the CLS one are not a square grid")
    grid = resize_grid(grid.reshape(n, n, -1), side)
    return grid.reshape(side * side, -1)


def position_source(ckpt: Checkpoint, key: str, side: int) -> Source:
    """Reads a ViT position table as our spatial table of a `side` x `side` grid."""
    source = ckpt.source(key, lambda t: spatial_positions(t, side))
    n = math.isqrt(source.shape[-2] - 1)
    how = "CLS dropped" + (f", {n}x{n} resized to {side}x{side}" if n != side else "")
    return dataclasses.replace(source, name=f"{key} ({how})")


def flat(tensor: np.ndarray) -> np.ndarray:
    """Flattens a mask token [1, 1, D] to [D]."""
    return tensor.reshape(-1)


# ------------------------------------------------------------------------------------
# Checkpoint tensors -> our parameters.


def num_layers(ckpt: Checkpoint, layer_prefix: str) -> int:
    """Counts the layers `<layer_prefix>N.` the checkpoint holds."""
    pattern = re.compile(re.escape(layer_prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for m in map(pattern.match, ckpt.keys) if m}
    return max(indices) + 1 if indices else 0


def stack_sources(ckpt: Checkpoint, layer_prefix: str, final_norm: str) -> Sources:
    """Maps a checkpoint's layer stack onto a Stack's parameters (paths relative to it):
    each layer's tensors stacked along our leading 'layers' axis, and the final LayerNorm
    where the checkpoint has one."""
    depth = num_layers(ckpt, layer_prefix)
    if not depth:
        raise PretrainedError(f"{ckpt.file}: no layers {layer_prefix}N.*")
    out = {}
    for ours, name in _BLOCK_TENSORS.items():
        keys = tuple(f"{layer_prefix}{i}.{name}" for i in range(depth))
        tensors = [ckpt.tensor(k) for k in keys]
        convert = linear_kernel if ours[-1] == "kernel" else np.asarray
        out[("blocks", *ours)] = Source(
            f"{layer_prefix}{{0..{depth - 1}}}.{name}", keys, (depth, *tensors[0].shape),
            np.stack([convert(t) for t in tensors]))
    if f"{final_norm}.weight" in ckpt.keys:
        out[("norm", "scale")] = ckpt.source(f"{final_norm}.weight")
        out[("norm", "bias")] = ckpt.source(f"{final_norm}.bias")
    return out


def linear_sources(ckpt: Checkpoint, name: str, path: ParamPath) -> Sources:
    """Maps the nn.Linear `name` onto our Linear at `path`."""
    return {(*path, "kernel"): ckpt.source(f"{name}.weight", linear_kernel),
            (*path, "bias"): ckpt.source(f"{name}.bias")}


def vit_prefix(ckpt: Checkpoint) -> str:
    """Returns the encoder's key prefix: 'vit.' in ViT*For* checkpoints
    (ViTMAEForPreTraining, ViTForImageClassification), '' in a bare ViTModel / ViTMAEModel."""
    name = "embeddings.patch_embeddings.projection.weight"
    return "vit." if "vit." + name in ckpt.keys else ""


def check_vit_config(ckpt: Checkpoint, config, with_decoder: bool) -> None:
    """Checks what shapes cannot show: the numbers of heads and the MLP's activation."""
    m = config.model
    expected = {"num_attention_heads": (m.num_heads, "model.num_heads"),
                "hidden_act": ("gelu", "the model's exact GELU")}
    if with_decoder:
        expected["decoder_num_attention_heads"] = (m.decoder_num_heads, "model.decoder_num_heads")
    for field, (ours, what) in expected.items():
        if ckpt.config.get(field) != ours:
            raise PretrainedError(
                f"{ckpt.directory / CONFIG_FILE}: {field} is {ckpt.config.get(field)!r}, "
                f"{what} is {ours!r}")


def vit_encoder_sources(ckpt: Checkpoint, config, num_encoders: int) -> Sources:
    """Maps a ViT onto every encoder stack, the video patch projection and the video
    spatial positions."""
    prefix = vit_prefix(ckpt)
    side = config.video.size // config.video.patch
    stack = stack_sources(ckpt, f"{prefix}encoder.layer.", f"{prefix}layernorm")
    out = {("encoders", i, *path): s for i in range(num_encoders) for path, s in stack.items()}
    embeddings = f"{prefix}embeddings."
    out[("embeddings", VIDEO, "proj", "kernel")] = ckpt.source(
        embeddings + "patch_embeddings.projection.weight", video_patch_kernel)
    out[("embeddings", VIDEO, "proj", "bias")] = ckpt.source(
        embeddings + "patch_embeddings.projection.bias")
    out[("embeddings", VIDEO, "positions", "tables", 1)] = position_source(
        ckpt, embeddings + "position_embeddings", side)
    return out


def mae_decoder_sources(ckpt: Checkpoint, config, num_decoders: int) -> Sources:
    """Maps ViTMAE's decoder onto every decoder stack, the video decoder input and head.

    The head's output is MAE's patchified pixels, row, column, then channel: the order of
    our video patches, so its rows map one to one.
    """
    side = config.video.size // config.video.patch
    stack = stack_sources(ckpt, "decoder.decoder_layers.", "decoder.decoder_norm")
    out = {("decoders", i, *path): s for i in range(num_decoders) for path, s in stack.items()}
    out.update(linear_sources(ckpt, "decoder.decoder_embed", ("decoder_inputs", VIDEO, "proj")))
    out[("decoder_inputs", VIDEO, "mask_token")] = ckpt.source("decoder.mask_token", flat)
    out[("decoder_inputs", VIDEO, "positions", "tables", 1)] = position_source(
        ckpt, "decoder.decoder_pos_embed", side)
    out.update(linear_sources(ckpt, "decoder.decoder_pred", ("heads", VIDEO)))
    return out


def audio_sources(ckpt: Checkpoint) -> Sources:
    """Maps the image patch projection onto the audio one (`audio_patch_kernel`)."""
    embeddings = f"{vit_prefix(ckpt)}embeddings.patch_embeddings.projection."
    return {("embeddings", AUDIO, "proj", "kernel"): ckpt.source(
                embeddings + "weight", audio_patch_kernel, "mean over RGB"),
            ("embeddings", AUDIO, "proj", "bias"): ckpt.source(embeddings + "bias")}


def vit_sources(ckpt: Checkpoint, config, params: dict) -> Sources:
    """Maps a ViT or ViTMAE checkpoint onto the parameters it fills (module docstring)."""
    # ViTMAEForPreTraining carries the decoder; the model has one while LPMM is on.
    with_decoder = "decoder.decoder_embed.weight" in ckpt.keys and "decoders" in params
    check_vit_config(ckpt, config, with_decoder)
    out = vit_encoder_sources(ckpt, config, len(params["encoders"]))
    if with_decoder:
        out.update(mae_decoder_sources(ckpt, config, len(params["decoders"])))
    if config.init.audio_from_vit:
        out.update(audio_sources(ckpt))
    return out


def layer_norm_sources(ckpt: Checkpoint, name: str, path: ParamPath) -> Sources:
    """Maps a LayerNorm named `weight`/`bias` (or, in older BERT files, `gamma`/`beta`)."""
    old = f"{name}.gamma" in ckpt.keys
    return {(*path, "scale"): ckpt.source(f"{name}.{'gamma' if old else 'weight'}"),
            (*path, "bias"): ckpt.source(f"{name}.{'beta' if old else 'bias'}")}


def text_position_source(ckpt: Checkpoint, embeddings: str, max_len: int) -> Source:
    """Adds BERT's token-type-0 embedding to its first `max_len` positions: [max_len, D].

    Our text embedding has no token types; every caption is BERT's single segment
    (type 0), whose embedding BERT adds to every token, so it folds into the positions.
    """
    positions = embeddings + "position_embeddings.weight"
    types = embeddings + "token_type_embeddings.weight"
    table = ckpt.tensor(positions)
    value = table[:max_len] + ckpt.tensor(types)[0]
    return Source(f"{positions}[:{max_len}] + {types}[0]", (positions, types), table.shape, value)


def bert_sources(ckpt: Checkpoint, config) -> Sources:
    """Maps BERT's embeddings (BertModel or BertFor*) onto our text embedding."""
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in ckpt.keys else ""
    embeddings = f"{prefix}embeddings."
    text = ("embeddings", TEXT)
    out = {(*text, "words", "embedding"): ckpt.source(embeddings + "word_embeddings.weight"),
           (*text, "positions", "tables", 0): text_position_source(
               ckpt, embeddings, config.text.max_len)}
    out.update(layer_norm_sources(ckpt, embeddings + "LayerNorm", (*text, "norm")))
    return out


# ------------------------------------------------------------------------------------
# Checking, placing and logging.


def path_name(path: ParamPath) -> str:
    return "/".join(map(str, path))


def leaves_by_path(params: dict) -> dict[ParamPath, object]:
    return {tuple(k.key for k in keypath): leaf
            for keypath, leaf in jax.tree_util.tree_leaves_with_path(params)}


def check_fits(ckpt: Checkpoint, sources: Sources, leaves: dict[ParamPath, object]):
    """Checks that every source has a parameter of its shape.

    Raises:
      PretrainedError: naming the first source the model has no place for, or whose
        shape differs from its parameter's.
    """
    for path, source in sources.items():
        if path not in leaves:
            raise PretrainedError(
                f"{ckpt.file}: the model has no parameter {path_name(path)} for {source.name}")
        ours = tuple(leaves[path].shape)
        if source.value.shape != ours:
            raise PretrainedError(
                f"{ckpt.file}: {source.name} {list(source.shape)} does not fit "
                f"{path_name(path)} {list(ours)} (it gives {list(source.value.shape)})")


def place(params: dict, values: dict[ParamPath, np.ndarray]) -> dict:
    """Replaces the leaves of `params` at `values`' paths, keeping each leaf's dtype and
    sharding; the other leaves are the same arrays."""

    def put(keypath, leaf):
        value = values.get(tuple(k.key for k in keypath))
        if value is None:
            return leaf
        value = np.asarray(value, leaf.dtype)
        return jax.device_put(value, leaf.sharding) if isinstance(leaf, jax.Array) else value

    return jax.tree_util.tree_map_with_path(put, params)


def unused_keys(ckpt: Checkpoint, sources: Sources) -> list[str]:
    """Lists the checkpoint's tensors nothing reads, layer numbers folded into '*'."""
    used = {key for source in sources.values() for key in source.keys}
    return sorted({re.sub(r"\.\d+\.", ".*.", key) for key in ckpt.keys - used})


def notes(ckpt: Checkpoint, config, field: str) -> list[str]:
    """Lists differences a user should know of that do not stop the load."""
    out = []
    eps = ckpt.config.get("layer_norm_eps")
    if eps is not None and eps != config.model.layer_norm_eps:
        out.append(f"init.{field}: layer_norm_eps {eps:g}, the model's "
                   f"{config.model.layer_norm_eps:g} (model.layer_norm_eps)")
    if ckpt.config.get("norm_pix_loss"):
        out.append(f"init.{field}: its decoder predicts per-patch normalised "
                   "pixels (norm_pix_loss), ours the standardised pixels")
    return out


def log_summary(filled: Sources, leaves: dict[ParamPath, object],
                unused: list[str], remarks: list[str]) -> None:
    """Logs one block: every parameter filled, with its source, and every one left alone."""
    left = [path_name(p) for p in leaves if p not in filled]
    lines = [f"public weights: {len(filled)} parameters filled, {len(left)} left at their "
             "initialisation", "  filled:"]
    lines += [f"    {path_name(p)} <- {filled[p].name}" for p in leaves if p in filled]
    lines += ["  left at their initialisation:"] + [f"    {name}" for name in left]
    if unused:
        lines.append(f"  checkpoint tensors not used: {', '.join(unused)}")
    lines += [f"  note: {remark}" for remark in remarks]
    logging.info("%s", "\n".join(lines))


def load_public_weights(config, params: dict) -> dict:
    """Puts the public weights of `config.init.vit` and `config.init.bert` in place.

    Args:
      config: the run's config; `init.vit`, `init.bert` ('' for none) and
        `init.audio_from_vit` choose what is read.
      params: the model's parameters, a nested dict of arrays (NumPy, or JAX arrays with
        any sharding), e.g. `state['params']` just after initialisation.

    Returns:
      The same tree, each filled leaf replaced by the checkpoint's values in that leaf's
      dtype and sharding, every other leaf unchanged. With neither checkpoint set,
      `params` itself.

    Raises:
      PretrainedError: a checkpoint is missing, of another architecture, or does not fit
        the model (the message names the file, the tensor, the parameter and both shapes).
    """
    init = config.init
    if init.audio_from_vit and not init.vit:
        raise PretrainedError("init.audio_from_vit: needs a ViT checkpoint in init.vit")
    if not (init.vit or init.bert):
        return params
    leaves = leaves_by_path(params)
    filled, unused, remarks = {}, [], []
    for field, model_types, sources_of in (
            ("vit", VIT_TYPES, lambda c: vit_sources(c, config, params)),
            ("bert", BERT_TYPES, lambda c: bert_sources(c, config))):
        if not init[field]:
            continue
        ckpt = read_checkpoint(init[field], field, model_types)
        sources = sources_of(ckpt)
        check_fits(ckpt, sources, leaves)
        filled.update(sources)
        unused += unused_keys(ckpt, sources)
        remarks += notes(ckpt, config, field)
    log_summary(filled, leaves, unused, remarks)
    return place(params, {path: source.value for path, source in filled.items()})
