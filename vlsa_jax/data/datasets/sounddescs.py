"""`sounddescs`: SoundDescs, BBC sound effects with their descriptions (audio and text).

SoundDescs releases its descriptions as Python pickles (`descriptions.pkl`,
`categories.pkl`), which are not read here: unpickling runs arbitrary code. The
adapter reads the CSV export of them instead: a header with the columns `id`
and `description` (a `category` column, when present, is ignored), one row per
sound, whose media file is `<id>.wav`. Ids are kept as text, so leading zeros
survive.

The split lists of the benchmark, `train_list.txt`, `val_list.txt` and
`test_list.txt` (one id per line), are looked for next to the CSV: when the
requested split's list is there, only its ids are read (in CSV order);
otherwise every row is.
"""
import os

from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.data.datasets import common

NAME = "sounddescs"
_SPLITS = {"train": "train_list.txt", "val": "val_list.txt", "test": "test_list.txt"}


def read(annotations_path: str, media_dir: str, split: str) -> list[ClipAnnotation]:
    """Reads the SoundDescs CSV export, filtered by the split's id list if present.

    Args:
      annotations_path: the CSV file (id, description[, category]).
      media_dir: unused; media paths are `<id>.wav`.
      split: 'train', 'val' or 'test'.

    Returns:
      One annotation (one caption) per sound of the split, in CSV order.

    Raises:
      ValueError: an unknown split, a missing column or a repeated id.
    """
    del media_dir  # Media names follow from the ids.
    list_path = os.path.join(os.path.dirname(annotations_path),
                             common.resolve_split(NAME, split, _SPLITS))
    _, rows = common.read_csv_dicts(annotations_path, ("id", "description"))
    clips = (ClipAnnotation(clip_id=row["id"].strip(), path=f"{row['id'].strip()}.wav",
                            captions=(common.clean_caption(row["description"]),))
             for row in rows)
    if os.path.isfile(list_path):
        wanted = {line.strip() for _, line in common.read_lines(list_path)}
        clips = (clip for clip in clips if clip.clip_id in wanted)
    return common.check_unique_ids(NAME, clips)
