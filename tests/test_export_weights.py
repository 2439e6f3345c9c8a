"""Shareable weights: a run's parameters in one safetensors file, read where a checkpoint is."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from safetensors import safe_open

from tests.helpers import ROOT, child_env, load_config, mesh_of
from vlsa_jax import checkpointing, cli, evaluate, export_weights, state


@pytest.fixture(scope="module")
def weights(trained_run, tmp_path_factory):
    """(config, workdir, the weights file of the run's step 2, what was written)."""
    config, workdir, _ = trained_run
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    written = export_weights.export_weights(workdir, path)
    return config, workdir, path, written


def _names(tree, sep="."):
    return [sep.join(str(k.key) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_the_file_holds_the_parameters_alone_and_the_config(weights):
    config, workdir, path, written = weights
    _, abstract = state.abstract_params(config, mesh_of(config.copy_and_resolve_references(), 1))
    with safe_open(path, framework="np") as f:
        names, metadata = set(f.keys()), f.metadata()
        dtypes = {f.get_tensor(name).dtype for name in names}
    assert names == set(_names(abstract))  # no optimizer moments, step or RNG
    assert "encoders.0.blocks.attn.query.kernel" in names
    assert dtypes == {np.dtype(np.float32)}
    assert metadata["format"] == "vlsa_jax" and metadata["step"] == "2"
    assert json.loads(metadata["config"]) == json.loads((workdir / "config.json").read_text())
    assert (written.path, written.step, written.num_tensors) == (path, 2, len(names))
    assert written.num_params == sum(x.size for x in jax.tree.leaves(abstract))
    assert written.describe().startswith(f"wrote the weights of step 2 to {path}: ")
    assert not list(path.parent.glob("*.partial"))


def test_the_file_embeds_as_the_checkpoint_does(weights):
    config, workdir, path, _ = weights
    config, from_file = config.copy_and_resolve_references(), config.copy_and_resolve_references()
    from_file.eval.checkpoint = str(path)
    loaded = evaluate.load_for_inference(from_file, workdir)
    assert (loaded.step, loaded.step_dir) == (2, path)
    orbax = evaluate.load_for_inference(config, workdir)
    assert from_file.audio.to_dict() == config.audio.to_dict()
    # The same tree, integer keys of NNX's lists included, in the same shardings.
    assert jax.tree.structure(loaded.params) == jax.tree.structure(orbax.params)
    assert loaded.shardings == orbax.shardings
    jax.tree.map(np.testing.assert_array_equal, loaded.params, orbax.params)

    embedder = evaluate.Embedder(config, orbax.mesh, orbax.graphdef, orbax.shardings)
    ours = embedder.split(loaded.params, config.eval.splits)
    theirs = embedder.split(orbax.params, config.eval.splits)
    assert ours.clips.keys() == theirs.clips.keys() and ours.captions is not None
    for name in theirs.clips:
        np.testing.assert_array_equal(ours.clips[name], theirs.clips[name])
    np.testing.assert_array_equal(ours.captions, theirs.captions)


def test_fine_tuning_starts_from_the_file_as_from_the_checkpoint(weights):
    _, workdir, path, _ = weights
    config = load_config("finetune.py", "dataset=msrvtt,variant=tiny")
    _, abstract = state.abstract_params(config, mesh_of(config, 2))
    fresh = jax.tree.map(lambda x: jnp.full(x.shape, 7.0, x.dtype), abstract)
    from_file = state.initial_params(path, fresh, abstract)
    from_checkpoint = state.initial_params(workdir, fresh, abstract)
    jax.tree.map(np.testing.assert_array_equal, from_file, from_checkpoint)
    restored = [name for name, x in zip(_names(from_file), jax.tree.leaves(from_file))
                if not np.all(np.asarray(x) == 7.0)]
    assert len(restored) > 10 and "encoders.0.blocks.attn.query.kernel" in restored


def test_a_parameter_of_another_shape_is_an_error_naming_it(weights):
    config, _, path, _ = weights
    wider = config.copy_and_resolve_references()
    wider.model.mlp_dim *= 2
    with pytest.raises(ValueError, match=r"parameter encoders\.0\.blocks\.fc1\.bias has shape "
                       r"\(2, 128\), the model's is \(2, 256\)"):
        state.load_params(wider, path, one_device=True)


def test_a_model_config_of_the_same_shapes_is_warned_of(weights, caplog):
    config, _, path, _ = weights
    other_heads = config.copy_and_resolve_references()
    other_heads.model.num_heads //= 2
    state.load_params(other_heads, path, one_device=True)
    assert (f"model.num_heads ({config.model.num_heads} there, {other_heads.model.num_heads} "
            "here)") in caplog.text


def test_a_missing_tensor_is_an_error_to_load_params(weights, tmp_path):
    config, _, path, _ = weights
    tensors = safetensors.numpy.load_file(path)
    del tensors["modality_type"]
    with safe_open(path, framework="np") as f:
        metadata = f.metadata()
    partial = tmp_path / "partial.safetensors"
    safetensors.numpy.save_file(tensors, partial, metadata=metadata)
    with pytest.raises(ValueError, match="lacks 1 parameters of the model, e.g. modality_type"):
        state.load_params(config, partial, one_device=True)


def test_files_that_are_not_weights_are_clear_errors(weights, tmp_path):
    config, workdir, _, _ = weights
    foreign = tmp_path / "model.safetensors"
    safetensors.numpy.save_file({"embeddings.word": np.zeros((2, 2), np.float32)}, foreign)
    with pytest.raises(ValueError, match="not a weights file of vlsa_jax"):
        state.load_params(config, foreign, one_device=True)
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        state.load_params(config, tmp_path / "absent.safetensors", one_device=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 5; its steps: 2"):
        export_weights.export_weights(workdir, tmp_path / "w.safetensors", step=5)
    with pytest.raises(ValueError, match="name it \\*.safetensors"):
        export_weights.export_weights(workdir, tmp_path / "w.npz")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export_weights.export_weights(tmp_path, tmp_path / "w.safetensors")


def test_a_key_with_a_dot_cannot_be_written(tmp_path):
    with pytest.raises(ValueError, match="a key holds a '.'"):
        checkpointing.save_weights(tmp_path / "w.safetensors", {"a.b": np.zeros(2)}, {}, 0)


@pytest.mark.slow
def test_the_command_writes_the_weights_of_a_step(trained_run, tmp_path):
    _, workdir, _ = trained_run
    out = tmp_path / "shared" / "tiny.safetensors"
    command = [sys.executable, "-m", "vlsa_jax.export_weights", f"--workdir={workdir}"]
    result = subprocess.run([*command, f"--out={out}", "--step=2"], cwd=ROOT,
                            env=child_env(1), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"wrote the weights of step 2 to {out}: ")
    with safe_open(out, framework="np") as f:
        assert f.metadata()["step"] == "2"

    result = subprocess.run([*command, f"--out={tmp_path / 'w.npz'}"], cwd=ROOT,
                            env=child_env(1), capture_output=True, text=True)
    assert result.returncode == cli.USAGE_ERROR
    assert "error: ValueError: --out=" in result.stderr
