"""The transformer stack: shapes, stacked per-layer parameters, and padding masked out of
attention."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vlsa_jax.models.transformer import Stack, StackSpec

_SPEC = StackSpec(width=16, depth=2, num_heads=4, mlp_dim=32)
# A few small programs: LLVM optimisation would cost more time than it saves.
_QUICK_COMPILE = {"xla_backend_optimization_level": 0}


@functools.cache
def _split_stack(remat_policy="none"):
    """(graphdef, params) of a stack built outside any mesh, despite its logical axes."""
    spec = dataclasses.replace(_SPEC, remat_policy=remat_policy)
    make = lambda: Stack(spec, rngs=nnx.Rngs(0))  # noqa: E731
    with nnx.use_eager_sharding(False):
        # One compiled initialisation is much faster than initialising eagerly, op by op.
        graphdef = nnx.graphdef(nnx.eval_shape(make))
        return graphdef, jax.jit(lambda: nnx.state(make()), compiler_options=_QUICK_COMPILE)()


def _tokens(seed=0, shape=(3, 7, 16)):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_layers_are_stacked_with_their_logical_axes():
    _, params = _split_stack()
    fc1 = params["blocks"]["fc1"]["kernel"][...]
    assert fc1.shape == (2, 16, 32)
    specs = nnx.to_pure_dict(nnx.get_partition_spec(params))
    assert tuple(specs["blocks"]["fc1"]["kernel"]) == ("layers", "embed", "mlp")
    assert tuple(specs["blocks"]["attn"]["out"]["kernel"]) == ("layers", "heads", "embed")
    # Each layer draws its own weights.
    assert np.abs(fc1[0] - fc1[1]).max() > 1e-3


def test_padding_is_masked_out_of_attention():
    graphdef, params = _split_stack()

    forward = jax.jit(lambda params, x, valid: nnx.merge(graphdef, params)(x, valid),
                      compiler_options=_QUICK_COMPILE)
    run = lambda x, valid: forward(params, x, valid)  # noqa: E731

    x = _tokens()
    valid = jnp.asarray(np.arange(7) < np.array([[7], [4], [1]]))
    y = run(x, valid)
    assert y.shape == x.shape
    # Other values at the padded positions: the valid tokens' outputs do not change.
    changed = run(jnp.where(valid[..., None], x, _tokens(seed=1)), valid)
    np.testing.assert_allclose(np.where(valid[..., None], changed, 0),
                               np.where(valid[..., None], y, 0), rtol=1e-5, atol=1e-5)
    # With every token valid, each attends to every other.
    unmasked = run(x, jnp.ones((3, 7), bool))
    assert np.abs(np.asarray(unmasked[1, :4] - y[1, :4])).max() > 1e-3
    np.testing.assert_allclose(run(x, None), unmasked, rtol=1e-5, atol=1e-5)


def test_remat_policies_keep_the_gradients():
    x = _tokens()

    def grads(policy):
        graphdef, params = _split_stack(policy)

        def loss(params):
            return jnp.sum(nnx.merge(graphdef, params)(x) ** 2)

        return jax.jit(jax.grad(loss), compiler_options=_QUICK_COMPILE)(params)

    reference = grads("none")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 grads("full"), reference)


def test_an_unknown_remat_policy_is_an_error():
    with pytest.raises(ValueError, match="remat_policy 'some'"):
        _split_stack("some")
