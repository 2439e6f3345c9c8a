r"""Search exported embeddings with a text, an audio file or a video file.

    python -m vlsa_jax.search --export_dir=DIR/export --split=test \
        --text="a dog barks at a passing car" --target=video --top_k=10
    python -m vlsa_jax.search --export_dir=DIR/export --split=test --video=clip.mp4 --target=audio

The query is embedded with the checkpoint and config the export was made with, by
the same code as the records (`vlsa_jax.data.prepare.make_record`) and the
evaluation pipeline (`Preprocessor`, centre crop), so a clip of the split finds
itself first. From Python:

    searcher = Searcher("DIR/export")
    searcher.search(searcher.embed_text("a red circle"), split="test", target="video")
"""
import collections
import dataclasses
import json
import pathlib
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags

from vlsa_jax import cli, evaluate, export, state
from vlsa_jax.data import media, pipeline, prepare, records
from vlsa_jax.data import tokenizer as tokenizer_lib
from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.modalities import TEXT_IDS, TEXT_MASK

TARGETS = ("video", "audio", "text")


@dataclasses.dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
      clip_id: the clip of the row found.
      score: its cosine with the query.
      caption_index: for text targets, which caption of the clip; else None.
      caption: for text targets, the caption; else None.
    """

    clip_id: str
    score: float
    caption_index: int | None = None
    caption: str | None = None


class Searcher:
    """Loads an export, its config and checkpoint; embeds queries and ranks the export's rows."""

    def __init__(self, export_dir: str | pathlib.Path):
        self._dir = pathlib.Path(export_dir)
        if not (self._dir / export.MANIFEST).exists():
            raise FileNotFoundError(f"{self._dir}: not an export folder (no {export.MANIFEST}); "
                                    "write one with --mode=export")
        manifest = json.loads((self._dir / export.MANIFEST).read_text())
        self.config = ml_collections.ConfigDict(
            json.loads((self._dir / export.CONFIG).read_text()))
        self._splits = manifest["splits"]
        # One query at a time: one device, parameters whole.
        loaded = state.load_params(self.config, manifest["checkpoint"], one_device=True)
        self.config, self._params, graphdef = loaded.config, loaded.params, loaded.graphdef
        self._embed = jax.jit(lambda params, batch: evaluate.embed_batch(
            params, batch, graphdef=graphdef, config=self.config))
        self._tokenizer = None

    def embed_text(self, text: str) -> np.ndarray:
        """A caption -> its unit [D] embedding."""
        if self._tokenizer is None:
            split_dir = next(iter(self._splits.values()))
            source = records.Manifest.load(split_dir).tokenizer_source(split_dir)
            self._tokenizer = tokenizer_lib.load_tokenizer(source)
        ids, mask = tokenizer_lib.encode_captions(
            self._tokenizer, [text], self.config.text.max_len)
        return self._run({TEXT_IDS: ids, TEXT_MASK: mask})["text"]

    def embed_file(self, path: str | pathlib.Path, modality: str) -> np.ndarray:
        """A media file's video or audio -> its unit [D] embedding.

        Raises:
          media.MediaError: the file cannot be decoded (the reason says why).
        """
        letter = {"video": "v", "audio": "a"}[modality]
        path = pathlib.Path(path).resolve()
        options = prepare.PrepareOptions.from_config(
            self.config, path.parent, letter, tokenizer="", missing_audio="error")
        record = prepare.make_record(
            ClipAnnotation(clip_id=path.name, path=path.name, captions=()), options,
            tok=None, timings=collections.defaultdict(float))
        example = pipeline.Preprocessor(self.config, letter, training=False)(
            records.encode_record(record))
        return self._run({name: array[None] for name, array in example.items()})[modality]

    def search(self, query: np.ndarray, split: str, target: str, top_k: int = 10) -> list[Hit]:
        """The `top_k` rows of `split`'s `target` embeddings closest to `query` (cosine)."""
        if split not in self._splits:
            raise ValueError(f"split {split!r} is not in the export; it has {sorted(self._splits)}")
        exported = export.read(self._dir, split)
        if target not in exported.embeddings:
            raise ValueError(f"the export has no {target} embeddings for {split!r}")
        scores = exported.embeddings[target] @ query
        top = np.argsort(-scores, kind="stable")[:top_k]
        if target == "text":
            return [Hit(exported.text[i][0], float(scores[i]), exported.text[i][1],
                        exported.captions[i]) for i in top]
        return [Hit(exported.clips[i], float(scores[i])) for i in top]

    def _run(self, batch) -> dict[str, np.ndarray]:
        return {name: np.asarray(x)[0] for name, x in self._embed(self._params, batch).items()}


FLAGS = flags.FLAGS


def main(argv):
    del argv
    queries = [q for q in ("text", "audio", "video") if FLAGS[q].value is not None]
    if len(queries) != 1:
        raise app.UsageError("give exactly one of --text, --audio, --video")
    if FLAGS.text is not None and not FLAGS.text.strip():
        raise app.UsageError("--text is empty: give the words to search for")
    searcher = Searcher(FLAGS.export_dir)
    try:
        if FLAGS.text is not None:
            query = searcher.embed_text(FLAGS.text)
        else:
            modality = queries[0]
            query = searcher.embed_file(getattr(FLAGS, modality), modality)
    except media.MediaError as error:
        sys.exit(f"cannot use {getattr(FLAGS, queries[0])} as a query: {error}")
    hits = searcher.search(query, FLAGS.split, FLAGS.target, FLAGS.top_k)
    for rank, hit in enumerate(hits, 1):
        caption = f"  [{hit.caption_index}] {hit.caption}" if hit.caption is not None else ""
        print(f"{rank:>3}  {hit.score:+.4f}  {hit.clip_id}{caption}")


if __name__ == "__main__":
    flags.DEFINE_string("export_dir", None, "A folder written by --mode=export.")
    flags.DEFINE_string("split", None, "The exported split to search.")
    flags.DEFINE_string("text", None, "A text query.")
    flags.DEFINE_string("audio", None, "A media file whose audio is the query.")
    flags.DEFINE_string("video", None, "A media file whose video is the query.")
    flags.DEFINE_enum("target", "video", TARGETS, "What to retrieve.")
    flags.DEFINE_integer("top_k", 10, "How many results to print.", lower_bound=1)
    flags.mark_flags_as_required(["export_dir", "split"])
    cli.run(main)
