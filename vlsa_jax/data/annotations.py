"""What a dataset adapter returns: one annotation per clip, independent of the source format."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class ClipAnnotation:
    """One clip to prepare.

    Attributes:
      clip_id: unique within the split; records, manifests and exports are keyed by it.
      path: the media file, relative to the preparation's media_dir, or absolute. The
        preparation refuses a path that leads out of media_dir (an absolute path
        elsewhere, or '..') unless told to allow it.
      captions: every caption of the clip (may be empty for unlabelled clips). Bytes
        of the annotation file that are not UTF-8 are kept as lone surrogates
        (errors='surrogateescape'); the preparation refuses or replaces them.
      start, end: the clip's span in seconds within the file; None means the file's
        start or end.
    """

    clip_id: str
    path: str
    captions: tuple[str, ...]
    start: float | None = None
    end: float | None = None
