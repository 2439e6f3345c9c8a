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

Plain .npy and JSON: load with `np.load(path, allow_pickle=False)`.
"""
import hashlib
import json
import pathlib

import jax
import numpy as np
from absl import logging

from vlsa_jax import eval_protocol, evaluate
from vlsa_jax.data import pipeline, records

MANIFEST = "manifest.json"
CONFIG = "config.json"


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
    mesh, graphdef, params, step_dir = evaluate.load_for_inference(config, workdir)
    embedder = evaluate.Embedder(config, mesh, graphdef, jax.tree.map(lambda x: x.sharding, params))
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
        arrays = {m: embeddings.clips[m] for m in ("video", "audio") if m in embeddings.clips}
        if embeddings.captions is not None:
            arrays["text"] = embeddings.captions
        for modality, rows in arrays.items():
            name = f"{spec.name}_{modality}.npy"
            np.save(out / name, rows.astype(np.float32), allow_pickle=False)
            files[name] = list(rows.shape)
        captions = split_captions(config, spec.path) if "text" in arrays else []
        ids = {"clips": embeddings.clip_ids,
               "text": [[embeddings.clip_ids[c], int(k)] for c, k in
                        zip(embeddings.caption_clip, embeddings.caption_index)],
               "captions": [captions[c][k] for c, k in
                            zip(embeddings.caption_clip, embeddings.caption_index)]}
        (out / f"{spec.name}_ids.json").write_text(json.dumps(ids))
        files[f"{spec.name}_ids.json"] = None
        logging.info("exported %s: %s", spec.name,
                     ", ".join(f"{m} {rows.shape}" for m, rows in arrays.items()))
    if jax.process_index() == 0:
        manifest = {"checkpoint": str(step_dir.resolve()), "step": int(step_dir.name),
                    "config_hash": config_hash(config), "splits": splits, "files": files}
        (out / CONFIG).write_text(json.dumps(config.to_dict(), indent=2))
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        print(f"exported the embeddings of step {step_dir.name} to {out}")
    return out
