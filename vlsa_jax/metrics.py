"""Retrieval ranks and recall metrics, in NumPy, for galleries too large to score whole.

Ground truth is given by integer labels: query i's correct gallery items are the j with
`gallery_labels[j] == query_labels[i]`. A query's rank is that of its best-ranked correct
item:

    rank = 1 + the number of INCORRECT gallery items scoring >= its best correct score.

Ties count against the query; the other correct items never do. `dual_softmax` is the
re-ranking of Cheng et al. 2021 (CAMoE), reported as a separate row, never as the plain
result. How each direction is labelled, and why ties count against: docs/retrieval.md.
"""
import numpy as np

RECALL_KS = (1, 5, 10, 50)


def ranks(similarity: np.ndarray, query_labels: np.ndarray,
          gallery_labels: np.ndarray) -> np.ndarray:
    """The rank of each query's best-ranked correct item, from a whole similarity matrix.

    Args:
      similarity: [Q, G] real scores, no NaN.
      query_labels: [Q] int.
      gallery_labels: [G] int; query i's correct items are those with its label.

    Returns:
      [Q] int64 1-based ranks.

    Raises:
      ValueError: a shape that does not fit, a NaN, or a query without a correct item.
      TypeError: scores that are not real numbers, or labels that are not integers.
    """
    similarity = np.asarray(similarity)
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be [Q, G]; got shape {similarity.shape}")
    if not (np.issubdtype(similarity.dtype, np.floating)
            or np.issubdtype(similarity.dtype, np.integer)):
        raise TypeError(f"similarity must hold real numbers; got {similarity.dtype}")
    if np.issubdtype(similarity.dtype, np.floating) and np.isnan(similarity).any():
        raise ValueError(f"similarity holds {np.count_nonzero(np.isnan(similarity))} NaNs")
    query_labels = _labels(query_labels, similarity.shape[0], "query_labels")
    gallery_labels = _labels(gallery_labels, similarity.shape[1], "gallery_labels")
    correct = _CorrectItems(query_labels, gallery_labels)
    return _rank_rows(similarity, correct, 0)


def block_ranks(queries: np.ndarray, gallery: np.ndarray, query_labels: np.ndarray,
                gallery_labels: np.ndarray, *, block_size: int = 1024,
                dual_softmax_temperature: float | None = None) -> np.ndarray:
    """The ranks of `ranks`, from embeddings, never holding more than block_size x G scores.

    Scores (similarity = queries @ gallery.T) are float32 (float64 if an input is) and
    computed by BLAS, one [block_size, G] product at a time into one buffer; memory
    beyond the inputs is about that buffer, block_size * G * 4 bytes (0.38 GiB for
    1024 x 100,000). With `dual_softmax_temperature`, a first pass over the query blocks
    gathers each gallery column's log-sum-exp, and the ranking pass recomputes the
    scores and re-ranks them: twice the matrix products.

    Args:
      queries: [Q, D] floating-point embeddings.
      gallery: [G, D] floating-point embeddings.
      query_labels: [Q] int.
      gallery_labels: [G] int; query i's correct items are those with its label.
      block_size: query rows scored at a time.
      dual_softmax_temperature: re-ranks with dual softmax at this temperature; None
        ranks the plain scores.

    Returns:
      [Q] int64 1-based ranks.

    Raises:
      ValueError: a shape that does not fit, a NaN or infinite row, a query without a
        correct item, or a block size or temperature that is not positive.
      TypeError: embeddings that are not floating point, or labels that are not integers.
    """
    queries, gallery = _embeddings(queries, gallery)
    query_labels = _labels(query_labels, len(queries), "query_labels")
    gallery_labels = _labels(gallery_labels, len(gallery), "gallery_labels")
    if block_size < 1:
        raise ValueError(f"block_size must be positive; got {block_size}")
    if dual_softmax_temperature is not None and not dual_softmax_temperature > 0:
        raise ValueError(f"dual_softmax_temperature must be positive; "
                         f"got {dual_softmax_temperature}")
    correct = _CorrectItems(query_labels, gallery_labels)
    scores = np.empty((min(block_size, len(queries)), len(gallery)), queries.dtype)
    if dual_softmax_temperature is not None:
        log_norm = _column_logsumexp(queries, gallery, dual_softmax_temperature, scores)
    result = np.empty(len(queries), np.int64)
    for start in range(0, len(queries), block_size):
        block = queries[start:start + block_size]
        block_scores = np.matmul(block, gallery.T, out=scores[:len(block)])
        if dual_softmax_temperature is not None:
            # Row by row: the temporaries stay in cache and need no second buffer.
            for row in block_scores:
                row *= np.exp(row / dual_softmax_temperature - log_norm)
        result[start:start + len(block)] = _rank_rows(block_scores, correct, start)
    return result


def retrieval_metrics(ranks: np.ndarray, ks=RECALL_KS) -> dict[str, float]:
    """Recall at each k, median and mean rank, from the 1-based ranks [Q] of `ranks`.

    Returns:
      {'R@1': percent of queries ranked <= 1, 'R@5', 'R@10', 'R@50' (one per `ks`),
      'MdR': median rank, 'MnR': mean rank}.

    Raises:
      ValueError: ranks that are empty, not [Q], not integers or below 1.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or not len(ranks):
        raise ValueError(f"ranks must be a non-empty [Q] array; got shape {ranks.shape}")
    if not np.issubdtype(ranks.dtype, np.integer) or ranks.min() < 1:
        raise ValueError("ranks must be integers >= 1")
    results = {f"R@{k}": 100.0 * np.count_nonzero(ranks <= k) / len(ranks) for k in ks}
    results["MdR"] = float(np.median(ranks))
    results["MnR"] = float(np.mean(ranks))
    return results


def dual_softmax(similarity: np.ndarray, temperature: float) -> np.ndarray:
    """The full-matrix form of `block_ranks`'s dual-softmax re-ranking.

    Returns:
      similarity * softmax(similarity / temperature), the softmax over the query axis
      (axis 0) of each gallery column.
    """
    similarity = np.asarray(similarity)
    logits = similarity / temperature
    logits -= logits.max(axis=0, keepdims=True)
    prior = np.exp(logits)
    prior /= prior.sum(axis=0, keepdims=True)
    return similarity * prior


class _CorrectItems:
    """Each query's correct gallery columns, from the gallery sorted by label.

    A query's correct items are one run of the sorted order, so a block's are gathered
    as (row, column) pairs without a [block, G] comparison of labels.
    """

    def __init__(self, query_labels: np.ndarray, gallery_labels: np.ndarray):
        self.order = np.argsort(gallery_labels, kind="stable")
        sorted_labels = gallery_labels[self.order]
        self.first = np.searchsorted(sorted_labels, query_labels, side="left")
        self.count = np.searchsorted(sorted_labels, query_labels, side="right") - self.first
        missing = np.count_nonzero(self.count == 0)
        if missing:
            raise ValueError(f"{missing} of {len(query_labels)} queries have no correct item "
                             "in the gallery (no gallery label equals theirs)")

    def pairs(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (row, column) pairs of the correct items of queries start..stop-1.

        Returns:
          (rows [P], columns [P], offsets [stop - start]): row r's correct columns are
          columns[offsets[r]:offsets[r + 1]], rows counted from start.
        """
        count = self.count[start:stop]
        offsets = np.cumsum(count) - count
        rows = np.repeat(np.arange(len(count)), count)
        within_run = np.arange(len(rows)) - offsets[rows]
        columns = self.order[self.first[start:stop][rows] + within_run]
        return rows, columns, offsets


def _rank_rows(scores: np.ndarray, correct: _CorrectItems, start: int) -> np.ndarray:
    """Ranks of queries start..start+len(scores)-1 from their scores [b, G]."""
    rows, columns, offsets = correct.pairs(start, start + len(scores))
    correct_scores = scores[rows, columns]
    best = np.maximum.reduceat(correct_scores, offsets)
    # Correct items reach the best score only by equalling it; they never count.
    correct_at_best = np.add.reduceat((correct_scores >= best[rows]).astype(np.int64), offsets)
    # Counting row by row is ~2x faster than over the block's axis 1, with no [b, G] mask.
    at_or_above = np.fromiter((np.count_nonzero(row >= threshold)
                               for row, threshold in zip(scores, best)),
                              np.int64, count=len(best))
    return 1 + at_or_above - correct_at_best


def _column_logsumexp(queries: np.ndarray, gallery: np.ndarray, temperature: float,
                      scores: np.ndarray) -> np.ndarray:
    """Each gallery column's log-sum-exp over all queries, one query block at a time.

    The blocks are computed in `scores` [block, G], with a running max so that no exp
    overflows.

    Returns:
      [G]: log sum_i exp(queries[i] . gallery[j] / temperature).
    """
    column_max = np.full(len(gallery), -np.inf, scores.dtype)
    column_sum = np.zeros(len(gallery), scores.dtype)
    for start in range(0, len(queries), len(scores)):
        block = queries[start:start + len(scores)]
        logits = np.matmul(block, gallery.T, out=scores[:len(block)])
        logits /= temperature
        new_max = np.maximum(column_max, logits.max(axis=0))
        column_sum *= np.exp(column_max - new_max)
        logits -= new_max
        np.exp(logits, out=logits)
        column_sum += logits.sum(axis=0)
        column_max = new_max
    return column_max + np.log(column_sum)


def _embeddings(queries, gallery) -> tuple[np.ndarray, np.ndarray]:
    """Validated C-contiguous copies (or the inputs) in float32, or float64 if one is."""
    queries, gallery = np.asarray(queries), np.asarray(gallery)
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError("queries [Q, D] and gallery [G, D] must share D; got shapes "
                         f"{queries.shape} and {gallery.shape}")
    for name, x in (("queries", queries), ("gallery", gallery)):
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{name} must be floating point; got {x.dtype}")
    dtype = np.promote_types(np.result_type(queries, gallery), np.float32)
    queries = np.ascontiguousarray(queries, dtype)
    gallery = np.ascontiguousarray(gallery, dtype)
    for name, x in (("queries", queries), ("gallery", gallery)):
        bad_rows = np.count_nonzero(~np.isfinite(x).all(axis=1))
        if bad_rows:
            raise ValueError(f"{bad_rows} rows of {name} hold NaN or infinite values")
    return queries, gallery


def _labels(labels, length: int, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},); got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{name} must be integers; got {labels.dtype}")
    return labels
