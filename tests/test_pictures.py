"""Pictures of the tiny trained run: loss curves, masked reconstructions, t-SNE."""
import json
import shutil

import numpy as np
from PIL import Image

from vlsa_jax.demo import pictures


def assert_picture(path, min_size=(300, 200)):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    assert min_size[0] <= width <= 2000 and min_size[1] <= height <= 2000, (path, image.size)


def test_draw_all_writes_the_three_pictures(trained_run):
    config, workdir, _ = trained_run
    paths = pictures.draw_all(config, workdir)
    assert [p.name for p in paths] == ["training_curves.png", "reconstructions.png", "tsne.png"]
    for path in paths:
        assert path.parent == workdir / "pictures"
        assert_picture(path)


def write_lines(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_curves_skip_missing_terms_and_plot_recall(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    write_lines(metrics, [
        {"step": 10, "loss": 9.0, "local/video": 1.0, "global/audio_video/nce": 5.0},
        {"step": 20, "loss": 8.0, "global/audio_video/nce": 4.5, "temperature": 0.05},
        {"step": 20, "eval/test/t2v/R@1": 12.5, "eval/test/dual_softmax/t2v/R@1": 15.0},
        # A resumed run logs step 30 again: the later line is the run that went on.
        {"step": 30, "loss": 99.0},
        {"step": 30, "loss": 7.5, "local/video": 0.8},
        {"step": 40, "eval/test/t2v/R@1": 25.0, "eval/test/t2v/num_gallery": 64.0,
         "eval/test/v2a/R@1": 6.0, "eval/test/v2a/num_gallery": 64.0,
         "eval/sync_hard/v2a/R@1": 3.0},
    ])
    series = pictures.read_metrics(metrics)
    assert series["loss"] == {10: 9.0, 20: 8.0, 30: 7.5}
    assert series["local/video"] == {10: 1.0, 30: 0.8}
    assert series["eval/test/t2v/R@1"] == {20: 12.5, 40: 25.0}
    # The retrieval panel: the first split's directions, without the dual-softmax rows.
    assert pictures.retrieval_keys(series, "test") == ["eval/test/t2v/R@1", "eval/test/v2a/R@1"]
    assert pictures.retrieval_keys(series, None) == [
        "eval/test/t2v/R@1", "eval/test/v2a/R@1", "eval/sync_hard/v2a/R@1"]
    for split in ("test", None):
        assert_picture(pictures.draw_training_curves(metrics, tmp_path / "curves.png", split))


def test_without_lpmm_reconstructions_are_left_out_and_exports_are_read(trained_run, tmp_path):
    config, workdir, _ = trained_run
    config = config.copy_and_resolve_references()
    config.loss.lpmm = False  # the checkpoint's decoder is then simply not read
    shutil.copytree(workdir / "checkpoints", tmp_path / "checkpoints")
    write_lines(tmp_path / "metrics.jsonl", [{"step": 1, "loss": 3.0}])
    # An export of 4 clips, 2 captions each, in 8 dimensions.
    export = tmp_path / "export"
    export.mkdir()
    rows = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    np.save(export / "train_video.npy", rows[:4], allow_pickle=False)
    np.save(export / "train_text.npy", rows[4:], allow_pickle=False)
    clips = ["a", "b", "c", "d"]
    (export / "train_ids.json").write_text(json.dumps(
        {"clips": clips, "text": [[c, k] for c in clips for k in range(2)],
         "captions": [f"caption {k} of {c}" for c in clips for k in range(2)]}))
    (export / "manifest.json").write_text(json.dumps({"step": 1}))

    exported = pictures.read_exported(tmp_path, "train")
    np.testing.assert_array_equal(exported.text_clip, [0, 0, 1, 1, 2, 2, 3, 3])
    paths = pictures.draw_all(config, tmp_path)
    assert [p.name for p in paths] == ["training_curves.png", "tsne.png"]
    assert not (tmp_path / "pictures" / "reconstructions.png").exists()
    for path in paths:
        assert_picture(path)


def test_pairs_are_a_clip_with_its_own_caption_and_with_another_clips():
    text_clip = np.array([0, 0, 1, 2, 2, 2, 3])
    clips, matching, non_matching = pictures.choose_pairs(
        text_clip, np.random.default_rng(1), max_pairs=3)
    assert len(clips) == len(set(clips)) == 3
    np.testing.assert_array_equal(text_clip[matching], clips)
    assert np.all(text_clip[non_matching] != clips)


def test_the_retrieval_panel_marks_ten_times_chance_for_one_gallery_size():
    import matplotlib.pyplot as plt

    keys = ["eval/test/t2v/R@1", "eval/test/v2a/R@1"]
    series = {"eval/test/t2v/num_gallery": {40: 64.0}, "eval/test/v2a/num_gallery": {40: 64.0}}
    fig, ax = plt.subplots()
    pictures.draw_chance_multiple(ax, series, keys)
    assert [line.get_ydata()[0] for line in ax.lines] == [10 * 100 / 64]
    # Galleries of two sizes have no one chance level: no line.
    fig, ax = plt.subplots()
    pictures.draw_chance_multiple(ax, series | {"eval/test/v2a/num_gallery": {40: 128.0}}, keys)
    assert not ax.lines
    plt.close("all")
