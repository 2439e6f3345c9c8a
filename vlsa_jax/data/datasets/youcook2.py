"""`youcook2`: YouCook2, cooking videos with captioned procedure segments.

Reads `youcookii_annotations_trainval.json`: `{"database": {"<youtube_id>":
{"subset": "training"|"validation", "duration": .., "annotations":
[{"segment": [start, end], "id": 0, "sentence": "..."}, ...]}, ...}}`. Each
segment is a clip `<youtube_id>_<id>` spanning `segment` (seconds) of the
video. Splits 'train' and 'val' select subsets 'training' and 'validation';
'test' selects 'testing', whose public file
(`youcookii_annotations_test_segments_only.json`) has no sentences, so its
clips have no captions.

The raw videos are stored as `<subset>/<recipe_type>/<youtube_id>.<ext>` with
mp4, mkv or webm extensions, so the video is looked up by stem anywhere under
media_dir; a video not found keeps the path `<youtube_id>.mp4`, which the
preparation reports as missing.
"""
from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.data.datasets import common

NAME = "youcook2"
_SPLITS = {"train": "training", "val": "validation", "test": "testing"}


def read(annotations_path: str, media_dir: str, split: str) -> list[ClipAnnotation]:
    """Reads the YouCook2 annotation JSON, one clip per captioned segment.

    Args:
      annotations_path: `youcookii_annotations_trainval.json` (or the test file).
      media_dir: the folder searched (recursively) for the videos.
      split: 'train', 'val' or 'test'.

    Returns:
      The split's segments, videos in file order, segments in listed order.

    Raises:
      ValueError: an unknown split or a repeated segment id within a video.
    """
    subset = common.resolve_split(NAME, split, _SPLITS)
    database = common.read_json(annotations_path)["database"]
    media = common.MediaIndex(media_dir)
    clips = []
    for youtube_id, video in database.items():
        if video.get("subset") != subset:
            continue
        path = media.find(youtube_id) or f"{youtube_id}.mp4"
        for segment in video.get("annotations", []):
            where = f"{NAME} video {youtube_id} segment {segment.get('id')}"
            start, end = segment["segment"]
            # The test file has segments only: no sentence means no caption, not ''.
            has_caption = "sentence" in segment
            clips.append(ClipAnnotation(
                clip_id=f"{youtube_id}_{segment['id']}",
                path=path,
                captions=(common.clean_caption(segment["sentence"]),) if has_caption else (),
                start=common.optional_float(start, f"{where} start"),
                end=common.optional_float(end, f"{where} end"),
            ))
    return common.check_unique_ids(NAME, clips)
