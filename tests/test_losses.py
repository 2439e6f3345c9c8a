"""Tests for vlsa_jax.losses against loop-based NumPy references."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vlsa_jax import losses

RTOL = 1e-5
ATOL = 1e-6

# Jitted entry points: eager mode compiles every primitive separately, which
# would dominate the run time of these tiny-shape tests on CPU.
info_nce = jax.jit(losses.symmetric_info_nce)
patch_mse = jax.jit(losses.masked_patch_mse, static_argnames="reduction")
token_ce = jax.jit(losses.masked_token_cross_entropy)
matching = jax.jit(losses.binary_matching_loss)
accuracy = jax.jit(losses.contrastive_accuracy)


# --- NumPy references: explicit loops, float64, no shared code with losses.


def _ref_normalize(v):
    out = np.empty_like(v, dtype=np.float64)
    for i, row in enumerate(v.astype(np.float64)):
        out[i] = row / math.sqrt(sum(a * a for a in row))
    return out


def _ref_neg_log_softmax(scores, target):
    """-log(exp(s_t) / sum_k exp(s_k)) for a 1-D list, max-subtracted."""
    m = max(scores)
    log_z = m + math.log(sum(math.exp(s - m) for s in scores))
    return log_z - scores[target]


def _ref_info_nce(x, y, temperature, x_negatives=None, y_negatives=None):
    xn, yn = _ref_normalize(x), _ref_normalize(y)
    extra_x = [] if x_negatives is None else list(_ref_normalize(x_negatives))
    extra_y = [] if y_negatives is None else list(_ref_normalize(y_negatives))
    b = x.shape[0]
    logits = [[float(np.dot(xn[i], yn[j])) / temperature for j in range(b)]
              for i in range(b)]
    # x_i ranks every y and every extra y; its positive is y_i. Likewise y_j.
    rows = sum(
        _ref_neg_log_softmax(logits[i] + [float(np.dot(xn[i], n)) / temperature
                                          for n in extra_y], i)
        for i in range(b)) / b
    cols = sum(
        _ref_neg_log_softmax([logits[i][j] for i in range(b)]
                             + [float(np.dot(n, yn[j])) / temperature for n in extra_x], j)
        for j in range(b)) / b
    return rows + cols


def _ref_masked_patch_mse(pred, target, mask, reduction):
    total, count = 0.0, 0
    b, n, p = pred.shape
    for i in range(b):
        for k in range(n):
            if mask[i, k]:
                err = sum((float(pred[i, k, c]) - float(target[i, k, c])) ** 2
                          for c in range(p))
                total += err / p if reduction == "mean" else err
                count += 1
    return total / count if count else 0.0


def _ref_masked_token_ce(logits, labels, mask):
    total, count = 0.0, 0
    b, length, _ = logits.shape
    for i in range(b):
        for t in range(length):
            if mask[i, t]:
                total += _ref_neg_log_softmax(
                    [float(s) for s in logits[i, t]], int(labels[i, t]))
                count += 1
    return total / count if count else 0.0


def _ref_binary_matching(logits, labels):
    """-[t log s(z) + (1 - t) log(1 - s(z))], branching on the sign of z."""
    total = 0.0
    flat_logits, flat_labels = logits.ravel(), labels.ravel()
    for z, t in zip(flat_logits.astype(np.float64), flat_labels):
        tail = math.log1p(math.exp(-abs(z)))
        neg_log_p = tail if z >= 0 else tail - z          # -log s(z)
        neg_log_not_p = tail + z if z >= 0 else tail      # -log(1 - s(z))
        total += t * neg_log_p + (1 - t) * neg_log_not_p
    return total / flat_logits.size


def _ref_contrastive_accuracy(x, y):
    xn, yn = _ref_normalize(x), _ref_normalize(y)
    hits = 0
    for i in range(x.shape[0]):
        sims = [float(np.dot(xn[i], yn[j])) for j in range(y.shape[0])]
        hits += int(sims.index(max(sims)) == i)
    return hits / x.shape[0]


# --- symmetric_info_nce


@pytest.mark.parametrize("seed, batch, dim, temperature", [
    (0, 4, 8, 0.07),
    (1, 6, 3, 0.5),      # batch > dim
    (2, 3, 16, 1.0),     # batch < dim
])
def test_info_nce_matches_reference(seed, batch, dim, temperature):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, dim)).astype(np.float32)
    y = rng.normal(size=(batch, dim)).astype(np.float32)
    got = info_nce(jnp.asarray(x), jnp.asarray(y), temperature)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(
        got, _ref_info_nce(x, y, temperature), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("seed, batch, extra_x, extra_y", [
    (6, 4, 4, 0), (7, 5, 0, 2), (8, 3, 7, 3)])
def test_info_nce_extra_negatives_match_reference(seed, batch, extra_x, extra_y):
    rng = np.random.default_rng(seed)
    x, y = (rng.normal(size=(batch, 6)).astype(np.float32) for _ in range(2))
    x_neg, y_neg = (rng.normal(size=(n, 6)).astype(np.float32) if n else None
                    for n in (extra_x, extra_y))
    got = info_nce(jnp.asarray(x), jnp.asarray(y), 0.1, x_neg, y_neg)
    np.testing.assert_allclose(
        got, _ref_info_nce(x, y, 0.1, x_neg, y_neg), rtol=RTOL, atol=ATOL)
    # More candidates, a larger loss.
    assert got > info_nce(jnp.asarray(x), jnp.asarray(y), 0.1)


def test_info_nce_unnormalized_large_norm_and_jnp_temperature():
    rng = np.random.default_rng(3)
    x = (1e3 * rng.normal(size=(5, 7))).astype(np.float32)
    y = (50.0 * rng.normal(size=(5, 7))).astype(np.float32)
    temperature = jnp.asarray(0.1, dtype=jnp.float32)
    got = info_nce(jnp.asarray(x), jnp.asarray(y), temperature)
    np.testing.assert_allclose(
        got, _ref_info_nce(x, y, 0.1), rtol=RTOL, atol=ATOL)


def test_info_nce_is_scale_invariant_and_accepts_bfloat16():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(4, 8)), dtype=jnp.bfloat16)
    y = jnp.asarray(rng.normal(size=(4, 8)), dtype=jnp.bfloat16)
    got = info_nce(x, y, 0.2)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(
        got, info_nce(4.0 * x, 0.5 * y, 0.2),
        rtol=RTOL, atol=ATOL)


def test_info_nce_gradients_finite():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(4, 6)), dtype=jnp.float32)
    y = jnp.asarray(rng.normal(size=(4, 6)), dtype=jnp.float32)
    # A zero row is the worst case for the normalisation.
    x = x.at[0].set(0.0)
    grads = jax.jit(jax.grad(losses.symmetric_info_nce, argnums=(0, 1, 2)))(
        x, y, jnp.float32(0.07))
    for g in grads:
        assert np.all(np.isfinite(g))
    assert np.any(grads[1] != 0)


# --- masked_patch_mse


def _patch_inputs(seed, b=2, n=5, p=4):
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=(b, n, p)).astype(np.float32)
    target = rng.normal(size=(b, n, p)).astype(np.float32)
    mask = (rng.random(size=(b, n)) < 0.5).astype(np.float32)
    mask[0, 0] = 1.0  # at least one masked patch
    return pred, target, mask


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("seed, shape", [(0, (2, 5, 4)), (1, (3, 7, 2))])
def test_masked_patch_mse_matches_reference(reduction, seed, shape):
    pred, target, mask = _patch_inputs(seed, *shape)
    got = patch_mse(
        jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask),
        reduction=reduction)
    np.testing.assert_allclose(
        got, _ref_masked_patch_mse(pred, target, mask, reduction),
        rtol=RTOL, atol=ATOL)


def test_masked_patch_mse_sum_is_patch_size_times_mean():
    pred, target, mask = _patch_inputs(2, p=6)
    args = (jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask))
    np.testing.assert_allclose(
        patch_mse(*args, reduction="sum"),
        6 * patch_mse(*args, reduction="mean"),
        rtol=RTOL, atol=ATOL)


def test_masked_patch_mse_ignores_unmasked_patches():
    pred, target, mask = _patch_inputs(3)
    changed = pred.copy()
    changed[mask == 0] += 100.0
    assert np.any(mask == 0)
    before = patch_mse(pred, target, mask)
    after = patch_mse(changed, target, mask)
    np.testing.assert_allclose(after, before, rtol=RTOL, atol=ATOL)


def test_masked_patch_mse_all_zero_mask_is_zero():
    pred, target, _ = _patch_inputs(4)
    mask = jnp.zeros(pred.shape[:2])
    for reduction in ("mean", "sum"):
        got = patch_mse(pred, target, mask, reduction=reduction)
        assert got == 0.0


def test_masked_patch_mse_bad_reduction():
    pred, target, mask = _patch_inputs(5)
    with pytest.raises(ValueError, match="mean.*sum"):
        losses.masked_patch_mse(pred, target, mask, reduction="max")


# --- masked_token_cross_entropy


@pytest.mark.parametrize("seed, shape", [(0, (2, 5, 7)), (1, (3, 4, 11))])
def test_masked_token_ce_matches_reference(seed, shape):
    b, length, vocab = shape
    rng = np.random.default_rng(seed)
    logits = (3.0 * rng.normal(size=shape)).astype(np.float32)
    labels = rng.integers(0, vocab, size=(b, length)).astype(np.int32)
    mask = (rng.random(size=(b, length)) < 0.5).astype(np.int32)
    mask[0, 0] = 1
    got = token_ce(logits, labels, mask)
    np.testing.assert_allclose(
        got, _ref_masked_token_ce(logits, labels, mask), rtol=RTOL, atol=ATOL)


def test_masked_token_ce_all_zero_mask_is_zero():
    logits = jnp.ones((2, 3, 5))
    labels = jnp.zeros((2, 3), dtype=jnp.int32)
    got = token_ce(logits, labels, jnp.zeros((2, 3)))
    assert got == 0.0


# --- binary_matching_loss


@pytest.mark.parametrize("seed, shape, scale", [
    (0, (8,), 1.0),
    (1, (3, 4), 5.0),
    (2, (6,), 30.0),  # saturated: naive log(sigmoid) gives inf
])
def test_binary_matching_matches_reference(seed, shape, scale):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.normal(size=shape)).astype(np.float32)
    labels = rng.integers(0, 2, size=shape).astype(np.int32)
    got = matching(logits, labels)
    assert np.isfinite(got)
    np.testing.assert_allclose(
        got, _ref_binary_matching(logits, labels), rtol=RTOL, atol=ATOL)


# --- contrastive_accuracy


def test_contrastive_accuracy_matches_reference():
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(8, 4)).astype(np.float32)
        y = (x + rng.normal(size=(8, 4))).astype(np.float32)
        got = accuracy(x, y)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, _ref_contrastive_accuracy(x, y))


def test_contrastive_accuracy_extremes():
    x = 10.0 * jnp.eye(4)
    assert accuracy(x, x) == 1.0
    assert accuracy(x, jnp.roll(x, 1, axis=0)) == 0.0


# --- sharding: batch axis split over the 8 CPU devices from conftest.


@pytest.fixture(scope="module")
def data_sharding():
    mesh = jax.make_mesh(
        (8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    return NamedSharding(mesh, P("data"))


def _assert_same_when_sharded(fn, sharding, *arrays):
    """Compares jit(fn) on batch-sharded and on single-device inputs.

    Returns the single-device value as a Python float.
    """
    fn = jax.jit(fn)
    unsharded = fn(*(jnp.asarray(a) for a in arrays))
    sharded_inputs = [jax.device_put(a, sharding) for a in arrays]
    assert len(sharded_inputs[0].sharding.device_set) == 8
    np.testing.assert_allclose(
        fn(*sharded_inputs), unsharded, rtol=0, atol=1e-6)
    return float(unsharded)


def test_info_nce_sharded_sees_global_batch(data_sharding):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8)).astype(np.float32)
    y = rng.normal(size=(16, 8)).astype(np.float32)
    fn = functools.partial(losses.symmetric_info_nce, temperature=0.1)
    global_loss = _assert_same_when_sharded(fn, data_sharding, x, y)
    # A per-shard loss (2 items per device) would differ from the global one.
    per_shard = np.mean([_ref_info_nce(x[i:i + 2], y[i:i + 2], 0.1)
                         for i in range(0, 16, 2)])
    assert abs(per_shard - global_loss) > 1e-2


def test_masked_patch_mse_sharded(data_sharding):
    pred, target, mask = _patch_inputs(1, b=16, n=3, p=4)
    _assert_same_when_sharded(
        losses.masked_patch_mse, data_sharding, pred, target, mask)


def test_masked_token_ce_sharded(data_sharding):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(16, 3, 6)).astype(np.float32)
    labels = rng.integers(0, 6, size=(16, 3)).astype(np.int32)
    mask = (rng.random(size=(16, 3)) < 0.5).astype(np.int32)
    _assert_same_when_sharded(
        losses.masked_token_cross_entropy, data_sharding, logits, labels, mask)
