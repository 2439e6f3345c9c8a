"""The demo run of `configs/demo.py`: corpus -> records -> pre-training -> sweep -> export.

`run_mode` is the config's runner (`config.runner`): `--mode=train` runs the whole demo,
`--mode=eval` and `--mode=export` the core's jobs on the demo's prepared splits.

Every stage is the project's own code path for real data, and every stage reuses what
an earlier run left: the corpus and records are kept, training resumes from the latest
checkpoint (and does nothing once it has reached `train.num_steps`).
"""
import dataclasses
import json
import pathlib
import time

import jax
import numpy as np
from absl import logging

from vlsa_jax import evaluate, export, jobs, metrics, state, train
from vlsa_jax.config_validation import validate_config
from vlsa_jax.data import prepare, records
from vlsa_jax.demo import probe
from vlsa_jax.demo.clip import (SHIFTED_SPLIT, SHIFTED_SUFFIX, TIMING_BLIND_V2A_R1,
                                SyncShapesOptions)
from vlsa_jax.demo.corpus import generate as generate_corpus
from vlsa_jax.modalities import AUDIO, VIDEO

# The records' splits: (annotation file stem, split key). The shifted sync_hard copies
# are their own split: the originals' audio distractors.
_SPLITS = (("train", "train"), ("test", "test"), ("sync_hard", "sync_hard"),
           ("sync_hard", SHIFTED_SPLIT))
# What video and audio share in SyncShapes (the shape sets the timbre, the colour the
# pitch, each bounce sounds a note), probed in their test embeddings.
PROBED_ATTRIBUTES = ("shape", "colour", "bounces")
CORPUS = "sync_shapes"  # the corpus's directory under demo.data_dir
# The config file that declares the `demo` section (config validation types it from here).
CONFIG_FILE = pathlib.Path(__file__).resolve().parents[2] / "configs" / "demo.py"


def corpus_options(demo) -> SyncShapesOptions:
    """The corpus that the config's `demo` section asks for (no val split)."""
    return SyncShapesOptions(
        seconds=demo.seconds, fps=demo.fps, size=demo.frame_size,
        sample_rate=demo.sample_rate, num_train=demo.num_train, num_val=0,
        num_test=demo.num_test, num_sync_hard=demo.num_sync_hard, seed=demo.seed)


def prepare_corpus(config, directory: pathlib.Path) -> pathlib.Path:
    """Generates SyncShapes and prepares its splits (each step skipped if already done)."""
    corpus = directory / CORPUS
    generate_corpus(corpus, corpus_options(config.demo), num_workers=config.demo.workers,
                    progress=True)
    output = directory / "records"
    for stem, split in _SPLITS:
        if (output / split / records.MANIFEST).exists():
            continue
        # Train first: its captions train the WordPiece that every split then uses.
        prepare.prepare_split(
            config, "generic", str(corpus / f"{stem}.jsonl"), str(corpus), str(output), split,
            num_workers=config.demo.workers, clips_per_shard=64)
    return output


def configure(config, records_dir: pathlib.Path) -> None:
    """Points the config at the prepared splits.

    Training reads the train split; test, sync_hard (with its shifted copies' audio as
    distractors) and the shifted copies are evaluated every `demo.eval_every_steps`
    during training. The audio normalisation is filled in as training will (the train
    split's statistics), because the sweep compares a row's config with its saved one,
    and scores its untrained row, before any training does it.
    """
    config.data.train_split = str(records_dir / "train")
    shifted = records_dir / SHIFTED_SPLIT
    # sync_hard scored with its shifted copies' audio as distractors; the copies on
    # their own too, so that their embeddings are exported for the synchrony test.
    config.eval.splits = (f"{records_dir / 'test'},{records_dir / 'sync_hard'}+{shifted}:a,"
                          f"{shifted}")
    config.eval.every_steps = config.demo.eval_every_steps
    state.resolve_audio_norm(config)


def chance_r1(scores: dict[str, float]) -> dict[str, float]:
    """R@1 of a random ranking, per direction of one split's results.

    SyncShapes has one correct item per query, so chance R@1 is 100 / the gallery's size.

    Returns:
      {direction: percent}, the dual-softmax rows left out.
    """
    return {key.split("/")[0]: 100 / scores[key] for key in scores
            if key.endswith("/num_gallery") and not key.startswith("dual_softmax/")}


def synchrony_test(export_dir: pathlib.Path) -> dict[str, float]:
    """How far video->audio on sync_hard relies on timing, from the exported embeddings.

    Returns:
      Percentages:
        twin_accuracy: how often a video scores its own audio above the time-shifted
          copy (a timing-blind model: 50% at best).
        v2a_r1_without_copies: v2a R@1 among the originals alone.
        timing_blind_r1: the best v2a R@1 a model blind to timing can have with the
          copies in the gallery: half its R@1 among the originals alone (it places
          the twins alike, then picks one by chance).
        twin_first_r1: how often a video ranks its audio's shifted copy first of all
          2N audios, where the sweep's sync_hard v2a R@1 counts its own audio first. A
          model blind to timing in its video alone, not its audio, puts either first
          as often.
    """
    originals = export.read(export_dir, "sync_hard")
    copies = export.read(export_dir, SHIFTED_SPLIT)
    ids = originals.clips
    row = {clip: i for i, clip in enumerate(copies.clips)}
    twins = copies.embeddings[AUDIO][[row[clip + SHIFTED_SUFFIX] for clip in ids]]
    video, audio = originals.embeddings[VIDEO], originals.embeddings[AUDIO]
    own, twin = (video * audio).sum(axis=1), (video * twins).sum(axis=1)
    labels = np.arange(len(ids))
    alone = metrics.retrieval_metrics(metrics.ranks(video @ audio.T, labels, labels))["R@1"]
    both = np.concatenate([audio, twins])
    twin_first = metrics.retrieval_metrics(metrics.ranks(
        video @ both.T, labels + len(ids), np.arange(2 * len(ids))))["R@1"]
    return {"twin_accuracy": float(100 * np.mean(own > twin)),
            "v2a_r1_without_copies": alone,
            "timing_blind_r1": alone * TIMING_BLIND_V2A_R1,
            "twin_first_r1": twin_first}


def attribute_probe(export_dir: pathlib.Path, corpus_dir: pathlib.Path,
                    split: str = "test") -> dict[str, dict[str, float]]:
    """How well each of PROBED_ATTRIBUTES can be read from a split's exported embeddings.

    Returns:
      `probe.probe_attributes` of the split's video and audio embeddings.
    """
    rows = (json.loads(line) for line in (corpus_dir / f"{split}.jsonl").read_text().splitlines())
    attributes = {row["id"]: row["attributes"] for row in rows}
    exported = export.read(export_dir, split)
    return probe.probe_attributes(
        {m: exported.embeddings[m] for m in (VIDEO, AUDIO)},
        {name: [attributes[clip][name] for clip in exported.clips]
         for name in PROBED_ATTRIBUTES})


def summary(results, sync, probed, seconds: dict[str, float], workdir: pathlib.Path) -> str:
    """The demo's closing report: the table, R@1 over chance, synchrony, probes, timings."""
    lines = ["", evaluate.format_table(results), ""]
    for split, scores in results.items():
        ratios = ", ".join(f"{d} {scores[f'{d}/R@1'] / chance:.1f}x"
                           for d, chance in chance_r1(scores).items())
        lines.append(f"{split}: R@1 / chance: {ratios}")
    lines.append(
        f"sync_hard v2a R@1 {results['sync_hard']['v2a/R@1']:.1f} with the time-shifted copies "
        f"in the gallery; a model blind to timing reaches at most {sync['timing_blind_r1']:.1f} "
        f"(half of v2a R@1 {sync['v2a_r1_without_copies']:.1f} without them); its shifted "
        f"copy comes first for {sync['twin_first_r1']:.1f}%. Own audio above its shifted "
        f"copy: {sync['twin_accuracy']:.1f}% of videos (blind: 50%).")
    lines.append(f"What the test embeddings carry ({probe.FOLDS}-fold linear probe, accuracy %; "
                 "always guessing the commonest value in brackets):")
    for modality in ("video", "audio"):
        lines.append(f"  {modality}: " + ", ".join(
            f"{name} {100 * probed[modality][name]:.0f} ({100 * probed['majority'][name]:.0f})"
            for name in PROBED_ATTRIBUTES))
    lines.append("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    lines.append(f"written under {workdir}: checkpoints/, eval/<split>/metrics.json, "
                 "export/, pictures/, metrics.jsonl, tensorboard/")
    return "\n".join(lines)


def data_dir(config, workdir) -> pathlib.Path:
    """Where the corpus and records go: `demo.data_dir`, else `workdir/data`."""
    return pathlib.Path(config.demo.data_dir or pathlib.Path(workdir) / "data")


def run(config, workdir: str) -> dict[str, dict[str, float]]:
    """The whole demo; returns the sweep's results per split."""
    workdir = pathlib.Path(workdir)
    # Before the corpus: a config the devices cannot run fails in a second, not minutes.
    validate_config(config, jax.device_count())
    seconds, start = {}, time.perf_counter()
    records_dir = prepare_corpus(config, data_dir(config, workdir))
    seconds["corpus and records"] = time.perf_counter() - start
    configure(config, records_dir)

    start = time.perf_counter()
    train.train_and_evaluate(config, str(workdir))
    seconds["pre-training"] = time.perf_counter() - start

    start = time.perf_counter()
    results = evaluate.evaluate_checkpoint(config, workdir, print_table=False)
    export.export_checkpoint(config, workdir)
    seconds["evaluation and export"] = time.perf_counter() - start

    if config.demo.pictures and jax.process_index() == 0:
        from vlsa_jax.demo import pictures  # matplotlib only when drawing

        start = time.perf_counter()
        pictures.draw_all(config, workdir)
        seconds["pictures"] = time.perf_counter() - start
    if jax.process_index() == 0:
        sync = synchrony_test(workdir / "export")
        probed = attribute_probe(workdir / "export", data_dir(config, workdir) / CORPUS)
        print(summary(results, sync, probed, seconds, workdir))
        (workdir / "demo_summary.json").write_text(json.dumps(
            {"results": results, "synchrony": sync, "probe": probed, "seconds": seconds,
             "corpus": dataclasses.asdict(corpus_options(config.demo))}, indent=2))
    logging.info("demo done")
    return results


def run_mode(config, workdir: str, mode: str):
    """The runner of configs/demo.py: the whole demo for 'train', else the core's job.

    The core's jobs ('eval', 'export') run on the demo's prepared splits, whose audio
    statistics the model was trained with.
    """
    if mode == "train":
        return run(config, workdir)
    records_dir = data_dir(config, workdir) / "records"
    if not (records_dir / "train" / records.MANIFEST).exists():
        raise FileNotFoundError(
            f"{records_dir}: the demo's records are not there; run the demo first "
            f"(python -m vlsa_jax.demo --workdir={workdir})")
    configure(config, records_dir)
    return jobs.run_core(config, workdir, mode)
