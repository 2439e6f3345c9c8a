"""A small prepared split for the preparation and pipeline tests: real mp4 files, real records."""
import csv
import pathlib

from tests.helpers import load_config
from tests.media_fixtures import write_clip, write_empty, write_truncated
from vlsa_jax.data import prepare

GOOD_CLIPS = ("clip0", "clip1", "clip2", "clip3", "clip4", "clip5")
CAPTIONS = {
    "clip0": ["a red square bounces twice", "red square, two bounces"],
    "clip1": ["a blue circle slides left"],
    "clip2": ["a green triangle spins"],
    "clip3": ["a yellow star falls", "yellow star dropping"],
    "clip4": ["a purple ring bounces once"],
    "clip5": ["an orange cube rolls right"],
}


def write_corpus(directory: pathlib.Path, bad: bool = True) -> pathlib.Path:
    """Writes media and a generic CSV of the good clips (and, if `bad`, broken ones)."""
    media = directory / "media"
    media.mkdir(parents=True)
    rows = []
    for i, clip in enumerate(GOOD_CLIPS):
        write_clip(media / f"{clip}.mp4", seconds=1.0 + 0.25 * i, tone_hz=300.0 + 100 * i)
        rows.append((clip, f"{clip}.mp4", "|".join(CAPTIONS[clip])))
    if bad:
        write_empty(media / "empty.mp4")
        write_truncated(media / "truncated.mp4")
        write_clip(media / "silent_film.mp4", seconds=1.0, audio=False)
        rows += [("empty", "empty.mp4", "nothing"), ("truncated", "truncated.mp4", "half"),
                 ("silent_film", "silent_film.mp4", "no sound"),
                 ("missing", "missing.mp4", "not there")]
    annotations = directory / "annotations.csv"
    with open(annotations, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "path", "captions"])
        writer.writerows(rows)
    return annotations


def prepared_split(directory: pathlib.Path, **kwargs):
    """(config, manifest, output_dir) of the tiny config's 'train' split of the corpus."""
    config = load_config()
    annotations = write_corpus(directory, bad=kwargs.pop("bad", False))
    output = directory / "records"
    manifest = prepare.prepare_split(
        config, "generic", str(annotations), str(directory / "media"), str(output), "train",
        clips_per_shard=kwargs.pop("clips_per_shard", 4), progress=False, **kwargs)
    config.data.source = "records"
    config.data.train_split = str(output / "train")
    return config, manifest, output
