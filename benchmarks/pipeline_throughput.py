r"""Times the input pipeline and the data preparation per core, each beside its floor.

    python -m benchmarks.pipeline_throughput
    python -m benchmarks.pipeline_throughput --num_records=64 --split_records=1024 \
        --repeats=5 --clips=4 --seconds=10 --long_seconds=600 --long_spans=59

Run it from the repository root, as a module: `vlsa_jax` and `tests` are then this
checkout's, whatever else is installed.

Pipeline, at the base config's input sizes (8 of 16 stored 341x256 JPEG frames,
cropped to 224x224; a 256x256 float16 spectrogram; 40 tokens), on --num_records
synthetic records, repeated to an uncompressed ArrayRecord split of --split_records
in a temporary directory (see write_synthetic_split):

  decode floor   libjpeg-turbo (simplejpeg) decoding 8 JPEGs of each record to RGB
                 in one reused buffer, nothing else (pipeline.FrameDecoder, the
                 pipeline's own decoder, at its cheapest)
  Pillow         the same frames decoded by Pillow into a new array each, for
                 reference (the pipeline's first decoder)
  preprocess     Preprocessor(config, 'avt', training=True): plan on each record
                 (record decoding, random choices), batch on each 32 plans (frame
                 decoding and cropping into the batch's canvases, spectrogram
                 normalisation): what a grain thread or worker does
  grain          training_dataset with data.workers=0 and one reader thread,
                 batches of 32: the preprocessing plus grain's own work (reading the
                 records, shuffling, batching)
  device resize  models.frames.resize_crops, jitted, on the same batches' canvases:
                 the crops resized to 224x224 where the model runs (here XLA on this
                 CPU), for reference; not host work on a machine with an accelerator

Preparation, on generated 640x360 30 fps H.264 clips with 44.1 kHz stereo AAC
(tests.media_fixtures.write_textured_clip: a panning textured scene with sensor
noise, about 1 Mbit/s, which H.264 decodes about as slowly as camera footage; flat
frames decode several times faster and would make the floor unrealistically low):

  decode floor   PyAV decoding every frame of both streams, one thread, no conversion
  make_record    prepare.make_record for the base config (decode, spectrogram,
                 JPEG, tokenize; writing the record is not included); its stages
                 below are its own wall-clock timings

and on a long film cut into spans, as HowTo100M and YouCook2 cut many clips from one
video: a generated --long_seconds 1280x720 30 fps clip of the same kind with a key frame
every 250 frames, x264's default (written once, which takes minutes, and kept in the
system's temporary folder for later runs), cut into --long_spans spans of up to 10 s
spread evenly over it:

  decode floor   PyAV decoding every frame of both streams of the whole film
  make_records   prepare.make_records of every span: the film decoded in one pass for
                 all of them, as a preparation worker does with the spans of a shard
  make_record    prepare.make_record of each span in turn, for reference: each span
                 seeks and decodes from the key frame before it (how spans were
                 prepared before make_records)

Every figure is CPU time of this process (all its threads), so "per core" holds on
a shared machine too, where wall time also counts the other processes' turns;
grain's wall time and the cores it kept busy are in the JSON line. Medians over
--repeats passes, each floor's passes alternating with those of the stage measured
against it. Prints a table (goals beside the figures) and one JSON line with every
figure.
"""
import datetime
import io
import json
import os
import pathlib
import statistics
import tempfile
import time

import av
import jax
import numpy as np
from absl import app, flags
from array_record.python import array_record_module
from PIL import Image

from benchmarks.report import cpu_model, print_rows, verdict
from tests.media_fixtures import write_textured_clip
from vlsa_jax import config_lib
from vlsa_jax.data import media, pipeline, prepare, records
from vlsa_jax.data import tokenizer as tokenizer_lib
from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.models import frames as frames_lib

_CONFIG = pathlib.Path(__file__).parents[1] / "configs" / "pretrain.py"
# Stored frames of a 4:3 source at the base config's stored_short_side (256).
_FRAME_WIDTH, _FRAME_HEIGHT = 341, 256
_CAPTIONS_PER_RECORD = 2
_BATCH_SIZE = 32
_CLIP_SIZE, _CLIP_FPS = (640, 360), 30
_FILM_SIZE = (1280, 720)
# Key frames of the film: x264's default interval, 250 frames. Seeks land this far
# before a span at most (the short clips have one a second).
_FILM_KEY_FRAME_SECONDS = 250 / _CLIP_FPS
_SPAN_SECONDS = 10.0  # the longest span cut from the film
# The stages prepare.make_record times (writing is the caller's).
_PREPARE_STAGES = ("decode", "spectrogram", "jpeg", "tokenize")
# Goals: the pipeline's per-sample work within 1.5x of decoding the JPEGs it needs and
# at least 100 samples/s per core; preparation within 1.3x of decoding the media.
_PREPROCESS_GOAL_RATIO = 1.5
_SAMPLES_PER_CORE_GOAL = 100.0
_PREPARE_GOAL_RATIO = 1.3
_WORDS = ["a", "the", "red", "blue", "green", "yellow", "purple", "orange", "black", "white", "small", "large", "dog", "cat", "person", "car", "ball", "bird", "child", "woman", "man", "horse", "guitar", "piano", "drum", "plays", "runs", "jumps", "sings", "rides", "throws", "catches", "slowly", "quickly", "loudly", "outside", "inside", "near", "under", "over", "park", "street", "kitchen", "beach", "stage", "field", "river"]

flags.DEFINE_integer("num_records", 64, "Distinct synthetic records.")
flags.DEFINE_integer("split_records", 1024,
                     "Records in the split grain reads: the distinct ones, repeated.")
flags.DEFINE_integer("repeats", 5, "Timed passes per stage; the medians are reported.")
flags.DEFINE_integer("batches", 4, "Grain batches per timed pass (after one warm-up batch).")
flags.DEFINE_integer("clips", 4, "Generated clips for the preparation stages.")
flags.DEFINE_float("seconds", 10.0, "Length of each generated clip.")
flags.DEFINE_float("long_seconds", 600.0,
                   "Length of the generated 720p film cut into spans; 0 leaves it out.")
flags.DEFINE_integer("long_spans", 59, "Spans cut from the film.")
flags.DEFINE_integer("long_repeats", 3, "Timed passes over the film per stage.")
FLAGS = flags.FLAGS


def synthetic_frames(rng: np.random.Generator, count: int) -> list[bytes]:
    """`count` JPEG frames of a panning smooth scene with a few objects and sensor noise.

    Flat or purely random images give JPEGs far smaller or larger than video frames,
    and JPEG decoding time follows the coded size; these come out at about 20 KB, as
    stored frames of real video at quality 90 do.
    """
    y, x = np.mgrid[0:_FRAME_HEIGHT, 0:_FRAME_WIDTH].astype(np.float32)
    freqs = rng.uniform(0.01, 0.06, (3, 2, 1, 1))
    phases = rng.uniform(0, 2 * np.pi, (3, 1, 1))
    boxes = rng.integers(0, [_FRAME_WIDTH - 40, _FRAME_HEIGHT - 40, 256], (4, 3))
    frames = []
    for t in range(count):
        scene = 128 + 80 * np.sin(freqs[:, 0] * (x + 4 * t) + freqs[:, 1] * y + phases)
        scene = scene.transpose(1, 2, 0)
        for left, top, value in boxes:
            scene[top:top + 40, left + 2 * t:left + 2 * t + 40] = value
        noisy = scene + rng.normal(0, 5, scene.shape)
        frames.append(records.encode_jpeg(np.clip(noisy, 0, 255).astype(np.uint8)))
    return frames


def write_synthetic_split(config, split_dir: pathlib.Path, num_records: int,
                          split_records: int) -> list[bytes]:
    """Writes a one-shard split that pipeline.load_split accepts; returns its records.

    The shard holds the `num_records` distinct records over and over, `split_records`
    in all, and is written as prepare writes shards (uncompressed). A split of real
    size matters: grain's index shuffle costs 0.4 ms an element on a split of 64
    records, 20 us on one of 1024 and less on larger ones.
    """
    rng = np.random.default_rng(0)
    video, audio, text = config.video, config.audio, config.text
    data = []
    for i in range(num_records):
        text_ids = rng.integers(5, text.vocab_size, (_CAPTIONS_PER_RECORD, text.max_len),
                                dtype=np.int32)
        text_mask = np.zeros_like(text_ids)
        for row in range(_CAPTIONS_PER_RECORD):
            text_mask[row, :rng.integers(8, text.max_len + 1)] = 1
        spectrogram = rng.normal(audio.norm_mean, audio.norm_std, (audio.frames, audio.bins))
        record = records.ClipRecord(
            clip_id=f"clip{i:05d}", source=f"clip{i:05d}.mp4", start=None, end=None,
            captions=[f"synthetic clip {i} caption {c}" for c in range(_CAPTIONS_PER_RECORD)],
            text_ids=text_ids, text_mask=text_mask,
            frames=synthetic_frames(rng, video.stored_frames),
            frame_times=[0.5 * t for t in range(video.stored_frames)],
            spectrogram=spectrogram.astype(np.float16), audio_valid=(0, audio.clip_samples))
        data.append(records.encode_record(record))
    split_dir.mkdir(parents=True)
    shard = f"train-00000-of-00001{records.SHARD_SUFFIX}"
    writer = array_record_module.ArrayRecordWriter(str(split_dir / shard),
                                                   "group_size:1,uncompressed")
    for index in range(split_records):
        writer.write(data[index % num_records])
    writer.close()
    records.Manifest(
        dataset="synthetic", split="train", modalities="avt", num_clips=split_records,
        num_failed=0, frontend=media.frontend_parameters(audio),
        frames={"stored_frames": video.stored_frames,
                "stored_short_side": video.stored_short_side},
        tokenizer={"name_or_path": "synthetic", "vocab_size": text.vocab_size,
                   "max_len": text.max_len},
        shards=[{"file": shard, "num_records": split_records}], timings={},
        spectrogram_stats={"mean": audio.norm_mean, "std": audio.norm_std},
        failures=[]).save(split_dir)
    return data


def median_passes(passes, repeats: int) -> list[float]:
    """The median CPU times of `repeats` calls of each function, in alternation.

    CPU time (of every thread of this process) is what a pass costs a core: wall
    time also counts the spells in which other processes of a shared machine had
    the core. Alternating keeps a slow spell (caches shared with them) from landing
    on one of the passes only, which would skew their ratio.
    """
    times = [[] for _ in passes]
    for _ in range(repeats):
        for run_pass, found in zip(passes, times):
            found.append(cpu_seconds(run_pass))
    return [statistics.median(found) for found in times]


def cpu_seconds(run_pass) -> float:
    """The CPU time (of every thread of this process) that one call of `run_pass` takes."""
    start = time.process_time()
    run_pass()
    return time.process_time() - start


def time_pipeline(config, split_dir: pathlib.Path, data: list[bytes], repeats: int,
                  batches: int) -> dict:
    # The floor decodes the frame at the centre of each temporal segment; the pipeline
    # draws one at random within each: frames of the same records, of the same sizes.
    sampled = []
    for item in data:
        frames = records.decode_record(item).frames
        indices = pipeline.segment_frame_indices(len(frames), config.video.num_frames, None)
        sampled.append([frames[index] for index in indices])

    def decode_floor():
        decoder = pipeline.FrameDecoder()
        for jpegs in sampled:
            for jpeg in jpegs:
                decoder(jpeg)

    def pillow_decode():
        for jpegs in sampled:
            for jpeg in jpegs:
                np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))

    preprocessor = pipeline.Preprocessor(config, "avt", training=True)

    def preprocess():
        for first in range(0, len(data), _BATCH_SIZE):
            preprocessor.batch([preprocessor.plan(item, np.random.default_rng(seed))
                                for seed, item in enumerate(data[first:first + _BATCH_SIZE],
                                                            first)])

    batch = preprocessor.batch([preprocessor.plan(item, np.random.default_rng(seed))
                                for seed, item in enumerate(data[:_BATCH_SIZE])])
    resize = jax.jit(frames_lib.resize_crops, static_argnums=2)
    canvases, crops = jax.device_put((batch["video"], batch["video_crop"]))

    def device_resize():
        for _ in range(0, len(data), _BATCH_SIZE):
            resize(canvases, crops, config.video.size).block_until_ready()

    for warm_up in (decode_floor, pillow_decode, preprocess, device_resize):
        warm_up()  # the libraries' first calls, XLA's compilation
    floor_s, preprocess_s = (
        t / len(data) for t in median_passes((decode_floor, preprocess), repeats))
    floor_again_s, pillow_s = (
        t / len(data) for t in median_passes((decode_floor, pillow_decode), repeats))
    resize_s = statistics.median(cpu_seconds(device_resize) for _ in range(repeats)) / len(data)

    config = config.copy_and_resolve_references()
    config.data.train_split = str(split_dir)
    config.data.workers = 0
    # One reader thread computes one batch at a time, so the wall time per batch is one
    # core's; more threads would work ahead of the timed batches (grain buffers their
    # results) and share the cores with each other.
    config.data.read_threads = 1
    config.train.batch_size = _BATCH_SIZE
    iterator = iter(pipeline.training_dataset(config))
    next(iterator)  # warm-up: the reader thread starts
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            next(iterator)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    del iterator  # grain's reader thread would go on filling its buffer
    samples = batches * _BATCH_SIZE
    grain_s = statistics.median(cpu) / samples
    return {
        "jpeg_kb_mean": round(np.mean([len(j) for jpegs in sampled for j in jpegs]) / 1024, 1),
        "decode_floor_ms": round(floor_s * 1e3, 3),
        "decode_floor_per_core": round(1 / floor_s, 1),
        "pillow_decode_ms": round(pillow_s * 1e3, 3),
        "pillow_decode_per_core": round(1 / pillow_s, 1),
        "pillow_decode_x_floor": round(pillow_s / floor_again_s, 3),
        "preprocess_ms": round(preprocess_s * 1e3, 3),
        "preprocess_per_core": round(1 / preprocess_s, 1),
        "preprocess_x_floor": round(preprocess_s / floor_s, 3),
        "grain_ms": round(grain_s * 1e3, 3),
        "grain_per_core": round(1 / grain_s, 1),
        "grain_x_floor": round(grain_s / floor_s, 3),
        "grain_wall_ms": round(statistics.median(wall) / samples * 1e3, 3),
        "grain_cores_used": round(statistics.median(cpu) / statistics.median(wall), 2),
        "device_resize_ms": round(resize_s * 1e3, 3),
    }


def train_tokenizer(directory: pathlib.Path):
    """A small WordPiece on generated captions (the base config's BERT may be absent)."""
    rng = np.random.default_rng(0)
    captions = [" ".join(rng.choice(_WORDS, 8)) for _ in range(500)]
    return tokenizer_lib.train_wordpiece(captions, 512, directory)


def decode_streams(path: pathlib.Path) -> None:
    """Decodes every frame of the first video and audio streams, in one thread."""
    with av.open(str(path)) as container:
        streams = [container.streams.video[0], container.streams.audio[0]]
        streams[0].codec_context.thread_count = 1  # as decode_clip's default
        for packet in container.demux(streams):
            for _ in packet.decode():
                pass


def preparation_options(config, tokenizer_dir: pathlib.Path, media_dir: pathlib.Path):
    """(PrepareOptions of the base config with a generated tokenizer, the tokenizer)."""
    tok = train_tokenizer(tokenizer_dir)
    ids = tokenizer_lib.special_token_ids(tok)
    config = config.copy_and_resolve_references()
    config.text.tokenizer = str(tokenizer_dir)
    config.text.vocab_size = len(tok)
    config.text.mask_token_id = ids["mask"]
    config.text.special_token_ids = tuple(ids[r] for r in ("pad", "cls", "sep", "mask"))
    tokenizer_lib.check_compatible(tok, config.text)
    # librosa compiles its numba kernels on the first spectrogram (seconds).
    media.spectrogram(np.zeros(config.audio.clip_samples, np.float32), config.audio)
    return prepare.PrepareOptions.from_config(
        config, media_dir, "avt", config.text.tokenizer, missing_audio="error"), tok


def time_preparation(config, directory: pathlib.Path, num_clips: int, seconds: float,
                     repeats: int) -> dict:
    media_dir = directory / "media"
    media_dir.mkdir(parents=True)
    options, tok = preparation_options(config, directory / "tokenizer", media_dir)
    rng = np.random.default_rng(0)
    clips = []
    for i in range(num_clips):
        path = write_textured_clip(media_dir / f"clip{i}.mp4", seconds=seconds,
                                   fps=_CLIP_FPS, size=_CLIP_SIZE, sample_rate=44_100,
                                   channels=2, tone_hz=220.0 * (i + 1), seed=i)
        clips.append(ClipAnnotation(clip_id=f"clip{i}", path=path.name,
                                    captions=(" ".join(rng.choice(_WORDS, 8)),)))

    def decode_floor():
        for clip in clips:
            decode_streams(media_dir / clip.path)

    stage_passes = []

    def make_records():
        timings = dict.fromkeys(_PREPARE_STAGES, 0.0)
        for clip in clips:
            prepare.make_record(clip, options, tok, timings)
        stage_passes.append(timings)

    decode_floor()  # warm-up: the page cache and FFmpeg's first calls
    make_records()
    stage_passes.clear()
    floor_s, make_record_s = (
        t / num_clips for t in median_passes((decode_floor, make_records), repeats))
    figures = {
        "clip_mb_mean": round(np.mean([(media_dir / c.path).stat().st_size
                                       for c in clips]) / 2**20, 2),
        "decode_floor_ms": round(floor_s * 1e3, 2),
        "decode_floor_per_core": round(1 / floor_s, 2),
        "make_record_ms": round(make_record_s * 1e3, 2),
        "make_record_per_core": round(1 / make_record_s, 2),
        "make_record_x_floor": round(make_record_s / floor_s, 3),
    }
    for stage in _PREPARE_STAGES:
        seconds_per_clip = statistics.median(p[stage] for p in stage_passes) / num_clips
        figures[f"{stage}_ms"] = round(seconds_per_clip * 1e3, 2)
    return figures


def generated_film(seconds: float) -> pathlib.Path:
    """The film cut into spans: generated once, then kept in the temporary folder."""
    width, height = _FILM_SIZE
    path = pathlib.Path(tempfile.gettempdir()) / (
        f"vlsa_jax_benchmark_film_{seconds:g}s_{width}x{height}_"
        f"key{_FILM_KEY_FRAME_SECONDS:.3g}s.mp4")
    if not path.exists():
        print(f"writing a {seconds:g} s {width}x{height} film to {path} (once; minutes)")
        partial = path.with_name(f"{path.stem}.partial{os.getpid()}.mp4")
        write_textured_clip(partial, seconds=seconds, fps=_CLIP_FPS, size=_FILM_SIZE,
                            sample_rate=44_100, channels=2, seed=0,
                            key_frame_seconds=_FILM_KEY_FRAME_SECONDS)
        os.replace(partial, path)
    return path


def time_long_film(config, directory: pathlib.Path, seconds: float, num_spans: int,
                   repeats: int) -> dict:
    film = generated_film(seconds)
    options, tok = preparation_options(config, directory / "tokenizer", film.parent)
    rng = np.random.default_rng(0)
    step = seconds / num_spans
    clips = [ClipAnnotation(clip_id=f"span{i:03d}", path=film.name,
                            captions=(" ".join(rng.choice(_WORDS, 8)),), start=i * step,
                            end=i * step + min(step, _SPAN_SECONDS))
             for i in range(num_spans)]
    stage_passes = {"make_records": [], "make_record": []}

    def decode_floor():
        decode_streams(film)

    def one_pass():
        timings = dict.fromkeys(_PREPARE_STAGES, 0.0)
        for _ in prepare.make_records(clips, options, tok, timings):
            pass
        stage_passes["make_records"].append(timings)

    def span_by_span():
        timings = dict.fromkeys(_PREPARE_STAGES, 0.0)
        for clip in clips:
            prepare.make_record(clip, options, tok, timings)
        stage_passes["make_record"].append(timings)

    decode_floor()  # warm-up: the page cache
    floor_s, one_pass_s, span_by_span_s = median_passes(
        (decode_floor, one_pass, span_by_span), repeats)
    figures = {
        "film_mb": round(film.stat().st_size / 2**20, 1),
        "decode_floor_s": round(floor_s, 2),
        "make_records_s": round(one_pass_s, 2),
        "make_records_x_floor": round(one_pass_s / floor_s, 3),
        "make_record_s": round(span_by_span_s, 2),
        "make_record_x_floor": round(span_by_span_s / floor_s, 3),
    }
    for name, passes in stage_passes.items():
        for stage in _PREPARE_STAGES:
            figures[f"{name}_{stage}_s"] = round(statistics.median(p[stage] for p in passes), 2)
    return figures


def print_table(config, pipe: dict, prep: dict, film: dict | None) -> None:
    video, audio = config.video, config.audio
    print(f"pipeline: {FLAGS.num_records} records (split of {FLAGS.split_records}) of "
          f"{video.stored_frames} frames "
          f"{_FRAME_WIDTH}x{_FRAME_HEIGHT} (JPEG {pipe['jpeg_kb_mean']} KB) -> "
          f"{video.num_frames}x{video.size}x{video.size}, spectrogram "
          f"{audio.frames}x{audio.bins}, {config.text.max_len} tokens; "
          f"median of {FLAGS.repeats}")
    rows = [
        ("decode floor (libjpeg-turbo)", pipe["decode_floor_ms"],
         pipe["decode_floor_per_core"], 1.0, ""),
        ("Pillow decode, for reference", pipe["pillow_decode_ms"],
         pipe["pillow_decode_per_core"], pipe["pillow_decode_x_floor"], ""),
        ("preprocess", pipe["preprocess_ms"], pipe["preprocess_per_core"],
         pipe["preprocess_x_floor"],
         f"<= {_PREPROCESS_GOAL_RATIO}x, >= {_SAMPLES_PER_CORE_GOAL:g}/s: " + verdict(
             pipe["preprocess_x_floor"] <= _PREPROCESS_GOAL_RATIO
             and pipe["preprocess_per_core"] >= _SAMPLES_PER_CORE_GOAL)),
        (f"grain (workers=0, 1 thread, batch {_BATCH_SIZE})", pipe["grain_ms"],
         pipe["grain_per_core"], pipe["grain_x_floor"],
         f"<= {_PREPROCESS_GOAL_RATIO}x, >= {_SAMPLES_PER_CORE_GOAL:g}/s: " + verdict(
             pipe["grain_x_floor"] <= _PREPROCESS_GOAL_RATIO
             and pipe["grain_per_core"] >= _SAMPLES_PER_CORE_GOAL)
         + f" ({pipe['grain_cores_used']} cores busy)"),
        ("device resize (XLA on this CPU), for reference", pipe["device_resize_ms"], "", "",
         "runs on the accelerator"),
    ]
    print_rows(("stage", "ms/sample", "samples/s/core", "x floor", "goal"), rows)
    print()
    print(f"preparation: {FLAGS.clips} clips of {FLAGS.seconds:g} s {_CLIP_SIZE[0]}x"
          f"{_CLIP_SIZE[1]} {_CLIP_FPS} fps H.264 + 44.1 kHz stereo AAC "
          f"({prep['clip_mb_mean']} MB) -> {video.stored_frames} frames, short side "
          f"{video.stored_short_side}; median of {FLAGS.repeats}")
    rows = [
        ("decode floor (PyAV)", prep["decode_floor_ms"], prep["decode_floor_per_core"],
         1.0, ""),
        ("make_record", prep["make_record_ms"], prep["make_record_per_core"],
         prep["make_record_x_floor"],
         f"<= {_PREPARE_GOAL_RATIO}x: "
         + verdict(prep["make_record_x_floor"] <= _PREPARE_GOAL_RATIO)),
    ]
    rows += [(f"  {stage} (wall)", prep[f"{stage}_ms"], "", "", "")
             for stage in _PREPARE_STAGES]
    print_rows(("stage", "ms/clip", "clips/s/core", "x floor", "goal"), rows)
    if film is None:
        return
    print()
    print(f"long film: {FLAGS.long_seconds:g} s {_FILM_SIZE[0]}x{_FILM_SIZE[1]} {_CLIP_FPS} "
          f"fps H.264 (a key frame every {_FILM_KEY_FRAME_SECONDS:.3g} s) + 44.1 kHz "
          f"stereo AAC ({film['film_mb']} MB) cut into "
          f"{FLAGS.long_spans} spans of up to {_SPAN_SECONDS:g} s; median of "
          f"{FLAGS.long_repeats}")
    rows = [("decode floor (PyAV, the whole film)", film["decode_floor_s"], 1.0, "")]
    for name, what in (("make_records", "make_records (one pass)"),
                       ("make_record", "make_record per span, for reference")):
        ratio = film[f"{name}_x_floor"]
        goal = f"<= {_PREPARE_GOAL_RATIO}x: " + verdict(ratio <= _PREPARE_GOAL_RATIO)
        rows.append((what, film[f"{name}_s"], ratio, goal if name == "make_records" else ""))
        rows += [(f"  {stage} (wall)", film[f"{name}_{stage}_s"], "", "")
                 for stage in _PREPARE_STAGES]
    print_rows(("stage", "s/film", "x floor", "goal"), rows)


def main(argv):
    del argv
    config = config_lib.load_config_module(_CONFIG).get_config("variant=base")
    with tempfile.TemporaryDirectory() as temp:
        temp = pathlib.Path(temp)
        data = write_synthetic_split(config, temp / "train", FLAGS.num_records,
                                     max(FLAGS.split_records, FLAGS.num_records))
        pipe = time_pipeline(config, temp / "train", data, FLAGS.repeats, FLAGS.batches)
        prep = time_preparation(config, temp / "prepare", FLAGS.clips, FLAGS.seconds,
                                FLAGS.repeats)
        film = None
        if FLAGS.long_seconds > 0:
            film = time_long_film(config, temp / "film", FLAGS.long_seconds,
                                  FLAGS.long_spans, FLAGS.long_repeats)
    print_table(config, pipe, prep, film)
    print(json.dumps({
        "benchmark": "pipeline_throughput",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": os.cpu_count(),
        "num_records": FLAGS.num_records, "split_records": FLAGS.split_records,
        "repeats": FLAGS.repeats,
        "batches": FLAGS.batches, "batch_size": _BATCH_SIZE, "clips": FLAGS.clips,
        "seconds": FLAGS.seconds, "pipeline": pipe, "preparation": prep,
        "long_seconds": FLAGS.long_seconds, "long_spans": FLAGS.long_spans,
        "long_repeats": FLAGS.long_repeats, "long_film": film,
    }))


if __name__ == "__main__":
    app.run(main)
