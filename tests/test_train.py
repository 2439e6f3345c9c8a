"""The training loop: it learns, sharded layouts agree with one device, resume is exact,
and it records the audio normalisation it used."""
import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest

from tests.helpers import load_config, mesh_of
from vlsa_jax import plan, sharding, state, train
from vlsa_jax.data import records
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


@pytest.mark.parametrize("layout", [dict(data=8), dict(data=2, fsdp=4),
                                    dict(data=2, fsdp=2, tensor=2)],
                         ids=["data8", "data2_fsdp4", "data2_fsdp2_tensor2"])
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


def test_tensor_parallel_step_holds_half_of_each_head_and_mlp_split_parameter():
    config = _config()
    _, logical = state.model_structure(config)
    rules = dict(config.mesh.logical_axis_rules)
    # What each device should hold with tensor=2: half of every parameter that has an
    # axis the rules put on 'tensor' (attention heads, MLP units, the vocabulary).
    split = jax.tree.map(lambda spec: any(rules.get(name) == "tensor" for name in spec),
                         logical, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    held = {}
    for tensor in (1, 2):
        mesh = mesh_of(config, data=8 // tensor, tensor=tensor)
        training = train.setup_training(config, mesh)
        compiled = training.step.lower(training.state.abstract,
                                       plan.abstract_batch(config, mesh)).compile()
        shardings = compiled.input_shardings[0][0]["params"]
        held[tensor] = jax.tree.map(
            lambda x, s: np.prod(s.shard_shape(x.shape)) * x.dtype.itemsize,
            training.state.abstract["params"], shardings)
    expected = jax.tree.map(lambda full, halved: full // 2 if halved else full, held[1], split)
    assert held[2] == expected
    # Here 38% of the parameter bytes (the embeddings and positions are not split).
    assert sum(jax.tree.leaves(held[2])) < 0.7 * sum(jax.tree.leaves(held[1]))


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


def _signal_at(monkeypatch, where: str, step: int, number=signal.SIGTERM):
    """Sends `number` to this process once, inside `where` of the loop at `step`:
    'data' (fetching the step's batch), 'fetch' (the metrics fetch of a logged step),
    'save' (during a checkpoint save) or 'eval' (during the periodic evaluation)."""
    sent = []

    def send(current):
        if current == step and not sent:
            sent.append(current)
            os.kill(os.getpid(), number)

    class SignallingSource(source_lib.RandomBatchSource):
        def __next__(self):
            if where == "data":
                send(self.get_state()["next_index"] + 1)
            return super().__next__()

    monkeypatch.setattr(train, "build_source", lambda config, *_: SignallingSource(config))
    if where == "fetch":
        check = train._check_finite
        monkeypatch.setattr(train, "_check_finite",
                            lambda metrics, at, policy: (send(at), check(metrics, at, policy)))
    if where == "save":
        save = train.checkpointing.Checkpointer.save
        monkeypatch.setattr(train.checkpointing.Checkpointer, "save",
                            lambda self, at, *args: (save(self, at, *args), send(at)))
    if where == "eval":
        run = train.evaluate.Evaluator.run
        monkeypatch.setattr(train.evaluate.Evaluator, "run",
                            lambda self, params, at, *args: (send(at), run(self, params, at, *args))[1])


@pytest.mark.parametrize("where, step, saved", [
    ("data", 4, ["2", "4"]), ("fetch", 2, ["2"]), ("save", 2, ["2"]), ("data", 3, ["2", "3"])])
def test_sigterm_at_any_moment_saves_the_step_reached_and_stops(tmp_path, monkeypatch, where,
                                                                step, saved):
    _signal_at(monkeypatch, where, step)
    with pytest.raises(train.Preempted, match=f"SIGTERM: stopped at step {step}") as stop:
        train.train_and_evaluate(_train_config(), str(tmp_path))
    assert stop.value.step == step and stop.value.exit_code == 0
    assert sorted(os.listdir(tmp_path / "checkpoints")) == saved


def test_sigterm_during_an_evaluation_saves_then_stops(trained_run, tmp_path, monkeypatch):
    config, _, records = trained_run
    config = config.copy_and_resolve_references()
    config.train.stop_after_steps, config.eval.every_steps = 4, 3
    config.checkpoint.every_steps = 2
    _signal_at(monkeypatch, "eval", 3)
    with pytest.raises(train.Preempted, match="stopped at step 3"):
        train.train_and_evaluate(config, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]


def test_sigint_saves_too_and_a_resumed_run_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    uninterrupted = train.train_and_evaluate(_train_config(), str(tmp_path / "a"))
    with monkeypatch.context() as patch:
        _signal_at(patch, "data", 3, signal.SIGINT)
        with pytest.raises(train.Preempted, match="SIGINT: stopped at step 3") as stop:
            train.train_and_evaluate(_train_config(), str(tmp_path / "b"))
    assert stop.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = train.train_and_evaluate(_train_config(), str(tmp_path / "b"))
    jax.tree.map(np.testing.assert_array_equal,
                 jax.device_get(resumed), jax.device_get(uninterrupted))
    logged = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert [line["step"] for line in logged] == [2, 4, 6]  # step 3 was saved, not logged


@pytest.mark.parametrize("damage", ["random_bytes", "state_deleted"])
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_before_it(
        tmp_path, damage):
    uninterrupted = train.train_and_evaluate(_train_config(), str(tmp_path / "a"))
    workdir = tmp_path / "b"
    train.train_and_evaluate(_train_config(train__stop_after_steps=5), str(workdir))
    newest = workdir / "checkpoints" / "5"
    if damage == "state_deleted":
        shutil.rmtree(newest / "state")
    else:
        for path in (p for p in (newest / "state").rglob("*") if p.is_file()):
            path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size or 16))
    resumed = train.train_and_evaluate(_train_config(), str(workdir))
    jax.tree.map(np.testing.assert_array_equal,
                 jax.device_get(resumed), jax.device_get(uninterrupted))
    checkpoints = sorted(os.listdir(workdir / "checkpoints"))
    assert checkpoints == ["2", "4", "5.unreadable", "6"], checkpoints


def test_no_readable_checkpoint_is_an_error_that_sets_nothing_aside(tmp_path):
    train.train_and_evaluate(_train_config(train__stop_after_steps=2), str(tmp_path))
    shutil.rmtree(tmp_path / "checkpoints" / "2" / "state")
    with pytest.raises(RuntimeError, match="no checkpoint reads back; the newest, step 2"):
        train.train_and_evaluate(_train_config(), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


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


def test_pre_training_records_the_train_splits_audio_statistics(trained_run):
    config, workdir, records_dir = trained_run
    stats = records.Manifest.load(records_dir / "train").spectrogram_stats
    placeholders = load_config().audio
    assert (stats["mean"], stats["std"]) != (placeholders.norm_mean, placeholders.norm_std)
    saved = json.loads((workdir / "config.json").read_text())["audio"]
    assert (saved["norm_mean"], saved["norm_std"]) == (stats["mean"], stats["std"])
    # In place: what the caller does next with the config (evaluate, export) uses them.
    assert (config.audio.norm_mean, config.audio.norm_std) == (stats["mean"], stats["std"])


@pytest.mark.parametrize("overrides", [{"data.source": "random"},
                                       {"audio.norm_from_data": False}])
def test_audio_normalisation_stays_as_set_without_statistics_to_take(trained_run, overrides):
    _, _, records_dir = trained_run
    config = load_config()
    config.data.source, config.data.train_split = "records", str(records_dir / "train")
    config.audio.norm_mean, config.audio.norm_std = -1.0, 2.0
    config.update_from_flattened_dict(overrides)
    state.resolve_audio_norm(config)
    assert (config.audio.norm_mean, config.audio.norm_std) == (-1.0, 2.0)



def test_a_relative_workdir_saves_its_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train.train_and_evaluate(_train_config(train__stop_after_steps=2), "run")
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2"]
