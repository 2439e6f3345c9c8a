"""Helpers every dataset adapter shares: file reading, media lookup and checks.

Annotation files are decoded as UTF-8 with errors='surrogateescape': a few
public releases carry stray Latin-1 or Windows-1252 bytes, and each such byte
becomes a lone surrogate (U+DC80..U+DCFF) in the field it is in, so one bad
caption neither poisons the file nor is silently altered. The preparation
decides per clip what to do with it (`utf8_error`, `replace_invalid_utf8`). A
leading byte-order mark (CSV files saved by spreadsheets) is removed.
"""
import csv
import io
import json
import os
import pathlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from vlsa_jax.data.annotations import ClipAnnotation

# Extensions (lower case) of the files a media index holds; anything else in a
# media folder (metadata, partial downloads, thumbnails) is not media.
MEDIA_EXTENSIONS = frozenset({
    ".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac",
    ".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".flv", ".3gp",
})

# Code points no valid UTF-8 text holds: surrogateescape's escaped bytes, and the
# unpaired surrogates a JSON '\uDXXX' escape can give.
_SURROGATE = re.compile("[\ud800-\udfff]")


def read_text(path: str | os.PathLike) -> str:
    """The whole file as text: UTF-8, invalid bytes escaped, no byte-order mark.

    A byte that is not UTF-8 becomes the lone surrogate U+DC00 + byte
    (errors='surrogateescape'), which `utf8_error` finds in the field it ends up in.
    Newlines are not translated, so the csv module sees line breaks inside quoted
    fields as they are.
    """
    with open(path, "rb") as f:
        return f.read().decode("utf-8-sig", errors="surrogateescape")


def utf8_error(text: str) -> str | None:
    """Why `text` (as `read_text` decoded it) is not valid UTF-8, or None if it is.

    Returns:
      e.g. 'byte 0xe9 at character 3 is not UTF-8', for the first invalid byte.
    """
    found = _SURROGATE.search(text)
    if found is None:
        return None
    code = ord(found.group())
    if 0xDC80 <= code <= 0xDCFF:
        what = f"byte 0x{code - 0xDC00:02x}"
    else:
        what = f"unpaired surrogate U+{code:04X}"
    return f"{what} at character {found.start()} is not UTF-8"


def replace_invalid_utf8(text: str) -> str:
    """`text` with U+FFFD in place of each byte (or unpaired surrogate) that is not UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, decoded like `read_text`."""
    return json.loads(read_text(path))


def read_csv_dicts(path: str | os.PathLike,
                   required: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """The header of a CSV file, and its rows as dicts keyed by column name.

    Missing trailing cells read as ''; cells beyond the header are dropped.

    Args:
      path: the CSV file.
      required: columns that must be in the header.

    Raises:
      ValueError: a required column is missing (named, with the header found).
    """
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), restval="")
    header = list(reader.fieldnames or [])
    missing = [name for name in required if name not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; header is {header}")
    return header, [{k: v for k, v in row.items() if k is not None} for row in reader]


def read_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line break) for each non-blank line.

    Only '\n' and '\r\n' end a line: str.splitlines would also split at form
    feeds or Unicode separators that may occur inside a caption.
    """
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield number, line


def clean_caption(text: Any) -> str:
    """A caption without surrounding whitespace; None (a missing value) becomes ''.

    Empty captions are kept rather than dropped, so a clip's caption count and
    order always match its source.
    """
    return "" if text is None else str(text).strip()


def optional_float(value: Any, what: str) -> float | None:
    """A time in seconds, or None for an empty cell or a JSON null.

    Raises:
      ValueError: the value is not a number (with `what` naming where it was).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {value!r} is not a time in seconds") from None


def resolve_split(dataset: str, split: str, names: Mapping[str, str]) -> str:
    """The source's own name for `split` (e.g. 'val' -> 'validation').

    Raises:
      ValueError: `split` is not a key of `names`; the message lists the keys.
    """
    if split not in names:
        raise ValueError(f"{dataset}: unknown split {split!r}; valid splits: {', '.join(names)}")
    return names[split]


def check_unique_ids(dataset: str, clips: Iterable[ClipAnnotation]) -> list[ClipAnnotation]:
    """The clips as a list, after checking that no clip id repeats.

    Records and manifests are keyed by clip id, so a repeated id would silently
    overwrite a clip.

    Raises:
      ValueError: naming the first repeated id.
    """
    clips = list(clips)
    seen = set()
    for clip in clips:
        if clip.clip_id in seen:
            raise ValueError(f"{dataset}: duplicate clip id {clip.clip_id!r}")
        seen.add(clip.clip_id)
    return clips


class MediaIndex:
    """The media files under a folder (searched recursively), found by file stem.

    Public releases name media files by a video id but differ in extension and
    folder layout (YouCook2 keeps subset/recipe subfolders, AudioSet-style
    downloads prefix ids with 'Y'), so adapters look files up by stem. The folder
    is walked once; paths are relative to it, with '/' separators. When several
    files share a stem, the lexicographically smallest path wins, so the choice
    does not depend on the order the file system lists folders in. Symbolic links
    to files are indexed; links to folders are not followed (a link cycle would
    never end). A missing folder gives an empty index: every lookup misses and
    the adapter falls back to its default name, which the preparation then
    reports as missing.
    """

    def __init__(self, media_dir: str | os.PathLike):
        self._paths: dict[str, str] = {}
        for root, dirs, files in os.walk(media_dir):
            dirs.sort()
            for name in sorted(files):
                stem, extension = os.path.splitext(name)
                if extension.lower() not in MEDIA_EXTENSIONS:
                    continue
                path = pathlib.Path(os.path.relpath(os.path.join(root, name), media_dir)).as_posix()
                if stem not in self._paths or path < self._paths[stem]:
                    self._paths[stem] = path

    def __len__(self) -> int:
        return len(self._paths)

    def find(self, *stems: str) -> str | None:
        """The path of the first of `stems` that names a media file, else None."""
        for stem in stems:
            if stem in self._paths:
                return self._paths[stem]
        return None
