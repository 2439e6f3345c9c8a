"""The retrieval sweep: embed every clip and caption of a split once, score every direction.

    python -m vlsa_jax.main --config=FILE --workdir=DIR --mode=eval

Each modality is embedded by its unimodal pass through the shared encoder (the
model's `global_embeddings`), sharded over the mesh, every clip and caption exactly
once. Scores are cosines; ranks and metrics come from `vlsa_jax.metrics`, block by
block. Results go to `DIR/eval/<split>/metrics.json` and to the run's metrics
(`eval/<split>/<direction>/R@1`, ...). The protocol in full: docs/retrieval.md.
"""
import dataclasses
import functools
import json
import pathlib

import jax
import numpy as np
import tqdm
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from vlsa_jax import eval_protocol, metric_writers, metrics, sharding, state
from vlsa_jax.config_lib import ConfigError
from vlsa_jax.config_validation import validate_config
from vlsa_jax.data import pipeline, records
from vlsa_jax.losses import l2_normalize
from vlsa_jax.modalities import (
    AUDIO, CAPTION_INDEX, CLIP_INDEX, FUSED, TEXT, TEXT_IDS, TEXT_MASK, VIDEO, VIDEO_CROP)
from vlsa_jax.models.vlsa import model_inputs

@dataclasses.dataclass
class SplitEmbeddings:
    """Unit-norm float32 embeddings of one split, rows in record order.

    Attributes:
      clip_ids: [N] the clip id of each record.
      clips: modality ('video', 'audio', 'video+audio') -> [N, D], row i = clip i.
      captions: [M, D], or None when the captions were not embedded.
      caption_clip: [M] int, the clip each caption row describes.
      caption_index: [M] int, which of that clip's captions it is.
    """

    clip_ids: list[str]
    clips: dict[str, np.ndarray]
    captions: np.ndarray | None
    caption_clip: np.ndarray
    caption_index: np.ndarray


def embed_batch(params, batch, *, graphdef, config):
    """One batch -> {modality: [B, D] unit-norm float32}: the unimodal passes of retrieval."""
    model = nnx.merge(graphdef, params)
    text_valid = batch[TEXT_MASK].astype(bool) if TEXT_MASK in batch else None
    embeddings = model.global_embeddings(model_inputs(batch, config), text_valid)
    return {name: l2_normalize(x) for name, x in embeddings.items()}


def fuse(video: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """The fused clip embedding: the sum of the unit video and audio embeddings, re-normalised."""
    total = video + audio
    return total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)


class Embedder:
    """Embeds whole splits with one jitted, mesh-sharded unimodal pass per input kind."""

    def __init__(self, config, mesh, graphdef, param_shardings):
        self._config, self._mesh = config, mesh
        self._embed = jax.jit(
            functools.partial(embed_batch, graphdef=graphdef, config=config),
            in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
            out_shardings=sharding.batch_sharding(mesh))

    def split(self, params, split_dir, modalities: str | None = None,
              captions: bool = True) -> SplitEmbeddings:
        """Embeds the clips and the captions of a prepared split.

        Args:
          params: the model's parameters, in their shardings.
          split_dir: the split's directory.
          modalities: letters of the modalities to read and embed; None for
            `config.data.modalities`. The split need not carry the others.
          captions: whether to embed the captions (when `modalities` includes text).

        Returns:
          The split's embeddings; `clips` holds 'video+audio' when both are embedded.
        """
        config = self._config.copy_and_resolve_references()
        if modalities is not None:
            # Read only what is asked for: the split need not carry the others.
            config.data.modalities = modalities
        modalities = config.data.modalities
        local_batch = config.eval.batch_size // jax.process_count()
        args = (local_batch, jax.process_index(), jax.process_count())
        clips = {}
        if set(modalities) & set("av"):
            num_batches = -(-records.Manifest.load(split_dir).num_clips // local_batch)
            rows, index = self._embed_all(
                params, pipeline.evaluation_clips(config, split_dir, *args),
                [VIDEO, VIDEO_CROP, AUDIO], f"{pathlib.Path(split_dir).name} clips",
                num_batches)
            clips = {name: rows[name][np.argsort(index[CLIP_INDEX])] for name in rows}
            if VIDEO in clips and AUDIO in clips:
                clips[FUSED] = fuse(clips[VIDEO], clips[AUDIO])
        text, caption_clip, caption_index = None, np.zeros(0, int), np.zeros(0, int)
        if captions and "t" in modalities:
            rows, index = self._embed_all(
                params, pipeline.evaluation_captions(config, split_dir, *args), [TEXT_IDS],
                f"{pathlib.Path(split_dir).name} captions")
            order = np.lexsort((index[CAPTION_INDEX], index[CLIP_INDEX]))
            text = rows[TEXT][order]
            caption_clip = index[CLIP_INDEX][order]
            caption_index = index[CAPTION_INDEX][order]
        return SplitEmbeddings(split_clip_ids(config, split_dir), clips, text, caption_clip,
                               caption_index)

    def _embed_all(self, params, batches, input_keys, what: str, num_batches=None):
        """Embeds every batch of `batches`, feeding the model their `input_keys` only.

        A progress bar (process 0) counts the batches of `what`, with an ETA when
        `num_batches` is known.

        Returns:
          ({modality: rows}, {'clip_index', ...: rows}), valid rows only, gathered from
          every process.
        """
        outputs, indices = [], []
        for batch in tqdm.tqdm(batches, desc=f"embedding {what}", total=num_batches,
                               unit="batch", leave=False,
                               disable=jax.process_index() != 0):
            inputs = {k: v for k, v in batch.items()
                      if k in input_keys or (k == TEXT_MASK and TEXT_IDS in input_keys)}
            embedded = self._embed(params, sharding.global_batch(inputs, self._mesh))
            index = {k: v for k, v in batch.items() if k.endswith("_index") or k == "valid"}
            outputs.append(multihost_utils.process_allgather(embedded, tiled=True))
            indices.append(multihost_utils.process_allgather(index, tiled=True))
        valid = np.concatenate([i["valid"] for i in indices])
        rows = {name: np.concatenate([o[name] for o in outputs])[valid].astype(np.float32)
                for name in outputs[0]}
        index = {name: np.concatenate([i[name] for i in indices])[valid]
                 for name in indices[0] if name != "valid"}
        return rows, index


def split_clip_ids(config, split_dir) -> list[str]:
    """The clip id of every record of a split, in record order."""
    source = pipeline.split_source(config, split_dir)
    return [records.decode_record(source[i]).clip_id for i in range(len(source))]


def gallery_and_queries(embeddings: SplitEmbeddings, direction: str, caption_mode: str,
                        distractors: SplitEmbeddings | None = None):
    """The queries and the gallery of one direction, with their labels.

    Labels are clip indices: a query's correct items are the gallery rows of its
    clip. Distractor rows get negative labels, which no query has.

    Args:
      embeddings: the split's embeddings.
      direction: a key of `eval_protocol.DIRECTIONS`.
      caption_mode: 'all' captions, or each clip's 'first' caption only.
      distractors: another split whose clips join the gallery, never correct.

    Returns:
      (queries, query_labels, gallery, gallery_labels).
    """
    def side(modality, split):
        if modality == TEXT:
            keep = split.caption_index == 0 if caption_mode == "first" else slice(None)
            return split.captions[keep], split.caption_clip[keep]
        rows = split.clips[modality]
        return rows, np.arange(len(rows))

    query_modality, gallery_modality = eval_protocol.DIRECTIONS[direction]
    queries, query_labels = side(query_modality, embeddings)
    gallery, gallery_labels = side(gallery_modality, embeddings)
    if distractors is not None and gallery_modality in distractors.clips:
        extra = distractors.clips[gallery_modality]
        gallery = np.concatenate([gallery, extra])
        gallery_labels = np.concatenate([gallery_labels, -1 - np.arange(len(extra))])
    return queries, query_labels, gallery, gallery_labels


def score_split(embeddings: SplitEmbeddings, directions, eval_config,
                distractors: SplitEmbeddings | None = None) -> dict[str, float]:
    """Scores every direction of a split.

    Returns:
      `<direction>/R@1` ... `<direction>/MnR`, `/num_queries`, `/num_gallery` per
      direction, and the same under `dual_softmax/<direction>/...` when
      `eval_config.dual_softmax` is on.
    """
    results = {}
    for direction in directions:
        queries, query_labels, gallery, gallery_labels = gallery_and_queries(
            embeddings, direction, eval_config.caption_mode, distractors)
        variants = [("", None)]
        if eval_config.dual_softmax:
            variants.append(("dual_softmax/", eval_config.dual_softmax_temperature))
        for prefix, temperature in variants:
            ranks = metrics.block_ranks(
                queries, gallery, query_labels, gallery_labels,
                block_size=eval_config.block_size, dual_softmax_temperature=temperature)
            for name, value in metrics.retrieval_metrics(ranks).items():
                results[f"{prefix}{direction}/{name}"] = value
            results[f"{prefix}{direction}/num_queries"] = len(queries)
            results[f"{prefix}{direction}/num_gallery"] = len(gallery)
    return results


class Evaluator:
    """Runs the sweep of `config.eval` on given parameters; used by --mode=eval and training."""

    def __init__(self, config, mesh, graphdef, param_shardings):
        self._config = config
        self._embedder = Embedder(config, mesh, graphdef, param_shardings)
        self.specs = eval_protocol.parse_split_specs(config.eval.splits)

    def run(self, params, step: int, workdir) -> dict[str, dict[str, float]]:
        """Scores every split; writes `workdir/eval/<split>/metrics.json` (process 0)."""
        config = self._config
        results = {}
        for spec in self.specs:
            split_modalities = records.Manifest.load(spec.path).modalities
            modalities = "".join(m for m in config.data.modalities if m in split_modalities)
            directions = [d for d in eval_protocol.parse_directions(config.eval.directions)
                          if eval_protocol.supported(d, modalities)]
            embeddings = self._embedder.split(params, spec.path, modalities)
            distractors = None
            if spec.distractor_path:
                distractors = self._embedder.split(
                    params, spec.distractor_path,
                    "".join(m for m in modalities if m in spec.distractor_modalities),
                    captions=False)
            results[spec.name] = score_split(embeddings, directions, config.eval, distractors)
            if jax.process_index() == 0:
                out = pathlib.Path(workdir) / "eval" / spec.name
                out.mkdir(parents=True, exist_ok=True)
                header = {"step": step, "split_dir": spec.path,
                          "distractors": spec.distractor_path, "protocol": config.eval.protocol,
                          "caption_mode": config.eval.caption_mode}
                (out / "metrics.json").write_text(
                    json.dumps(header | results[spec.name], indent=2))
        return results


def as_scalars(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """{'eval/<split>/<direction>/R@1': value, ...} for the run's metric writer."""
    return {f"eval/{split}/{key}": value for split, scores in results.items()
            for key, value in scores.items()}


def format_table(results: dict[str, dict[str, float]]) -> str:
    """One table of every split and direction, recall in percent."""
    columns = [f"R@{k}" for k in metrics.RECALL_KS] + ["MdR", "MnR"]
    lines = [f"{'split':<14} {'direction':<22}" + "".join(f"{c:>8}" for c in columns)
             + f"{'queries':>9}{'gallery':>9}"]
    for split, scores in results.items():
        # Directions in the config's order, dual-softmax rows after the plain ones.
        rows = sorted(dict.fromkeys(key.rsplit("/", 1)[0] for key in scores),
                      key=lambda r: r.startswith("dual_softmax/"))
        for row in rows:
            label = row.replace("dual_softmax/", "") + (" (dual softmax)" if "/" in row else "")
            lines.append(
                f"{split:<14} {label:<22}"
                + "".join(f"{scores[f'{row}/{c}']:>8.1f}" for c in columns)
                + f"{scores[f'{row}/num_queries']:>9d}{scores[f'{row}/num_gallery']:>9d}")
    return "\n".join(lines)


def log_summary(results, step: int) -> None:
    """Logs R@1 of every direction, one line per split (the whole table is the
    evaluation's own output, printed once)."""
    for split, scores in results.items():
        recalls = ", ".join(f"{key.removesuffix('/R@1')} {value:.1f}"
                            for key, value in scores.items()
                            if key.endswith("/R@1") and not key.startswith("dual_softmax/"))
        logging.info("step %d, retrieval R@1 on %s: %s", step, split, recalls)



def load_for_inference(config, workdir) -> state.LoadedParams:
    """Validates the config and loads the parameters to embed with.

    `config` takes, in place, the audio normalisation the checkpoint was trained with
    (`state.audio_norm_of_checkpoint`): the sweep and the export read it from there.

    Returns:
      The parameters of `config.eval.checkpoint`, or of the newest checkpoint of
      `workdir`.

    Raises:
      ConfigError: the config is invalid, or `eval.splits` is empty.
    """
    validate_config(config, jax.device_count())
    if not config.eval.splits:
        raise ConfigError("eval.splits", "empty; name the prepared splits to embed "
                          "(comma-separated directories)")
    loaded = state.load_params(
        config, config.eval.checkpoint or pathlib.Path(workdir) / "checkpoints")
    config.audio.norm_mean = loaded.config.audio.norm_mean
    config.audio.norm_std = loaded.config.audio.norm_std
    return loaded


def evaluate_checkpoint(config, workdir, print_table: bool = True) -> dict[str, dict[str, float]]:
    """--mode=eval: the sweep of `config.eval` on a checkpoint; prints and records the table."""
    loaded = load_for_inference(config, workdir)
    step = loaded.step
    evaluator = Evaluator(config, loaded.mesh, loaded.graphdef, loaded.shardings)
    results = evaluator.run(loaded.params, step, workdir)
    if print_table and jax.process_index() == 0:
        print(f"retrieval at step {step} ({config.eval.protocol}, captions: "
              f"{config.eval.caption_mode})\n{format_table(results)}")
    writer = metric_writers.MetricWriter(str(workdir))
    writer.write(step, as_scalars(results))
    writer.close()
    return results
