"""The random batch source: a pure function of (seed, batch index), split over processes,
resumable from its saved position; and the choice of source by `config.data.source`."""
import numpy as np
import pytest

from tests.helpers import load_config
from vlsa_jax.data.source import RandomBatchSource, build_source


def _take(source, n):
    return [next(source) for _ in range(n)]


def _assert_equal(batch, other):
    assert set(batch) == set(other)
    for name in batch:
        np.testing.assert_array_equal(batch[name], other[name], err_msg=name)


def test_batches_have_the_configs_shapes_and_padded_text():
    config = load_config()
    batch = next(RandomBatchSource(config))
    b, t, v, a = config.train.batch_size, config.text, config.video, config.audio
    assert {name: (array.shape, array.dtype) for name, array in batch.items()} == {
        "video": ((b, v.num_frames, v.size, v.size, 3), np.uint8),
        "audio": ((b, a.frames, a.bins), np.float32),
        "text_ids": ((b, t.max_len), np.int32),
        "text_mask": ((b, t.max_len), np.int32),
    }
    mask = batch["text_mask"].astype(bool)
    lengths = mask.sum(axis=1)
    assert (lengths >= 2).all()
    # Real tokens first, then padding (id 0); no real token is a special one.
    np.testing.assert_array_equal(mask, np.arange(t.max_len) < lengths[:, None])
    assert (batch["text_ids"][~mask] == 0).all()
    assert (batch["text_ids"][mask] > max(t.special_token_ids)).all()
    assert (batch["text_ids"] < t.vocab_size).all()


def test_only_the_configured_modalities_are_drawn():
    config = load_config()
    config.data.modalities = "at"
    assert set(next(RandomBatchSource(config))) == {"audio", "text_ids", "text_mask"}
    config.data.modalities = "av"
    assert set(next(RandomBatchSource(config))) == {"video", "audio"}


def test_batches_depend_on_the_seed_and_index_alone():
    config = load_config()
    first, second = _take(RandomBatchSource(config), 2)
    _assert_equal(next(RandomBatchSource(config)), first)
    assert not np.array_equal(first["audio"], second["audio"])
    config.seed += 1
    assert not np.array_equal(next(RandomBatchSource(config))["audio"], first["audio"])


def test_a_restored_position_continues_with_the_next_batch():
    config = load_config()
    source = RandomBatchSource(config)
    _take(source, 2)
    state = source.get_state()
    assert state == {"next_index": 2}
    expected = next(source)
    resumed = RandomBatchSource(config)
    resumed.set_state(state)
    _assert_equal(next(resumed), expected)


def test_each_process_gets_its_own_rows_of_the_global_batch():
    config = load_config()
    whole = next(RandomBatchSource(config))
    shares = [next(RandomBatchSource(config, index, 4)) for index in range(4)]
    rows = config.train.batch_size // 4
    for name in whole:
        assert all(share[name].shape[0] == rows for share in shares)
        np.testing.assert_array_equal(np.concatenate([s[name] for s in shares]), whole[name])


def test_the_source_is_chosen_by_the_config():
    config = load_config()
    assert config.data.source == "random"
    source = build_source(config, 1, 2)
    assert isinstance(source, RandomBatchSource)
    assert next(source)["audio"].shape[0] == config.train.batch_size // 2
    config.data.source = "webdataset"
    with pytest.raises(ValueError, match="data.source: unknown source 'webdataset'"):
        build_source(config, 0, 1)
