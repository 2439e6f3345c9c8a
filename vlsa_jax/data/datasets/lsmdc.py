"""`lsmdc`: the Large Scale Movie Description Challenge (LSMDC 2016) clips.

Reads the tab-separated annotation files of the release (`LSMDC16_annos_training.csv`,
`..._val.csv`, `..._test.csv`, `LSMDC16_challenge_1000_publictect.csv`): no
header, one clip per line, with the columns clip_id, start_aligned,
end_aligned, start_extracted, end_extracted, sentence. Lines are split at tabs
rather than parsed as CSV, because sentences contain quote characters that are
not CSV quoting; a sentence holding a tab keeps it (only the first five tabs
separate columns).

Each annotation file is one split, so `split` ('train', 'val' or 'test') is
only checked to be a known name. The release cuts every clip to its own file,
`<movie>/<clip_id>.avi`, where movie is the clip id without its trailing
`_HH.MM.SS.mmm-HH.MM.SS.mmm` span (e.g. '0001_American_Beauty_00.00.51.926-00.00.54.129'
is in '0001_American_Beauty'), so start and end are None: the timestamp
columns place the clip within the movie, not within its file.
"""
import re

from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.data.datasets import common

NAME = "lsmdc"
_SPLITS = {"train": "train", "val": "val", "test": "test"}
_NUM_COLUMNS = 6
_SPAN = re.compile(r"_\d+\.\d+\.\d+\.\d+-\d+\.\d+\.\d+\.\d+$")


def read(annotations_path: str, media_dir: str, split: str) -> list[ClipAnnotation]:
    """Reads one LSMDC 2016 annotation file.

    Args:
      annotations_path: the tab-separated file of the split.
      media_dir: unused; media paths are `<movie>/<clip_id>.avi`.
      split: 'train', 'val' or 'test'.

    Returns:
      One annotation (one caption) per line, in file order.

    Raises:
      ValueError: an unknown split, a line with fewer than six columns, a clip
        id without the timestamp span, or a repeated clip id.
    """
    del media_dir  # Media names follow from the clip ids.
    common.resolve_split(NAME, split, _SPLITS)
    clips = []
    for number, line in common.read_lines(annotations_path):
        columns = line.split("\t", _NUM_COLUMNS - 1)
        if len(columns) < _NUM_COLUMNS:
            raise ValueError(f"{annotations_path}:{number}: expected {_NUM_COLUMNS} "
                             f"tab-separated columns, found {len(columns)}")
        clip_id = columns[0].strip()
        clips.append(ClipAnnotation(clip_id=clip_id, path=f"{movie_of(clip_id)}/{clip_id}.avi",
                                    captions=(common.clean_caption(columns[-1]),)))
    return common.check_unique_ids(NAME, clips)


def movie_of(clip_id: str) -> str:
    """The movie folder of a clip: its id without the trailing timestamp span.

    Raises:
      ValueError: the id does not end with a span.
    """
    movie, found = _SPAN.subn("", clip_id)
    if not found:
        raise ValueError(f"{NAME}: clip id {clip_id!r} does not end with a "
                         "'_HH.MM.SS.mmm-HH.MM.SS.mmm' span")
    return movie
