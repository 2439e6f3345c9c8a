"""Retrieval ranks and metrics against hand-computed cases and a brute-force reference."""
import numpy as np
import pytest

from vlsa_jax import metrics


def brute_force_ranks(similarity, query_labels, gallery_labels):
    """The tie rule spelled out: 1 + incorrect items scoring >= the best correct score."""
    result = []
    for i, row in enumerate(similarity):
        correct = [j for j, label in enumerate(gallery_labels) if label == query_labels[i]]
        best = max(row[j] for j in correct)
        result.append(1 + sum(1 for j, score in enumerate(row)
                              if j not in correct and score >= best))
    return np.array(result)


def test_ties_count_against_the_query():
    similarity = np.array([
        [0.9, 0.9, 0.1, 0.0],  # correct 0 ties incorrect 1: rank 2
        [0.5, 0.5, 0.5, 0.5],  # a constant row: every incorrect ties, rank 4
        [0.2, 0.7, 0.8, 0.1],  # correct 3 is below all three others: rank 4
        [0.3, 0.1, 0.2, 0.6],  # correct 0: only 3 (0.6) above it, rank 2
    ])
    got = metrics.ranks(similarity, np.array([0, 1, 3, 0]), np.arange(4))
    np.testing.assert_array_equal(got, [2, 4, 4, 2])
    assert got.dtype == np.int64


def test_a_constant_model_ranks_every_query_last():
    got = metrics.ranks(np.zeros((5, 5)), np.arange(5), np.arange(5))
    np.testing.assert_array_equal(got, [5] * 5)
    assert metrics.retrieval_metrics(got)["R@1"] == 0.0


def test_the_best_ranked_of_several_correct_items_counts():
    # Video -> text: 2 videos, 3 captions each (captions 0-2 describe video 0).
    caption_clip = np.repeat([0, 1], 3)
    similarity = np.array([
        [0.1, 0.8, 0.3, 0.9, 0.2, 0.0],  # best correct 0.8 (caption 1); only 0.9 above: 2
        [0.7, 0.1, 0.2, 0.5, 0.7, 0.6],  # best correct 0.7 (caption 4) ties caption 0: 2;
    ])                                   # caption 5 (0.6 < 0.7) and 3 never count
    np.testing.assert_array_equal(metrics.ranks(similarity, np.arange(2), caption_clip),
                                  [2, 2])
    # Two correct items tied at the best score do not push each other down.
    similarity = np.array([[0.4, 0.9, 0.9, 0.5, 0.9, 0.1]])
    np.testing.assert_array_equal(metrics.ranks(similarity, [0], caption_clip), [2])


def test_a_query_without_a_correct_item_is_an_error():
    with pytest.raises(ValueError, match="2 of 3 queries have no correct item"):
        metrics.ranks(np.zeros((3, 2)), np.array([0, 5, 7]), np.arange(2))
    with pytest.raises(ValueError, match="1 of 2 queries"):
        metrics.block_ranks(np.ones((2, 4), np.float32), np.ones((3, 4), np.float32),
                            np.array([2, 3]), np.arange(3))


def test_inputs_are_checked():
    unit = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="share D"):
        metrics.block_ranks(unit, unit[:, :2], np.arange(3), np.arange(3))
    with pytest.raises(TypeError, match="floating point"):
        metrics.block_ranks(unit.astype(np.int32), unit, np.arange(3), np.arange(3))
    with pytest.raises(ValueError, match="1 rows of gallery hold NaN"):
        metrics.block_ranks(unit, np.vstack([unit[:2], [[np.nan, 0, 0]]]), np.arange(3),
                            np.arange(3))
    with pytest.raises(ValueError, match=r"query_labels must have shape \(3,\)"):
        metrics.block_ranks(unit, unit, np.arange(2), np.arange(3))
    with pytest.raises(TypeError, match="gallery_labels must be integers"):
        metrics.ranks(unit, np.arange(3), np.arange(3.0))
    with pytest.raises(ValueError, match="NaN"):
        metrics.ranks(np.full((3, 3), np.nan), np.arange(3), np.arange(3))
    with pytest.raises(ValueError, match="block_size"):
        metrics.block_ranks(unit, unit, np.arange(3), np.arange(3), block_size=0)


def test_retrieval_metrics_by_hand():
    got = metrics.retrieval_metrics(np.array([1, 1, 3, 7, 20, 60]))
    # R@1: 2 of 6; R@5: 3 of 6; R@10: 4 of 6; R@50: 5 of 6; median of the middle two
    # (3 + 7) / 2 = 5; mean 92 / 6.
    assert got == pytest.approx({"R@1": 100 * 2 / 6, "R@5": 50.0, "R@10": 100 * 4 / 6,
                                 "R@50": 100 * 5 / 6, "MdR": 5.0, "MnR": 92 / 6})
    assert list(got) == ["R@1", "R@5", "R@10", "R@50", "MdR", "MnR"]
    with pytest.raises(ValueError):
        metrics.retrieval_metrics(np.array([0, 1]))


def _random_case(rng, num_queries, num_gallery, dim, integer_valued):
    """Embeddings and labels of a many-to-many case; integer-valued entries force ties."""
    if integer_valued:
        queries = rng.integers(-1, 2, (num_queries, dim)).astype(np.float32)
        gallery = rng.integers(-1, 2, (num_gallery, dim)).astype(np.float32)
    else:
        queries = rng.standard_normal((num_queries, dim), dtype=np.float32)
        gallery = rng.standard_normal((num_gallery, dim), dtype=np.float32)
    gallery_labels = rng.integers(0, num_gallery // 2, num_gallery)
    query_labels = rng.choice(gallery_labels, num_queries)
    return queries, gallery, query_labels, gallery_labels


@pytest.mark.parametrize("integer_valued", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_ranks_and_block_ranks_match_brute_force(seed, integer_valued):
    rng = np.random.default_rng(seed)
    queries, gallery, query_labels, gallery_labels = _random_case(rng, 17, 23, 4,
                                                                  integer_valued)
    similarity = queries @ gallery.T
    want = brute_force_ranks(similarity, query_labels, gallery_labels)
    if integer_valued:
        assert len(np.unique(similarity)) < similarity.size / 10  # ties do occur
    np.testing.assert_array_equal(metrics.ranks(similarity, query_labels, gallery_labels),
                                  want)
    for block_size in (1, 3, 16, 17, 100):
        np.testing.assert_array_equal(
            metrics.block_ranks(queries, gallery, query_labels, gallery_labels,
                                block_size=block_size), want)


def test_one_to_one_and_one_to_many_directions_match_brute_force():
    rng = np.random.default_rng(0)
    video = rng.integers(-2, 3, (6, 5)).astype(np.float32)
    text = rng.integers(-2, 3, (18, 5)).astype(np.float32)
    caption_clip = np.repeat(np.arange(6), 3)
    for queries, gallery, query_labels, gallery_labels in [
            (text, video, caption_clip, np.arange(6)),  # text -> video
            (video, text, np.arange(6), caption_clip),  # video -> text
            (video, video[::-1], np.arange(6), np.arange(6)[::-1])]:  # video -> audio
        want = brute_force_ranks(queries @ gallery.T, query_labels, gallery_labels)
        np.testing.assert_array_equal(
            metrics.block_ranks(queries, gallery, query_labels, gallery_labels,
                                block_size=4), want)


def test_float64_inputs_are_ranked_in_float64():
    # Scores 1 and 1 + 1e-9: float32 would tie them and rank the query 2nd.
    gallery = np.array([[1.0, 0.0], [1.0, 1e-9]])
    queries = np.array([[1.0, 1.0]])
    np.testing.assert_array_equal(
        metrics.block_ranks(queries, gallery, np.array([1]), np.arange(2)), [1])


def test_dual_softmax_reference_by_hand():
    similarity = np.array([[1.0, 0.0], [0.0, 0.0]])
    # Column 0: softmax([1, 0] / 1) = [e, 1] / (e + 1); column 1 is all zeros.
    want = np.array([[np.e / (np.e + 1), 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(metrics.dual_softmax(similarity, 1.0), want)
    # A large logit / temperature does not overflow.
    assert np.isfinite(metrics.dual_softmax(similarity * 100, 0.01)).all()


@pytest.mark.parametrize("seed", range(3))
def test_block_dual_softmax_matches_the_full_matrix(seed):
    rng = np.random.default_rng(seed)
    queries, gallery, query_labels, gallery_labels = _random_case(rng, 19, 13, 8, False)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    similarity = (queries.astype(np.float64) @ gallery.T.astype(np.float64))
    want = metrics.ranks(metrics.dual_softmax(similarity, 0.05), query_labels, gallery_labels)
    plain = metrics.ranks(similarity, query_labels, gallery_labels)
    assert (want != plain).any()  # the re-ranking changes something to compare
    for block_size in (1, 3, 64):
        got = metrics.block_ranks(queries, gallery, query_labels, gallery_labels,
                                  block_size=block_size, dual_softmax_temperature=0.05)
        np.testing.assert_array_equal(got, want)
