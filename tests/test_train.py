"""The training loop: it learns, sharded layouts agree with one device, resume is exact."""
import json
import os
import signal

import jax
import numpy as np
import pytest

from tests.helpers import load_config, mesh_of
from vlsa_jax import sharding, train
from vlsa_jax.data import source as source_lib


def _run_steps(config, mesh, num_steps):
    """Initialises on `mesh` and runs `num_steps` steps on the random batches."""
    training = train.setup_training(config, mesh)
    # Each program finishes before the next is dispatched: fewer collectives wait on the
    # fake devices' shared thread pool at once (tests/conftest.py).
    state = jax.block_until_ready(training.state.init(training.seed_key))
    data = source_lib.RandomBatchSource(config)
    history = []
    for _ in range(num_steps):
        state, metrics = jax.block_until_ready(
            training.step(state, sharding.global_batch(next(data), mesh)))
        history.append(jax.device_get(metrics))
    return jax.device_get(state), history


def _config():
    """The tiny config; every test uses the same schedule, so compiled steps are shared."""
    config = load_config()
    config.train.num_steps = 200
    return config


def test_tiny_model_overfits_one_batch():
    config = _config()
    mesh = mesh_of(config, data=1)
    training = train.setup_training(config, mesh)
    state = training.state.init(training.seed_key)
    batch = sharding.global_batch(next(source_lib.RandomBatchSource(config)), mesh)
    losses = []
    for _ in range(config.train.num_steps):
        state, metrics = training.step(state, batch)
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all()
    assert min(losses[-20:]) < 0.5 * losses[0], (losses[0], losses[-20:])


@pytest.mark.parametrize("layout", [dict(data=8), dict(data=2, fsdp=4)],
                         ids=["data8", "data2_fsdp4"])
def test_sharded_steps_match_one_device(layout):
    config = _config()
    reference_state, reference_metrics = _run_steps(config, mesh_of(config, data=1), 2)
    state, metrics = _run_steps(config, mesh_of(config, **layout), 2)
    for ref, got in zip(reference_metrics, metrics):
        for name in ref:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-5, err_msg=name)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 state["params"], reference_state["params"])


def test_fsdp_shards_parameters():
    config = _config()
    mesh = mesh_of(config, data=1, fsdp=8)
    training = train.setup_training(config, mesh)
    kernel = training.state.abstract["params"]["encoders"][0]["blocks"]["fc1"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    adam_mu = training.state.abstract["opt_state"][1][0].mu
    assert (adam_mu["encoders"][0]["blocks"]["fc1"]["kernel"].sharding.spec
            == kernel.sharding.spec)


def _train_config(**overrides):
    config = _config()
    config.train.stop_after_steps = 6
    config.train.log_every_steps = 2
    config.checkpoint.every_steps = 2
    config.checkpoint.async_save = False
    for name, value in overrides.items():
        section, field = name.split("__")
        config[section][field] = value
    return config


def test_resume_equals_uninterrupted_run(tmp_path):
    uninterrupted = train.train_and_evaluate(_train_config(), str(tmp_path / "a"))
    train.train_and_evaluate(_train_config(train__stop_after_steps=3), str(tmp_path / "b"))
    resumed = train.train_and_evaluate(_train_config(), str(tmp_path / "b"))
    assert int(resumed["step"]) == 6
    jax.tree.map(np.testing.assert_array_equal,
                 jax.device_get(resumed), jax.device_get(uninterrupted))
    logged = [json.loads(line)["step"] for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert logged == [2, 3, 4, 6]
    saved_config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved_config["train"]["stop_after_steps"] == 6


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path, monkeypatch):
    class PreemptedSource(source_lib.RandomBatchSource):
        def __next__(self):
            if self.get_state()["next_index"] == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().__next__()

    monkeypatch.setattr(train, "build_source", lambda config, *_: PreemptedSource(config))
    state = train.train_and_evaluate(_train_config(), str(tmp_path))
    assert int(state["step"]) == 4
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


def test_nonfinite_loss_is_an_error_or_a_skipped_update(tmp_path, monkeypatch):
    class NaNSource(source_lib.RandomBatchSource):
        def __next__(self):
            batch = super().__next__()
            batch["audio"][:] = np.nan
            return batch

    monkeypatch.setattr(train, "build_source", lambda config, *_: NaNSource(config))
    with pytest.raises(FloatingPointError, match="step 2"):
        train.train_and_evaluate(_train_config(), str(tmp_path / "error"))

    config = _train_config(train__on_nonfinite="skip")
    mesh = sharding.make_mesh(config.mesh)
    training = train.setup_training(config, mesh)
    state = training.state.init(training.seed_key)
    before = jax.device_get(state["params"])
    state, metrics = training.step(state, sharding.global_batch(next(NaNSource(config)), mesh))
    assert int(metrics["skipped_updates"]) == 1
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state["params"]), before)


def test_bfloat16_activations_keep_float32_state():
    config = _config()
    mesh = mesh_of(config, data=1)
    _, (float32_metrics,) = _run_steps(config, mesh, 1)
    config.dtype = "bfloat16"
    state, (bfloat16_metrics,) = _run_steps(config, mesh, 1)
    assert {x.dtype for x in jax.tree.leaves(state["params"])} == {np.dtype("float32")}
    assert bfloat16_metrics["loss"].dtype == np.float32
    np.testing.assert_allclose(bfloat16_metrics["loss"], float32_metrics["loss"], rtol=0.02)
