"""What a dataset adapter returns: one annotation per clip, independent of the source format."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class ClipAnnotation:
    """One clip to prepare.

    Attributes:
      clip_id: unique within the split; records, manifests and exports are keyed by it.
      path: the media file (absolute, or relative to the preparation's media_dir).
      captions: every caption of the clip (may be empty for unlabelled clips).
      start, end: the clip's span in seconds within the file; None means the file's
        start or end.
    """

    clip_id: str
    path: str
    captions: tuple[str, ...]
    start: float | None = None
    end: float | None = None
