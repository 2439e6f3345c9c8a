"""SyncShapes: a synthetic video-audio-text corpus whose sounds are synchronised with the picture.

    python -m vlsa_jax.demo.corpus --output_dir=data/sync_shapes --num_workers=4

Each clip (clip.py: what it shows and sounds, its caption, the sync_hard split) is an mp4
file: its frames (render.py) as H.264 video, its audio (sound.py) as mono AAC. Everything
follows from (seed, split, clip index), whatever the number of workers; only the encoded
bytes depend on the FFmpeg build.

output_dir, the media_dir to give the preparation, holds `sync_shapes.json` (the options
and CORPUS_VERSION), `media/<split>/<id>.mp4` and `<split>.jsonl` (the generic adapter's
JSON Lines, with what each clip holds), written last: a split whose .jsonl exists is
complete and is reused. The rows' keys and how to prepare the corpus: docs/demo.md.
"""
import contextlib
import dataclasses
import fractions
import functools
import json
import os
import pathlib

import av
import numpy as np
import tqdm
from absl import app, flags

from vlsa_jax import cli
from vlsa_jax.data.processes import worker_pool
from vlsa_jax.demo.clip import SPLITS, ClipSpec, SyncShapesOptions, annotation_row, sample_split
from vlsa_jax.demo.render import render_frames
from vlsa_jax.demo.sound import render_audio

OPTIONS_FILE = "sync_shapes.json"
# Recorded with the options: a corpus rendered otherwise (version 1: no wall glow) is
# refused rather than mixed with this one.
CORPUS_VERSION = 2
# x264 with look-ahead (mb-tree), adaptive quantisation or B-frames, i.e. every preset
# but 'ultrafast', gave other bytes for the same frames on a few percent of encodes of
# a busy machine, even on one thread; 'ultrafast' never did. The files stay small.
_X264_OPTIONS = {"preset": "ultrafast"}
# FFmpeg's 'fast' AAC coder: a third of the default's time, the notes as clear.
_AAC_OPTIONS = {"aac_coder": "fast"}


def generate(output_dir, options: SyncShapesOptions = SyncShapesOptions(),
             num_workers: int = 1, progress: bool = False) -> dict[str, pathlib.Path]:
    """Writes DIR/media/<split>/<id>.mp4 and DIR/<split>.jsonl; returns split -> annotation path.

    Skips work already done: a split whose jsonl exists (written last, atomically) is
    reused. `progress` shows a bar of the clips written, per split.

    Raises:
      ValueError: output_dir holds a corpus generated with other options.
      RuntimeError: a split asks for more distinct clips than can be drawn.
    """
    root = pathlib.Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    _claim_directory(root, options)
    annotations = {split: root / f"{split}.jsonl" for split in SPLITS}
    pending = [split for split in SPLITS if not annotations[split].exists()]
    if pending:
        with _parallel_map(num_workers) as parallel_map:
            for split in pending:
                specs = sample_split(split, options)
                (root / "media" / split).mkdir(parents=True, exist_ok=True)
                written = parallel_map(
                    functools.partial(write_clip, root=str(root), options=options), specs)
                for _ in tqdm.tqdm(written, total=len(specs), desc=f"SyncShapes {split}",
                                   unit="clip", disable=not progress):
                    pass
                _write_atomically(annotations[split], "".join(
                    json.dumps(annotation_row(spec, options)) + "\n" for spec in specs))
    return annotations


def _claim_directory(root: pathlib.Path, options: SyncShapesOptions) -> None:
    """Records the options (and CORPUS_VERSION) in root, or checks them against those there.

    Reusing the splits of other options would mix two corpora.

    Raises:
      ValueError: root holds a corpus generated with other options.
    """
    path = root / OPTIONS_FILE
    wanted = {"version": CORPUS_VERSION} | dataclasses.asdict(options)
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != wanted:
            raise ValueError(f"{root} holds a SyncShapes corpus generated with {recorded}, "
                             f"not {wanted}: use another output directory")
    else:
        _write_atomically(path, json.dumps(wanted, indent=2) + "\n")


def _write_atomically(path: pathlib.Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@contextlib.contextmanager
def _parallel_map(num_workers: int):
    """Yields map(function, items): an iterator of the results in order, computed in
    num_workers processes as it is consumed."""
    if num_workers <= 1:
        yield map
        return
    with worker_pool(num_workers) as pool:
        yield lambda function, items: pool.imap(
            function, items, chunksize=max(1, len(items) // (16 * num_workers)))


def write_clip(spec: ClipSpec, root: str, options: SyncShapesOptions) -> None:
    """Renders the clip and writes it to root/spec.path."""
    write_mp4(os.path.join(root, spec.path), render_frames(spec, options),
              render_audio(spec, options), options.fps, options.sample_rate)


def write_mp4(path, frames: np.ndarray, audio: np.ndarray, fps: int, sample_rate: int) -> None:
    """Writes a clip as an mp4 file: H.264 video and mono AAC audio.

    Args:
      path: the file to write.
      frames: [T, H, W, 3] uint8 RGB; frame i shows time i / fps.
      audio: [samples] float32 mono, from time 0.
      fps: the video frame rate.
      sample_rate: the audio's rate in Hz.
    """
    with av.open(os.fspath(path), "w") as container:
        # Both streams exist before the first packet is muxed (the header is written then).
        video = container.add_stream("libx264", rate=fps)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p"
        video.options = _X264_OPTIONS
        video.codec_context.gop_size = fps  # a key frame a second: seeks stay short
        video.codec_context.thread_count = 1  # frame threads make the output vary too
        sound = container.add_stream("aac", rate=sample_rate, layout="mono")
        sound.options = _AAC_OPTIONS
        time_base = fractions.Fraction(1, fps)
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = index, time_base
            container.mux(video.encode(frame))
        container.mux(video.encode())
        # One long frame; the encoder cuts it into frames of its own size.
        samples = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
        samples.sample_rate, samples.pts = sample_rate, 0
        samples.time_base = fractions.Fraction(1, sample_rate)
        container.mux(sound.encode(samples))
        container.mux(sound.encode())


# Command line ---------------------------------------------------------------------------

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    options = SyncShapesOptions(**{field.name: getattr(FLAGS, field.name)
                                   for field in dataclasses.fields(SyncShapesOptions)})
    for split, path in generate(FLAGS.output_dir, options, FLAGS.num_workers,
                                progress=True).items():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        counts = {key: sum(row["split"] == key for row in rows)
                  for key in dict.fromkeys(row["split"] for row in rows)}
        print(f"{split:<10} {path}: "
              + (", ".join(f"{n} {key}" for key, n in counts.items()) or "no clips"))
    print(f"media_dir for the preparation: {FLAGS.output_dir}")


if __name__ == "__main__":
    flags.DEFINE_string("output_dir", None, "Where the corpus goes (the preparation's media_dir).")
    flags.DEFINE_integer("num_workers", 1, "Processes rendering and encoding clips.")
    for _field in dataclasses.fields(SyncShapesOptions):
        _define = flags.DEFINE_float if _field.type is float else flags.DEFINE_integer
        _define(_field.name, _field.default, f"SyncShapesOptions.{_field.name}.")
    flags.mark_flag_as_required("output_dir")
    cli.run(main)
