r"""The paper's ablations in miniature: one grid of runs on the demo corpus, one table.

    python -m vlsa_jax.demo.sweep --config=configs/demo.py --grid=table5 --workdir=DIR
    python -m vlsa_jax.demo.sweep --config=configs/demo.py --grid=modalities --workdir=DIR
    python -m vlsa_jax.demo.sweep --config=configs/demo.py:steps=300 --grid=decoder \
        --rows=avt,none --config.optim.lr=5e-4 --workdir=DIR
    python -m vlsa_jax.demo.sweep --config=configs/demo.py:quick=true --grid=table5 \
        --seeds=0,1,2 --finetune_steps=100 --workdir=DIR

Grids (`GRIDS`): `table5`, the pre-training objectives of the paper's Table 5 (`none`
is the randomly initialised model, evaluated untrained); `modalities`, which
modalities the shared encoder reads jointly (Fig. 3, `model.joint_modalities`);
`decoder`, which reconstructions share one decoder (Fig. 4, `model.decoder_sharing`).

Every row starts from the same config (overrides such as `--config.train.num_steps=N`
apply to all of them), the same seed and the same SyncShapes corpus, prepared once
under DIR/data. Row R of grid G trains in DIR/G/R/ and is scored on the test split
only: no export, no pictures. DIR/G.md holds the table (T->V and T->A R@1/5/10,
V->A R@1, minutes per row, the command line) and DIR/G.json the raw numbers.

`--finetune_steps=N` (default 0: off) also fine-tunes every row, as the paper scores
Table 5, in DIR/G/R/finetune/: N steps of retrieval fine-tuning on the demo's train
split from the row's final weights (the untrained row from its initialisation), with
the contrastive loss of every scored pair and a fresh optimizer (`finetune_config`).
The table then has the fine-tuned scores (FT) beside the zero-shot ones, and the
minutes are those of both runs.

`--seeds=0,1,2` runs every row once per seed S, with `config.seed` (initialisation,
augmentation) and `config.data.shuffle_seed` (the order of the data) set to S as
docs/REPRODUCE.md's seeds are; the corpus is the same. Seed S's rows go to
DIR/G/seedS/R/, and the table gives each score as the mean ± sample std (ddof=1, by
`vlsa_jax.average_seeds`) over the seeds; DIR/G.json keeps every seed's numbers. One
seed keeps the single-run table and DIR/G/R/; without `--seeds`, the config's seeds.

A row whose DIR/G/R/eval/test/metrics.json is of its final step is reused, not run
again, so an interrupted sweep resumes (and an interrupted row resumes from its
checkpoint); its minutes are those of the run that finished it. The same holds of a
row's fine-tuning in DIR/G/R/finetune/ and of each seed's rows. A finished row
trained with another config is an error rather than a silent mix of two sweeps.
The sweep is one process, on the devices it sees.
"""
import copy
import dataclasses
import json
import pathlib
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from vlsa_jax import average_seeds, cli, evaluate, sharding, state, train
from vlsa_jax.demo import run as demo
from vlsa_jax.config_validation import validate_config
from vlsa_jax.models.vlsa import GROUPINGS

# The only split scored: the records directory it is prepared into, and its results' key.
SPLIT = "test"
# Written by the sweep in each row's directory: the row's run time and evaluated step.
ROW_RECORD = "sweep_row.json"
# Table columns: (header, key of the test split's results).
_COLUMNS = (("T→V R@1", "t2v/R@1"), ("R@5", "t2v/R@5"), ("R@10", "t2v/R@10"),
            ("T→A R@1", "t2a/R@1"), ("R@5", "t2a/R@5"), ("R@10", "t2a/R@10"),
            ("V→A R@1", "v2a/R@1"))
# A row's fine-tuning runs in this folder of the row's directory (`--finetune_steps`).
FINETUNE_DIR = "finetune"
# Fine-tuning's learning rate, with 10% warmup: configs/finetune.py's for a tiny model.
FINETUNE_LR = 1e-3


@dataclasses.dataclass(frozen=True)
class Row:
    """One run of a grid.

    Attributes:
      overrides: (dotted config field, value) pairs.
      pretrain: False scores the model as initialised, without training it.
    """

    overrides: tuple[tuple[str, Any], ...]
    pretrain: bool = True


@dataclasses.dataclass(frozen=True)
class Grid:
    """One ablation: its title (the table's caption) and its rows by name."""

    title: str
    rows: dict[str, Row]


def _grouping_rows(field: str) -> dict[str, Row]:
    return {grouping: Row(((field, grouping),)) for grouping in GROUPINGS}


def _objectives(lpmm: bool, gam: bool) -> tuple[tuple[str, Any], ...]:
    return (("loss.lpmm", lpmm), ("loss.gam", gam))


GRIDS = {
    "table5": Grid(
        "paper Table 5, the pre-training objectives; 'none' is the lpmm+gam model as "
        "initialised, not trained",
        {"none": Row(_objectives(True, True), pretrain=False),
         "lpmm": Row(_objectives(True, False)),
         "gam": Row(_objectives(False, True)),
         "lpmm+gam": Row(_objectives(True, True))}),
    "modalities": Grid(
        "paper Fig. 3, the modalities the shared encoder reads jointly "
        "(model.joint_modalities; the others get an encoder each)",
        _grouping_rows("model.joint_modalities")),
    "decoder": Grid(
        "paper Fig. 4, the modalities whose reconstructions share one decoder "
        "(model.decoder_sharing)",
        _grouping_rows("model.decoder_sharing")),
}


def row_config(config: ml_collections.ConfigDict, row: Row) -> ml_collections.ConfigDict:
    """A copy of `config` with the row's overrides."""
    config = copy.deepcopy(config)
    config.update_from_flattened_dict(dict(row.overrides))
    return config


def finetune_config(config: ml_collections.ConfigDict, steps: int,
                    init: pathlib.Path | None) -> ml_collections.ConfigDict:
    """A copy of a row's `config` that fine-tunes it for retrieval, as configs/finetune.py does.

    The symmetric contrastive loss of every pair the sweep scores (GAM's audio-video and
    audio-text, VTM's video-text; the demo's reversed-video negatives stay) on the
    pooled embeddings of unmasked inputs, with no masked modelling and no matching
    head, whatever the row pre-trained with; a fresh optimizer at `FINETUNE_LR` with
    10% warmup, `steps` steps on the same train split, scored once at the end.

    Args:
      config: the row's config (`row_config`).
      steps: fine-tuning steps.
      init: the row's pre-training workdir, whose final weights fine-tuning starts
        from; None: a random initialisation of `config.seed` (the untrained row).
    """
    config = copy.deepcopy(config)
    config.loss.lpmm = False
    config.loss.gam = config.loss.vtm = True
    config.loss.matching = False
    config.loss.lambda_global = 1.0
    config.gam.masked_inputs = False
    config.train.num_steps = steps
    config.optim.lr = FINETUNE_LR
    config.optim.warmup_steps = max(steps // 10, 1)
    config.eval.protocol = "fine_tuned"
    config.eval.every_steps = 0  # scored by the sweep, at the end
    config.init.checkpoint = str(init) if init else ""
    # Always the row's own folder: where the sweep lives, not what the results are.
    config.result_neutral_fields += ("init.checkpoint",)
    return config


# Fine-tuning as a row: trained from step 0 to its own num_steps.
_FINETUNE_ROW = Row(())


def parse_seeds(values: Sequence[str | int]) -> list[int]:
    """`--seeds` as integers.

    Raises:
      ValueError: a value is not a non-negative integer, or one repeats, or none is given.
    """
    given = ",".join(map(str, values))
    try:
        seeds = [int(value) for value in values]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds={given}: give distinct non-negative integers, "
                         "e.g. --seeds=0,1,2")
    return seeds


def final_step(config, row: Row) -> int:
    """The step a finished row is evaluated at: 0 untrained, else where training stops."""
    if not row.pretrain:
        return 0
    if config.train.stop_after_steps > 0:
        return min(config.train.num_steps, config.train.stop_after_steps)
    return config.train.num_steps


def initial_params(config):
    """The parameters training starts from (`config.seed`), initialised into their shardings."""
    validate_config(config, jax.device_count())
    training = train.setup_training(config, sharding.make_mesh(config.mesh))
    return training.state.init(training.seed_key)["params"]


def score_params(config, params, step: int, row_dir: pathlib.Path) -> None:
    """Scores `params` on `config.eval.splits`: row_dir/eval/<split>/metrics.json of `step`."""
    graphdef, _ = state.model_structure(config)
    evaluator = evaluate.Evaluator(config, sharding.make_mesh(config.mesh), graphdef,
                                   jax.tree.map(lambda x: x.sharding, params))
    evaluate.log_summary(evaluator.run(params, step, row_dir), step)


def run_row(config, row: Row, row_dir: pathlib.Path) -> None:
    """Trains (or resumes) and scores one row, or scores its initial model; records the time."""
    start = time.perf_counter()
    if row.pretrain:
        state = train.train_and_evaluate(config, str(row_dir))
        params, step = state["params"], int(state["step"])
    else:
        params, step = initial_params(config), 0
        row_dir.mkdir(parents=True, exist_ok=True)
        (row_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    if step != final_step(config, row):
        raise RuntimeError(f"{row_dir}: training stopped at step {step}, not "
                           f"{final_step(config, row)} (preempted, or a longer run's checkpoints)")
    if _evaluated_step(row_dir) != step:  # else training's periodic sweep scored it
        score_params(config, params, step, row_dir)
    seconds = time.perf_counter() - start
    (row_dir / ROW_RECORD).write_text(json.dumps({"seconds": seconds, "step": step}))


def _metrics_path(row_dir: pathlib.Path) -> pathlib.Path:
    return row_dir / "eval" / SPLIT / "metrics.json"


def _evaluated_step(row_dir: pathlib.Path) -> int | None:
    path = _metrics_path(row_dir)
    return json.loads(path.read_text())["step"] if path.exists() else None


def is_finished(config, row: Row, row_dir: pathlib.Path) -> bool:
    """Whether row_dir holds the row's results of its final step.

    Raises:
      ValueError: it does, but of a config that differs in a field that changes results
        (one that `config.result_neutral_fields` does not mark).
    """
    if _evaluated_step(row_dir) != final_step(config, row):
        return False
    saved = _flatten(json.loads((row_dir / "config.json").read_text()))
    current = _flatten(json.loads(json.dumps(config.to_dict())))
    neutral = set(config.result_neutral_fields)
    differing = sorted(k for k in saved.keys() | current.keys()
                       if k not in neutral and saved.get(k) != current.get(k))
    if differing:
        field = differing[0]
        raise ValueError(
            f"{row_dir} holds the results of another config ({len(differing)} fields "
            f"differ, e.g. {field}: {saved.get(field)!r} there, {current.get(field)!r} now); "
            "remove that directory or sweep into another --workdir")
    return True


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def row_results(row_dir: pathlib.Path) -> dict[str, Any]:
    """A finished row's results.

    Returns:
      {'step', 'seconds' (None when unrecorded), 'test': {'t2v/R@1': ..., ...}}.
    """
    metrics = json.loads(_metrics_path(row_dir).read_text())
    record_path = row_dir / ROW_RECORD
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    scores = {k: v for k, v in metrics.items() if "/" in k}
    return {"step": metrics["step"], "seconds": record.get("seconds"), SPLIT: scores}


def configure_sweep(config: ml_collections.ConfigDict, workdir) -> ml_collections.ConfigDict:
    """A copy of `config` that every row starts from, scored on the test split only.

    The corpus is that of DIR/data, generated and prepared unless it is there.
    """
    workdir = pathlib.Path(workdir)
    config = copy.deepcopy(config)
    config.demo.data_dir = str(workdir / "data")
    records_dir = demo.prepare_corpus(config, workdir / "data")
    demo.configure(config, records_dir)
    config.eval.splits = str(records_dir / SPLIT)
    return config


def run_grid(config: ml_collections.ConfigDict, grid: str, workdir,
             rows: list[str] | None = None, command: str = "",
             seeds: Sequence[int] | None = None, finetune_steps: int = 0) -> dict[str, Any]:
    """Prepares the corpus once, runs (or reuses) each row, writes DIR/<grid>.md and .json.

    Args:
      config: the demo config (configs/demo.py), command-line overrides applied.
      grid: a key of `GRIDS`.
      workdir: DIR; the corpus goes to DIR/data, row R to DIR/<grid>/R/ (several
        seeds: seed S's to DIR/<grid>/seedS/R/).
      rows: the rows to run, in this order; None: all of the grid's, in its order.
      command: the command line, recorded with the table.
      seeds: the seeds to run every row with, each as `config.seed` and
        `config.data.shuffle_seed`; None: the config's.
      finetune_steps: > 0 also fine-tunes each row for that many steps in its
        folder's `finetune/` (`finetune_config`); 0: zero-shot scores only.

    Returns:
      The sweep's record, as written to DIR/<grid>.json.
    """
    if grid not in GRIDS:
        raise ValueError(f"grid {grid!r} is not one of {sorted(GRIDS)}")
    if "demo" not in config:
        raise ValueError("the sweep runs on the demo corpus: give --config=configs/demo.py")
    names = list(GRIDS[grid].rows) if rows is None else rows
    unknown = [name for name in names if name not in GRIDS[grid].rows]
    if unknown or not names:
        raise ValueError(f"rows {unknown or names} are not in grid {grid!r}, whose rows are "
                         f"{', '.join(GRIDS[grid].rows)}")
    given_seeds = seeds is not None
    seeds = parse_seeds(seeds) if given_seeds else [config.seed]
    if finetune_steps < 0:
        raise ValueError(f"--finetune_steps={finetune_steps}: give 0 (off) or more steps")
    workdir = pathlib.Path(workdir)
    for name in names:  # every row's config, before the corpus is made
        row = GRIDS[grid].rows[name]
        row_cfg = row_config(config, row)
        validate_config(row_cfg, jax.device_count())
        if finetune_steps:
            validate_config(finetune_config(row_cfg, finetune_steps, workdir),
                            jax.device_count())
    config = configure_sweep(config, workdir)
    record = {"grid": grid, "title": GRIDS[grid].title, "command": command,
              "steps": config.train.num_steps}
    record |= {"seed": seeds[0]} if len(seeds) == 1 else {"seeds": seeds}
    record["corpus"] = dataclasses.asdict(demo.corpus_options(config.demo))
    if finetune_steps:
        record["finetune"] = {"steps": finetune_steps, "lr": FINETUNE_LR}
    per_seed = {}
    for seed in seeds:
        if given_seeds:
            config.seed = config.data.shuffle_seed = seed
        seed_dir = workdir / grid if len(seeds) == 1 else workdir / grid / f"seed{seed}"
        tag = "" if len(seeds) == 1 else f" (seed {seed})"
        per_seed[seed] = run_rows(config, grid, names, seed_dir, finetune_steps, tag)
    record["rows"] = {}
    for name in names:
        row = GRIDS[grid].rows[name]
        results = (per_seed[seeds[0]][name] if len(seeds) == 1 else
                   seed_results(workdir / grid, name, {s: per_seed[s][name] for s in seeds}))
        record["rows"][name] = {"overrides": dict(row.overrides), "pretrained": row.pretrain,
                                **results}

    text = format_markdown(record)
    (workdir / f"{grid}.md").write_text(text)
    (workdir / f"{grid}.json").write_text(json.dumps(record, indent=2))
    print(text)
    return record


def run_rows(config, grid: str, names: list[str], grid_dir: pathlib.Path,
             finetune_steps: int, tag: str = "") -> dict[str, dict[str, Any]]:
    """Runs (or reuses) rows `names` of `grid` with `config` in grid_dir/<row>/, and
    fine-tunes each in grid_dir/<row>/finetune/ when `finetune_steps` > 0; `tag`
    follows the row's name in the log.

    Returns:
      {row: `row_results`, with 'finetuned': the fine-tuned row's `row_results`}.
    """
    results = {}
    for name in names:
        row = GRIDS[grid].rows[name]
        row_dir, row_cfg = grid_dir / name, row_config(config, row)
        label = f"{grid}/{name}{tag}"
        results[name] = run_or_reuse(row_cfg, row, row_dir, label)
        if finetune_steps:
            finetune_cfg = finetune_config(row_cfg, finetune_steps,
                                           row_dir if row.pretrain else None)
            results[name]["finetuned"] = run_or_reuse(
                finetune_cfg, _FINETUNE_ROW, row_dir / FINETUNE_DIR, f"{label}, fine-tuning")
    return results


def run_or_reuse(config, row: Row, row_dir: pathlib.Path, label: str) -> dict[str, Any]:
    """The row's results in row_dir: those there if finished, else of a run (or resumed)."""
    if is_finished(config, row, row_dir):
        logging.info("%s: reusing the results in %s", label, row_dir)
    else:
        logging.info("%s: %s", label, "training" if row.pretrain else "evaluating")
        run_row(config, row, row_dir)
    return row_results(row_dir)


def seed_results(grid_dir: pathlib.Path, name: str,
                 per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One row's record over several seeds, whose runs are in grid_dir/seedS/<name>/.

    Returns:
      {'step', 'seconds' (the mean; None unless every seed's is recorded), 'test':
      {'t2v/R@1': {'mean', 'std', 'values'}, ...}, 'warnings' (`average_seeds`'s),
      'finetuned' (the same, of the fine-tuning; when fine-tuned), 'seeds': {S: that
      seed's `row_results`}}.
    """
    seeds = list(per_seed)
    summary = _average(grid_dir, name, seeds, per_seed.values())
    if "finetuned" in per_seed[seeds[0]]:
        summary["finetuned"] = _average(grid_dir, f"{name}/{FINETUNE_DIR}", seeds,
                                        [results["finetuned"] for results in per_seed.values()])
    return summary | {"seeds": {str(seed): results for seed, results in per_seed.items()}}


def _average(grid_dir: pathlib.Path, name: str, seeds: list[int], results) -> dict[str, Any]:
    """The mean and std of each score of grid_dir/seedS/<name>/ over the seeds."""
    results = list(results)
    averaged = average_seeds.average_split(
        [grid_dir / f"seed{seed}" / name for seed in seeds], SPLIT)
    scores = {f"{direction}/{metric}": values
              for direction, summary in averaged["directions"].items()
              for metric, values in summary.items() if metric in average_seeds.METRICS}
    seconds = [result["seconds"] for result in results]
    mean_seconds = None if None in seconds else sum(seconds) / len(seconds)
    return {"step": results[0]["step"], "seconds": mean_seconds,
            SPLIT: scores, "warnings": averaged["warnings"]}


def format_markdown(record: dict[str, Any]) -> str:
    """The sweep's table: recall in percent on the test split, run time in minutes.

    Zero-shot scores, then the fine-tuned ones (FT) when the record has them; over
    several seeds each cell is `mean ± std`.
    """
    corpus = record["corpus"]
    title = record["title"][0].upper() + record["title"][1:]
    # Each test clip is the one correct item of its captions' queries.
    chance = 100 / corpus["num_test"]
    seeds = (f"seed {record['seed']}" if "seed" in record else
             f"seeds {', '.join(map(str, record['seeds']))}")
    heading = (f"# {record['grid']}: {record['steps']} steps, SyncShapes "
               f"{corpus['num_train']} training / {corpus['num_test']} test clips, {seeds}")
    caption = f"{title}. Recall in percent on the test split; chance R@1 is {chance:.1f}."
    headers = [name for name, _ in _COLUMNS]
    finetune = record.get("finetune")
    if finetune:
        headers += [f"FT {name}" if "→" in name else name for name, _ in _COLUMNS]
        caption += (f" FT: after {finetune['steps']} steps of retrieval fine-tuning on the "
                    f"training clips (lr {finetune['lr']:g}); minutes include them.")
    if "seeds" in record:
        caption += (f" Mean ± sample std (ddof=1) over the {len(record['seeds'])} seeds; "
                    "minutes per seed.")
    lines = [
        heading,
        "",
        caption,
        "",
        "| row | " + " | ".join(headers) + " | minutes |",
        "|---|" + "---:|" * (len(headers) + 1),
    ]
    for name, row in record["rows"].items():
        runs = [row] + ([row["finetuned"]] if finetune else [])
        cells = [_cell(run[SPLIT], key) for run in runs for _, key in _COLUMNS]
        seconds = [run["seconds"] for run in runs]
        minutes = "–" if None in seconds else f"{sum(seconds) / 60:.1f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {minutes} |")
    lines += ["", f"Command: `{record['command']}`", ""]
    return "\n".join(lines)


def _cell(scores: dict[str, Any], key: str) -> str:
    """A score, or its `mean ± std` over seeds; '–' when not scored."""
    if key not in scores:
        return "–"
    if isinstance(scores[key], dict):
        return average_seeds.format_cell(scores[key])
    return f"{scores[key]:.1f}"


FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.setup_process()
    command = shlex.join(["python", "-m", "vlsa_jax.demo.sweep", *sys.argv[1:]])
    run_grid(FLAGS.config, FLAGS.grid, FLAGS.workdir, FLAGS.rows, command, FLAGS.seeds,
             FLAGS.finetune_steps)


if __name__ == "__main__":
    config_flags.DEFINE_config_file(
        "config", None, "The demo config: configs/demo.py[:steps=N,...].", lock_config=True)
    flags.DEFINE_string("workdir", None, "DIR: the corpus in DIR/data, row R in "
                        "DIR/<grid>/R/, the table in DIR/<grid>.md.")
    flags.DEFINE_enum("grid", None, list(GRIDS), "The ablation to run.")
    flags.DEFINE_list("rows", None, "The rows to run, e.g. lpmm,gam; default: all of the "
                      "grid's.")
    flags.DEFINE_list("seeds", None, "Run every row with each of these config.seed values, "
                      "e.g. 0,1,2, and report mean ± std; default: config.seed alone.")
    flags.DEFINE_integer("finetune_steps", 0, "Also fine-tune every row for retrieval for "
                         "this many steps and report both scores; 0: zero-shot only.")
    flags.mark_flags_as_required(["config", "workdir", "grid"])
    cli.run(main)
