"""The trainer's data interface, and a source of random tri-modal batches.

The trainer reads host-local batches from a `BatchSource` (the grain pipeline over
prepared records, `vlsa_jax.data.pipeline`, or random batches): each process yields
its own rows of the global batch as NumPy arrays, and the trainer assembles them
into global arrays. A source's position is a JSON-able dict saved in every
checkpoint, so a resumed run continues with the exact next batch.
"""
from typing import Any, Protocol

import ml_collections
import numpy as np

from vlsa_jax.modalities import AUDIO, TEXT_IDS, TEXT_MASK, VIDEO, modalities_of


class BatchSource(Protocol):
    """An endless iterator of host-local batches with a saveable position.

    A batch holds 'video' [b, T, H, W, 3] uint8 RGB, 'audio' [b, time, freq] float32,
    'text_ids' [b, L] int32 and 'text_mask' [b, L] int32 (1 on real tokens), where
    b = global batch / process count; keys of modalities the data lacks are absent.
    """

    def __next__(self) -> dict[str, np.ndarray]: ...

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


class RandomBatchSource:
    """Random tri-modal batches, a pure function of (seed, batch index).

    For tests and smoke runs before any data is prepared. Every process draws the
    same global batch and keeps its own rows, so the data do not depend on the
    number of processes.
    """

    def __init__(self, config: ml_collections.ConfigDict, process_index: int = 0,
                 process_count: int = 1):
        self._config = config
        self._modalities = modalities_of(config.data.modalities)
        rows = config.train.batch_size // process_count
        self._rows = slice(process_index * rows, (process_index + 1) * rows)
        self._next_index = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = random_batch(self._config, self._next_index, self._modalities)
        self._next_index += 1
        return {name: array[self._rows] for name, array in batch.items()}

    def get_state(self) -> dict[str, Any]:
        return {"next_index": self._next_index}

    def set_state(self, state: dict[str, Any]) -> None:
        self._next_index = int(state["next_index"])


def random_batch(config, index: int, modalities) -> dict[str, np.ndarray]:
    """The global random batch number `index` of the config's shapes."""
    rng = np.random.default_rng([config.seed, index])
    size = config.train.batch_size
    batch = {}
    if VIDEO in modalities:
        v = config.video
        batch[VIDEO] = rng.integers(0, 256, (size, v.num_frames, v.size, v.size, 3), np.uint8)
    if AUDIO in modalities:
        batch[AUDIO] = rng.standard_normal((size, config.audio.frames, config.audio.bins),
                                           np.float32)
    if "text" in modalities:
        t = config.text
        first_word = max(t.special_token_ids) + 1
        ids = rng.integers(first_word, t.vocab_size, (size, t.max_len), dtype=np.int32)
        lengths = rng.integers(2, t.max_len + 1, size)
        mask = (np.arange(t.max_len)[None, :] < lengths[:, None]).astype(np.int32)
        batch[TEXT_IDS] = ids * mask  # padding is id 0
        batch[TEXT_MASK] = mask
    return batch


def build_source(config, process_index: int, process_count: int) -> BatchSource:
    """The source that `config.data.source` names."""
    if config.data.source == "random":
        return RandomBatchSource(config, process_index, process_count)
    if config.data.source == "records":
        # Imported here: the random source must not need the media stack.
        from vlsa_jax.data import pipeline  # pylint: disable=import-outside-toplevel
        # A grain iterator has get_state/set_state. Every process reads the same number
        # of batches, so their states are equal and one copy restores them all.
        return iter(pipeline.training_dataset(config, process_index, process_count))
    raise ValueError(f"data.source: unknown source {config.data.source!r}")
