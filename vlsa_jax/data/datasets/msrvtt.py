"""`msrvtt`: MSR-VTT, 10k web videos with 20 captions each (2017: 3k more test videos).

Three public formats are read:

* The official JSON, `{"videos": [{"video_id": "video0", "split": "train",
  "start time": .., "end time": .., ...}], "sentences": [{"video_id": "video0",
  "caption": "...", "sen_id": 0}, ...]}`. `annotations_path` is either one such
  file or a folder holding `videodatainfo.json` (MSR-VTT 2016, all splits) or,
  when that is absent, 2017's `train_val_videodatainfo.json` and
  `test_videodatainfo.json`, read together. A video's captions are grouped in
  `sen_id` order; a video without sentences (a test file released without them)
  gets no captions. Splits 'train', 'val' and 'test' select the videos whose
  split is 'train', 'validate' and 'test' (6,513, 497 and 2,990 videos).
* The JSFusion 1k-A test list `MSRVTT_JSFUSION_test.csv` (columns key, vid_key,
  video_id, sentence: 1000 videos, one caption each), for split '1k-A'. It is
  chosen by the '.csv' extension, or found in an annotation folder; other
  columns, such as a leading index, are ignored.
* The 9k training list `MSRVTT_train.9k.csv` (column video_id; CLIP4Clip's
  release), for split '9k': the training split of JSFusion and its successors
  (Frozen, CLIP4Clip, ...), MSR-VTT 2016's 10,000 videos less the 1,000 of the
  1k-A test list, drawn from all three official splits. Split '9k' is read from
  an annotation folder holding the JSON, which gives every caption of each
  video (in `sen_id` order), and the 9k list, which says which videos are in
  the split: each must be a video of the JSON and, when the 1k-A list is there
  too, none may be in it (training on a test video would void the 1k-A
  results). Without the 9k list the split is every video of MSR-VTT 2016's
  `videodatainfo.json` outside the 1k-A list, all of whose videos must be in
  the JSON; 2017's two files are refused there, as they hold 3k test videos
  outside the 10k.

The media file of a video is `<video_id>.mp4`, as in the official download.
The videos are cut from YouTube already, so "start time" and "end time" (their
place in the YouTube source) are not clip bounds: start and end are None.
"""
import os
from collections.abc import Iterable, Sequence

from absl import logging

from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.data.datasets import common

NAME = "msrvtt"
JSFUSION_FILE = "MSRVTT_JSFUSION_test.csv"
TRAIN_9K_FILE = "MSRVTT_train.9k.csv"
_JSFUSION_SPLIT = "1k-A"
_9K_SPLIT = "9k"
_SPLITS = {"train": "train", "val": "validate", "test": "test", _JSFUSION_SPLIT: "",
           _9K_SPLIT: ""}
COMBINED_FILE = "videodatainfo.json"
_SPLIT_FILES = ("train_val_videodatainfo.json", "test_videodatainfo.json")
_NAMED_IDS = 5  # video ids an error message names before it counts the rest


def read(annotations_path: str, media_dir: str, split: str) -> list[ClipAnnotation]:
    """Reads MSR-VTT's official JSON, the JSFusion 1k-A CSV, or the 9k training split.

    Args:
      annotations_path: a `*videodatainfo.json` file, a folder holding them (and,
        for splits '1k-A' and '9k', the lists), or `MSRVTT_JSFUSION_test.csv`.
      media_dir: unused; media paths are `<video_id>.mp4`.
      split: 'train', 'val' or 'test' for the JSON; '1k-A' for the CSV or a folder
        holding it; '9k' for a folder holding the JSON and `MSRVTT_train.9k.csv` or
        `MSRVTT_JSFUSION_test.csv`.

    Returns:
      One annotation per video: in file order; for '9k', in the 9k list's order,
      or the JSON's when the split is derived from the 1k-A list.

    Raises:
      ValueError: an unknown split, a split the given file does not hold, no
        annotation file in the folder, a repeated video id, or for '9k': neither
        list in the folder, a 9k list naming videos the JSON lacks or videos of the
        1k-A list, or a 1k-A list naming videos the JSON lacks.
    """
    del media_dir  # Media names follow from the video ids.
    if str(annotations_path).lower().endswith(".csv"):
        if split == _9K_SPLIT:
            return _read_9k(annotations_path)  # Refuses the file, naming the folder it needs.
        common.resolve_split(NAME, split, {_JSFUSION_SPLIT: _JSFUSION_SPLIT})
        return _read_jsfusion(annotations_path)
    source_split = common.resolve_split(NAME, split, _SPLITS)
    if split == _JSFUSION_SPLIT:
        return _read_jsfusion(_list_in_folder(annotations_path, JSFUSION_FILE, split))
    if split == _9K_SPLIT:
        return _read_9k(annotations_path)
    videos, sentences = _read_json(_json_files(annotations_path))
    video_ids = [v["video_id"] for v in videos if v["split"] == source_split]
    return _clips(video_ids, sentences)


def _list_in_folder(annotations_path: str, name: str, split: str) -> str:
    """The path of list `name` in the annotation folder `annotations_path`."""
    path = os.path.join(annotations_path, name)
    if not os.path.isdir(annotations_path):
        raise ValueError(f"{NAME}: split {split!r} is read from {name} or a folder holding "
                         f"it, not from {annotations_path}")
    if not os.path.isfile(path):
        raise ValueError(f"{NAME}: split {split!r} needs {name} in {annotations_path}")
    return path


def _read_9k(folder: str) -> list[ClipAnnotation]:
    """The 9k training split: the 9k list's videos, or the JSON's outside the 1k-A list."""
    if not os.path.isdir(folder):
        raise ValueError(f"{NAME}: split {_9K_SPLIT!r} is read from the annotation folder "
                         f"(the JSON and {TRAIN_9K_FILE} or {JSFUSION_FILE}), not from {folder}")
    nine_k_path = os.path.join(folder, TRAIN_9K_FILE)
    jsfusion_path = os.path.join(folder, JSFUSION_FILE)
    has_9k, has_1k_a = os.path.isfile(nine_k_path), os.path.isfile(jsfusion_path)
    if not (has_9k or has_1k_a):
        raise ValueError(f"{NAME}: split {_9K_SPLIT!r} needs {TRAIN_9K_FILE} (the 9k training "
                         f"list) or {JSFUSION_FILE} (the 1k-A test list, whose complement it "
                         f"is) in {folder}; found neither")
    json_files = _json_files(folder)
    videos, sentences = _read_json(json_files)
    all_ids = [v["video_id"] for v in videos]
    test_ids = [clip.clip_id for clip in _read_jsfusion(jsfusion_path)] if has_1k_a else []
    json_names = " and ".join(os.path.basename(p) for p in json_files)
    excluded = set(test_ids)
    derived = [video_id for video_id in all_ids if video_id not in excluded]
    from_2016 = json_files == [os.path.join(folder, COMBINED_FILE)]
    if has_9k:
        _, rows = common.read_csv_dicts(nine_k_path, ("video_id",))
        video_ids = [row["video_id"].strip() for row in rows]
        _check_subset(video_ids, all_ids, f"{TRAIN_9K_FILE} names videos not in {json_names}")
        leaked = excluded.intersection(video_ids)
        if leaked:
            raise ValueError(f"{NAME}: {TRAIN_9K_FILE} names videos of the 1k-A test list "
                             f"{JSFUSION_FILE}, which training must not see: "
                             f"{_name_ids([v for v in video_ids if v in leaked])}")
        if has_1k_a and from_2016 and set(video_ids) != set(derived):
            logging.warning("%s: %s lists %d videos, not the %d of %s outside the 1k-A list; "
                            "using the list", NAME, nine_k_path, len(set(video_ids)),
                            len(derived), COMBINED_FILE)
        return _clips(video_ids, sentences)
    if not from_2016:
        raise ValueError(f"{NAME}: split {_9K_SPLIT!r} without {TRAIN_9K_FILE} is derived from "
                         f"MSR-VTT 2016's {COMBINED_FILE}, which {folder} lacks (2017's files "
                         f"add test videos outside the 10k); add {TRAIN_9K_FILE} or "
                         f"{COMBINED_FILE}")
    _check_subset(test_ids, all_ids,
                  f"{JSFUSION_FILE} names videos not in {json_names} (is it MSR-VTT 2016's?)")
    return _clips(derived, sentences)


def _check_subset(video_ids: Sequence[str], known: Iterable[str], problem: str) -> None:
    """Raises ValueError('msrvtt: <problem>: <ids>') if some of `video_ids` are not `known`."""
    known = set(known)
    unknown = [video_id for video_id in video_ids if video_id not in known]
    if unknown:
        raise ValueError(f"{NAME}: {problem}: {_name_ids(unknown)}")


def _name_ids(video_ids: Sequence[str]) -> str:
    """The first few ids, quoted, and how many more there are."""
    named = ", ".join(repr(v) for v in video_ids[:_NAMED_IDS])
    more = len(video_ids) - _NAMED_IDS
    return f"{named} and {more} more" if more > 0 else named


def _json_files(annotations_path: str) -> list[str]:
    """The JSON file itself, or the annotation files of a folder."""
    if not os.path.isdir(annotations_path):
        return [annotations_path]
    for names in ((COMBINED_FILE,), _SPLIT_FILES):
        paths = [os.path.join(annotations_path, n) for n in names]
        paths = [p for p in paths if os.path.isfile(p)]
        if paths:
            return paths
    raise ValueError(f"{NAME}: {annotations_path} holds none of "
                     f"{', '.join((COMBINED_FILE,) + _SPLIT_FILES)}")


def _read_json(paths: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """The videos and the sentences of the JSON files, in file order."""
    videos, sentences = [], []
    for path in paths:
        data = common.read_json(path)
        videos += data["videos"]
        sentences += data.get("sentences", [])
    return videos, sentences


def _clips(video_ids: Sequence[str], sentences: Iterable[dict]) -> list[ClipAnnotation]:
    """One clip per video id, with every caption of the video in `sen_id` order."""
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


def _read_jsfusion(path: str) -> list[ClipAnnotation]:
    _, rows = common.read_csv_dicts(path, ("video_id", "sentence"))
    return common.check_unique_ids(NAME, (_clip(r["video_id"], [r["sentence"]]) for r in rows))


def _clip(video_id: str, captions: list[str]) -> ClipAnnotation:
    return ClipAnnotation(clip_id=video_id, path=f"{video_id}.mp4",
                          captions=tuple(common.clean_caption(c) for c in captions))
