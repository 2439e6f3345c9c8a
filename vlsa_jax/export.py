"""--mode=export: the retrieval embeddings of every `config.eval.splits` split, to NumPy.

    python -m vlsa_jax.main --config=FILE --workdir=DIR --mode=export

writes into DIR/export/:

    <split>_video.npy, <split>_audio.npy   [clips, D] float32, unit rows, record order
    <split>_text.npy                       [captions, D] float32, unit rows
    <split>_ids.json     {"clips": [clip id per video/audio row],
                          "text": [[clip id, caption index] per text row],
                          "captions": [caption per text row]}
    manifest.json        checkpoint and step, config hash, files and their shapes
    config.json          the run config, so that queries are embedded the same way

Plain .npy and JSON: load with `np.load(path, allow_pickle=False)`, or the whole of a
split with `read(DIR/export, split)`.
"""
import dataclasses
import hashlib
import json
import pathlib

import jax
import numpy as np
from absl import logging

from vlsa_jax import eval_protocol, evaluate
from vlsa_jax.data import pipeline, records
from vlsa_jax.modalities import AUDIO, TEXT, VIDEO

MANIFEST = "manifest.json"
CONFIG = "config.json"
_MODALITIES = (VIDEO, AUDIO, TEXT)


@dataclasses.dataclass
class ExportedSplit:
    """One split of an export folder, as `export_checkpoint` wrote it.

    Attributes:
      embeddings: 'video' / 'audio' / 'text' -> [rows, D] unit rows.
      clips: the clip id of each video and audio row.
      text: (clip id, caption index) of each text row.
      captions: the caption of each text row.
      step: that of the checkpoint the embeddings come from.
    """

    embeddings: dict[str, np.ndarray]
    clips: list[str]
    text: list[tuple[str, int]]
    captions: list[str]
    step: int

    def text_clip_rows(self) -> np.ndarray:
        """[text rows] int: the video/audio row of each caption's clip."""
        row_of = {clip: i for i, clip in enumerate(self.clips)}
        return np.array([row_of[clip] for clip, _ in self.text], dtype=int)


def _ids_file(export_dir: pathlib.Path, split: str) -> pathlib.Path:
    return export_dir / f"{split}_ids.json"


def has_split(export_dir, split: str) -> bool:
    """Whether the export folder holds `split`."""
    return _ids_file(pathlib.Path(export_dir), split).exists()


def read(export_dir, split: str) -> ExportedSplit:
    """The embeddings and ids of `split` in the export folder `export_dir`.

    Raises:
      FileNotFoundError: naming the folder and the splits it does hold.
    """
    export_dir = pathlib.Path(export_dir)
    if not has_split(export_dir, split):
        held = sorted(p.name.removesuffix("_ids.json") for p in export_dir.glob("*_ids.json"))
        raise FileNotFoundError(f"{export_dir}: no export of split {split!r}; it holds "
                                f"{', '.join(held) or 'none'}")
    ids = json.loads(_ids_file(export_dir, split).read_text())
    embeddings = {m: np.load(path, allow_pickle=False) for m in _MODALITIES
                  if (path := export_dir / f"{split}_{m}.npy").exists()}
    step = json.loads((export_dir / MANIFEST).read_text())["step"]
    return ExportedSplit(embeddings, ids["clips"], [tuple(t) for t in ids["text"]],
                         ids["captions"], step)


def config_hash(config) -> str:
    """sha256 of the config as sorted JSON: equal hashes, equal configs."""
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def split_captions(config, split_dir) -> list[list[str]]:
    """Every clip's captions, in record order."""
    source = pipeline.split_source(config, split_dir)
    return [records.decode_record(source[i]).captions for i in range(len(source))]


def export_checkpoint(config, workdir) -> pathlib.Path:
    """Embeds every split of `config.eval.splits` and writes them under `workdir/export`."""
    loaded = evaluate.load_for_inference(config, workdir)
    params, step_dir = loaded.params, loaded.step_dir
    embedder = evaluate.Embedder(config, loaded.mesh, loaded.graphdef, loaded.shardings)
    out = pathlib.Path(workdir) / "export"
    files, splits = {}, {}
    for spec in eval_protocol.parse_split_specs(config.eval.splits):
        split_modalities = records.Manifest.load(spec.path).modalities
        modalities = "".join(m for m in config.data.modalities if m in split_modalities)
        embeddings = embedder.split(params, spec.path, modalities)
        if jax.process_index() != 0:
            continue
        out.mkdir(parents=True, exist_ok=True)
        splits[spec.name] = spec.path
        arrays = {m: embeddings.clips[m] for m in (VIDEO, AUDIO) if m in embeddings.clips}
        if embeddings.captions is not None:
            arrays[TEXT] = embeddings.captions
        for modality, rows in arrays.items():
            name = f"{spec.name}_{modality}.npy"
            np.save(out / name, rows.astype(np.float32), allow_pickle=False)
            files[name] = list(rows.shape)
        captions = split_captions(config, spec.path) if TEXT in arrays else []
        ids = {"clips": embeddings.clip_ids,
               "text": [[embeddings.clip_ids[c], int(k)] for c, k in
                        zip(embeddings.caption_clip, embeddings.caption_index)],
               "captions": [captions[c][k] for c, k in
                            zip(embeddings.caption_clip, embeddings.caption_index)]}
        _ids_file(out, spec.name).write_text(json.dumps(ids))
        files[_ids_file(out, spec.name).name] = None
        logging.info("exported %s: %s", spec.name,
                     ", ".join(f"{m} {rows.shape}" for m, rows in arrays.items()))
    if jax.process_index() == 0:
        manifest = {"checkpoint": str(step_dir.resolve()), "step": loaded.step,
                    "config_hash": config_hash(config), "splits": splits, "files": files}
        (out / CONFIG).write_text(json.dumps(config.to_dict(), indent=2))
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        print(f"exported the embeddings of step {loaded.step} to {out}")
    return out
