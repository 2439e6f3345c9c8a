"""Export of a trained tiny model's embeddings, and search over them with real media queries."""
import json

import numpy as np
import pytest

from tests.data_helpers import CAPTIONS, GOOD_CLIPS
from tests.media_fixtures import write_truncated
from vlsa_jax import export
from vlsa_jax.data import media
from vlsa_jax.search import Searcher


@pytest.fixture(scope="module")
def exported(trained_run):
    config, workdir, records = trained_run
    return export.export_checkpoint(config, workdir), records


def test_export_writes_unit_rows_ids_and_a_manifest(exported):
    out, _ = exported
    num_captions = sum(len(c) for c in CAPTIONS.values())
    for modality, rows in (("video", len(GOOD_CLIPS)), ("audio", len(GOOD_CLIPS)),
                           ("text", num_captions)):
        array = np.load(out / f"train_{modality}.npy", allow_pickle=False)
        assert array.shape[0] == rows and array.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1, rtol=1e-5)
    ids = json.loads((out / "train_ids.json").read_text())
    assert ids["clips"] == list(GOOD_CLIPS)
    assert ids["text"] == [[c, k] for c in GOOD_CLIPS for k in range(len(CAPTIONS[c]))]
    assert ids["captions"] == [caption for c in GOOD_CLIPS for caption in CAPTIONS[c]]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["step"] == 2 and len(manifest["config_hash"]) == 64
    assert manifest["files"]["train_text.npy"] == [num_captions, 64]


def test_a_clip_of_the_split_finds_itself_first(exported):
    out, records = exported
    searcher = Searcher(out)
    media_dir = records.parent / "media"
    for clip in ("clip1", "clip4"):
        for modality in ("video", "audio"):
            query = searcher.embed_file(media_dir / f"{clip}.mp4", modality)
            hits = searcher.search(query, "train", target=modality, top_k=3)
            assert hits[0].clip_id == clip
            assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    caption = CAPTIONS["clip3"][1]
    hits = searcher.search(searcher.embed_text(caption), "train", target="text", top_k=2)
    assert (hits[0].clip_id, hits[0].caption_index, hits[0].caption) == ("clip3", 1, caption)
    assert len(searcher.search(query, "train", target="video", top_k=4)) == 4


def test_a_query_file_that_cannot_be_decoded_is_a_clear_error(exported, tmp_path):
    out, _ = exported
    searcher = Searcher(out)
    with pytest.raises(media.MediaError, match="truncated or corrupt"):
        searcher.embed_file(write_truncated(tmp_path / "broken.mp4"), "video")
    with pytest.raises(ValueError, match="not in the export"):
        searcher.search(np.zeros(64, np.float32), "test", target="video")


def test_read_returns_a_split_as_the_export_wrote_it(exported):
    out, _ = exported
    split = export.read(out, "train")
    assert set(split.embeddings) == {"video", "audio", "text"}
    for modality, rows in split.embeddings.items():
        np.testing.assert_array_equal(rows, np.load(out / f"train_{modality}.npy"))
    assert split.clips == list(GOOD_CLIPS)
    assert split.text == [(c, k) for c in GOOD_CLIPS for k in range(len(CAPTIONS[c]))]
    assert split.captions == [caption for c in GOOD_CLIPS for caption in CAPTIONS[c]]
    assert split.step == 2
    np.testing.assert_array_equal(
        split.text_clip_rows(), [i for i, c in enumerate(GOOD_CLIPS) for _ in CAPTIONS[c]])
    with pytest.raises(FileNotFoundError, match="no export of split 'test'; it holds train$"):
        export.read(out, "test")
