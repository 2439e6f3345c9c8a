"""Pictures of a run, written to `workdir/pictures/`: `draw_all(config, workdir)`.

training_curves.png  every loss term, and R@1 on the first eval split, over the steps
reconstructions.png  masked input / decoder output / target of a few clips (LPMM runs)
tsne.png             t-SNE of video and text embeddings, matching vs non-matching pairs
                     (the paper's Fig. 5)

Clips and embeddings come from the first split of `config.eval.splits`; the model is
the newest checkpoint of `workdir`, restored on one device.
"""
import dataclasses
import math
import pathlib
import re

import einops
import jax
import matplotlib
import numpy as np
from absl import logging
from flax import nnx
from sklearn.manifold import TSNE

from vlsa_jax import eval_protocol, evaluate, export, metric_writers, state
from vlsa_jax.data import pipeline, records
from vlsa_jax.modalities import AUDIO, TEXT, TEXT_MASK, VIDEO
from vlsa_jax.models.vlsa import model_inputs, token_grids
from vlsa_jax.objective import mask_modalities

matplotlib.use("Agg")  # files only: no display needed, none opened
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 100
NUM_CLIPS = 3  # rows of reconstructions.png
NUM_FRAMES_SHOWN = 2  # video frames per clip in reconstructions.png
MAX_PAIRS = 100  # matching pairs in tsne.png, and as many non-matching ones
MASKED_GREY = 0.5

# (panel title, y label, which metrics.jsonl keys it plots)
LOSS_PANELS = (
    ("total loss", "loss", re.compile(r"loss(/local|/global)?")),
    ("local terms (LPMM)", "loss", re.compile(r"local/.+")),
    ("global terms (GAM)", "loss", re.compile(r"global/.+/(nce|match)")),
)
# The retrieval panel's reference line: the demo's bar for learning.
CHANCE_MULTIPLE = 10


def draw_all(config, workdir) -> list[pathlib.Path]:
    """Writes every picture that the run's files allow; returns their paths.

    A picture whose inputs are missing (no metrics yet, no eval split, no decoder
    when LPMM is off, no video or text) is left out and the reason logged.
    """
    workdir = pathlib.Path(workdir)
    out = workdir / "pictures"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    specs = eval_protocol.parse_split_specs(config.eval.splits)
    metrics_file = workdir / "metrics.jsonl"
    if metrics_file.exists():
        written.append(draw_training_curves(metrics_file, out / "training_curves.png",
                                            specs[0].name if specs else None))
    else:
        logging.info("no training_curves.png: %s does not exist", metrics_file)

    if not specs:
        logging.info("no reconstructions.png or tsne.png: config.eval.splits is empty")
        return written
    split = specs[0]
    run = state.load_params(config, workdir, one_device=True)
    if config.loss.lpmm:
        written.append(draw_reconstructions(run, split.path, out / "reconstructions.png"))
    else:
        logging.info("no reconstructions.png: loss.lpmm is off, so no decoder was trained")
    embeddings = video_and_text_embeddings(run, workdir, split)
    if embeddings is None:
        pass  # the reason is logged
    elif len(np.unique(embeddings.text_clip)) < 2:
        logging.info("no tsne.png: fewer than two captioned clips, so no non-matching pair")
    else:
        written.append(draw_tsne(embeddings, out / "tsne.png"))
    return written


# ----------------------------------------------------------------------------------
# Training curves.


def read_metrics(path: pathlib.Path) -> dict[str, dict[int, float]]:
    """{metric: {step: value}} from metrics.jsonl (unreadable lines skipped, with a
    warning); where a step is logged twice the later line wins."""
    series = {}
    for scalars in metric_writers.read_metrics(path):
        step = scalars.pop("step")
        for name, value in scalars.items():
            series.setdefault(name, {})[step] = value
    return series


def retrieval_keys(series, split: str | None) -> list[str]:
    """The R@1 series of `split` (every split when None), one per direction.

    In the order the sweep logs them; the dual-softmax rows are left out: they re-rank
    the same embeddings.
    """
    split_pattern = re.escape(split) if split else r"[^/]+"
    pattern = re.compile(rf"eval/{split_pattern}/[^/]+/R@1")
    return [k for k in series if pattern.fullmatch(k)]


def draw_training_curves(metrics_file: pathlib.Path, path: pathlib.Path,
                         split: str | None = None) -> pathlib.Path:
    """Draws every loss term and retrieval R@1 over the steps.

    One panel per group of LOSS_PANELS that has a key in the file, and one of retrieval
    R@1 on `split` (the run's first eval split) over the steps it was evaluated at, with
    CHANCE_MULTIPLE x chance drawn where the gallery size is logged.
    """
    series = read_metrics(metrics_file)
    panels = [(title, ylabel, sorted(k for k in series if pattern.fullmatch(k)))
              for title, ylabel, pattern in LOSS_PANELS]
    recall = retrieval_keys(series, split)
    panels.append((f"retrieval on {split}" if split else "retrieval", "R@1 (%)", recall))
    panels = [p for p in panels if p[2]]
    columns = min(len(panels), 2) or 1
    rows = max(math.ceil(len(panels) / columns), 1)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.6 * rows),
                             squeeze=False, layout="constrained")
    for ax, (title, ylabel, names) in zip(axes.flat, panels):
        for name in names:
            steps = sorted(series[name])
            label = name.removeprefix("eval/").removesuffix("/R@1")
            # Markers: a term logged once is still a visible point.
            ax.plot(steps, [series[name][s] for s in steps], ".-", markersize=4,
                    label=label.removeprefix(f"{split}/") if split else label)
        if split and names is recall:
            draw_chance_multiple(ax, series, names)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
        ax.grid(alpha=0.3)
        if len(names) > 6:  # beside the panel: inside, it would hide the curves
            ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
        else:
            ax.legend(fontsize="small")
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    if not panels:
        axes[0, 0].text(0.5, 0.5, f"no loss terms in {metrics_file.name}", ha="center")
    fig.suptitle(f"training curves ({metrics_file.name})")
    return _save(fig, path)


def draw_chance_multiple(ax, series, recall_keys) -> None:
    """Draws a dashed line at CHANCE_MULTIPLE x chance R@1 (100 / gallery size).

    Only when every direction of the panel has one gallery size, as the demo's splits do.
    """
    galleries = {value for key in recall_keys
                 for value in series.get(key.removesuffix("R@1") + "num_gallery", {}).values()}
    if len(galleries) == 1:
        ax.axhline(CHANCE_MULTIPLE * 100 / galleries.pop(), color="grey", linestyle="--",
                   linewidth=1, label=f"{CHANCE_MULTIPLE}x chance")


# ----------------------------------------------------------------------------------
# Reconstructions.


def masked_reconstructions(params, batch, key, *, graphdef, config):
    """Masks `batch` as a training step does and decodes it from LPMM's joint pass.

    The same calls as `objective.pretraining_loss` with `local_losses`: the mask
    of `mask_modalities`, one joint encoder pass over every masked modality (text
    included, so the decoder sees the context it was trained with), one decoder
    per modality.

    The loss compares prediction and target as they are (normalised frames, normalised
    spectrogram; no per-patch normalisation), so they are comparable as they are.

    Returns:
      {'video' | 'audio': (mask [B, N] float, 1 = dropped, prediction [B, N, patch_dim],
      target [B, N, patch_dim])}.
    """
    model = nnx.merge(graphdef, params)
    inputs = model_inputs(batch, config)
    text_valid = batch[TEXT_MASK].astype(bool) if TEXT in inputs else None
    masked = mask_modalities(model, inputs, text_valid, key, config)
    joint = model.encode({m: (mm.tokens, mm.valid) for m, mm in masked.items()})
    return {m: (masked[m].loss_mask,
                model.reconstruct(m, joint[m], masked[m].ids_restore, None), inputs[m])
            for m in (VIDEO, AUDIO) if m in masked}


def first_clips(config, split_dir, count: int):
    """The split's first `count` clips, preprocessed as for evaluation.

    Centre crop, centre frames and each clip's first caption.

    Returns:
      (batch, clip ids).
    """
    source = pipeline.split_source(config, split_dir)
    preprocess = pipeline.Preprocessor(config, config.data.modalities, training=False)
    indices = range(min(count, len(source)))
    examples = [preprocess(source[i]) for i in indices]
    batch = {name: np.stack([e[name] for e in examples]) for name in examples[0]}
    return batch, [records.decode_record(source[i]).clip_id for i in indices]


def unpatchify_video(patches, config) -> np.ndarray:
    """[B, T*h*w, p*p*3] normalised patches -> [B, T, H, W, 3] RGB in [0, 1]."""
    v = config.video
    frames = einops.rearrange(
        np.asarray(patches), "b (t h w) (p1 p2 c) -> b t (h p1) (w p2) c",
        t=v.num_frames, h=v.size // v.patch, p1=v.patch, p2=v.patch)
    return np.clip(frames * np.asarray(v.std) + np.asarray(v.mean), 0.0, 1.0)


def video_pixel_mask(mask, config) -> np.ndarray:
    """[B, T*h*w] patch mask -> [B, T, H, W, 1] bool, True on dropped pixels."""
    v = config.video
    return einops.repeat(np.asarray(mask) > 0, "b (t h w) -> b t (h p1) (w p2) 1",
                         t=v.num_frames, h=v.size // v.patch, p1=v.patch, p2=v.patch)


def unpatchify_audio(patches, config) -> np.ndarray:
    """[B, (time/p)*(freq/p), p*p] -> [B, freq, time]: frequency up the rows, for imshow."""
    p = config.audio.patch
    return einops.rearrange(np.asarray(patches), "b (t f) (p1 p2) -> b (f p2) (t p1)",
                            t=token_grids(config)[AUDIO][0], p1=p, p2=p)


def audio_pixel_mask(mask, config) -> np.ndarray:
    """[B, (time/p)*(freq/p)] patch mask -> [B, freq, time] bool, True on dropped bins."""
    p = config.audio.patch
    return einops.repeat(np.asarray(mask) > 0, "b (t f) -> b (f p2) (t p1)",
                         t=token_grids(config)[AUDIO][0], p1=p, p2=p)


def draw_reconstructions(run: state.LoadedParams, split_dir, path: pathlib.Path) -> pathlib.Path:
    """Draws the decoder's reconstructions of the split's first clips.

    Rows: clips. Per modality (spectrogram, then frames): masked input, the input's
    visible patches with the decoder's prediction in the dropped ones, target.
    """
    config = run.config
    batch, clip_ids = first_clips(config, split_dir, NUM_CLIPS)
    decode = jax.jit(lambda params, batch, key: masked_reconstructions(
        params, batch, key, graphdef=run.graphdef, config=config))
    decoded = decode(run.params, batch, jax.random.key(config.seed))

    # (group title, [masked, visible + predicted, target] images [B, ...], imshow style)
    groups = []
    columns = ("masked", "visible + predicted", "target")
    if AUDIO in decoded:
        mask, prediction, target = decoded[AUDIO]
        dropped = audio_pixel_mask(mask, config)
        spectrogram = unpatchify_audio(target, config)
        filled = np.where(dropped, unpatchify_audio(prediction, config), spectrogram)
        cmap = matplotlib.colormaps["magma"].with_extremes(bad=(MASKED_GREY,) * 3)
        style = {"cmap": cmap, "origin": "lower", "aspect": "auto",
                 "vmin": float(spectrogram.min()), "vmax": float(spectrogram.max())}
        groups.append(("spectrogram (time →, frequency ↑)",
                       [np.ma.masked_array(spectrogram, dropped), filled, spectrogram], style))
    if VIDEO in decoded:
        mask, prediction, target = decoded[VIDEO]
        dropped = video_pixel_mask(mask, config)
        frames = unpatchify_video(target, config)
        filled = np.where(dropped, unpatchify_video(prediction, config), frames)
        masked_frames = np.where(dropped, MASKED_GREY, frames)
        shown = np.linspace(0, config.video.num_frames - 1, NUM_FRAMES_SHOWN).round().astype(int)
        for t in shown:
            groups.append((f"video frame {t + 1} of {config.video.num_frames}",
                           [masked_frames[:, t], filled[:, t], frames[:, t]], {}))

    num_clips = len(clip_ids)
    fig = plt.figure(figsize=(3.6 * len(groups), 1.2 * num_clips + 0.9), layout="constrained")
    for subfig, (title, images, style) in zip(np.atleast_1d(fig.subfigures(1, len(groups))),
                                              groups):
        axes = subfig.subplots(num_clips, len(columns), squeeze=False)
        subfig.suptitle(title, fontsize="medium")
        for row in range(num_clips):
            for column, image in enumerate(images):
                ax = axes[row, column]
                ax.imshow(image[row], interpolation="nearest", **style)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(columns[column], fontsize="small")
                if column == 0:
                    ax.set_ylabel(clip_ids[row], fontsize="small")
    fig.suptitle(f"masked modelling at step {run.step} (grey: dropped patches, "
                 f"video {config.masking.video_ratio:.0%}, audio {config.masking.audio_ratio:.0%})")
    return _save(fig, path)


# ----------------------------------------------------------------------------------
# t-SNE of video and text embeddings.


@dataclasses.dataclass
class VideoTextEmbeddings:
    """A split's video and text embeddings, unit-norm rows.

    Attributes:
      video: [N, D], row i = clip i.
      text: [M, D], row j describing clip text_clip[j].
      text_clip: [M] int.
      origin: where they come from, for the title.
    """

    video: np.ndarray
    text: np.ndarray
    text_clip: np.ndarray
    origin: str


def read_exported(workdir, split_name: str) -> VideoTextEmbeddings | None:
    """The split's embeddings as `vlsa_jax.export` wrote them, or None if it did not."""
    export_dir = pathlib.Path(workdir) / "export"
    if not export.has_split(export_dir, split_name):
        return None
    exported = export.read(export_dir, split_name)
    if not {VIDEO, TEXT} <= set(exported.embeddings):
        return None
    return VideoTextEmbeddings(
        exported.embeddings[VIDEO], exported.embeddings[TEXT], exported.text_clip_rows(),
        f"exported embeddings, step {exported.step}")


def video_and_text_embeddings(run: state.LoadedParams, workdir, split) -> VideoTextEmbeddings | None:
    """The split's exported embeddings if there are, else embedded here.

    None (and the reason logged) when the run or the split has no video or no text.
    """
    exported = read_exported(workdir, split.name)
    if exported is not None:
        return exported
    available = set(run.config.data.modalities) & set(records.Manifest.load(split.path).modalities)
    if not {"v", "t"} <= available:
        logging.info("no tsne.png: %s with data.modalities %r has no video or no text",
                     split.path, run.config.data.modalities)
        return None
    embedder = evaluate.Embedder(run.config, run.mesh, run.graphdef, run.shardings)
    embedded = embedder.split(run.params, split.path, "vt")
    return VideoTextEmbeddings(embedded.clips[VIDEO], embedded.captions, embedded.caption_clip,
                               f"step {run.step}")


def choose_pairs(text_clip: np.ndarray, rng: np.random.Generator, max_pairs: int):
    """Draws clips with a matching and a non-matching caption each.

    Up to `max_pairs` clips with a caption; each gets one of its own captions and one
    caption of another clip, both drawn uniformly.

    Returns:
      (clips [P], matching caption rows [P], non-matching caption rows [P]).
    """
    candidates = np.unique(text_clip)
    clips = np.sort(rng.choice(candidates, min(len(candidates), max_pairs), replace=False))
    matching = [rng.choice(np.flatnonzero(text_clip == c)) for c in clips]
    non_matching = [rng.choice(np.flatnonzero(text_clip != c)) for c in clips]
    return clips, np.array(matching), np.array(non_matching)


def tsne_2d(points: np.ndarray) -> np.ndarray:
    """[n, D] -> [n, 2]; perplexity scaled down for the few points of a small split."""
    perplexity = max(1.0, min(30.0, (len(points) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0)
    return tsne.fit_transform(points)


def draw_tsne(embeddings: VideoTextEmbeddings, path: pathlib.Path) -> pathlib.Path:
    """Draws one t-SNE of the chosen videos and captions.

    Two panels join the matching and the non-matching pairs. Each title gives the pairs'
    mean cosine, measured before t-SNE (whose distances are only locally faithful).
    """
    video, text = embeddings.video, embeddings.text
    clips, matching, non_matching = choose_pairs(
        embeddings.text_clip, np.random.default_rng(0), MAX_PAIRS)
    captions = np.unique(np.concatenate([matching, non_matching]))
    xy = tsne_2d(np.concatenate([video[clips], text[captions]]))
    video_xy, text_xy = xy[:len(clips)], xy[len(clips):]
    text_at = {row: i for i, row in enumerate(captions)}

    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True,
                             layout="constrained")
    for ax, rows, kind in ((axes[0], matching, "matching"), (axes[1], non_matching,
                                                             "non-matching")):
        partner_xy = text_xy[[text_at[r] for r in rows]]
        segments = np.stack([video_xy, partner_xy], axis=1)  # [P, 2 ends, xy]
        ax.add_collection(LineCollection(
            segments, colors="0.6", linewidths=0.7, label=f"{kind} pair"))
        ax.scatter(*video_xy.T, s=22, marker="o", color="tab:blue", label="video", zorder=3)
        ax.scatter(*text_xy.T, s=26, marker="^", color="tab:orange", label="text", zorder=3)
        cosine = np.mean(np.sum(video[clips] * text[rows], axis=1))
        ax.set(title=f"{kind} pairs (n={len(clips)}, mean cosine {cosine:.2f})",
               xlabel="t-SNE 1", ylabel="t-SNE 2")
        ax.legend(fontsize="small", loc="best")
    fig.suptitle(f"video and text embeddings ({embeddings.origin})")
    return _save(fig, path)


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
