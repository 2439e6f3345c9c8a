"""Meshes, parameter shardings from logical-axis rules, batch shardings, the CPU thread pool."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from tests.helpers import load_config, mesh_of
from vlsa_jax import optimizer, sharding, state
from vlsa_jax.config_lib import ConfigError

_RULES = (("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("layers", None))


def _shardings(shapes: dict, logical: dict, mesh, rules=_RULES):
    abstract = {k: jax.ShapeDtypeStruct(shape, np.float32) for k, shape in shapes.items()}
    return sharding.param_shardings(abstract, logical, rules, mesh)


def test_rules_map_logical_names_onto_mesh_axes():
    mesh = mesh_of(load_config(), data=2, fsdp=2, tensor=2)
    specs = _shardings(
        {"fc1": (3, 8, 16), "bias": (16,), "norm": (8,), "square": (8, 8)},
        {"fc1": P("layers", "embed", "mlp"), "bias": P("mlp"), "norm": P(),
         "square": P("embed", "heads")}, mesh)
    assert specs["fc1"].spec == P(None, "fsdp", "tensor")
    assert specs["bias"].spec == P("tensor")
    assert specs["norm"].spec == P(None)
    assert specs["square"].spec == P("fsdp", "tensor")
    assert all(s.mesh == mesh for s in specs.values())


def test_a_dimension_the_mesh_cannot_divide_is_replicated_and_logged(monkeypatch):
    logged = []
    monkeypatch.setattr(sharding.logging, "info", lambda *args: logged.append(args[0] % args[1:]))
    mesh = mesh_of(load_config(), data=1, fsdp=4, tensor=2)
    specs = _shardings({"kernel": (6, 16), "vocab": (8, 5)},
                       {"kernel": P("embed", "mlp"), "vocab": P("embed", "mlp")}, mesh)
    assert specs["kernel"].spec == P(None, "tensor")  # 6 rows over fsdp=4: replicated
    assert specs["vocab"].spec == P("fsdp", None)  # 5 columns over tensor=2: replicated
    assert len(logged) == 2
    assert "['kernel']" in logged[0] and "dimension 0 (embed, size 6)" in logged[0]
    assert "['vocab']" in logged[1] and "dimension 1 (mlp, size 5)" in logged[1]


def test_a_logical_name_without_a_rule_is_a_config_error():
    mesh = mesh_of(load_config(), data=8)
    with pytest.raises(ConfigError, match=r"mesh.logical_axis_rules: no rule for logical "
                       r"axis 'kv' \(of parameter \['kernel'\]\)"):
        _shardings({"kernel": (8, 8)}, {"kernel": P("embed", "kv")}, mesh)


def test_training_state_shardings_follow_the_parameters():
    """Adam's moments are sharded like their parameter, counts and step replicated."""
    config = load_config()
    mesh = mesh_of(config, data=2, fsdp=2, tensor=2)
    tx = optimizer.make_optimizer(config)
    sharded = state.sharded_state(config, tx, mesh)
    params = sharded.shardings["params"]
    adam = sharded.shardings["opt_state"][1][0]
    jax.tree.map(lambda p, mu, nu: (p.spec == mu.spec == nu.spec) or pytest.fail(str(p)),
                 params, adam.mu, adam.nu)
    assert adam.count.spec == P() and sharded.shardings["step"].spec == P()
    fc1 = sharded.abstract["params"]["encoders"][0]["blocks"]["fc1"]["kernel"]
    assert fc1.sharding.spec == P(None, "fsdp", "tensor")
    # Every parameter of the model is placed; none is left without a sharding.
    assert len(jax.tree.leaves(params)) == len(jax.tree.leaves(sharded.abstract["params"]))


def test_global_batch_splits_rows_over_data_and_fsdp():
    mesh = mesh_of(load_config(), data=2, fsdp=2, tensor=2)
    rows = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    batch = sharding.global_batch({"audio": rows}, mesh)
    assert batch["audio"].sharding.spec == P(("data", "fsdp"))
    np.testing.assert_array_equal(np.asarray(batch["audio"]), rows)
    # Four row blocks, each held by the two devices of one tensor pair.
    blocks = {tuple(s.data[:, 0].tolist()) for s in batch["audio"].addressable_shards}
    assert blocks == {(0.0, 3.0), (6.0, 9.0), (12.0, 15.0), (18.0, 21.0)}


def _constrained_sharding(mesh, shape, logical, rules=_RULES):
    def pinned(x):
        with sharding.activation_sharding(mesh, rules):
            return sharding.constrain(x, logical)

    x = jax.ShapeDtypeStruct(shape, np.float32, sharding=sharding.batch_sharding(mesh))
    return jax.jit(pinned).lower(x).compile().output_shardings


def test_activations_follow_the_batch_axes_and_the_parameters_rules():
    mesh = mesh_of(load_config(), data=2, fsdp=2, tensor=2)
    per_head = (sharding.BATCH, None, "heads", None)
    assert _constrained_sharding(mesh, (8, 5, 4, 3), per_head).spec == P(
        ("data", "fsdp"), None, "tensor")
    hidden = (sharding.BATCH, None, "mlp")
    assert _constrained_sharding(mesh, (8, 5, 6), hidden).spec == P(
        ("data", "fsdp"), None, "tensor")
    # Three heads over two devices: kept whole.
    assert _constrained_sharding(mesh, (8, 5, 3, 3), per_head).spec == P(("data", "fsdp"))
    # Rules without 'heads' leave the heads whole.
    rules = (("embed", "fsdp"),)
    assert _constrained_sharding(mesh, (8, 5, 4, 3), per_head, rules).spec == P(
        ("data", "fsdp"))


def test_constrain_is_the_identity_outside_activation_sharding():
    x = jax.numpy.ones((4, 2))
    assert sharding.constrain(x, (sharding.BATCH, None)) is x


def test_fake_cpu_devices_are_counted_from_the_flag_or_the_config(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--foo --xla_force_host_platform_device_count=12")
    assert sharding.fake_cpu_device_count() == 12
    monkeypatch.setenv("XLA_FLAGS", "")
    assert sharding.fake_cpu_device_count() == jax.config.jax_num_cpu_devices


def test_thread_pool_is_sized_for_several_devices_and_kept_when_set(monkeypatch):
    monkeypatch.delenv("PJRT_NPROC", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=16")
    sharding.enlarge_cpu_thread_pool()
    assert sharding.os.environ["PJRT_NPROC"] == str(16 * sharding.CPU_THREADS_PER_DEVICE)
    monkeypatch.setenv("PJRT_NPROC", "7")
    sharding.enlarge_cpu_thread_pool()
    assert sharding.os.environ["PJRT_NPROC"] == "7"
