"""`howto100m`: HowTo100M, instructional videos with time-stamped ASR captions.

Reads the release's `caption.json` (or `raw_caption.json`): `{"<video_id>":
{"start": [...], "end": [...], "text": [...]}, ...}`, three parallel lists per
video. Each (start, end, text) triple is a clip `<video_id>_<i>`, i counting
the video's triples from 0. The whole file is loaded at once (several GB for
the full release); reading a shard of it keeps memory small.

HowTo100M has no official splits: it is used for pre-training only, so `split`
is ignored and every clip of the file is read. Videos are looked up by stem
anywhere under media_dir (the download has mp4 and webm files, sometimes in
subfolders); a video not found keeps the path `<video_id>.mp4`, which the
preparation reports as missing.
"""
from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.data.datasets import common

NAME = "howto100m"


def read(annotations_path: str, media_dir: str, split: str) -> list[ClipAnnotation]:
    """Reads a HowTo100M caption file, one clip per caption.

    Args:
      annotations_path: `caption.json` or a file of the same format.
      media_dir: the folder searched (recursively) for the videos.
      split: ignored; HowTo100M has no splits.

    Returns:
      The clips, videos in file order, each video's captions in listed order.

    Raises:
      ValueError: a video whose start, end and text lists differ in length, or a
        time that is not a number.
    """
    del split  # No official splits (see the module docstring).
    media = common.MediaIndex(media_dir)
    clips = []
    for video_id, captions in common.read_json(annotations_path).items():
        starts, ends, texts = captions["start"], captions["end"], captions["text"]
        if not len(starts) == len(ends) == len(texts):
            raise ValueError(f"{NAME}: video {video_id!r} has {len(starts)} starts, "
                             f"{len(ends)} ends and {len(texts)} texts")
        path = media.find(video_id) or f"{video_id}.mp4"
        for i, (start, end, text) in enumerate(zip(starts, ends, texts)):
            clip_id = f"{video_id}_{i}"
            clips.append(ClipAnnotation(
                clip_id=clip_id,
                path=path,
                captions=(common.clean_caption(text),),
                start=common.optional_float(start, f"{NAME} clip {clip_id} start"),
                end=common.optional_float(end, f"{NAME} clip {clip_id} end"),
            ))
    return common.check_unique_ids(NAME, clips)
