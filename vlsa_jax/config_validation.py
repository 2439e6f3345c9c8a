"""Checks a run config before any work starts, naming the first field that is wrong.

A typo in a command-line override, a batch that does not split over the mesh or
a loss switched off by mistake should fail in a second, with the field named,
rather than after compilation or hours into a run. `validate_config` checks, in
order: the config's fields and their types, enumerations, ranges, divisibility,
the device mesh and the batch, then combinations of settings.

The fields and their types are declared once, by the defaults of a config file: the
core's in configs/pretrain.py, a project's own sections (a config whose `runner` is
'module:function') in the file its runner's module names as `CONFIG_FILE`. This module
holds only what a default cannot say: choices, ranges, divisibility and cross-field rules.
"""
import functools
import importlib
import math
import numbers
import pathlib
import typing
from collections.abc import Sequence
from typing import Any

import ml_collections

from vlsa_jax import config_lib, eval_protocol
from vlsa_jax.config_lib import ConfigError
from vlsa_jax.sharding import MESH_AXES, resolve_mesh_shape
from vlsa_jax.models.transformer import ATTENTION_IMPLS, REMAT_POLICY_NAMES
from vlsa_jax.modalities import modalities_of
from vlsa_jax.models.vlsa import GROUPINGS, global_pairs, modality_groups

# Declares every field the core reads, with its default.
_CORE_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "pretrain.py"
_AXIS_RULES = "mesh.logical_axis_rules"
# The item type of each tuple field whose default is empty, which the default cannot show.
_EMPTY_TUPLE_ITEMS = {"gam.shifted_audio_negatives": float}

_CHOICES: dict[str, Sequence[str]] = {
    "dtype": ("float32", "bfloat16"),
    "model.remat_policy": REMAT_POLICY_NAMES,
    "model.attention_impl": ATTENTION_IMPLS,
    "model.joint_modalities": GROUPINGS,
    "model.decoder_sharing": GROUPINGS,
    "loss.patch_reduction": ("mean", "sum"),
    "gam.features": ("unimodal", "joint"),
    "matching.head": ("pair_features", "joint_pass"),
    "matching.negatives": ("random", "hard"),
    "data.source": ("records", "random"),
    "audio.frontend": ("sop_logfreq", "logmel"),
    "train.on_nonfinite": ("error", "skip"),
    "optim.schedule": ("cosine", "linear", "constant"),
    "eval.caption_mode": ("all", "first"),
    "eval.protocol": ("zero_shot", "fine_tuned"),
}

# (predicate, what it requires), shared by the fields of `_RANGES`.
_POSITIVE = (lambda v: v > 0, "must be > 0")
_NON_NEGATIVE = (lambda v: v >= 0, "must be >= 0")
# A ratio of 1 would mask every token of a modality.
_FRACTION = (lambda v: 0 <= v < 1, "must be in [0, 1)")
_OPEN_UNIT = (lambda v: 0 < v < 1, "must be in (0, 1)")

_RANGES = {
    "model.width": _POSITIVE,
    "model.depth": _POSITIVE,
    "model.num_heads": _POSITIVE,
    "model.mlp_dim": _POSITIVE,
    "model.decoder_width": _POSITIVE,
    "model.decoder_depth": _POSITIVE,
    "model.decoder_num_heads": _POSITIVE,
    "model.decoder_mlp_dim": _POSITIVE,
    "model.layer_norm_eps": _POSITIVE,
    "model.init_std": _POSITIVE,
    "video.num_frames": _POSITIVE,
    "video.size": _POSITIVE,
    "video.patch": _POSITIVE,
    "video.stored_frames": _POSITIVE,
    "video.stored_short_side": _POSITIVE,
    "video.min_crop_scale": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "audio.norm_std": _POSITIVE,
    "data.workers": _NON_NEGATIVE,
    "data.read_threads": _POSITIVE,
    "audio.sample_rate": _POSITIVE,
    "audio.n_fft": _POSITIVE,
    "audio.hop": _POSITIVE,
    "audio.clip_samples": _POSITIVE,
    "audio.frames": _POSITIVE,
    "audio.bins": _POSITIVE,
    "audio.patch": _POSITIVE,
    "text.max_len": _POSITIVE,
    "text.vocab_size": _POSITIVE,
    "masking.video_ratio": _FRACTION,
    "masking.audio_ratio": _FRACTION,
    "masking.text_ratio": _FRACTION,
    "loss.lambda_global": _NON_NEGATIVE,
    "loss.temperature": _POSITIVE,
    "train.batch_size": _POSITIVE,
    "train.num_steps": _POSITIVE,
    "train.log_every_steps": _POSITIVE,
    "optim.lr": _POSITIVE,
    "optim.weight_decay": _NON_NEGATIVE,
    "optim.b1": _OPEN_UNIT,
    "optim.b2": _OPEN_UNIT,
    "optim.warmup_steps": _NON_NEGATIVE,
    "optim.grad_clip": _NON_NEGATIVE,
    "eval.batch_size": _POSITIVE,
    "eval.block_size": _POSITIVE,
    "eval.dual_softmax_temperature": _POSITIVE,
    "eval.every_steps": _NON_NEGATIVE,
    "checkpoint.every_steps": _POSITIVE,
    "checkpoint.keep": _POSITIVE,
}

# (field, divisor field): attention heads split the width, patches tile the input.
_DIVISIBLE = (
    ("model.width", "model.num_heads"),
    ("model.decoder_width", "model.decoder_num_heads"),
    ("video.size", "video.patch"),
    ("audio.frames", "audio.patch"),
    ("audio.bins", "audio.patch"),
)

_MISSING = object()


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Checks a run config against what the code supports and the devices at hand.

    Args:
      config: the run config, as `configs/pretrain.py` builds it (overrides applied), or a
        config built on it with the sections of its runner's project.
      num_devices: the number of devices the mesh is built over.

    Raises:
      ConfigError: naming the first field found to be wrong.
    """
    _check_fields(config)
    _check_choices(config)
    _check_ranges(config)
    _check_divisibility(config)
    _check_audio_geometry(config.audio)
    _check_batch(config, num_devices)
    _check_eval(config, num_devices)
    _check_matching_head(config)
    _check_desynchronised_negatives(config)
    _check_something_to_train(config)
    if config.init.audio_from_vit and not config.init.vit:
        raise ConfigError("init.audio_from_vit", "needs init.vit, the image patch projection "
                          "it copies")


def _check_audio_geometry(audio) -> None:
    """The front end must produce exactly the spectrogram the model is built for."""
    frames = audio.clip_samples // audio.hop + 1  # centred STFT frames
    if frames != audio.frames:
        raise ConfigError(
            "audio.frames", f"{audio.frames}, but audio.clip_samples // audio.hop + 1 = "
            f"{audio.clip_samples} // {audio.hop} + 1 = {frames} STFT frames")
    if audio.bins > audio.n_fft // 2 + 1:
        raise ConfigError(
            "audio.bins", f"{audio.bins} exceeds the {audio.n_fft // 2 + 1} frequency bins "
            f"of audio.n_fft = {audio.n_fft}")


def _check_fields(config) -> None:
    """Every field declared, present and of its declared type; the axis rules well formed;
    the fields marked result-neutral declared."""
    field_types = _field_types(config)
    for path, _ in _leaves(config):
        if path not in field_types and path != _AXIS_RULES:
            raise ConfigError(path, "unknown field")
    for path in (*field_types, _AXIS_RULES):
        if _lookup(config, path) is _MISSING:
            raise ConfigError(path, "missing")
    for path, expected in field_types.items():
        problem = _type_problem(_lookup(config, path), expected)
        if problem:
            raise ConfigError(path, problem)
    _check_axis_rules(_lookup(config, _AXIS_RULES))
    for path in config.result_neutral_fields:
        if path not in field_types:
            raise ConfigError("result_neutral_fields", f"{path!r} is not a field")


def _field_types(config) -> dict[str, Any]:
    """dotted field -> type: the core's fields, and the sections that the config file
    of the config's runner declares beyond them."""
    field_types = dict(_declared_types(_CORE_CONFIG))
    runner = _lookup(config, "runner")
    if not isinstance(runner, str) or not runner:
        return field_types
    try:
        # Imported by name, as jobs.run does: the core knows no project.
        module = importlib.import_module(runner.partition(":")[0])
    except ImportError as error:
        raise ConfigError("runner", f"{runner!r}: {error}") from None
    if not hasattr(module, "CONFIG_FILE"):
        return field_types
    core_sections = {path.split(".")[0] for path in field_types}
    field_types.update(
        (path, kind) for path, kind in _declared_types(module.CONFIG_FILE).items()
        if path.split(".")[0] not in core_sections)
    return field_types


@functools.cache
def _declared_types(config_file: pathlib.Path) -> dict[str, Any]:
    """dotted field -> the type of its default in `config_file`'s `get_config()`."""
    defaults = config_lib.load_config_module(config_file).get_config()
    return {path: _type_of(path, default) for path, default in _leaves(defaults)
            if path != _AXIS_RULES}


def _type_of(path: str, default) -> Any:
    """The type a default declares; a tuple's is typed by its items."""
    if isinstance(default, tuple):
        item = type(default[0]) if default else _EMPTY_TUPLE_ITEMS[path]
        return tuple[item, ...]
    return type(default)


def _leaves(node, prefix: str = ""):
    """Yields (dotted path, value) for every non-ConfigDict value under `node`."""
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f"{path}.")
        else:
            yield path, value


def _lookup(config, path: str):
    """The value at a dotted path, or `_MISSING`."""
    node = config
    for key in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _type_problem(value, expected) -> str | None:
    """Why `value` is not of the `expected` field type; None when it is."""
    if typing.get_origin(expected) is tuple:
        item = typing.get_args(expected)[0]
        if isinstance(value, (tuple, list)) and all(_is_instance(v, item) for v in value):
            return None
        return f"expected a sequence of {item.__name__}, got {value!r}"
    if _is_instance(value, expected):
        return None
    return f"expected {expected.__name__}, got {type(value).__name__} {value!r}"


def _is_instance(value, expected: type) -> bool:
    # bool subclasses int, but True is no batch size.
    if expected is not bool and isinstance(value, bool):
        return False
    # Numpy scalars are numbers too; an int is a valid float.
    abstract = {int: numbers.Integral, float: numbers.Real}.get(expected, expected)
    return isinstance(value, abstract)


def _check_axis_rules(rules) -> None:
    """(logical axis, mesh axes) pairs; mesh axes: None, one of MESH_AXES, or a tuple of them."""
    if isinstance(rules, str) or not isinstance(rules, Sequence):
        raise ConfigError(
            _AXIS_RULES, f"expected a sequence of (logical axis, mesh axes) pairs, got {rules!r}")
    for index, rule in enumerate(rules):
        if (isinstance(rule, str) or not isinstance(rule, Sequence) or len(rule) != 2
                or not isinstance(rule[0], str)):
            raise ConfigError(
                _AXIS_RULES, f"rule {index} {rule!r} is not a (logical axis, mesh axes) pair")
        if rule[1] is None:  # replicated
            continue
        targets = rule[1] if isinstance(rule[1], (tuple, list)) else (rule[1],)
        for target in targets:
            if target not in MESH_AXES:
                raise ConfigError(
                    _AXIS_RULES, f"rule {index} {rule!r} maps to {target!r}, not a mesh axis "
                    f"{MESH_AXES}")


def _check_choices(config) -> None:
    for path, choices in _CHOICES.items():
        value = _lookup(config, path)
        if value not in choices:
            raise ConfigError(path, f"{value!r} is not one of {tuple(choices)}")
    letters = config.data.modalities
    if not letters or len(set(letters)) != len(letters) or not set(letters) <= set("avt"):
        raise ConfigError(
            "data.modalities", f"{letters!r} must be a non-empty string of distinct letters "
            "from 'avt'")


def _check_ranges(config) -> None:
    for path, (holds, requirement) in _RANGES.items():
        value = _lookup(config, path)
        if not holds(value):
            raise ConfigError(path, f"{value} {requirement}")
    text = config.text
    for path, ids in (("text.mask_token_id", (text.mask_token_id,)),
                      ("text.special_token_ids", text.special_token_ids)):
        for token in ids:
            if not 0 <= token < text.vocab_size:
                raise ConfigError(
                    path, f"token id {token} is not in [0, text.vocab_size = {text.vocab_size})")
    train = config.train
    if train.stop_after_steps != -1 and not 1 <= train.stop_after_steps <= train.num_steps:
        raise ConfigError(
            "train.stop_after_steps", f"{train.stop_after_steps} must be -1 (never) or in "
            f"[1, train.num_steps = {train.num_steps}]")


def _check_divisibility(config) -> None:
    for path, divisor_path in _DIVISIBLE:
        value, divisor = _lookup(config, path), _lookup(config, divisor_path)
        if value % divisor:
            raise ConfigError(path, f"{value} is not divisible by {divisor_path} = {divisor}")
    # Frames are stored at even sizes (media._resized), so an odd short side would be
    # stored one pixel off and overflow the pipeline's canvas of that side.
    if config.video.stored_short_side % 2:
        raise ConfigError("video.stored_short_side",
                          f"{config.video.stored_short_side} is odd; frames are stored at even sizes")


def _check_batch(config, num_devices: int) -> None:
    """The global batch splits evenly over the data-parallel axes and has negatives."""
    batch_size = config.train.batch_size
    # InfoNCE and the matching negatives contrast each item with another one.
    if batch_size < 2:
        raise ConfigError(
            "train.batch_size", f"{batch_size} is too small; contrastive losses need at least 2")
    data, fsdp, _ = resolve_mesh_shape(config.mesh, num_devices)
    if batch_size % (data * fsdp):
        raise ConfigError(
            "train.batch_size", f"{batch_size} is not divisible by the data-parallel size "
            f"{data * fsdp} (mesh.data x mesh.fsdp)")


def _check_eval(config, num_devices: int) -> None:
    """Directions and split specs parse; evaluation batches split over the mesh too."""
    for path, parse in (("eval.directions", eval_protocol.parse_directions),
                        ("eval.splits", eval_protocol.parse_split_specs)):
        try:
            parse(_lookup(config, path))
        except ValueError as error:
            raise ConfigError(path, str(error)) from None
    if config.eval.every_steps and not config.eval.splits:
        raise ConfigError("eval.every_steps", f"{config.eval.every_steps}, but eval.splits "
                          "names no split to evaluate")
    data, fsdp, _ = resolve_mesh_shape(config.mesh, num_devices)
    if config.eval.batch_size % (data * fsdp):
        raise ConfigError(
            "eval.batch_size", f"{config.eval.batch_size} is not divisible by the "
            f"data-parallel size {data * fsdp} (mesh.data x mesh.fsdp)")


def _check_matching_head(config) -> None:
    """'joint_pass' encodes each pair in one sequence, so both need the same encoder."""
    if config.matching.head != "joint_pass":
        return
    groups = modality_groups(config.model.joint_modalities)
    for pair in global_pairs(config):
        if not any(set(pair) <= set(group) for group in groups):
            raise ConfigError(
                "matching.head", f"'joint_pass' encodes {pair[0]} and {pair[1]} together, but "
                f"model.joint_modalities = {config.model.joint_modalities!r} gives them "
                "separate encoders")


def _check_desynchronised_negatives(config) -> None:
    """Shifts are (low, high) fractions of the clip; under GAM both kinds need the unimodal
    audio-video pair (without GAM they are unused, as in the ablation grids' rows)."""
    shift = tuple(config.gam.shifted_audio_negatives)
    if shift:
        field = "gam.shifted_audio_negatives"
        if len(shift) != 2 or not 0 < shift[0] <= shift[1] < 1:
            raise ConfigError(field, f"{shift} must be () or (low, high) with "
                              "0 < low <= high < 1")
        frames = config.audio.frames
        if math.ceil(shift[0] * frames) > math.floor(shift[1] * frames):
            raise ConfigError(field, f"{shift} holds no whole shift of the {frames} "
                              "audio.frames")
    for field, on in (("gam.shifted_audio_negatives", bool(shift)),
                      ("gam.reversed_video_negatives", config.gam.reversed_video_negatives)):
        if not (on and config.loss.gam):
            continue
        if not {"a", "v"} <= set(config.data.modalities):
            raise ConfigError(field, "needs the audio-video pair: data.modalities with 'a' "
                              "and 'v'")
        if config.gam.features != "unimodal":
            raise ConfigError(field, "needs gam.features = 'unimodal' (the negatives are "
                              "encoded alone)")


def _check_something_to_train(config) -> None:
    """LPMM, or a weighted global pair whose two modalities the data carries."""
    available = set(modalities_of(config.data.modalities))
    pairs = [pair for pair in global_pairs(config) if set(pair) <= available]
    if config.loss.lpmm or (pairs and config.loss.lambda_global > 0):
        return
    if pairs:
        reason = "loss.lambda_global is 0"
    else:
        reason = ("no global pair (loss.gam, loss.vtm) has both its modalities in "
                  f"data.modalities = {config.data.modalities!r}")
    raise ConfigError("loss", f"nothing to train: loss.lpmm is off and {reason}")
