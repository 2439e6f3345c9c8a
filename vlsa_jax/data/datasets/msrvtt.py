"""`msrvtt`: MSR-VTT, 10k web videos with 20 captions each (2017: 3k more test videos).

Two public formats are read:

* The official JSON, `{"videos": [{"video_id": "video0", "split": "train",
  "start time": .., "end time": .., ...}], "sentences": [{"video_id": "video0",
  "caption": "...", "sen_id": 0}, ...]}`. `annotations_path` is either one such
  file or a folder holding `videodatainfo.json` (MSR-VTT 2016, all splits) or,
  when that is absent, 2017's `train_val_videodatainfo.json` and
  `test_videodatainfo.json`, read together. A video's captions are grouped in
  `sen_id` order; a video without sentences (a test file released without them)
  gets no captions. Splits 'train', 'val' and 'test' select the videos whose
  split is 'train', 'validate' and 'test'.
* The JSFusion 1k-A test list `MSRVTT_JSFUSION_test.csv` (columns key, vid_key,
  video_id, sentence: 1000 videos, one caption each), for split '1k-A'. It is
  chosen by the '.csv' extension; other columns, such as a leading index, are
  ignored.

The media file of a video is `<video_id>.mp4`, as in the official download.
The videos are cut from YouTube already, so "start time" and "end time" (their
place in the YouTube source) are not clip bounds: start and end are None.
"""
import os

from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.data.datasets import common

NAME = "msrvtt"
_JSFUSION_SPLIT = "1k-A"
_SPLITS = {"train": "train", "val": "validate", "test": "test", _JSFUSION_SPLIT: ""}
_COMBINED_FILE = "videodatainfo.json"
_SPLIT_FILES = ("train_val_videodatainfo.json", "test_videodatainfo.json")


def read(annotations_path: str, media_dir: str, split: str) -> list[ClipAnnotation]:
    """Reads MSR-VTT's official JSON, or the JSFusion 1k-A CSV.

    Args:
      annotations_path: a `*videodatainfo.json` file, a folder holding them, or
        `MSRVTT_JSFUSION_test.csv`.
      media_dir: unused; media paths are `<video_id>.mp4`.
      split: 'train', 'val' or 'test' for the JSON; '1k-A' for the CSV.

    Returns:
      One annotation per video, in file order.

    Raises:
      ValueError: an unknown split, a split the given file does not hold, no
        annotation file in the folder, or a repeated video id.
    """
    del media_dir  # Media names follow from the video ids.
    if str(annotations_path).lower().endswith(".csv"):
        common.resolve_split(NAME, split, {_JSFUSION_SPLIT: _JSFUSION_SPLIT})
        return _read_jsfusion(annotations_path)
    source_split = common.resolve_split(NAME, split, _SPLITS)
    if split == _JSFUSION_SPLIT:
        raise ValueError(f"{NAME}: split {_JSFUSION_SPLIT!r} is read from the JSFusion list "
                         f"MSRVTT_JSFUSION_test.csv, not from {annotations_path}")
    videos, sentences = [], []
    for path in _json_files(annotations_path):
        data = common.read_json(path)
        videos += data["videos"]
        sentences += data.get("sentences", [])
    video_ids = [v["video_id"] for v in videos if v["split"] == source_split]
    captions = {video_id: [] for video_id in video_ids}
    for sentence in sentences:
        if sentence["video_id"] in captions:
            captions[sentence["video_id"]].append(sentence)
    clips = []
    for video_id in video_ids:
        # sorted() is stable: sentences without sen_id keep their file order.
        ordered = sorted(captions[video_id], key=lambda s: s.get("sen_id", 0))
        clips.append(_clip(video_id, [s["caption"] for s in ordered]))
    return common.check_unique_ids(NAME, clips)


def _json_files(annotations_path: str) -> list[str]:
    """The JSON file itself, or the annotation files of a folder."""
    if not os.path.isdir(annotations_path):
        return [annotations_path]
    for names in ((_COMBINED_FILE,), _SPLIT_FILES):
        paths = [os.path.join(annotations_path, n) for n in names]
        paths = [p for p in paths if os.path.isfile(p)]
        if paths:
            return paths
    raise ValueError(f"{NAME}: {annotations_path} holds none of "
                     f"{', '.join((_COMBINED_FILE,) + _SPLIT_FILES)}")


def _read_jsfusion(path: str) -> list[ClipAnnotation]:
    _, rows = common.read_csv_dicts(path, ("video_id", "sentence"))
    return common.check_unique_ids(NAME, (_clip(r["video_id"], [r["sentence"]]) for r in rows))


def _clip(video_id: str, captions: list[str]) -> ClipAnnotation:
    return ClipAnnotation(clip_id=video_id, path=f"{video_id}.mp4",
                          captions=tuple(common.clean_caption(c) for c in captions))
