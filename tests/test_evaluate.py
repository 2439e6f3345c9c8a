"""The retrieval sweep on a tiny model trained for a few steps on real prepared records."""
import json
import logging

import jax
import ml_collections
import numpy as np
import pytest

from tests.data_helpers import CAPTIONS, GOOD_CLIPS
from tests.helpers import load_config, mesh_of
from vlsa_jax import checkpointing, evaluate, metrics, state
from vlsa_jax.data import records
from vlsa_jax.eval_protocol import DIRECTIONS

_KEYS = ("R@1", "R@5", "R@10", "R@50", "MdR", "MnR", "num_queries", "num_gallery")
_NUM_CAPTIONS = sum(len(c) for c in CAPTIONS.values())


@pytest.fixture
def trained(trained_run):
    config, workdir, _ = trained_run
    return config, workdir


def _restored(config, workdir, num_devices):
    mesh = mesh_of(config, num_devices)
    graphdef, abstract = state.abstract_params(config, mesh)
    params, missing, step = checkpointing.restore_params(workdir, abstract)
    assert not missing and step == 2
    return mesh, graphdef, params


def test_training_runs_the_same_sweep_periodically(trained):
    _, workdir = trained
    logged = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    periodic = [line for line in logged if "eval/train/t2v/R@1" in line]
    assert periodic and periodic[0]["step"] == 2
    assert set(DIRECTIONS) <= {key.split("/")[2] for key in periodic[0] if key.count("/") == 3}


def test_sweep_writes_every_direction_with_the_documented_keys(trained):
    config, workdir = trained
    config = config.copy_and_resolve_references()
    config.eval.dual_softmax = True
    results = evaluate.evaluate_checkpoint(config, workdir)
    written = json.loads((workdir / "eval" / "train" / "metrics.json").read_text())
    assert written["step"] == 2 and written["protocol"] == "zero_shot"
    for direction in DIRECTIONS:
        for key in _KEYS:
            assert f"{direction}/{key}" in written
            assert f"dual_softmax/{direction}/{key}" in written
        assert 0 <= written[f"{direction}/R@1"] <= written[f"{direction}/R@5"] <= 100
    assert written["t2v/num_queries"] == written["va2t/num_gallery"] == _NUM_CAPTIONS
    assert written["t2v/num_gallery"] == written["a2v/num_queries"] == len(GOOD_CLIPS)
    assert results["train"] == {k: v for k, v in written.items() if "/" in k}
    logged = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert logged[-1]["eval/train/t2a/R@1"] == written["t2a/R@1"]
    assert "dual softmax" in evaluate.format_table(results)


@pytest.mark.parametrize("batch_size", [4, 6])
def test_every_item_is_embedded_once_whatever_the_batch(trained, batch_size):
    config, workdir = trained
    config = config.copy_and_resolve_references()
    config.eval.batch_size = batch_size
    mesh, graphdef, params = _restored(config, workdir, 2)
    embedder = evaluate.Embedder(config, mesh, graphdef,
                                 jax.tree.map(lambda x: x.sharding, params))
    split = embedder.split(params, config.eval.splits)
    assert split.clip_ids == list(GOOD_CLIPS)
    assert split.clips["video"].shape[0] == split.clips["audio"].shape[0] == len(GOOD_CLIPS)
    np.testing.assert_array_equal(
        split.caption_clip, [i for i, c in enumerate(GOOD_CLIPS) for _ in CAPTIONS[c]])
    np.testing.assert_array_equal(
        split.caption_index, [k for c in GOOD_CLIPS for k in range(len(CAPTIONS[c]))])
    for rows in (*split.clips.values(), split.captions):
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1, rtol=1e-5)

    # The same embeddings from one unpadded batch of the whole split on one device.
    one_mesh, _, one_params = _restored(config, workdir, 1)
    config.eval.batch_size = 16
    whole = evaluate.Embedder(config, one_mesh, graphdef,
                              jax.tree.map(lambda x: x.sharding, one_params))
    reference = whole.split(one_params, config.eval.splits)
    for name in split.clips:
        np.testing.assert_allclose(split.clips[name], reference.clips[name], atol=1e-5)
    np.testing.assert_allclose(split.captions, reference.captions, atol=1e-5)


def _audio_embeddings(config, loaded):
    embedder = evaluate.Embedder(config, loaded.mesh, loaded.graphdef, loaded.shardings)
    return embedder.split(loaded.params, config.eval.splits, "a").clips["audio"]


def test_evaluation_normalises_audio_as_the_checkpoint_was_trained(trained_run, tmp_path,
                                                                    caplog):
    trained, workdir, records_dir = trained_run
    stats = records.Manifest.load(records_dir / "train").spectrogram_stats
    config = load_config()  # audio.norm_from_data: its norm_mean / norm_std stand in
    config.data.source = "records"
    config.eval.splits, config.eval.checkpoint = str(records_dir / "train"), str(workdir)
    assert (config.audio.norm_mean, config.audio.norm_std) != (stats["mean"], stats["std"])
    loaded = evaluate.load_for_inference(config, tmp_path)
    assert (config.audio.norm_mean, config.audio.norm_std) == (stats["mean"], stats["std"])
    trained_embeddings = _audio_embeddings(trained, loaded)
    np.testing.assert_array_equal(_audio_embeddings(config, loaded), trained_embeddings)

    # An explicit value is used, and its difference from the checkpoint's warned of.
    config.audio.norm_from_data, config.audio.norm_mean = False, stats["mean"] + 1
    with caplog.at_level(logging.WARNING):
        loaded = evaluate.load_for_inference(config, tmp_path)
    assert (config.audio.norm_mean, loaded.config.audio.norm_mean) == (stats["mean"] + 1,) * 2
    assert (f"audio.norm_mean, audio.norm_std = {stats['mean'] + 1!r}, {stats['std']!r} as "
            f"set (audio.norm_from_data is off), but {workdir}") in caplog.text
    assert f"was trained with {stats['mean']!r}, {stats['std']!r}" in caplog.text
    assert np.abs(_audio_embeddings(config, loaded) - trained_embeddings).max() > 1e-4


def _split_embeddings(num_clips, captions_per_clip, dim=8, seed=0):
    rng = np.random.default_rng(seed)

    def unit(n):
        x = rng.normal(size=(n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    video, audio = unit(num_clips), unit(num_clips)
    return evaluate.SplitEmbeddings(
        clip_ids=[f"c{i}" for i in range(num_clips)],
        clips={"video": video, "audio": audio, "video+audio": evaluate.fuse(video, audio)},
        captions=unit(num_clips * captions_per_clip),
        caption_clip=np.repeat(np.arange(num_clips), captions_per_clip),
        caption_index=np.tile(np.arange(captions_per_clip), num_clips))


def test_scores_follow_the_caption_mode_and_the_ground_truth():
    split = _split_embeddings(5, 3)
    config = ml_collections.ConfigDict(
        {"caption_mode": "all", "block_size": 2, "dual_softmax": False,
         "dual_softmax_temperature": 0.01})
    scores = evaluate.score_split(split, ["t2v", "v2t", "va2t"], config)
    similarity = split.captions @ split.clips["video"].T
    want = metrics.retrieval_metrics(metrics.ranks(similarity, split.caption_clip, np.arange(5)))
    assert {k: scores[f"t2v/{k}"] for k in want} == pytest.approx(want)
    # v2t: a video's rank is that of its best-ranked caption among all 15.
    want = metrics.retrieval_metrics(
        metrics.ranks(similarity.T, np.arange(5), split.caption_clip))
    assert {k: scores[f"v2t/{k}"] for k in want} == pytest.approx(want)
    assert scores["va2t/num_queries"] == 5 and scores["va2t/num_gallery"] == 15

    config.caption_mode = "first"
    scores = evaluate.score_split(split, ["t2v", "v2t"], config)
    assert scores["t2v/num_queries"] == scores["v2t/num_gallery"] == 5


def test_distractors_join_the_gallery_and_are_never_correct():
    split, distractors = _split_embeddings(4, 1), _split_embeddings(4, 1, seed=1)
    # A distractor identical to each correct audio ties with it: pessimistic rank 2.
    distractors.clips = {"audio": split.clips["audio"].copy()}
    config = ml_collections.ConfigDict(
        {"caption_mode": "all", "block_size": 3, "dual_softmax": False,
         "dual_softmax_temperature": 0.01})
    scores = evaluate.score_split(split, ["v2a", "v2t", "a2v"], config, distractors)
    assert scores["v2a/num_gallery"] == 8 and scores["v2a/num_queries"] == 4
    assert scores["a2v/num_gallery"] == 4  # no video distractors given
    assert scores["v2t/num_gallery"] == 4  # captions never join
    queries, query_labels, gallery, labels = evaluate.gallery_and_queries(
        split, "v2a", "all", distractors)
    assert (metrics.ranks(queries @ gallery.T, query_labels, labels) >= 2).all()

