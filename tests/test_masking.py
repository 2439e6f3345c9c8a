"""Invariants of MAE-style token masking and BERT-style text masking.

Everything under test runs inside ``jax.jit``: that is how the training step
uses it, and one compile per shape is much cheaper than compiling every eager
op separately.
"""
import functools

import jax
import numpy as np
import pytest

from vlsa_jax import masking

FEATURE_DIM = 3


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _random_roundtrip(key, batch_size, num_tokens, mask_ratio, x, mask_token):
    """random_masking followed by gather + restore of x [B, N, D]."""
    info = masking.random_masking(key, batch_size, num_tokens, mask_ratio)
    kept = masking.gather_tokens(x, info.ids_keep)
    return info, masking.restore_tokens(kept, mask_token, info.ids_restore)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _frame_roundtrip(key, batch_size, num_frames, patches, mask_ratio, x, mask_token):
    """per_frame_masking followed by gather + restore of x [B, T * P, D]."""
    info = masking.per_frame_masking(key, batch_size, num_frames, patches, mask_ratio)
    kept = masking.gather_tokens(x, info.ids_keep)
    return info, masking.restore_tokens(kept, mask_token, info.ids_restore)


def _inputs(batch_size, num_tokens):
    """Distinct token features x [B, N, D] and a mask token [D] unlike any."""
    x = np.arange(batch_size * num_tokens * FEATURE_DIM, dtype=np.float32)
    mask_token = -1.0 - np.arange(FEATURE_DIM, dtype=np.float32)
    return x.reshape(batch_size, num_tokens, FEATURE_DIM), mask_token


def _random(key, batch_size, num_tokens, mask_ratio):
    """Returns (info, x, mask_token, restored) for random_masking."""
    x, mask_token = _inputs(batch_size, num_tokens)
    info, restored = _random_roundtrip(
        key, batch_size, num_tokens, mask_ratio, x, mask_token
    )
    return info, x, mask_token, restored


def _per_frame(key, batch_size, num_frames, patches, mask_ratio):
    """Returns (info, x, mask_token, restored) for per_frame_masking."""
    x, mask_token = _inputs(batch_size, num_frames * patches)
    info, restored = _frame_roundtrip(
        key, batch_size, num_frames, patches, mask_ratio, x, mask_token
    )
    return info, x, mask_token, restored


def _check_mask_info(info, batch_size, num_tokens, keep):
    """Checks the invariants every MaskInfo must satisfy, with NumPy."""
    ids_keep = np.asarray(info.ids_keep)
    ids_restore = np.asarray(info.ids_restore)
    mask = np.asarray(info.mask)
    assert ids_keep.shape == (batch_size, keep) and ids_keep.dtype == np.int32
    assert ids_restore.shape == (batch_size, num_tokens)
    assert ids_restore.dtype == np.int32
    assert mask.shape == (batch_size, num_tokens) and mask.dtype == np.float32

    for b in range(batch_size):
        assert len(np.unique(ids_keep[b])) == keep
        assert ids_keep[b].min() >= 0 and ids_keep[b].max() < num_tokens
        # The mask is 0 exactly at the kept tokens.
        expected_mask = np.ones(num_tokens, np.float32)
        expected_mask[ids_keep[b]] = 0.0
        np.testing.assert_array_equal(mask[b], expected_mask)
    np.testing.assert_array_equal(mask.sum(axis=1), num_tokens - keep)

    # ids_restore is a permutation; its inverse, ids_shuffle, is [kept; masked].
    identity = np.tile(np.arange(num_tokens), (batch_size, 1))
    np.testing.assert_array_equal(np.sort(ids_restore, axis=1), identity)
    ids_shuffle = np.argsort(ids_restore, axis=1)
    np.testing.assert_array_equal(ids_shuffle[:, :keep], ids_keep)
    assert np.all(np.take_along_axis(mask, ids_shuffle[:, keep:], axis=1) == 1.0)
    compose = functools.partial(np.take_along_axis, axis=1)
    np.testing.assert_array_equal(compose(ids_shuffle, ids_restore), identity)
    np.testing.assert_array_equal(compose(ids_restore, ids_shuffle), identity)


def _check_restored(info, x, mask_token, restored):
    """restore(gather(x)) must equal a NumPy scatter of the kept tokens."""
    ids_keep = np.asarray(info.ids_keep)
    expected = np.broadcast_to(mask_token, x.shape).copy()
    for b in range(x.shape[0]):
        expected[b, ids_keep[b]] = x[b, ids_keep[b]]
    np.testing.assert_array_equal(restored, expected)


@pytest.mark.parametrize(
    "num_tokens,mask_ratio,expected",
    [(196, 0.75, 49), (196, 0.5, 98), (1568, 0.75, 392), (10, 0.0, 10),
     (4, 0.99, 1), (3, 1.0, 1)],
)
def test_num_kept(num_tokens, mask_ratio, expected):
    assert masking.num_kept(num_tokens, mask_ratio) == expected


def test_num_kept_rejects_bad_ratio():
    with pytest.raises(ValueError):
        masking.num_kept(10, 1.5)


@pytest.mark.parametrize(
    "batch_size,num_tokens,mask_ratio", [(4, 196, 0.75), (3, 7, 0.5), (2, 5, 0.0)]
)
def test_random_masking_invariants(batch_size, num_tokens, mask_ratio):
    info, x, mask_token, restored = _random(
        jax.random.key(0), batch_size, num_tokens, mask_ratio
    )
    keep = masking.num_kept(num_tokens, mask_ratio)
    _check_mask_info(info, batch_size, num_tokens, keep)
    # Kept tokens stay in their original order.
    assert np.all(np.diff(np.asarray(info.ids_keep), axis=1) > 0)
    _check_restored(info, x, mask_token, restored)


@pytest.mark.parametrize(
    "batch_size,num_frames,patches,mask_ratio",
    [(2, 8, 196, 0.75), (2, 8, 196, 0.5), (3, 2, 5, 0.75), (2, 3, 7, 0.0)],
)
def test_per_frame_masking_invariants(batch_size, num_frames, patches, mask_ratio):
    info, x, mask_token, restored = _per_frame(
        jax.random.key(0), batch_size, num_frames, patches, mask_ratio
    )
    keep = masking.num_kept(patches, mask_ratio)
    _check_mask_info(info, batch_size, num_frames * patches, num_frames * keep)

    # Exactly `keep` patches kept in every frame.
    mask = np.asarray(info.mask).reshape(batch_size, num_frames, patches)
    np.testing.assert_array_equal(mask.sum(axis=-1), patches - keep)
    # ids_keep is grouped frame by frame, ascending within each frame.
    ids_keep = np.asarray(info.ids_keep).reshape(batch_size, num_frames, keep)
    frame_of_id = ids_keep // patches
    assert np.all(frame_of_id == np.arange(num_frames)[:, None])
    assert np.all(np.diff(ids_keep, axis=-1) > 0)
    _check_restored(info, x, mask_token, restored)


def test_per_frame_masking_frames_are_independent():
    info = _per_frame(jax.random.key(3), 2, 8, 196, 0.75)[0]
    mask = np.asarray(info.mask).reshape(2, 8, 196)
    for frames in mask:
        # C(196, 49) patterns per frame: any repeat means frames share noise.
        assert len({frame.tobytes() for frame in frames}) == 8


def test_random_masking_examples_are_independent():
    mask = np.asarray(_random(jax.random.key(3), 4, 196, 0.75)[0].mask)
    assert len({row.tobytes() for row in mask}) == 4


@pytest.mark.parametrize(
    "make",
    [
        lambda key: _random(key, 4, 196, 0.75)[0],
        lambda key: _per_frame(key, 2, 8, 196, 0.75)[0],
    ],
    ids=["random", "per_frame"],
)
def test_masking_depends_only_on_key(make):
    first = make(jax.random.key(0))
    again = make(jax.random.key(0))
    other = make(jax.random.key(1))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.mask, other.mask)


def test_gather_tokens_keeps_trailing_dims():
    x = np.arange(2 * 5 * 3 * 4).reshape(2, 5, 3, 4)
    ids_keep = np.array([[4, 0], [1, 3]], dtype=np.int32)
    gathered = jax.jit(masking.gather_tokens)(x, ids_keep)
    np.testing.assert_array_equal(gathered, x[np.arange(2)[:, None], ids_keep])


# BERT text masking: a large batch so the observed proportions are tight.
TEXT_SHAPE, VOCAB, MASK_ID, MASK_PROB = (512, 64), 100, 99, 0.15

_bert = jax.jit(
    masking.bert_text_masking, static_argnames=("mask_token_id", "vocab_size")
)


def _within_binomial(successes, trials, prob, sigmas=5.0):
    """Whether successes / trials lies within `sigmas` binomial stds of prob."""
    std = np.sqrt(prob * (1.0 - prob) / trials)
    return abs(successes / trials - prob) <= sigmas * std


@functools.lru_cache(maxsize=None)
def _text_example(key_seed):
    """Masks fixed ids (never the mask id) with ``jax.random.key(key_seed)``.

    Returns:
        (token_ids, maskable, input_ids, mlm_mask), all [512, 64] NumPy arrays.
    """
    rng = np.random.default_rng(0)
    token_ids = rng.integers(0, MASK_ID, TEXT_SHAPE, dtype=np.int32)
    maskable = rng.random(TEXT_SHAPE) < 0.8
    input_ids, mlm_mask = _bert(
        jax.random.key(key_seed), token_ids, maskable, MASK_PROB,
        mask_token_id=MASK_ID, vocab_size=VOCAB,
    )
    return token_ids, maskable, np.asarray(input_ids), np.asarray(mlm_mask)


def test_bert_text_masking_leaves_unselected_tokens_alone():
    token_ids, maskable, input_ids, mlm_mask = _text_example(7)
    assert input_ids.shape == TEXT_SHAPE and input_ids.dtype == np.int32
    assert mlm_mask.shape == TEXT_SHAPE and mlm_mask.dtype == np.float32
    assert set(np.unique(mlm_mask)) <= {0.0, 1.0}
    # Non-maskable positions are never selected or changed.
    assert np.all(mlm_mask[~maskable] == 0.0)
    np.testing.assert_array_equal(input_ids[~maskable], token_ids[~maskable])
    # Only selected positions may change.
    assert np.all(mlm_mask[input_ids != token_ids] == 1.0)
    assert input_ids.min() >= 0 and input_ids.max() < VOCAB


def test_bert_text_masking_proportions():
    token_ids, maskable, input_ids, mlm_mask = _text_example(7)
    selected = mlm_mask == 1.0
    num_selected = int(selected.sum())
    assert _within_binomial(num_selected, int(maskable.sum()), MASK_PROB)

    orig, new = token_ids[selected], input_ids[selected]
    became_mask = int((new == MASK_ID).sum())
    unchanged = int((new == orig).sum())
    random_ids = new[(new != MASK_ID) & (new != orig)]
    other = len(random_ids)
    # A random id (prob 0.1) hits the mask id or the original id each with
    # prob 1 / VOCAB; the two differ because originals are never the mask id.
    hit = 0.1 / VOCAB
    assert _within_binomial(became_mask, num_selected, 0.8 + hit)
    assert _within_binomial(unchanged, num_selected, 0.1 + hit)
    assert _within_binomial(other, num_selected, 0.1 - 2 * hit)
    # ~390 uniform draws over 100 ids leave only ~2 ids unseen on average.
    assert len(np.unique(random_ids)) >= 0.9 * VOCAB


def test_bert_text_masking_depends_only_on_key():
    first = _text_example(7)
    again = _text_example.__wrapped__(7)
    other = _text_example(8)
    np.testing.assert_array_equal(first[2], again[2])
    np.testing.assert_array_equal(first[3], again[3])
    assert not np.array_equal(first[3], other[3])
