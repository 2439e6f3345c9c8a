r"""TFDS builders of MSR-VTT and AudioCaps whose examples are prepared clip records.

    python -m vlsa_jax.data.tfds_builders --dataset=msrvtt --manual_dir=MSRVTT_DIR \
        --data_dir=data/tfds --config=configs/pretrain.py --num_workers=8

An example is one clip: `record`, the bytes `vlsa_jax.data.records.encode_record`
makes of it, and `clip_id`. The records come from the same code as
`vlsa_jax.data.prepare`, with the frame, spectrogram and tokenizer parameters of
the run config the builder config carries, so a TFDS split and a prepared split
of the same clips hold the same records. Annotations and media are read from the
manual directory (see each builder's MANUAL_DOWNLOAD_INSTRUCTIONS); a clip that
cannot be used is skipped and logged with its reason, never zero-filled.

Building and reading need no TensorFlow (the `tfds build` command does: its CLI
imports it, hence this module's own command line). Read a split with
`tfds_records_source`. Where builds land and how to feed them to the pipeline:
docs/data.md#tfds-builders.
"""
import abc
import collections
import dataclasses
import json
import os
import pathlib

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags, logging
from ml_collections import config_flags

from vlsa_jax import cli
from vlsa_jax.data import media, prepare, records
from vlsa_jax.data import tokenizer as tokenizer_lib
from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.data.datasets import audiocaps, get_adapter, msrvtt
from vlsa_jax.data.processes import worker_pool

RECORD = "record"
CLIP_ID = "clip_id"


@dataclasses.dataclass(eq=False)
class RecordsConfig(tfds.core.BuilderConfig):
    """A builder config: the run config whose parameters the records are made with.

    The name tells builds with different parameters apart in the data directory
    (`<dataset>_records/<name>/<version>`); the description, stored in the
    dataset's info, lists the parameters.

    Attributes:
      run_config: the training config (ml_collections). Its video.stored_frames,
        video.stored_short_side, audio section and text.tokenizer / text.max_len
        determine the records; a copy is kept, so later changes to the caller's
        config do not reach the records. text.tokenizer must be a Hugging Face
        name or a tokenizer directory: 'train' (a WordPiece trained during the
        preparation) is not supported here.
      missing_audio: a clip without an audio stream is skipped ('error') or
        given silence ('silence'), as `prepare --missing_audio`.
    """

    run_config: ml_collections.ConfigDict | None = dataclasses.field(default=None, repr=False)
    missing_audio: str = "error"

    def __post_init__(self):
        if self.run_config is None:
            raise ValueError(f"RecordsConfig {self.name!r}: run_config is required")
        if self.run_config.text.tokenizer == "train":
            raise ValueError(
                "text.tokenizer='train' is not supported by the TFDS builders: set it to a "
                "tokenizer directory or Hugging Face name (e.g. the tokenizer/ folder a "
                "`python -m vlsa_jax.data.prepare` run trained, or one made with "
                "vlsa_jax.data.tokenizer.train_wordpiece)")
        if self.missing_audio not in ("error", "silence"):
            raise ValueError(f"missing_audio={self.missing_audio!r} is not 'error' or 'silence'")
        self.run_config = self.run_config.copy_and_resolve_references()
        if not self.description:
            self.description = "Records made with " + json.dumps(self.parameters, sort_keys=True)

    @property
    def parameters(self) -> dict:
        """The parameters the records depend on, keyed as in a prepared split's manifest."""
        run = self.run_config
        return {
            "frontend": media.frontend_parameters(run.audio),
            "frames": {"stored_frames": run.video.stored_frames,
                       "stored_short_side": run.video.stored_short_side},
            "tokenizer": {"name_or_path": run.text.tokenizer, "max_len": run.text.max_len},
            "missing_audio": self.missing_audio,
        }


class _ClipRecordsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Reads a dataset's annotations with its adapter and yields one record per clip.

    Subclasses name the adapter (DATASET), the manual directory's media folder
    (MEDIA_DIR), and which annotation file each split is read from.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Records of vlsa_jax.data.records (msgpack), one per clip."}
    DATASET: str
    MEDIA_DIR: str
    HOMEPAGE: str
    # TFDS looks a packaged builder's file up with importlib_resources, which it does
    # not install; this is the file it would find.
    code_path = pathlib.Path(__file__)

    def __init__(self, *, num_workers: int = 1, file_format: str = "array_record", **kwargs):
        """Creates the builder.

        Args:
          num_workers: processes decoding clips while the dataset is built.
          file_format: ArrayRecord by default: reading it needs no TensorFlow.
          **kwargs: `tfds.core.DatasetBuilder` arguments: data_dir, and config (a
            `RecordsConfig`) to build.
        """
        super().__init__(file_format=file_format, **kwargs)
        self._num_workers = num_workers

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(f"{self.DATASET} clips as vlsa_jax records: `record` holds the "
                         "bytes of vlsa_jax.data.records.encode_record."),
            features=tfds.features.FeaturesDict({
                RECORD: tfds.features.Tensor(shape=(), dtype=np.object_),
                CLIP_ID: tfds.features.Text(),
            }),
            homepage=self.HOMEPAGE)

    @abc.abstractmethod
    def _annotation_files(self, manual_dir: str) -> dict[str, str]:
        """The annotations the adapter reads each split from (a file or a folder)."""

    def _split_generators(self, dl_manager):
        if not isinstance(self.builder_config, RecordsConfig):
            raise TypeError(f"{self.name}: build with config=RecordsConfig(name=..., "
                            "run_config=...), which says what the records hold")
        run = self.builder_config.run_config
        tok = tokenizer_lib.load_tokenizer(run.text.tokenizer)
        tokenizer_lib.check_compatible(tok, run.text)
        adapter = get_adapter(self.DATASET)
        manual_dir = os.fspath(dl_manager.manual_dir)
        media_dir = os.path.join(manual_dir, self.MEDIA_DIR)
        # Built as in prepare.prepare_split, so the records are the same.
        options = prepare.PrepareOptions.from_config(
            run, media_dir, adapter.modalities, run.text.tokenizer,
            self.builder_config.missing_audio)
        generators = {}
        for split, annotations in self._annotation_files(manual_dir).items():
            clips = adapter.read(annotations, media_dir, split)
            if clips:
                generators[split] = self._generate_examples(split, clips, options)
            else:
                # TFDS cannot write an empty split.
                logging.warning("%s: split %s has no clips in %s; left out", self.name, split,
                                annotations)
        if not generators:
            raise ValueError(f"{self.name}: no clips found in {manual_dir}.\n"
                             f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return generators

    def _generate_examples(self, split: str, clips: list[ClipAnnotation],
                           options: prepare.PrepareOptions):
        written = skipped = 0
        first_failure = None
        for clip_id, data, failure in _encode_clips(clips, options, self._num_workers):
            if failure is not None:
                logging.warning("%s/%s: skipped %s: %s", self.name, split, clip_id, failure)
                skipped += 1
                first_failure = first_failure or f"{clip_id}: {failure}"
                continue
            written += 1
            yield clip_id, {RECORD: data, CLIP_ID: clip_id}
        logging.info("%s/%s: %d clips written, %d skipped", self.name, split, written, skipped)
        if not written:
            raise ValueError(f"{self.name}/{split}: none of the {skipped} clips could be used "
                             f"(first: {first_failure}); check the manual directory's "
                             f"{self.MEDIA_DIR}/ folder")


class MsrvttRecords(_ClipRecordsBuilder):
    """MSR-VTT: splits train, val and test; 1k-A and 9k when the JSFusion list is given."""

    DATASET = msrvtt.NAME
    MEDIA_DIR = "videos"
    HOMEPAGE = ("https://www.microsoft.com/en-us/research/publication/msr-vtt-a-large-video-"
                "description-dataset-for-bridging-video-and-language/")
    JSFUSION_FILE = "MSRVTT_JSFUSION_test.csv"
    TRAIN_9K_FILE = msrvtt.TRAIN_9K_FILE
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    The manual directory holds MSR-VTT's annotations and videos:
      videodatainfo.json (MSR-VTT 2016), or train_val_videodatainfo.json and
        test_videodatainfo.json (2017): splits train, val and test;
      {JSFUSION_FILE} (optional): the JSFusion 1k-A test list, split 1k-A, and
        the 9k training split: the 10,000 videos of videodatainfo.json (2016) less
        the 1k-A list, all their captions;
      {TRAIN_9K_FILE} (optional): the 9k training list (column video_id),
        which split 9k then holds instead;
      {MEDIA_DIR}/<video_id>.mp4: the videos.
    """

    def _annotation_files(self, manual_dir: str) -> dict[str, str]:
        # The adapter finds the JSON file(s) in the folder.
        files = dict.fromkeys(("train", "val", "test"), manual_dir)
        jsfusion = os.path.join(manual_dir, self.JSFUSION_FILE)
        if os.path.isfile(jsfusion):
            files["1k-A"] = jsfusion
        # 9k is the 9k list's videos, or MSR-VTT 2016's outside the 1k-A list (2017's
        # files hold test videos beyond the 10,000, so there it needs the list).
        listed = os.path.isfile(os.path.join(manual_dir, self.TRAIN_9K_FILE))
        from_2016 = os.path.isfile(os.path.join(manual_dir, msrvtt.COMBINED_FILE))
        if listed or ("1k-A" in files and from_2016):
            files["9k"] = manual_dir
        elif "1k-A" in files:
            logging.warning("%s: split 9k left out: it needs %s or MSR-VTT 2016's %s in %s",
                            self.name, self.TRAIN_9K_FILE, msrvtt.COMBINED_FILE, manual_dir)
        return files


class AudiocapsRecords(_ClipRecordsBuilder):
    """AudioCaps: splits train, val and test (those whose CSV file is present)."""

    DATASET = audiocaps.NAME
    MEDIA_DIR = "audio"
    HOMEPAGE = "https://audiocaps.github.io/"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    The manual directory holds AudioCaps' annotations and clips:
      train.csv, val.csv, test.csv: the release's files (a missing one leaves its
        split out);
      {MEDIA_DIR}/: the 10 s clips, in any folder layout, named
        <youtube_id>_<start_time>, <youtube_id> or Y<youtube_id>, with any audio or
        video extension.
    """

    def _annotation_files(self, manual_dir: str) -> dict[str, str]:
        files = {split: os.path.join(manual_dir, f"{split}.csv")
                 for split in ("train", "val", "test")}
        return {split: path for split, path in files.items() if os.path.isfile(path)}


BUILDERS: dict[str, type[_ClipRecordsBuilder]] = {
    builder.DATASET: builder for builder in (MsrvttRecords, AudiocapsRecords)}


def _encode_clip(job: tuple[ClipAnnotation, prepare.PrepareOptions]):
    """(clip id, record bytes, None), or (clip id, None, why the clip cannot be used)."""
    clip, options = job
    # Per-stage timings are a manifest field; TFDS has no place for them.
    timings = collections.defaultdict(float)
    try:
        record = prepare.make_record(
            clip, options, prepare.worker_tokenizer(options.tokenizer), timings)
    except media.MediaError as error:
        return clip.clip_id, None, str(error)
    return clip.clip_id, records.encode_record(record), None


def _encode_clips(clips: list[ClipAnnotation], options: prepare.PrepareOptions,
                  num_workers: int):
    """`_encode_clip` of every clip, in worker processes if `num_workers` > 1.

    Results come in the order they finish: TFDS shuffles the examples by key anyway.
    """
    jobs = [(clip, options) for clip in clips]
    if num_workers <= 1:
        yield from map(_encode_clip, jobs)
        return
    with worker_pool(num_workers) as pool:
        yield from pool.imap_unordered(_encode_clip, jobs)


class RecordsSource:
    """A TFDS split of a records builder as a random-access source of record bytes.

    Element i is the `record` of example i, which `records.decode_record` and
    `pipeline.Preprocessor` take; `grain.MapDataset.source` accepts it.
    """

    def __init__(self, examples):
        """Wraps `examples`, a TFDS data source of a records builder's split."""
        self._examples = examples

    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, index: int) -> bytes:
        return self._examples[index][RECORD]

    def __repr__(self) -> str:
        return f"RecordsSource({self._examples!r})"


def tfds_records_source(name: str, split: str,
                        data_dir: str | os.PathLike | None = None) -> RecordsSource:
    """The records of a built split, read without TensorFlow.

    Args:
      name: 'msrvtt_records/NAME' or 'audiocaps_records/NAME' (NAME: the
        RecordsConfig's name), optionally with ':VERSION'.
      split: e.g. 'train', 'val', 'test', '1k-A'.
      data_dir: the TFDS data directory it was built in; None for TFDS's default.

    Returns:
      A random-access source whose elements are record bytes.
    """
    return RecordsSource(tfds.data_source(name, split=split, data_dir=data_dir, download=False))


FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = RecordsConfig(name=FLAGS.name or FLAGS.config.variant, run_config=FLAGS.config,
                           missing_audio=FLAGS.missing_audio)
    builder = BUILDERS[FLAGS.dataset](data_dir=FLAGS.data_dir, config=config,
                                      num_workers=FLAGS.num_workers)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=FLAGS.manual_dir))
    splits = builder.info.splits
    counts = ", ".join(f"{split} {splits[split].num_examples}" for split in splits)
    print(f"{builder.info.full_name}: {counts} clips -> {builder.data_dir}")


if __name__ == "__main__":
    config_flags.DEFINE_config_file(
        "config", "configs/pretrain.py", "A get_config(arg) file: path[:key=value,...].",
        lock_config=True)
    flags.DEFINE_enum("dataset", None, sorted(BUILDERS), "The dataset to build.")
    flags.DEFINE_string("manual_dir", None, "Annotations and media (MANUAL_DOWNLOAD_INSTRUCTIONS).")
    flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS's).")
    flags.DEFINE_string("name", None, "Builder config name (default: the config's variant).")
    flags.DEFINE_enum("missing_audio", "error", ["error", "silence"],
                      "A clip without an audio stream: skip it ('error') or use silence.")
    flags.DEFINE_integer("num_workers", max(1, (os.cpu_count() or 1) - 1), "Processes.")
    flags.mark_flags_as_required(["dataset", "manual_dir"])
    cli.run(main)
