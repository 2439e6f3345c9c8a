"""The grain pipeline over prepared records: batches, augmentation, exact resume, bad splits."""
import hashlib
import io
import json

import jax
import numpy as np
import pytest
from PIL import Image

from tests.data_helpers import CAPTIONS, prepared_split
from vlsa_jax import train
from vlsa_jax.data import pipeline, records
from vlsa_jax.data.source import build_source
from vlsa_jax.models.frames import resize_crops


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
    canvas = v.stored_short_side  # the crops are resized on the device
    assert batch["video"].shape == (4, v.num_frames, canvas, canvas, 3)
    assert batch["video"].dtype == np.uint8  # normalised on the device
    assert batch["video_crop"].shape == (4, 2)
    sides, flips = batch["video_crop"].T
    assert (sides <= canvas).all() and set(flips) <= {0, 1}
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


def test_random_crop_boxes_are_squares_inside_the_frame_at_the_configured_scales():
    rng = np.random.default_rng(0)
    boxes = np.array([pipeline.random_crop_box(341, 256, 0.25, rng) for _ in range(500)])
    left, top, side = boxes.T
    assert (left >= 0).all() and (top >= 0).all()
    assert (left + side <= 341).all() and (top + side <= 256).all()
    assert side.min() >= 128 and side.max() <= 256  # sqrt of [0.25, 1] of the short side
    assert side.max() - side.min() > 100 and len(np.unique(left)) > 50
    assert pipeline.centre_crop_box(341, 256) == (42, 0, 256)
    assert pipeline.centre_crop_box(256, 341) == (0, 42, 256)


def _quadrant_frame():
    """A 96x128 frame: red left half, blue right half, a green band along the top."""
    frame = np.zeros((96, 128, 3), np.uint8)
    frame[:, :64, 0] = frame[:, 64:, 2] = 255
    frame[:16, :, 1] = 255
    return records.encode_jpeg(frame)


def test_frames_are_cropped_into_the_canvas_and_show_the_box_resized_and_flipped():
    jpeg = _quadrant_frame()
    # The box [8, 56) x [40, 88) lies in the red half, below the green band.
    canvas = np.full((1, 96, 96, 3), 7, np.uint8)  # stale pixels of an earlier batch
    pipeline.crop_frames([jpeg], [0], (8, 40, 48), canvas)
    np.testing.assert_allclose(canvas[0, :48, :48].reshape(-1, 3).mean(0), [255, 0, 0], atol=6)
    assert not canvas[0, 48:].any() and not canvas[0, :, 48:].any()
    red = np.asarray(resize_crops(canvas[None], np.array([[48, 0]], np.int32), 32))[0]
    np.testing.assert_allclose(red.reshape(-1, 3).mean(0), [255, 0, 0], atol=6)
    # The centre square [16, 112) of the frame: red left, blue right (mirrored when
    # flipped), enlarged to 192 or shrunk to 24 (the filter keeps the halves apart).
    box = pipeline.centre_crop_box(128, 96)
    canvas = pipeline.crop_frames([jpeg, jpeg], [1, 0], box, np.empty((2, 96, 96, 3), np.uint8))
    for size in (192, 24):
        frames = {flip: np.asarray(resize_crops(canvas[None], np.array([[96, flip]]), size))[0]
                  for flip in (0, 1)}
        np.testing.assert_allclose(frames[1], frames[0][:, :, ::-1], atol=1e-3)
        lower = frames[0][:, size // 4:, :]  # below the band
        # JPEG's halved chroma blurs the colour edge over a few source pixels.
        margin = size // 12 + 2
        left, right = lower[:, :, :size // 2 - margin], lower[:, :, size // 2 + margin:]
        assert left[..., 0].min() > 240 and left[..., 2].max() < 15
        assert right[..., 2].min() > 240 and right[..., 0].max() < 15


def test_batch_arrays_are_reused_only_once_nothing_else_holds_them():
    made = []

    def make(size):
        made.append({"x": np.zeros((size, 3))})
        return made[-1]

    arrays = pipeline.ReusedArrays(capacity=2)
    first = arrays.get(4, make)
    assert arrays.get(4, make)["x"] is not first["x"]  # `first` is still held
    view = first["x"][1:]
    del first
    # The view keeps the first busy: the second (idle again) is reused, then the pool is
    # full and a third is made outside it.
    held = [arrays.get(4, make)["x"] for _ in range(2)]
    assert len(made) == 3 and held[0] is made[1]["x"] and held[1] is made[2]["x"]
    del view
    assert arrays.get(4, make)["x"] is made[0]["x"]  # idle again: reused
    assert arrays.get(2, make)["x"].shape == (2, 3)  # each batch size has its own


def test_frame_decoder_reuses_its_buffer_across_frame_sizes_and_decodes_grey_as_rgb():
    rng = np.random.default_rng(0)
    colour = [records.encode_jpeg(rng.integers(0, 256, (h, w, 3), np.uint8))
              for h, w in ((24, 40), (64, 48), (16, 16))]
    grey = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 30), np.uint8), "L").save(grey, format="JPEG")
    decoder = pipeline.FrameDecoder()
    for jpeg in colour + [grey.getvalue()] + colour[:1]:
        expected = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        decoded = decoder(jpeg)
        assert decoded.shape == expected.shape
        # libjpeg-turbo and Pillow's libjpeg may round the colour conversion differently.
        assert np.abs(decoded.astype(int) - expected).max() <= 2


def test_a_batch_equals_its_examples_preprocessed_one_by_one(prepared):
    config, _, output = prepared
    items = [pipeline.split_source(config, output / "train")[i] for i in (0, 3, 5)]
    for training in (True, False):
        preprocessor = pipeline.Preprocessor(config, "avt", training)
        rng = np.random.default_rng(7)
        batch = preprocessor.batch([preprocessor.plan(item, rng) for item in items])
        rng = np.random.default_rng(7)  # the same draws, in the same order
        examples = [preprocessor(item, rng) for item in items]
        if training:  # the choices are random: another generator gives another batch
            other = preprocessor.batch([preprocessor.plan(item, np.random.default_rng(8))
                                        for item in items])
            assert not np.array_equal(other["video"], batch["video"])
        assert set(batch) == {"video", "video_crop", "audio", "text_ids", "text_mask"}
        for name, array in batch.items():
            np.testing.assert_array_equal(array, np.stack([e[name] for e in examples]))


def test_an_undecodable_frame_is_an_error():
    with pytest.raises(ValueError, match="undecodable JPEG frame"):
        pipeline.decode_jpeg(b"not a jpeg")


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


def test_reader_threads_sharing_reused_arrays_feed_the_same_batches(prepared):
    config, _, _ = prepared
    config = config.copy_and_resolve_references()
    config.train.batch_size = 2
    batches = {}
    for threads in (1, 4):
        config.data.read_threads = threads
        iterator = iter(pipeline.training_dataset(config))
        # Copies: the consumer lets each batch go, so its arrays are reused.
        batches[threads] = [{k: v.copy() for k, v in next(iterator).items()}
                            for _ in range(12)]
    for one, many in zip(batches[1], batches[4]):
        for name in one:
            np.testing.assert_array_equal(many[name], one[name])


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
    assert clips[0]["video"].shape == (4, v.num_frames, v.stored_short_side,
                                       v.stored_short_side, 3)
    assert (clips[0]["video_crop"] == [v.stored_short_side, 0]).all()  # centre, no flip
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
