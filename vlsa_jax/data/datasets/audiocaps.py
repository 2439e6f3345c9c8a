"""`audiocaps`: AudioCaps, 10 s AudioSet clips with human captions (audio and text).

Reads the release's `train.csv`, `val.csv` or `test.csv`: a header
`audiocap_id,youtube_id,start_time,caption` and one row per caption. Rows
sharing (youtube_id, start_time) are one clip (one caption per clip in train,
five in val and test), with its captions in file order and clips in the order
of their first row; the clip id is `<youtube_id>_<start_time>`, start_time as
written. Each file is one split, so `split` ('train', 'val' or 'test') is only
checked to be a known name.

Downloads name files differently, so the media file is looked up by stem
anywhere under media_dir, trying `<youtube_id>_<start_time>`, `<youtube_id>`
and `Y<youtube_id>` (AudioSet style), with any audio or video extension. All
three are taken to be the cut 10 s clip, so start and end are None. A clip
whose file is not found keeps the path `<youtube_id>.wav`, which the
preparation reports as missing.
"""
from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.data.datasets import common

NAME = "audiocaps"
_SPLITS = {"train": "train", "val": "val", "test": "test"}


def read(annotations_path: str, media_dir: str, split: str) -> list[ClipAnnotation]:
    """Reads one AudioCaps CSV file, grouping the captions of each clip.

    Args:
      annotations_path: the split's CSV file.
      media_dir: the folder searched (recursively) for the clips' media files.
      split: 'train', 'val' or 'test'.

    Returns:
      One annotation per (youtube_id, start_time), in order of first appearance.

    Raises:
      ValueError: an unknown split or a missing column.
    """
    common.resolve_split(NAME, split, _SPLITS)
    _, rows = common.read_csv_dicts(annotations_path, ("youtube_id", "start_time", "caption"))
    captions: dict[tuple[str, str], list[str]] = {}  # Insertion order is first appearance.
    for row in rows:
        key = (row["youtube_id"].strip(), row["start_time"].strip())
        captions.setdefault(key, []).append(common.clean_caption(row["caption"]))
    media = common.MediaIndex(media_dir)
    clips = []
    for (youtube_id, start_time), texts in captions.items():
        clip_id = f"{youtube_id}_{start_time}"
        path = media.find(clip_id, youtube_id, f"Y{youtube_id}") or f"{youtube_id}.wav"
        clips.append(ClipAnnotation(clip_id=clip_id, path=path, captions=tuple(texts)))
    return common.check_unique_ids(NAME, clips)
