"""The model's structure and reading a checkpoint's parameters (`load_params`)."""
import jax
import numpy as np
import pytest

from tests.helpers import load_config, mesh_of
from vlsa_jax import checkpointing, state


def test_the_structure_gives_a_logical_spec_to_every_parameter():
    config = load_config()
    _, specs = state.model_structure(config)
    _, abstract = state.abstract_params(config, mesh_of(config, 1))
    is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)  # noqa: E731
    assert jax.tree.structure(specs, is_leaf=is_spec) == jax.tree.structure(abstract)
    for spec, param in zip(jax.tree.leaves(specs, is_leaf=is_spec), jax.tree.leaves(abstract)):
        assert len(spec) == param.ndim, (spec, param.shape)
    encoder = specs["encoders"][0]["blocks"]
    assert tuple(encoder["fc1"]["kernel"]) == ("layers", "embed", "mlp")


def test_load_params_on_one_device_restores_the_checkpoint(trained_run):
    config, workdir, _ = trained_run
    mesh_before = config.mesh.to_dict()
    loaded = state.load_params(config, workdir, one_device=True)
    assert loaded.step == 2 and loaded.step_dir == workdir / "checkpoints" / "2"
    assert loaded.mesh.devices.size == 1
    assert (loaded.config.mesh.data, loaded.config.mesh.fsdp, loaded.config.mesh.tensor) == (
        1, 1, 1)
    assert config.mesh.to_dict() == mesh_before  # the caller's config is left alone
    for leaf in jax.tree.leaves(loaded.params):
        assert leaf.sharding.device_set == {jax.devices()[0]}

    _, abstract = state.abstract_params(config, mesh_of(config.copy_and_resolve_references(), 1))
    expected, missing, step = checkpointing.restore_params(workdir, abstract)
    assert not missing and step == 2
    assert jax.tree.structure(loaded.params) == jax.tree.structure(expected)
    jax.tree.map(np.testing.assert_array_equal, loaded.params, expected)


def test_load_params_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        state.load_params(load_config(), tmp_path, one_device=True)
