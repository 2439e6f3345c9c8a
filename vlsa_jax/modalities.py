"""The names of the modalities and of the batch arrays that carry them.

Data, models, evaluation and export all speak of modalities by these names, so each
is defined once here, below every other module of the package.

A batch is a dict of arrays with a leading batch axis:
  'video'      [B, T, H, W, 3] uint8 RGB frames (or square canvases, with 'video_crop')
  'video_crop' [B, 2] int32: the crop's side and a mirror flag, resized on the device
  'audio'      [B, time, freq] float32 normalised spectrogram
  'text_ids'   [B, L] int32 token ids, 0 on padding
  'text_mask'  [B, L] int32, 1 on real tokens
  'clip_index', 'caption_index' [B] int32: where an evaluation row comes from
A modality that a batch lacks is simply absent.
"""

VIDEO, TEXT, AUDIO = "video", "text", "audio"
# Order of the modalities in the joint sequence (paper Eq. 3).
MODALITIES = (VIDEO, TEXT, AUDIO)
# Video and audio fused for retrieval: the normalised sum of their unit embeddings.
FUSED = "video+audio"
# The letters of `config.data.modalities` that each modality needs ('va' for FUSED).
LETTERS = {VIDEO: "v", AUDIO: "a", TEXT: "t", FUSED: "va"}

VIDEO_CROP = "video_crop"
TEXT_IDS, TEXT_MASK = "text_ids", "text_mask"
CLIP_INDEX, CAPTION_INDEX = "clip_index", "caption_index"


def modalities_of(letters: str) -> tuple[str, ...]:
    """'avt' -> ('video', 'text', 'audio'), in joint-sequence order."""
    return tuple(m for m in MODALITIES if LETTERS[m] in letters)
