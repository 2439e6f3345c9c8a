"""Fine-tuning starts from pre-trained weights with a fresh optimizer, and normalises
audio as they were trained to."""
import json
import logging
import shutil

import jax
import numpy as np

from tests.helpers import load_config
from vlsa_jax import checkpointing, sharding, train
from vlsa_jax import state as state_lib
from vlsa_jax.config_validation import validate_config


def test_every_dataset_config_is_valid():
    for dataset in ("msrvtt", "lsmdc", "audiocaps", "sounddescs", "youcook2"):
        config = load_config("finetune.py", f"dataset={dataset},variant=tiny")
        validate_config(config, 8)
        assert not config.loss.lpmm and not config.loss.matching
        assert config.eval.protocol == "fine_tuned"


def test_fine_tuning_restores_weights_and_not_the_optimizer(trained_run, tmp_path):
    pretrain_config, pretrain_dir, records = trained_run
    config = load_config("finetune.py", "dataset=msrvtt,variant=tiny")
    config.data.train_split = str(records / "train")
    config.eval.splits = str(records / "train")
    config.init.checkpoint = str(pretrain_dir)
    config.train.num_steps, config.train.stop_after_steps = 10, 1
    state = train.train_and_evaluate(config, str(tmp_path / "finetune"))

    mesh = sharding.make_mesh(config.mesh)
    _, abstract = state_lib.abstract_params(pretrain_config, mesh)
    pretrained, _, _ = checkpointing.restore_params(pretrain_dir, abstract)
    flat = {jax.tree_util.keystr(p): x for p, x in
            jax.tree_util.tree_flatten_with_path(state["params"])[0]}
    shared = 0
    for path, value in jax.tree_util.tree_flatten_with_path(pretrained)[0]:
        name = jax.tree_util.keystr(path)
        if name in flat:  # warmup: the first step's learning rate is 0
            np.testing.assert_array_equal(np.asarray(flat[name]), np.asarray(value))
            shared += 1
    assert shared > 10
    # The video-text matching head is new: initialised, not restored.
    assert any("video_text" in name for name in flat)
    # A fresh optimizer: one update counted, not the pre-training's two plus one.
    counts = [np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(
        state["opt_state"])[0] if "count" in jax.tree_util.keystr(p)]
    assert counts and all(c == 1 for c in counts)
    assert int(state["step"]) == 1


def _finetune_config(records, init_checkpoint):
    """The fine-tuning test's config (its compiled step is shared) from `init_checkpoint`."""
    config = load_config("finetune.py", "dataset=msrvtt,variant=tiny")
    config.data.train_split = str(records / "train")
    config.eval.splits = str(records / "train")
    config.init.checkpoint = str(init_checkpoint)
    config.train.num_steps, config.train.stop_after_steps = 10, 1
    return config


def test_fine_tuning_normalises_audio_as_the_pretrained_weights_were(trained_run, tmp_path,
                                                                      caplog):
    _, pretrain_dir, records = trained_run
    # A pre-training run whose statistics are not those of the fine-tuning split.
    pretrained = tmp_path / "pretrained"
    shutil.copytree(pretrain_dir / "checkpoints", pretrained / "checkpoints")
    saved = json.loads((pretrain_dir / "config.json").read_text())
    saved["audio"].update(norm_mean=-2.5, norm_std=1.5)
    (pretrained / "config.json").write_text(json.dumps(saved))

    train.train_and_evaluate(_finetune_config(records, pretrained), str(tmp_path / "finetune"))
    recorded = json.loads((tmp_path / "finetune" / "config.json").read_text())["audio"]
    assert (recorded["norm_mean"], recorded["norm_std"]) == (-2.5, 1.5)

    # Values set explicitly are used, and their difference warned of.
    config = _finetune_config(records, pretrained)
    config.audio.norm_from_data, config.audio.norm_mean = False, -3.0
    with caplog.at_level(logging.WARNING):
        state_lib.resolve_audio_norm(config)
    assert (config.audio.norm_mean, config.audio.norm_std) == (-3.0, 4.0)
    assert (f"audio.norm_mean, audio.norm_std = -3.0, 4.0 as set (audio.norm_from_data is "
            f"off), but {pretrained} was trained with -2.5, 1.5") in caplog.text

