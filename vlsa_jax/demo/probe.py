"""What embeddings encode: linear probes of exported clip embeddings on known attributes.

For one modality's embeddings of N clips and one attribute of each clip (SyncShapes'
shape, colour, number of bounces), the accuracy with which a logistic regression
predicts the attribute from the embedding, scored by K-fold cross-validation over the
clips, beside the rate of always guessing the commonest value. The demo prints it for
the test split: a video<->audio retrieval can only use what both embeddings carry.
"""
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

FOLDS = 4
# Weak regularisation: a few hundred clips in 64-768 dimensions, unit rows.
INVERSE_REGULARISATION = 10.0


def probe_accuracy(features: np.ndarray, labels, folds: int = FOLDS) -> float:
    """Cross-validated accuracy of a logistic regression predicting labels from features.

    Each clip is predicted by a probe fitted on the other folds.

    Args:
      features: [N, D], one row per clip.
      labels: [N], each clip's value of the attribute.
      folds: the number of cross-validation folds.

    Returns:
      The fraction of clips predicted right.

    Raises:
      ValueError: fewer clips than folds.
    """
    labels = np.asarray(labels)
    if len(labels) < folds:
        raise ValueError(f"{len(labels)} clips cannot be split into {folds} folds")
    correct = 0
    for train, held_out in KFold(folds, shuffle=True, random_state=0).split(features):
        if len(np.unique(labels[train])) == 1:  # nothing to fit: guess the only value
            correct += np.sum(labels[held_out] == labels[train][0])
            continue
        probe = LogisticRegression(C=INVERSE_REGULARISATION, max_iter=5000)
        probe.fit(features[train], labels[train])
        correct += np.sum(probe.predict(features[held_out]) == labels[held_out])
    return float(correct / len(labels))


def majority_rate(labels) -> float:
    """How often the commonest value is right: what a probe that learnt nothing reaches."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.sum())


def probe_attributes(embeddings: dict[str, np.ndarray],
                     attributes: dict[str, list]) -> dict[str, dict[str, float]]:
    """Probes every modality's embeddings for every attribute.

    Args:
      embeddings: {modality: [N, D]}.
      attributes: {name: N values}, clip i's value at position i.

    Returns:
      {modality: {attribute: accuracy}} and, under 'majority', each attribute's
      majority rate.
    """
    results = {modality: {name: probe_accuracy(features, values)
                          for name, values in attributes.items()}
               for modality, features in embeddings.items()}
    results["majority"] = {name: majority_rate(values) for name, values in attributes.items()}
    return results
