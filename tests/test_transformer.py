"""The transformer stack: shapes, stacked per-layer parameters, and padding masked out of
attention."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vlsa_jax.models.transformer import Stack, StackSpec, dot_product_attention

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


def _attention_reference(q, k, v, valid):
    """Softmax attention in float64 NumPy, head by head."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(valid[:, None, None, :], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", probs, v)


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_attention_matches_numpy_and_jax(dtype, tolerance):
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, 9, 3, 8)).astype(np.float32) for _ in range(3))
    valid = np.arange(9) < np.array([[9], [5]])
    y = dot_product_attention(*(jnp.asarray(t, dtype) for t in (q, k, v)),
                              jnp.asarray(valid)[:, None, None, :])
    assert y.dtype == dtype
    np.testing.assert_allclose(np.asarray(y, np.float32), _attention_reference(q, k, v, valid),
                               rtol=tolerance, atol=tolerance)
    # The same function as jax.nn's, gradients included.
    def loss(attend, *qkv):
        return jnp.sum(attend(*qkv) ** 2)
    ours = jax.grad(lambda *t: loss(lambda *u: dot_product_attention(
        *u, jnp.asarray(valid)[:, None, None, :]), *t), argnums=(0, 1, 2))(q, k, v)
    theirs = jax.grad(lambda *t: loss(lambda *u: jax.nn.dot_product_attention(
        *u, mask=jnp.asarray(valid)[:, None, None, :]), *t), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


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
