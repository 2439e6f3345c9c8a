"""`generic`: clips listed in a CSV or JSON Lines file, for data with no public format.

The format is chosen by the file's extension:

* `.csv`: a header naming the columns `id`, `path` and either `caption` (one
  caption) or `captions` (captions separated by '|'), and optionally `start`,
  `end` (seconds; an empty cell means the file's start or end) and `split`.
  An empty caption cell is one empty caption; list clips without captions in
  JSON Lines with `"captions": []`.
* `.jsonl`: one object per line with `id`, `path`, and either `caption` (a
  string) or `captions` (a list of strings), and optionally `start`, `end`
  (numbers or null) and `split`. Blank lines are skipped.

Paths are used as written: relative ones stay relative to the media folder,
which the preparation joins; it refuses a path that leads out of the folder
(absolute elsewhere, or through '..') unless `--allow_outside_media_dir` is
given. `split` is ignored when the file has no split (no `split` column, no
object with a `split` key). Otherwise only rows of the requested split are
read; a row with an empty split belongs to no split, so a clip never leaks into
every split.
"""
import json
import os
from typing import Any

from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.data.datasets import common

NAME = "generic"
_CAPTION_SEPARATOR = "|"


def read(annotations_path: str, media_dir: str, split: str) -> list[ClipAnnotation]:
    """Reads a generic CSV or JSONL annotation file.

    Args:
      annotations_path: a `.csv` or `.jsonl` file.
      media_dir: unused; paths are taken as written.
      split: the split to read, when the file has a split column or key.

    Returns:
      One annotation per row of the split, in file order.

    Raises:
      ValueError: an unknown extension, a missing or ambiguous column or key, a
        malformed value, a split the file does not have, or a repeated id.
    """
    del media_dir  # Paths are listed explicitly.
    extension = os.path.splitext(annotations_path)[1].lower()
    if extension == ".csv":
        has_splits, rows = _read_csv(annotations_path)
    elif extension == ".jsonl":
        has_splits, rows = _read_jsonl(annotations_path)
    else:
        raise ValueError(f"{NAME}: {annotations_path} is neither .csv nor .jsonl")
    if has_splits:
        splits = sorted({row["split"] for row in rows if row["split"]})
        if split not in splits:
            raise ValueError(f"{NAME}: {annotations_path} has no split {split!r}; valid "
                             f"splits: {', '.join(splits) or '(none)'}")
        rows = [row for row in rows if row["split"] == split]
    return common.check_unique_ids(NAME, (_clip(row) for row in rows))


def _read_csv(path: str) -> tuple[bool, list[dict[str, Any]]]:
    """(whether the file has a split column, normalised rows)."""
    header, raw_rows = common.read_csv_dicts(path, ("id", "path"))
    caption_key = _caption_key(path, header)
    rows = []
    for number, row in enumerate(raw_rows, start=1):
        text = row[caption_key]
        captions = text.split(_CAPTION_SEPARATOR) if caption_key == "captions" else [text]
        rows.append(_row(f"{path} row {number}", row, captions))
    return "split" in header, rows


def _read_jsonl(path: str) -> tuple[bool, list[dict[str, Any]]]:
    """(whether any object has a split key, normalised rows)."""
    rows, has_splits = [], False
    for number, line in common.read_lines(path):
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON ({e})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object")
        missing = [key for key in ("id", "path") if key not in obj]
        if missing:
            raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
        key = _caption_key(where, obj.keys())
        captions = obj[key]
        if key == "captions" and not isinstance(captions, list):
            raise ValueError(f"{where}: 'captions' must be a list of strings")
        if key == "caption":
            if not (captions is None or isinstance(captions, str)):
                raise ValueError(f"{where}: 'caption' must be a string")
            captions = [captions]
        has_splits = has_splits or "split" in obj
        rows.append(_row(where, obj, captions))
    return has_splits, rows


def _caption_key(where: str, keys) -> str:
    """'caption' or 'captions', whichever of the two the row or header has."""
    found = [key for key in ("caption", "captions") if key in keys]
    if len(found) != 1:
        raise ValueError(f"{where}: need exactly one of 'caption' and 'captions', found "
                         f"{found or 'neither'}")
    return found[0]


def _row(where: str, raw: dict[str, Any], captions: list[Any]) -> dict[str, Any]:
    """A CSV or JSONL row in one shape: the fields of a clip, its split and location."""
    split = raw.get("split")
    return {
        "where": where,
        "id": str(raw["id"]),
        "path": str(raw["path"]),
        "captions": tuple(common.clean_caption(c) for c in captions),
        "start": raw.get("start"),
        "end": raw.get("end"),
        "split": "" if split is None else str(split),
    }


def _clip(row: dict[str, Any]) -> ClipAnnotation:
    where = row["where"]
    return ClipAnnotation(
        clip_id=row["id"],
        path=row["path"],
        captions=row["captions"],
        start=common.optional_float(row["start"], f"{where} start"),
        end=common.optional_float(row["end"], f"{where} end"),
    )
