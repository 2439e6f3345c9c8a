"""Linear probes of embeddings: what they can read, and what they cannot."""
import numpy as np
import pytest

from vlsa_jax.demo import probe


def test_an_attribute_written_into_the_embeddings_is_read_back():
    rng = np.random.default_rng(0)
    labels = rng.integers(5, size=120)
    features = np.eye(5)[labels] + 0.05 * rng.normal(size=(120, 5))
    assert probe.probe_accuracy(features, labels) == 1.0


def test_an_attribute_the_embeddings_lack_stays_near_the_majority_rate():
    rng = np.random.default_rng(1)
    labels = rng.choice(["red", "blue", "green"], p=[0.6, 0.2, 0.2], size=200)
    features = rng.normal(size=(200, 16))  # independent of the labels
    majority = probe.majority_rate(labels)
    assert majority == pytest.approx(np.mean(labels == "red"))
    # 200 held-out guesses: a probe that reads nothing stays within noise of guessing.
    assert probe.probe_accuracy(features, labels) < majority + 0.1


def test_every_clip_is_predicted_once_by_a_probe_that_never_saw_it():
    # Each clip's label is its own: no probe can predict a value it was not fitted on.
    labels = np.arange(8)
    assert probe.probe_accuracy(np.eye(8), labels) == 0.0
    with pytest.raises(ValueError, match="3 clips cannot be split into 4 folds"):
        probe.probe_accuracy(np.eye(3), np.arange(3))


def test_probe_attributes_reports_each_modality_and_the_majority_rates():
    rng = np.random.default_rng(2)
    colour = rng.integers(4, size=80)
    shape = rng.integers(3, size=80)
    embeddings = {"video": np.eye(4)[colour] + 0.05 * rng.normal(size=(80, 4)),
                  "audio": np.eye(3)[shape] + 0.05 * rng.normal(size=(80, 3))}
    results = probe.probe_attributes(embeddings, {"colour": colour, "shape": shape})
    assert results["video"]["colour"] == results["audio"]["shape"] == 1.0
    assert results["video"]["shape"] < 0.6 and results["audio"]["colour"] < 0.5
    assert results["majority"] == {"colour": probe.majority_rate(colour),
                                   "shape": probe.majority_rate(shape)}
