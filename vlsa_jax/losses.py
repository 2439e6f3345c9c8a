"""Pre-training losses and metrics for tri-modal video-audio-text models.

Every function is pure `jax.numpy`: it runs unchanged under `jax.jit` and
on sharded inputs, where XLA inserts the collectives, so a contrastive loss on
batch-sharded embeddings compares each item against the global batch.

All arithmetic is done in float32 whatever the input dtype, because softmax
normalisers and squared errors lose too much precision in bfloat16.
"""

import jax
import jax.numpy as jnp
import optax

_NORM_EPS = 1e-12
_REDUCTIONS = ("mean", "sum")


def l2_normalize(x: jax.Array) -> jax.Array:
    """Scales each row of `x` [B, D] to unit L2 norm, in float32.

    `rsqrt(sum_sq + eps)` rather than `x / norm` keeps both the value and
    the gradient finite for an all-zero row.
    """
    x = x.astype(jnp.float32)
    sum_sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(sum_sq + _NORM_EPS)


def cosine_similarity(x: jax.Array, y: jax.Array) -> jax.Array:
    """Pairwise cosine similarity [B, B] between the rows of x and y [B, D].

    HIGHEST precision stops accelerators from running the matmul in bfloat16
    or TF32; the [B, B] product is cheap next to the encoders.
    """
    return jnp.matmul(
        l2_normalize(x), l2_normalize(y).T,
        precision=jax.lax.Precision.HIGHEST)


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` over entries where `mask` is 1; 0 if none are.

    The denominator is clamped to 1 so that an all-zero mask gives 0 instead
    of 0 / 0 = NaN.
    """
    mask = mask.astype(jnp.float32)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def symmetric_info_nce(x: jax.Array, y: jax.Array, temperature,
                       x_negatives: jax.Array | None = None,
                       y_negatives: jax.Array | None = None) -> jax.Array:
    """Symmetric InfoNCE loss between two batches of paired embeddings.

    `logits[i, j] = cosine(x_i, y_j) / temperature`, with x and y
    L2-normalised here (inputs need not be). The positive for row i is the
    diagonal pair (i, i); every other item of the (global) batch is a
    negative. Both directions are computed and summed:

    * x -> y: cross-entropy of softmax over each row, target i, whose
      candidates are the B items of y and those of `y_negatives`;
    * y -> x: cross-entropy of softmax over each column, target j, whose
      candidates are the B items of x and those of `x_negatives`.

    Args:
      x: [B, D] embeddings of the first modality.
      y: [B, D] embeddings of the second modality; y_i is paired with x_i.
      temperature: positive Python float or traced scalar dividing the
        cosine similarities (smaller means sharper).
      x_negatives: optional [M, D] embeddings of the first modality that
        are nobody's positive, ranked by y -> x only (e.g. each clip's
        audio shifted in time, for video -> audio).
      y_negatives: optional [N, D], the same for the second modality,
        ranked by x -> y only.

    Returns:
      float32 scalar: `mean_i(-log p(y_i | x_i)) + mean_j(-log p(x_j | y_j))`,
      i.e. each direction averaged over the batch, the two summed.
    """
    temperature = jnp.asarray(temperature, dtype=jnp.float32)
    logits = cosine_similarity(x, y) / temperature
    rows, columns = logits, logits
    if y_negatives is not None:  # extra columns: each row ranks B + N candidates
        rows = jnp.concatenate([logits, cosine_similarity(x, y_negatives) / temperature], 1)
    if x_negatives is not None:  # extra rows: each column ranks B + M candidates
        columns = jnp.concatenate([logits, cosine_similarity(x_negatives, y) / temperature])
    x_to_y = -jnp.diagonal(jax.nn.log_softmax(rows, axis=1))
    y_to_x = -jnp.diagonal(jax.nn.log_softmax(columns, axis=0))
    return jnp.mean(x_to_y) + jnp.mean(y_to_x)


def masked_patch_mse(
    pred: jax.Array,
    target: jax.Array,
    mask: jax.Array,
    reduction: str = "mean",
) -> jax.Array:
    """Reconstruction error on masked patches only (masked auto-encoding).

    Args:
      pred: [B, N, P] predicted patch values (N patches of P values each).
      target: [B, N, P] ground-truth patch values.
      mask: [B, N], 1 where a patch was masked; unmasked patches (0) do not
        contribute.
      reduction: how the squared error is reduced over the P values of a
        patch before averaging over patches. `"mean"` averages them
        (per-value MSE); `"sum"` adds them, which is VLSA's Eq. 5
        taken literally and equals `P` times `"mean"`.

    Returns:
      float32 scalar: per-patch error averaged over all masked patches of
      the whole batch, `sum(err * mask) / max(sum(mask), 1)`; 0 when no
      patch is masked.

    Raises:
      ValueError: if `reduction` is not `"mean"` or `"sum"`.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    squared_error = jnp.square(
        pred.astype(jnp.float32) - target.astype(jnp.float32))
    if reduction == "mean":
        per_patch = jnp.mean(squared_error, axis=-1)
    else:
        per_patch = jnp.sum(squared_error, axis=-1)
    return _masked_mean(per_patch, mask)


def masked_token_cross_entropy(
    logits: jax.Array, labels: jax.Array, mask: jax.Array
) -> jax.Array:
    """Softmax cross-entropy on selected token positions (masked LM).

    Args:
      logits: [B, L, V] unnormalised scores over a vocabulary of size V.
      labels: [B, L] integer target ids in [0, V).
      mask: [B, L], 1 where a position counts (e.g. a masked token), 0
        elsewhere.

    Returns:
      float32 scalar: cross-entropy averaged over the positions where
      `mask` is 1 across the whole batch; 0 when there are none.
    """
    per_token = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels)
    return _masked_mean(per_token, mask)


def binary_matching_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Sigmoid binary cross-entropy for matched / mismatched pair heads.

    Args:
      logits: [B] (or any shape) unnormalised match scores.
      labels: same shape as `logits`, 1 for a matching pair, 0 otherwise.

    Returns:
      float32 scalar: mean binary cross-entropy over all elements, computed
      in the numerically stable log-sigmoid form.
    """
    per_item = optax.sigmoid_binary_cross_entropy(
        logits.astype(jnp.float32), labels.astype(jnp.float32))
    return jnp.mean(per_item)


def contrastive_accuracy(x: jax.Array, y: jax.Array) -> jax.Array:
    """Top-1 x -> y retrieval accuracy within a batch (a training metric).

    Args:
      x: [B, D] query embeddings, not necessarily normalised.
      y: [B, D] candidate embeddings; y_i is the positive for x_i.

    Returns:
      float32 scalar: fraction of rows i with `argmax_j cosine(x_i, y_j)
      == i`.
    """
    predicted = jnp.argmax(cosine_similarity(x, y), axis=1)
    return jnp.mean(predicted == jnp.arange(x.shape[0])).astype(jnp.float32)
