"""The shipped config variants validate, and each kind of bad config names its field."""
import pathlib
import pickle
import sys
import types

import ml_collections
import pytest

from vlsa_jax import config_lib
from vlsa_jax.config_validation import ConfigError, resolve_mesh_shape, validate_config

_CONFIG_PATH = pathlib.Path(__file__).parents[1] / "configs" / "pretrain.py"


pretrain = config_lib.load_config_module(_CONFIG_PATH)


def _tiny():
    return pretrain.get_config("variant=tiny")


def _set(path, value):
    """A config edit that bypasses ConfigDict's type lock, as a bad override would."""

    def edit(config):
        *parents, leaf = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        with config.ignore_type():
            setattr(node, leaf, value)

    return edit


def _add_unknown_leaf(config):
    config.train.batch_sizee = 3


def _add_unknown_group(config):
    config.extra = ml_collections.ConfigDict({"depth": 1})


def _remove_b2(config):
    del config.optim["b2"]


def _nothing_to_train(config):
    config.loss.lpmm = False
    config.loss.gam = False
    config.loss.vtm = False


def _joint_pass_on_split_encoders(config):
    config.matching.head = "joint_pass"
    config.model.joint_modalities = "vt"


def _global_loss_unweighted(config):
    config.loss.lpmm = False
    config.loss.lambda_global = 0.0


def _gam_without_audio(config):
    config.loss.lpmm = False
    config.data.modalities = "vt"


def _shift_without_video(config):
    config.gam.shifted_audio_negatives = (0.25, 0.75)
    config.data.modalities = "at"


def _negatives_without_gam(config):
    config.gam.reversed_video_negatives = True
    config.gam.shifted_audio_negatives = (0.25, 0.75)
    config.loss.gam = False


def _reversal_without_audio(config):
    config.gam.reversed_video_negatives = True
    config.data.modalities = "vt"


def _shift_of_joint_features(config):
    config.gam.shifted_audio_negatives = (0.25, 0.75)
    config.gam.features = "joint"


def _mark_undeclared_field_neutral(config):
    config.result_neutral_fields += ("data.wrokers",)


@pytest.mark.parametrize("variant", ["base", "small", "tiny"])
@pytest.mark.parametrize("num_devices", [8, 1])
def test_variants_validate(variant, num_devices):
    validate_config(pretrain.get_config(f"variant={variant}"), num_devices)


def test_frozen_config_validates():
    validate_config(ml_collections.FrozenConfigDict(_tiny()), 8)


def test_int_accepted_for_float_field():
    values = _tiny().to_dict()
    values["optim"]["grad_clip"] = 0
    validate_config(ml_collections.ConfigDict(values), 8)


def test_fsdp_and_tensor_args_resolve_against_devices():
    validate_config(pretrain.get_config("variant=tiny,fsdp=2,tensor=2"), 8)


def _global_losses_alone(config):
    config.loss.lpmm = False


def _joint_pass_on_shared_encoder(config):
    config.matching.head = "joint_pass"
    config.model.joint_modalities = "avt"


def _vtm_alone_without_audio(config):
    config.loss.lpmm = False
    config.loss.gam = False
    config.loss.vtm = True
    config.data.modalities = "tv"


_GOOD_EDITS = {
    "global_losses_alone": _global_losses_alone,
    "joint_pass_on_shared_encoder": _joint_pass_on_shared_encoder,
    "vtm_alone_without_audio": _vtm_alone_without_audio,
    "rule_over_two_axes": _set("mesh.logical_axis_rules", (("embed", ("data", "fsdp")),)),
    "stop_at_last_step": _set("train.stop_after_steps", 100),
    "no_masking": _set("masking.audio_ratio", 0.0),
    "shifted_audio_negatives": _set("gam.shifted_audio_negatives", (0.25, 0.75)),
    "reversed_video_negatives": _set("gam.reversed_video_negatives", True),
    "negatives_unused_without_gam": _negatives_without_gam,
}


@pytest.mark.parametrize("edit", _GOOD_EDITS.values(), ids=_GOOD_EDITS.keys())
def test_valid_edits(edit):
    config = _tiny()
    edit(config)
    validate_config(config, 8)


# (case id, edit of the tiny config, num_devices, field the message starts with)
_BAD_CONFIGS = [
    ("unknown_leaf", _add_unknown_leaf, 8, "train.batch_sizee"),
    ("unknown_group", _add_unknown_group, 8, "extra.depth"),
    ("missing", _remove_b2, 8, "optim.b2"),
    ("wrong_type", _set("model.depth", "twelve"), 8, "model.depth"),
    ("audio_window_off_the_frames", _set("audio.clip_samples", 10_000), 8, "audio.frames"),
    ("more_bins_than_the_stft", _set("audio.n_fft", 32), 8, "audio.bins"),
    ("unknown_frontend", _set("audio.frontend", "mfcc"), 8, "audio.frontend"),
    ("bool_as_int", _set("train.batch_size", True), 8, "train.batch_size"),
    ("float_as_int", _set("model.width", 64.0), 8, "model.width"),
    ("string_as_bool", _set("loss.gam", "false"), 8, "loss.gam"),
    ("bad_token_ids_type", _set("text.special_token_ids", (0, "1")), 8,
     "text.special_token_ids"),
    ("bad_shift_type", _set("gam.shifted_audio_negatives", ("a", "b")), 8,
     "gam.shifted_audio_negatives"),
    ("neutral_mark_of_no_field", _mark_undeclared_field_neutral, 8, "result_neutral_fields"),
    ("bad_axis_rule", _set("mesh.logical_axis_rules", (("embed", "tensr"),)), 8,
     "mesh.logical_axis_rules"),
    ("axis_rule_not_pair", _set("mesh.logical_axis_rules", (("embed",),)), 8,
     "mesh.logical_axis_rules"),
    ("bad_remat_policy", _set("model.remat_policy", "some"), 8, "model.remat_policy"),
    ("bad_schedule", _set("optim.schedule", "step"), 8, "optim.schedule"),
    ("bad_grouping", _set("model.joint_modalities", "ta"), 8, "model.joint_modalities"),
    ("bad_dtype", _set("dtype", "float16"), 8, "dtype"),
    ("bad_modalities", _set("data.modalities", "avx"), 8, "data.modalities"),
    ("repeated_modalities", _set("data.modalities", "aa"), 8, "data.modalities"),
    ("no_modalities", _set("data.modalities", ""), 8, "data.modalities"),
    ("negative_temperature", _set("loss.temperature", -0.05), 8, "loss.temperature"),
    ("full_masking", _set("masking.video_ratio", 1.0), 8, "masking.video_ratio"),
    ("zero_depth", _set("model.decoder_depth", 0), 8, "model.decoder_depth"),
    ("b2_one", _set("optim.b2", 1.0), 8, "optim.b2"),
    ("negative_warmup", _set("optim.warmup_steps", -1), 8, "optim.warmup_steps"),
    ("mask_token_out_of_vocab", _set("text.mask_token_id", 512), 8, "text.mask_token_id"),
    ("special_token_negative", _set("text.special_token_ids", (0, -1)), 8,
     "text.special_token_ids"),
    ("stop_after_zero", _set("train.stop_after_steps", 0), 8, "train.stop_after_steps"),
    ("stop_after_num_steps", _set("train.stop_after_steps", 101), 8, "train.stop_after_steps"),
    ("width_not_divisible", _set("model.num_heads", 5), 8, "model.width"),
    ("decoder_width_not_divisible", _set("model.decoder_num_heads", 3), 8,
     "model.decoder_width"),
    ("frame_not_tiled", _set("video.patch", 5), 8, "video.size"),
    ("spectrogram_not_tiled", _set("audio.bins", 36), 8, "audio.bins"),
    ("odd_stored_side", _set("video.stored_short_side", 41), 8, "video.stored_short_side"),
    ("single_item_batch", _set("train.batch_size", 1), 1, "train.batch_size"),
    ("batch_not_divisible", _set("train.batch_size", 6), 4, "train.batch_size"),
    ("mesh_too_large", _set("mesh.data", 16), 8, "mesh"),
    ("two_free_axes", _set("mesh.fsdp", -1), 8, "mesh"),
    ("zero_mesh_axis", _set("mesh.tensor", 0), 8, "mesh.tensor"),
    ("joint_pass_split", _joint_pass_on_split_encoders, 8, "matching.head"),
    ("nothing_to_train", _nothing_to_train, 8, "loss"),
    ("pairs_lack_modality", _gam_without_audio, 8, "loss"),
    ("global_loss_unweighted", _global_loss_unweighted, 8, "loss"),
    ("shift_range_reversed", _set("gam.shifted_audio_negatives", (0.7, 0.3)), 8,
     "gam.shifted_audio_negatives"),
    ("shift_of_whole_clip", _set("gam.shifted_audio_negatives", (0.5, 1.0)), 8,
     "gam.shifted_audio_negatives"),
    ("shift_below_one_frame", _set("gam.shifted_audio_negatives", (0.001, 0.002)), 8,
     "gam.shifted_audio_negatives"),
    ("shift_without_video", _shift_without_video, 8, "gam.shifted_audio_negatives"),
    ("shift_of_joint_features", _shift_of_joint_features, 8, "gam.shifted_audio_negatives"),
    ("reversal_without_audio", _reversal_without_audio, 8, "gam.reversed_video_negatives"),
]


@pytest.mark.parametrize(
    "edit, num_devices, field", [case[1:] for case in _BAD_CONFIGS],
    ids=[case[0] for case in _BAD_CONFIGS])
def test_bad_config_names_field(edit, num_devices, field):
    config = _tiny()
    edit(config)
    with pytest.raises(ConfigError) as error:
        validate_config(config, num_devices)
    # The colon keeps 'mesh' from matching 'mesh.data'.
    assert str(error.value).startswith(f"{field}: "), str(error.value)
    assert error.value.field == field


# A project's config file: the core's fields and a section of its own.
_PROJECT_CONFIG = """
from vlsa_jax import config_lib


def get_config(arg=None):
    config = config_lib.load_config_module({core!r}).get_config("variant=tiny")
    config.runner = "project_runner:run"
    config.project = dict(steps=1, scale=0.5)
    return config
"""


@pytest.fixture
def project_config(tmp_path, monkeypatch):
    """The config of a project whose runner's module names its config file."""
    config_file = tmp_path / "project.py"
    config_file.write_text(_PROJECT_CONFIG.format(core=str(_CONFIG_PATH)))
    runner = types.ModuleType("project_runner")
    runner.CONFIG_FILE = config_file
    monkeypatch.setitem(sys.modules, "project_runner", runner)
    return config_lib.load_config_module(config_file).get_config()


def test_runner_section_typed_by_its_config_file(project_config):
    validate_config(project_config, 8)
    project_config.project.scale = 1  # an int is a float
    validate_config(project_config, 8)
    with project_config.ignore_type():
        project_config.project.steps = "x"
    with pytest.raises(ConfigError, match="^project.steps: expected int, got str 'x'$"):
        validate_config(project_config, 8)


@pytest.mark.parametrize("runner, message", [
    ("", "project.scale: unknown field"),
    ("os:getcwd", "project.scale: unknown field"),  # a module that declares no section
    ("no_such_project:run", "runner: 'no_such_project:run': No module named 'no_such_project'"),
])
def test_runner_section_needs_its_runner(project_config, runner, message):
    project_config.runner = runner
    with pytest.raises(ConfigError) as error:
        validate_config(project_config, 8)
    assert str(error.value) == message


def test_batch_error_message():
    config = pretrain.get_config("variant=tiny,batch_size=6")
    with pytest.raises(ConfigError, match="^train.batch_size: 6 is not divisible by the "
                       r"data-parallel size 4 \(mesh.data x mesh.fsdp\)$"):
        validate_config(config, 4)


def test_mesh_error_message():
    config = _tiny()
    config.mesh.data = 16
    with pytest.raises(ConfigError, match="^mesh: data x fsdp x tensor = 16 needs 16 devices, "
                       "8 are available$"):
        validate_config(config, 8)


def test_config_error_is_value_error_and_pickles():
    error = pickle.loads(pickle.dumps(ConfigError("loss.temperature", "-1 must be > 0")))
    assert isinstance(error, ValueError)
    assert str(error) == "loss.temperature: -1 must be > 0"
    assert error.field == "loss.temperature"


@pytest.mark.parametrize("arg, name", [
    ("variant=tiny,foo=1", "foo"),
    ("variant=huge", "huge"),
    ("batch_size=abc", "batch_size"),
    ("variant", "variant"),
])
def test_bad_config_arg(arg, name):
    with pytest.raises(ValueError, match=name):
        pretrain.get_config(arg)


@pytest.mark.parametrize("data, fsdp, tensor, num_devices, shape", [
    (-1, 1, 1, 8, (8, 1, 1)),
    (-1, 2, 1, 8, (4, 2, 1)),
    (2, 1, -1, 8, (2, 1, 4)),
    (2, 2, 2, 8, (2, 2, 2)),
    (-1, 1, 1, 1, (1, 1, 1)),
])
def test_resolve_mesh_shape(data, fsdp, tensor, num_devices, shape):
    mesh = ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))
    assert resolve_mesh_shape(mesh, num_devices) == shape


@pytest.mark.parametrize("data, fsdp, tensor, num_devices, field", [
    (-1, 3, 1, 8, "mesh"),  # 3 does not divide 8
    (-1, 16, 1, 8, "mesh"),
    (4, 1, 1, 8, "mesh"),  # leaves devices unused
    (-1, -1, 1, 8, "mesh"),
    (-1, 0, 1, 8, "mesh.fsdp"),
    (-2, 1, 1, 8, "mesh.data"),
])
def test_resolve_mesh_shape_errors(data, fsdp, tensor, num_devices, field):
    mesh = dict(data=data, fsdp=fsdp, tensor=tensor)
    with pytest.raises(ConfigError) as error:
        resolve_mesh_shape(mesh, num_devices)
    assert str(error.value).startswith(f"{field}: "), str(error.value)
