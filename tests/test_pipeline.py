"""The grain pipeline over prepared records: batches, augmentation, exact resume, bad splits."""
import hashlib
import json

import jax
import numpy as np
import pytest

from tests.data_helpers import CAPTIONS, prepared_split
from vlsa_jax import train
from vlsa_jax.data import pipeline
from vlsa_jax.data.source import build_source


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepared_split(tmp_path_factory.mktemp("pipeline"))


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_training_batches_have_model_shapes(prepared):
    config, _, _ = prepared
    config = config.copy_and_resolve_references()
    config.train.batch_size = 4
    batch = next(iter(pipeline.training_dataset(config)))
    v, a, t = config.video, config.audio, config.text
    assert batch["video"].shape == (4, v.num_frames, v.size, v.size, 3)
    assert batch["video"].dtype == np.uint8  # normalised on the device
    assert batch["audio"].shape == (4, a.frames, a.bins)
    assert batch["text_ids"].shape == batch["text_mask"].shape == (4, t.max_len)
    assert (batch["text_mask"].sum(axis=1) >= 3).all()  # [CLS] word(s) [SEP]
    # The fixture's frames change brightness over time: the frames are not constant.
    assert batch["video"].std() > 5


def test_resumed_iterator_continues_with_the_exact_next_batch(prepared):
    config, _, _ = prepared
    iterator = iter(pipeline.training_dataset(config))
    _take(iterator, 2)
    state = json.loads(json.dumps(iterator.get_state()))  # as the checkpoint stores it
    expected = _take(iterator, 2)
    restored = iter(pipeline.training_dataset(config))
    restored.set_state(state)
    for want, got in zip(expected, _take(restored, 2)):
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def test_frame_sampling_is_random_in_training_and_uniform_in_eval():
    rng = np.random.default_rng(0)
    draws = np.stack([pipeline.segment_frame_indices(16, 4, rng) for _ in range(200)])
    assert ((draws // 4) == np.arange(4)).all()  # one frame per segment of 4
    assert len(np.unique(draws[:, 0])) == 4
    np.testing.assert_array_equal(pipeline.segment_frame_indices(16, 4, None), [2, 6, 10, 14])


def test_records_made_with_other_parameters_are_refused(prepared):
    config, _, _ = prepared
    config = config.copy_and_resolve_references()
    config.audio.hop = 128
    config.audio.clip_samples = 4095
    with pytest.raises(ValueError, match=r"^audio.hop:"):
        pipeline.training_dataset(config)


def test_corrupt_shard_is_named(prepared, tmp_path):
    config, manifest, output = prepared
    split = tmp_path / "train"
    split.mkdir()
    for name in ["manifest.json"] + [s["file"] for s in manifest.shards]:
        (split / name).write_bytes((output / "train" / name).read_bytes())
    broken = split / manifest.shards[0]["file"]
    broken.write_bytes(broken.read_bytes()[:100])
    config = config.copy_and_resolve_references()
    config.data.train_split = str(split)
    with pytest.raises(ValueError, match=f"{broken}: corrupt shard"):
        pipeline.training_dataset(config)


def test_training_on_records_resumes_exactly(prepared, tmp_path):
    config, _, _ = prepared

    def run_config(stop):
        c = config.copy_and_resolve_references()
        c.train.num_steps, c.train.stop_after_steps = 200, stop
        c.train.log_every_steps = c.checkpoint.every_steps = 2
        c.checkpoint.async_save = False
        return c

    uninterrupted = train.train_and_evaluate(run_config(4), str(tmp_path / "a"))
    train.train_and_evaluate(run_config(2), str(tmp_path / "b"))
    resumed = train.train_and_evaluate(run_config(4), str(tmp_path / "b"))
    jax.tree.map(np.testing.assert_array_equal,
                 jax.device_get(resumed["params"]), jax.device_get(uninterrupted["params"]))


def test_worker_processes_feed_the_same_batches(prepared):
    config, _, _ = prepared
    config = config.copy_and_resolve_references()
    config.train.batch_size = 2
    in_process = build_source(config, 0, 1)
    config.data.workers = 2
    with_workers = build_source(config, 0, 1)
    # Workers may hand batches over in another order (grain's docs); the batches are the same.
    fingerprint = lambda batch: hashlib.sha1(batch["audio"].tobytes()).hexdigest()  # noqa: E731
    assert (sorted(map(fingerprint, _take(in_process, 6)))
            == sorted(map(fingerprint, _take(with_workers, 6))))


def test_evaluation_sees_every_clip_and_caption_once(prepared):
    config, manifest, output = prepared
    split = output / "train"
    clips = list(pipeline.evaluation_clips(config, split, batch_size=4))
    assert [int(b["valid"].sum()) for b in clips] == [4, 2]
    assert sorted(np.concatenate([b["clip_index"][b["valid"]] for b in clips])) == list(range(6))
    v = config.video
    assert clips[0]["video"].shape == (4, v.num_frames, v.size, v.size, 3)
    again = next(iter(pipeline.evaluation_clips(config, split, batch_size=4)))
    np.testing.assert_array_equal(again["video"], clips[0]["video"])  # no randomness

    captions = list(pipeline.evaluation_captions(config, split, batch_size=4))
    pairs = [(int(c), int(k)) for b in captions
             for c, k, ok in zip(b["clip_index"], b["caption_index"], b["valid"]) if ok]
    num_captions = sum(len(v) for v in CAPTIONS.values())
    assert len(pairs) == len(set(pairs)) == num_captions
    assert captions[0]["text_ids"].shape == (4, config.text.max_len)


def test_evaluation_splits_evenly_over_processes(prepared):
    config, _, output = prepared
    shares = [list(pipeline.evaluation_clips(config, output / "train", 2, index, 4))
              for index in range(4)]
    assert {len(share) for share in shares} == {1}  # 6 clips over 4 processes: 2, 2, 1, 1
    seen = [int(i) for share in shares for b in share for i in b["clip_index"][b["valid"]]]
    assert sorted(seen) == list(range(6))
