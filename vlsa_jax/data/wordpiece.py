"""Learns a WordPiece vocabulary from word counts, the same one on every run.

Hugging Face's WordPiece trainer numbers the '##' symbols in hash-map order and breaks
ties between equally frequent merges by those numbers, so two trainings on the same
captions give different vocabularies, and different token ids in every record prepared.
This learner does what it does (byte-pair merges of the most frequent adjacent pair,
continuation pieces marked '##') with ties broken by the pieces themselves.
"""
import collections
import heapq
from collections.abc import Mapping


def learn_vocabulary(word_counts: Mapping[str, int], size: int,
                     prefix: str = "##") -> list[str]:
    """The vocabulary, in learning order: the alphabet sorted, then one piece per merge.

    The alphabet holds each word's first character and, marked with `prefix`, every
    later one, so that any word made of seen characters can be split. Merges then join
    the adjacent pair of pieces with the largest count over all words (weighted by the
    word counts), the smallest pair first among equals, until the vocabulary has `size`
    pieces or every word is one piece.

    Args:
      word_counts: how often each (normalised, pre-tokenised) word occurs.
      size: the most pieces to return; the alphabet is kept whole even when larger.
      prefix: marks a piece that continues a word.

    Returns:
      The pieces, in learning order.
    """
    words = sorted(word for word, count in word_counts.items() if word and count > 0)
    counts = [word_counts[word] for word in words]
    splits = [[word[0], *(prefix + c for c in word[1:])] for word in words]
    vocabulary = sorted({piece for split in splits for piece in split})

    pair_counts = collections.Counter()
    pair_words = collections.defaultdict(set)  # pair -> indices of the words holding it
    for index, split in enumerate(splits):
        for pair in zip(split, split[1:]):
            pair_counts[pair] += counts[index]
            pair_words[pair].add(index)
    # Max-heap by count, then smallest pair; entries go stale as counts change.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    while heap and len(vocabulary) < size:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair) != -negative_count:
            continue
        merged = pair[0] + pair[1][len(prefix):]
        vocabulary.append(merged)
        del pair_counts[pair]
        for index in sorted(pair_words.pop(pair)):
            old = splits[index]
            new = _merge(old, pair, merged)
            for old_pair in zip(old, old[1:]):
                if old_pair in pair_counts:
                    pair_counts[old_pair] -= counts[index]
                    pair_words[old_pair].discard(index)
            for new_pair in zip(new, new[1:]):
                pair_counts[new_pair] += counts[index]
                pair_words[new_pair].add(index)
            for changed in {*zip(old, old[1:]), *zip(new, new[1:])} - {pair}:
                if pair_counts.get(changed, 0) > 0:
                    heapq.heappush(heap, (-pair_counts[changed], changed))
                else:
                    pair_counts.pop(changed, None)
            splits[index] = new
    return vocabulary


def _merge(split: list[str], pair: tuple[str, str], merged: str) -> list[str]:
    """`split` with every non-overlapping occurrence of `pair`, left to right, joined."""
    out, i = [], 0
    while i < len(split):
        if i + 1 < len(split) and (split[i], split[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(split[i])
            i += 1
    return out
