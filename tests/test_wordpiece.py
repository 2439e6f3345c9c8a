"""The WordPiece learner against a naive reference that recounts every pair each merge."""
import collections

import numpy as np
import pytest

from vlsa_jax.data import wordpiece


def _reference_vocabulary(word_counts, size, prefix="##"):
    splits = {w: [w[0]] + [prefix + c for c in w[1:]] for w in word_counts}
    vocabulary = sorted({piece for split in splits.values() for piece in split})
    while len(vocabulary) < size:
        pairs = collections.Counter()
        for word, split in splits.items():
            for i in range(len(split) - 1):
                pairs[split[i], split[i + 1]] += word_counts[word]
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merged = best[0] + best[1][len(prefix):]
        vocabulary.append(merged)
        for word, split in splits.items():
            joined, i = [], 0
            while i < len(split):
                if split[i:i + 2] == list(best):
                    joined.append(merged)
                    i += 2
                else:
                    joined.append(split[i])
                    i += 1
            splits[word] = joined
    return vocabulary


def _random_counts(seed, num_words, letters="abcde"):
    rng = np.random.default_rng(seed)
    words = {"".join(rng.choice(list(letters), size=rng.integers(1, 7)))
             for _ in range(num_words)}
    return {word: int(rng.integers(1, 5)) for word in sorted(words)}


@pytest.mark.parametrize("seed, num_words, size", [
    (0, 30, 40), (1, 60, 200), (2, 10, 12), (3, 80, 60), (4, 5, 1000)])
def test_matches_the_naive_reference(seed, num_words, size):
    # Few letters and small counts: many ties between equally frequent pairs.
    counts = _random_counts(seed, num_words)
    assert wordpiece.learn_vocabulary(counts, size) == _reference_vocabulary(counts, size)


def test_repeated_pairs_in_one_word():
    counts = {"aaaa": 3, "aaa": 1, "abab": 2}
    assert wordpiece.learn_vocabulary(counts, 100) == _reference_vocabulary(counts, 100)


def test_every_word_becomes_one_piece_when_room_allows():
    counts = _random_counts(5, 40)
    vocabulary = wordpiece.learn_vocabulary(counts, 10_000)
    assert set(counts) <= set(vocabulary)
    assert len(vocabulary) == len(set(vocabulary))


def test_alphabet_marks_continuations_and_is_kept_whole():
    assert wordpiece.learn_vocabulary({"ab": 1, "ba": 1}, 2) == ["##a", "##b", "a", "b"]
