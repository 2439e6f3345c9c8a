r"""Retrieval results averaged over runs (seeds): mean ± sample standard deviation.

    python -m vlsa_jax.average_seeds runs/ft_msrvtt_s0 runs/ft_msrvtt_s1 runs/ft_msrvtt_s2
    python -m vlsa_jax.average_seeds DIR [DIR ...] --split=1k-A --out=results/msrvtt.md

The paper reports "the average result of three different random seeds". Each DIR is a
run's workdir whose `DIR/eval/<split>/metrics.json` was written by `--mode=eval` or by
the evaluation at the end of training (`vlsa_jax/evaluate.py`). For each split
(`--split`, comma-separated for several, or every split evaluated in all the runs)
one Markdown table is printed: each direction's R@1, R@5, R@10 (and R@50, MdR, MnR,
which every sweep records) as `mean ± std` over the runs, the standard deviation with
ddof=1 (none with one run), and the number of runs and the step each was evaluated at. Runs evaluated at different
steps, with different protocols or caption modes, or on query sets of different sizes
are named in a warning, on stderr and in the table. `--out=FILE.md` also writes the
table to FILE.md and the record (every run's value, mean and std) to FILE.json.

A run without the split's metrics.json stops the command with one line naming the run
and the split.
"""
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags, logging

from vlsa_jax import cli

# The metrics of a direction, in table order; a sweep records all six.
METRICS = ("R@1", "R@5", "R@10", "R@50", "MdR", "MnR")
# Header fields of a metrics.json that should agree over the runs averaged.
_AGREEING_FIELDS = ("step", "protocol", "caption_mode")
_DUAL_SOFTMAX = "dual_softmax/"


def metrics_path(run_dir, split: str) -> pathlib.Path:
    """Where `--mode=eval` writes a run's results on `split`."""
    return pathlib.Path(run_dir) / "eval" / split / "metrics.json"


def evaluated_splits(run_dir) -> set[str]:
    """The splits with a metrics.json under `run_dir/eval`.

    Raises:
      FileNotFoundError: `run_dir` is not a directory, or holds no evaluation.
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run {run_dir}: no such directory")
    splits = {path.parent.name for path in run_dir.glob("eval/*/metrics.json")}
    if not splits:
        raise FileNotFoundError(f"run {run_dir}: no eval/<split>/metrics.json; evaluate it "
                                "first (python -m vlsa_jax.main ... --mode=eval)")
    return splits


def common_splits(run_dirs: Sequence[str]) -> list[str]:
    """The splits evaluated in every run, sorted; a split only some runs have is warned of.

    Raises:
      FileNotFoundError: a run holds no evaluation, or no split is in every run.
    """
    per_run = [evaluated_splits(run_dir) for run_dir in run_dirs]
    common = set.intersection(*per_run)
    for split in sorted(set.union(*per_run) - common):
        lacking = [str(d) for d, splits in zip(run_dirs, per_run) if split not in splits]
        logging.warning("split %s is left out: not evaluated in %s", split, ", ".join(lacking))
    if not common:
        raise FileNotFoundError("no split is evaluated in every run: "
                                + "; ".join(f"{d}: {', '.join(sorted(s))}"
                                            for d, s in zip(run_dirs, per_run)))
    return sorted(common)


def load_metrics(run_dir, split: str) -> dict[str, Any]:
    """The contents of a run's `eval/<split>/metrics.json`.

    Raises:
      FileNotFoundError: the file is not there, naming the run and the split.
      ValueError: the file is not a JSON object.
    """
    path = metrics_path(run_dir, split)
    if not path.is_file():
        raise FileNotFoundError(f"run {run_dir} has no results for split {split!r}: {path} "
                                "is missing (evaluate the run on that split with --mode=eval)")
    results = json.loads(path.read_text())
    if not isinstance(results, dict):
        raise ValueError(f"{path}: not a JSON object of metrics")
    return results


def directions_of(results: dict[str, Any]) -> list[str]:
    """The directions of one metrics.json in file order, e.g. ['t2v', 'v2t',
    'dual_softmax/t2v']: every prefix of an `R@1` key."""
    return [key.removesuffix("/R@1") for key in results if key.endswith("/R@1")]


def mean_and_std(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation with ddof=1); the deviation is None for one value."""
    values = np.asarray(values, dtype=np.float64)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std


def _disagreements(run_dirs: Sequence[str], runs: Sequence[dict[str, Any]],
                   directions: Sequence[str]) -> list[str]:
    """One message per header field or query/gallery count that differs between runs."""
    warnings = []
    for field in _AGREEING_FIELDS:
        values = [run.get(field) for run in runs]
        if len(set(map(json.dumps, values))) > 1:
            pairs = ", ".join(f"{d}: {v}" for d, v in zip(run_dirs, values))
            warnings.append(f"the runs differ in {field} ({pairs})")
    for direction in directions:
        for count in ("num_queries", "num_gallery"):
            values = [run.get(f"{direction}/{count}") for run in runs]
            if len(set(values)) > 1:
                warnings.append(f"{direction}: the runs differ in {count} "
                                f"({', '.join(map(str, values))}): not the same test set")
    return warnings


def _direction_summary(runs: Sequence[dict[str, Any]], direction: str) -> dict[str, Any]:
    """{metric: {'mean', 'std', 'values'}} over the runs, for the metrics all runs have;
    plus the query and gallery sizes of the first run."""
    summary = {}
    for metric in METRICS:
        key = f"{direction}/{metric}"
        if all(key in run for run in runs):
            values = [float(run[key]) for run in runs]
            mean, std = mean_and_std(values)
            summary[metric] = {"mean": mean, "std": std, "values": values}
    for count in ("num_queries", "num_gallery"):
        if f"{direction}/{count}" in runs[0]:
            summary[count] = runs[0][f"{direction}/{count}"]
    return summary


def average_split(run_dirs: Sequence[str], split: str) -> dict[str, Any]:
    """The record of one split: every run's step, each direction's mean and std, warnings.

    Directions that some runs lack are left out, with a warning.

    Raises:
      FileNotFoundError: a run lacks the split's metrics.json.
    """
    runs = [load_metrics(run_dir, split) for run_dir in run_dirs]
    directions = [d for d in directions_of(runs[0])
                  if all(f"{d}/R@1" in run for run in runs)]
    warnings = []
    every = {d for run in runs for d in directions_of(run)}
    if every - set(directions):
        warnings.append(f"directions not in every run, left out: "
                        f"{', '.join(sorted(every - set(directions)))}")
    warnings += _disagreements(run_dirs, runs, directions)
    for warning in warnings:
        logging.warning("split %s: %s", split, warning)
    return {
        "split": split,
        "num_runs": len(runs),
        "runs": [{"dir": str(d), "step": run.get("step")} for d, run in zip(run_dirs, runs)],
        "protocol": runs[0].get("protocol"),
        "caption_mode": runs[0].get("caption_mode"),
        "directions": {d: _direction_summary(runs, d) for d in directions},
        "warnings": warnings,
    }


def average_runs(run_dirs: Sequence[str], splits: Sequence[str] | None = None
                 ) -> dict[str, Any]:
    """The record of every split: `{'runs': [...], 'splits': {split: average_split(...)}}`.

    Args:
      run_dirs: the runs' workdirs.
      splits: the splits to average; None: every split evaluated in all the runs.
    """
    run_dirs = [str(d) for d in run_dirs]
    if splits is None:
        splits = common_splits(run_dirs)
    return {"runs": run_dirs,
            "splits": {split: average_split(run_dirs, split) for split in splits}}


def format_cell(summary: dict[str, Any]) -> str:
    """'27.1 ± 0.3', or '27.1' when there is no deviation (one run)."""
    if summary["std"] is None:
        return f"{summary['mean']:.1f}"
    return f"{summary['mean']:.1f} ± {summary['std']:.1f}"


def _direction_label(direction: str) -> str:
    if direction.startswith(_DUAL_SOFTMAX):
        return direction.removeprefix(_DUAL_SOFTMAX) + " (dual softmax)"
    return direction


def format_split(record: dict[str, Any]) -> str:
    """One split's Markdown: a heading, the runs and their steps, warnings, the table."""
    n = record["num_runs"]
    spread = "mean ± sample std (ddof=1)" if n > 1 else "one run, no deviation"
    runs = ", ".join(f"`{run['dir']}` (step {run['step']})" for run in record["runs"])
    lines = [f"## {record['split']}: {n} run{'s' if n > 1 else ''}, "
             f"{record['protocol']}, captions: {record['caption_mode']}", "",
             f"Runs (evaluated at step): {runs}.", "",
             f"Recall in percent, ranks 1-based; {spread}.", ""]
    lines += [f"> **Warning:** {warning}" for warning in record["warnings"]]
    if record["warnings"]:
        lines.append("")
    directions = record["directions"]
    columns = [m for m in METRICS if any(m in s for s in directions.values())]
    lines.append("| direction | " + " | ".join(columns) + " | queries | gallery |")
    lines.append("|---|" + "---:|" * (len(columns) + 2))
    for direction, summary in directions.items():
        cells = [format_cell(summary[m]) if m in summary else "–" for m in columns]
        cells += [str(summary.get("num_queries", "–")), str(summary.get("num_gallery", "–"))]
        lines.append(f"| {_direction_label(direction)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_markdown(record: dict[str, Any]) -> str:
    """Every split's table, one after the other."""
    return "\n".join(format_split(split) for split in record["splits"].values())


def record_path(out) -> pathlib.Path:
    """Where `--out=FILE.md` puts the record: FILE.json.

    Raises:
      ValueError: `out` ends in .json, where the record would go.
    """
    out = pathlib.Path(out)
    if out.suffix == ".json":
        raise ValueError(f"--out={out}: give a Markdown file (FILE.md); the record goes to "
                         "FILE.json beside it")
    return out.with_suffix(".json")


def write_outputs(record: dict[str, Any], markdown: str, out) -> tuple[pathlib.Path, ...]:
    """Writes `out` (the Markdown) and the record beside it (`record_path`)."""
    out, json_path = pathlib.Path(out), record_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    return out, json_path


FLAGS = flags.FLAGS


def main(argv):
    run_dirs = argv[1:]
    if not run_dirs:
        raise app.UsageError("give the runs' workdirs: python -m vlsa_jax.average_seeds "
                             "DIR [DIR ...] [--split=NAME] [--out=FILE.md]")
    if FLAGS.out:
        record_path(FLAGS.out)  # a bad --out fails before any work
    record = average_runs(run_dirs, FLAGS.split)
    markdown = format_markdown(record)
    print(markdown, end="")
    if FLAGS.out:
        for path in write_outputs(record, markdown, FLAGS.out):
            logging.info("wrote %s", path)


if __name__ == "__main__":
    flags.DEFINE_list("split", None, "The split(s) to average (the name of DIR/eval/<split>); "
                      "default: every split evaluated in all the runs.")
    flags.DEFINE_string("out", None, "Also write the tables to this Markdown file and the "
                        "record to the same name with .json.")
    cli.run(main)
