"""Token masking for masked-autoencoder and masked-language-model pre-training.

Audio patches and video patches are masked MAE-style: a random subset is
dropped before the encoder and the decoder later re-inserts a learned mask
token at the dropped positions. Video is masked frame by frame, so every frame
keeps the same number of patches. Text is masked BERT-style, in place.

All functions are pure `jax.numpy`, take static shapes and can be jitted.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp


class MaskInfo(NamedTuple):
    """Which tokens a masking step kept and how to undo the shuffle.

    Attributes:
      ids_keep: [B, K] int32, indices (into the N tokens) of the kept tokens,
        in encoder order.
      ids_restore: [B, N] int32, permutation that puts `[kept; masked]`
        back in original order.
      mask: [B, N] float32, 1 where a token was masked (dropped), 0 where
        kept.
    """

    ids_keep: jax.Array
    ids_restore: jax.Array
    mask: jax.Array


def num_kept(num_tokens: int, mask_ratio: float) -> int:
    """Number of tokens kept out of `num_tokens` at `mask_ratio`.

    Args:
      num_tokens: Number of tokens N before masking.
      mask_ratio: Fraction of tokens to drop, in [0, 1].

    Returns:
      `round(num_tokens * (1 - mask_ratio))`, but at least 1 so the
      encoder never sees an empty sequence. A ratio of 0 keeps all tokens.
    """
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    return max(1, int(round(num_tokens * (1.0 - mask_ratio))))


def _masking_from_noise(noise: jax.Array, keep: int) -> MaskInfo:
    """Keeps the `keep` lowest-noise tokens of every group.

    Args:
      noise: [B, G, P] float, one value per token, in G independent groups
        of P tokens; token `g * P + p` of the flattened sequence.
      keep: Number of tokens kept per group.

    Returns:
      MaskInfo over the flattened N = G * P tokens, with K = G * keep and
      kept indices grouped by group, ascending within each group.
    """
    batch_size, num_groups, group_size = noise.shape
    # A random permutation per group: lowest noise first.
    ids_shuffle = jnp.argsort(noise, axis=-1).astype(jnp.int32)
    # Sorting within each part keeps tokens in their original order, so the
    # encoder sees kept patches in raster order.
    ids_keep = jnp.sort(ids_shuffle[..., :keep], axis=-1)
    ids_masked = jnp.sort(ids_shuffle[..., keep:], axis=-1)
    # Move from within-group to flattened-sequence indices.
    offsets = (jnp.arange(num_groups, dtype=jnp.int32) * group_size)[:, None]
    ids_keep = (ids_keep + offsets).reshape(batch_size, -1)
    ids_masked = (ids_masked + offsets).reshape(batch_size, -1)

    ids_shuffle = jnp.concatenate([ids_keep, ids_masked], axis=1)
    ids_restore = jnp.argsort(ids_shuffle, axis=1).astype(jnp.int32)
    # ids_restore[n] is token n's position in [kept; masked]; positions past
    # the kept block are the dropped tokens.
    mask = (ids_restore >= ids_keep.shape[1]).astype(jnp.float32)
    return MaskInfo(ids_keep=ids_keep, ids_restore=ids_restore, mask=mask)


def random_masking(
    key: jax.Array, batch_size: int, num_tokens: int, mask_ratio: float
) -> MaskInfo:
    """MAE random masking: each example keeps a uniformly random subset.

    Every token draws uniform noise and the `num_kept(num_tokens,
    mask_ratio)` tokens with the lowest noise are kept. `ids_keep` is sorted
    ascending within each example, so kept tokens stay in their original order.

    Args:
      key: PRNG key.
      batch_size: B.
      num_tokens: N, tokens per example.
      mask_ratio: Fraction of tokens to drop.

    Returns:
      MaskInfo with `ids_keep` [B, K], `ids_restore` [B, N] and `mask`
      [B, N], where K = `num_kept(num_tokens, mask_ratio)`.
    """
    keep = num_kept(num_tokens, mask_ratio)
    noise = jax.random.uniform(key, (batch_size, 1, num_tokens))
    return _masking_from_noise(noise, keep)


def per_frame_masking(
    key: jax.Array,
    batch_size: int,
    num_frames: int,
    patches_per_frame: int,
    mask_ratio: float,
) -> MaskInfo:
    """Masks every video frame independently with the same keep count.

    Each frame keeps exactly k = `num_kept(patches_per_frame, mask_ratio)`
    patches, chosen independently of the other frames. Indices refer to the
    flattened, frame-major sequence of T * P tokens (token `t * P + p`).

    Args:
      key: PRNG key.
      batch_size: B.
      num_frames: T.
      patches_per_frame: P.
      mask_ratio: Fraction of each frame's patches to drop.

    Returns:
      MaskInfo with `ids_keep` [B, T * k] grouped frame by frame (frame 0's
      kept patches first, each group ascending), `ids_restore` [B, T * P]
      and `mask` [B, T * P].
    """
    keep = num_kept(patches_per_frame, mask_ratio)
    noise = jax.random.uniform(key, (batch_size, num_frames, patches_per_frame))
    return _masking_from_noise(noise, keep)


def gather_tokens(x: jax.Array, ids_keep: jax.Array) -> jax.Array:
    """Selects the kept tokens.

    Args:
      x: [B, N, ...] tokens.
      ids_keep: [B, K] int indices into N.

    Returns:
      [B, K, ...] tokens `x[b, ids_keep[b]]`.
    """
    # Trailing singleton axes let the indices broadcast over feature dims.
    ids = ids_keep.reshape(ids_keep.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, ids, axis=1)


def restore_tokens(
    kept: jax.Array, mask_token: jax.Array, ids_restore: jax.Array
) -> jax.Array:
    """Puts kept tokens back in place and fills the gaps with the mask token.

    Args:
      kept: [B, K, D] kept tokens, in `ids_keep` order.
      mask_token: [D] token placed at every masked position.
      ids_restore: [B, N] int, `MaskInfo.ids_restore`.

    Returns:
      [B, N, D] tokens in original order.
    """
    batch_size, num_tokens = ids_restore.shape
    num_masked = num_tokens - kept.shape[1]
    fill = jnp.broadcast_to(
        mask_token.astype(kept.dtype), (batch_size, num_masked, kept.shape[-1])
    )
    # [kept; masked] is the shuffled order; ids_restore un-shuffles it.
    shuffled = jnp.concatenate([kept, fill], axis=1)
    return jnp.take_along_axis(shuffled, ids_restore[..., None], axis=1)


def bert_text_masking(
    key: jax.Array,
    token_ids: jax.Array,
    maskable: jax.Array,
    mask_prob: float,
    mask_token_id: int,
    vocab_size: int,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
) -> tuple[jax.Array, jax.Array]:
    """BERT masked-language-model corruption.

    Each maskable token is selected independently with probability
    `mask_prob`. A selected token becomes `mask_token_id` with probability
    `replace_prob`, a uniform random id in [0, vocab_size) with probability
    `random_prob`, and stays unchanged otherwise. Non-maskable tokens
    (padding, special tokens) are never selected or changed.

    Args:
      key: PRNG key.
      token_ids: [B, L] int32 input ids.
      maskable: [B, L] bool, True at real, non-special tokens.
      mask_prob: Probability of selecting a maskable token.
      mask_token_id: Id of the [MASK] token.
      vocab_size: Vocabulary size for random replacements.
      replace_prob: Probability a selected token becomes [MASK].
      random_prob: Probability a selected token becomes a random id.

    Returns:
      `(input_ids, mlm_mask)`: [B, L] int32 corrupted ids and [B, L]
      float32 with 1 at selected positions (where the loss is taken).
    """
    select_key, action_key, random_key = jax.random.split(key, 3)
    shape = token_ids.shape
    selected = maskable & (jax.random.uniform(select_key, shape) < mask_prob)
    # One draw decides the action so the three outcomes are exclusive.
    action = jax.random.uniform(action_key, shape)
    to_mask = selected & (action < replace_prob)
    to_random = (
        selected & (action >= replace_prob) & (action < replace_prob + random_prob)
    )
    random_ids = jax.random.randint(
        random_key, shape, 0, vocab_size, dtype=jnp.int32
    )

    input_ids = token_ids.astype(jnp.int32)
    input_ids = jnp.where(to_random, random_ids, input_ids)
    input_ids = jnp.where(to_mask, jnp.int32(mask_token_id), input_ids)
    return input_ids, selected.astype(jnp.float32)
