"""The ablation sweep: its grids, its table, resuming, and one real two-row run."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import load_config
from vlsa_jax import average_seeds
from vlsa_jax.demo import sweep
from vlsa_jax.config_validation import ConfigError, validate_config

ROOT = pathlib.Path(__file__).parents[1]
# The smallest demo: 16 training clips, 8 test clips, 2 steps.
DEMO_ARG = "steps=2,clips=16,test_clips=8,sync_clips=4"
# The fields each grid is meant to vary.
GRID_FIELDS = {"table5": {"loss.lpmm", "loss.gam"},
               "modalities": {"model.joint_modalities"},
               "decoder": {"model.decoder_sharing"}}


def _demo_config():
    config = load_config("demo.py", DEMO_ARG)
    config.demo.workers = 1
    return config


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """DIR/data of the smallest demo, generated and prepared once for the real sweeps."""
    workdir = tmp_path_factory.mktemp("sweep_data")
    sweep.configure_sweep(_demo_config(), workdir)
    return workdir / "data"


def _copy_corpus(demo_data, workdir):
    """Puts the prepared corpus where a sweep into `workdir` finds and reuses it."""
    shutil.copytree(demo_data, workdir / "data")


def _flat(config) -> dict:
    return sweep._flatten(json.loads(json.dumps(config.to_dict())))


@pytest.mark.parametrize("grid", sorted(GRID_FIELDS))
def test_grid_rows_validate_and_differ_only_in_their_fields(grid):
    base = _demo_config()
    base_fields = _flat(base)
    varied = set()
    for name, row in sweep.GRIDS[grid].rows.items():
        config = sweep.row_config(base, row)
        validate_config(config, 1)
        differing = {k for k, v in _flat(config).items() if base_fields[k] != v}
        assert differing <= GRID_FIELDS[grid], (name, differing)
        assert dict(row.overrides).keys() == GRID_FIELDS[grid]
        varied |= differing
    # Each row sets the grid's fields explicitly; together they vary all of them.
    assert varied == GRID_FIELDS[grid]
    assert base.loss.lpmm and base.loss.gam, "row_config must not change its argument"


def test_table5_rows_are_the_papers_objectives():
    rows = sweep.GRIDS["table5"].rows
    objectives = {name: (dict(row.overrides)["loss.lpmm"], dict(row.overrides)["loss.gam"],
                         row.pretrain) for name, row in rows.items()}
    assert objectives == {"none": (True, True, False), "lpmm": (True, False, True),
                          "gam": (False, True, True), "lpmm+gam": (True, True, True)}
    # Why 'none' is the lpmm+gam model left untrained rather than a config of no losses.
    config = sweep.row_config(_demo_config(), sweep.Row((("loss.lpmm", False),
                                                         ("loss.gam", False))))
    with pytest.raises(ConfigError, match="nothing to train"):
        validate_config(config, 1)
    for grid in ("modalities", "decoder"):
        assert list(sweep.GRIDS[grid].rows) == ["avt", "vt", "at", "av", "none"]


def _fake_scores(r1: float) -> dict:
    scores = {f"{d}/R@{k}": r1 + k for d in ("t2v", "t2a", "v2a") for k in (1, 5, 10)}
    return scores | {"t2v/num_gallery": 8}


def test_markdown_table_from_fake_results():
    record = {
        "grid": "table5", "title": "paper Table 5, the pre-training objectives",
        "command": "python -m vlsa_jax.demo.sweep --grid=table5", "steps": 600, "seed": 0,
        "corpus": {"num_train": 512, "num_test": 128},
        "rows": {"none": {"seconds": 6.0, "test": _fake_scores(0.5)},
                 "lpmm+gam": {"seconds": None, "test": {"t2v/R@1": 41.25}}}}
    lines = sweep.format_markdown(record).splitlines()
    assert lines[0] == "# table5: 600 steps, SyncShapes 512 training / 128 test clips, seed 0"
    assert lines[2].startswith("Paper Table 5, the pre-training objectives.")
    assert lines[4] == ("| row | T→V R@1 | R@5 | R@10 | T→A R@1 | R@5 | R@10 | V→A R@1 "
                        "| minutes |")
    assert lines[5] == "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    assert lines[6] == "| none | 1.5 | 5.5 | 10.5 | 1.5 | 5.5 | 10.5 | 1.5 | 0.1 |"
    assert lines[7] == "| lpmm+gam | 41.2 | – | – | – | – | – | – | – |"
    assert lines[-1] == "Command: `python -m vlsa_jax.demo.sweep --grid=table5`"


def test_markdown_table_over_seeds_with_fine_tuning():
    def summary(values):
        mean, std = average_seeds.mean_and_std(values)
        return {"mean": mean, "std": std, "values": values}

    scores = {"t2v/R@1": summary([12.5, 25.0]), "t2a/R@1": summary([50.0, 50.0])}
    record = {
        "grid": "table5", "title": "paper Table 5", "command": "cmd", "steps": 200,
        "seeds": [0, 1], "corpus": {"num_train": 256, "num_test": 32},
        "finetune": {"steps": 100, "lr": 1e-3},
        "rows": {"gam": {"seconds": 30.0, "test": scores,
                         "finetuned": {"seconds": 6.0, "test": {"t2v/R@1": summary([50.0,
                                                                                    75.0])}}}}}
    lines = sweep.format_markdown(record).splitlines()
    assert lines[0] == "# table5: 200 steps, SyncShapes 256 training / 32 test clips, seeds 0, 1"
    assert lines[2] == ("Paper Table 5. Recall in percent on the test split; chance R@1 is 3.1. "
                        "FT: after 100 steps of retrieval fine-tuning on the training clips "
                        "(lr 0.001); minutes include them. Mean ± sample std (ddof=1) over "
                        "the 2 seeds; minutes per seed.")
    assert lines[4] == ("| row | T→V R@1 | R@5 | R@10 | T→A R@1 | R@5 | R@10 | V→A R@1 "
                        "| FT T→V R@1 | R@5 | R@10 | FT T→A R@1 | R@5 | R@10 | FT V→A R@1 "
                        "| minutes |")
    assert lines[5] == "|---|" + "---:|" * 15
    assert lines[6] == ("| gam | 18.8 ± 8.8 | – | – | 50.0 ± 0.0 | – | – | – "
                        "| 62.5 ± 17.7 | – | – | – | – | – | – | 0.6 |")


@pytest.mark.parametrize("seeds", [["0", "x"], ["1", "1"], ["-1"], []])
def test_bad_seeds_are_refused_in_one_line(seeds):
    with pytest.raises(ValueError, match=r"^--seeds=.*: give distinct non-negative integers, "
                       r"e\.g\. --seeds=0,1,2$"):
        sweep.parse_seeds(seeds)
    assert sweep.parse_seeds(["2", "0"]) == [2, 0]


class _FakeRuns:
    """Stands in for training and scoring: counts the calls, writes what they would."""

    def __init__(self, monkeypatch, records_dir):
        self.calls = []
        monkeypatch.setattr(sweep.demo, "prepare_corpus", lambda config, data_dir: records_dir)
        monkeypatch.setattr(sweep.demo, "configure", lambda config, records: None)
        monkeypatch.setattr(sweep.train, "train_and_evaluate", self.train)
        monkeypatch.setattr(sweep, "initial_params", self.initial_params)
        monkeypatch.setattr(sweep, "score_params", self.score_params)

    def train(self, config, workdir):
        workdir = pathlib.Path(workdir)
        name = workdir.name if workdir.name != sweep.FINETUNE_DIR else (
            f"{workdir.parent.name}/{workdir.name}")
        self.calls.append(("train", name) if not self.with_seeds else
                          ("train", name, config.seed, config.init.checkpoint))
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(json.dumps(config.to_dict()))
        return {"step": config.train.num_steps, "params": "trained"}

    def initial_params(self, config):
        self.calls.append(("init", None))
        return "initial"

    def score_params(self, config, params, step, row_dir):
        out = row_dir / "eval" / "test"
        out.mkdir(parents=True, exist_ok=True)
        # Scores that differ from seed to seed, and fine-tuned from zero-shot.
        r1 = step + 7 * config.seed + (0.5 if config.eval.protocol == "fine_tuned" else 0)
        (out / "metrics.json").write_text(json.dumps({"step": step} | _fake_scores(r1)))

    with_seeds = False


@pytest.mark.slow
def test_finished_rows_are_reused_and_unfinished_ones_run(tmp_path, monkeypatch):
    runs = _FakeRuns(monkeypatch, tmp_path / "records")
    config = _demo_config()
    first = sweep.run_grid(config, "table5", tmp_path, command="the command")
    assert runs.calls == [("init", None), ("train", "lpmm"), ("train", "gam"),
                          ("train", "lpmm+gam")]
    assert json.loads((tmp_path / "table5.json").read_text()) == first
    assert first["rows"]["lpmm"]["test"]["t2v/R@1"] == 3  # the fake R@1: step + 1
    assert first["rows"]["none"]["step"] == 0 and first["rows"]["gam"]["step"] == 2
    assert "| lpmm+gam | 3.0 |" in (tmp_path / "table5.md").read_text()

    # A second sweep reuses every finished row, whatever its throughput settings.
    runs.calls.clear()
    config.demo.workers = 3
    second = sweep.run_grid(config, "table5", tmp_path, ["gam", "none"], command="again")
    assert runs.calls == []
    assert list(second["rows"]) == ["gam", "none"]
    assert second["rows"]["gam"] == first["rows"]["gam"]

    # An interrupted row (no results of its final step) runs again; the others do not.
    (tmp_path / "table5" / "gam" / "eval" / "test" / "metrics.json").unlink()
    sweep.run_grid(config, "table5", tmp_path)
    assert runs.calls == [("train", "gam")]

    # Finished results of another config are an error, not a row of this table.
    finished_lr, config.optim.lr = config.optim.lr, 5e-4
    with pytest.raises(ValueError, match=rf"another config .*optim\.lr: {finished_lr} there"):
        sweep.run_grid(config, "table5", tmp_path, ["lpmm"])
    with pytest.raises(ValueError, match="whose rows are none, lpmm, gam, lpmm\\+gam"):
        sweep.run_grid(config, "table5", tmp_path, ["lpm"])


@pytest.mark.slow
def test_two_rows_of_table5_for_real_then_from_the_command_line(demo_data, tmp_path):
    # In process, on the 8 fake devices: test_demo.py's programs are compiled already.
    config = _demo_config()
    _copy_corpus(demo_data, tmp_path)
    record = sweep.run_grid(config, "table5", tmp_path, ["none", "lpmm+gam"], command="cmd")
    assert [(name, row["step"]) for name, row in record["rows"].items()] == [
        ("none", 0), ("lpmm+gam", 2)]
    table = (tmp_path / "table5.md").read_text()
    assert table.startswith("# table5: 2 steps, SyncShapes 16 training / 8 test clips, seed 0")
    number = r"\d+\.\d"
    for row in ("none", "lpmm\\+gam"):
        assert re.search(rf"^\| {row} (\| {number} ){{8}}\|$", table, re.MULTILINE), table
    # Only the test split is scored; nothing is exported or drawn; the untrained row
    # keeps no checkpoint.
    for name in ("none", "lpmm+gam"):
        row_dir = tmp_path / "table5" / name
        assert os.listdir(row_dir / "eval") == ["test"]
        assert not (row_dir / "export").exists() and not (row_dir / "pictures").exists()
    assert not (tmp_path / "table5" / "none" / "checkpoints").exists()
    assert os.listdir(tmp_path / "table5" / "lpmm+gam" / "checkpoints") == ["2"]

    # The command line builds the same config (or the rows' saved configs would not
    # match): it reuses both rows, trains nothing, prints the table and records itself.
    command = [sys.executable, "-m", "vlsa_jax.demo.sweep", f"--config=configs/demo.py:{DEMO_ARG}",
               "--config.demo.workers=1", "--grid=table5", "--rows=none,lpmm+gam",
               f"--workdir={tmp_path}"]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("reusing the results") == 2, result.stderr[-3000:]
    table = (tmp_path / "table5.md").read_text()
    assert table in result.stdout
    assert table.splitlines()[-1].endswith(f"--rows=none,lpmm+gam --workdir={tmp_path}`")
    again = json.loads((tmp_path / "table5.json").read_text())
    assert again["rows"] == record["rows"]

    # Fine-tuned beside zero-shot: both rows are reused and fine-tuned in their own
    # folders, the trained one from its final checkpoint, the other from initialisation.
    tuned = sweep.run_grid(config, "table5", tmp_path, ["none", "lpmm+gam"], finetune_steps=2)
    for name in ("none", "lpmm+gam"):
        zero_shot, finetuned = _metrics(tmp_path / "table5" / name)
        assert tuned["rows"][name]["test"] == record["rows"][name]["test"]
        assert tuned["rows"][name]["finetuned"]["test"] == _scores(finetuned)
    assert os.listdir(tmp_path / "table5" / "lpmm+gam" / "checkpoints") == ["2"]
    table = (tmp_path / "table5.md").read_text()
    assert re.search(rf"^\| lpmm\+gam (\| {number} ){{15}}\|$", table, re.MULTILINE), table


@pytest.mark.slow
def test_seeds_and_fine_tuning_with_fake_runs(tmp_path, monkeypatch):
    runs = _FakeRuns(monkeypatch, tmp_path / "records")
    runs.with_seeds = True
    config = _demo_config()
    record = sweep.run_grid(config, "table5", tmp_path, ["none", "gam"], "cmd", seeds=[0, 1],
                            finetune_steps=3)
    grid_dir = tmp_path / "table5"
    # Each seed's rows in their own folder; each row fine-tuned in its own, from its
    # final weights (the untrained row from its initialisation).
    assert runs.calls == [
        ("init", None), ("train", "none/finetune", 0, ""),
        ("train", "gam", 0, ""), ("train", "gam/finetune", 0, str(grid_dir / "seed0" / "gam")),
        ("init", None), ("train", "none/finetune", 1, ""),
        ("train", "gam", 1, ""), ("train", "gam/finetune", 1, str(grid_dir / "seed1" / "gam"))]
    assert record["seeds"] == [0, 1] and "seed" not in record
    assert record["finetune"] == {"steps": 3, "lr": sweep.FINETUNE_LR}
    finetuned = json.loads((grid_dir / "seed1" / "gam" / "finetune" / "config.json").read_text())
    assert finetuned["loss"]["lpmm"] is False and finetuned["loss"]["vtm"] is True
    assert finetuned["train"]["num_steps"] == 3
    assert finetuned["seed"] == finetuned["data"]["shuffle_seed"] == 1

    # The mean and std of every score are those of the seeds' metrics.json files.
    for name in ("none", "gam"):
        row = record["rows"][name]
        for sub, scored in (("", row), ("finetune", row["finetuned"])):
            runs_metrics = [json.loads((grid_dir / f"seed{seed}" / name / sub / "eval" /
                                        "test" / "metrics.json").read_text())
                            for seed in (0, 1)]
            for key in ("t2v/R@1", "t2a/R@10", "v2a/R@5"):
                values = np.array([m[key] for m in runs_metrics])
                assert scored["test"][key]["values"] == values.tolist()
                assert scored["test"][key]["mean"] == pytest.approx(values.mean())
                assert scored["test"][key]["std"] == pytest.approx(values.std(ddof=1))
        assert row["finetuned"]["test"]["t2v/R@1"]["mean"] != row["test"]["t2v/R@1"]["mean"]
        assert row["seeds"]["1"]["finetuned"]["step"] == 3
    # gam's fake R@1: step + 1 + 7 * seed, + 0.5 fine-tuned (pre-trained 2 steps, then 3).
    assert record["rows"]["gam"]["test"]["t2v/R@1"]["values"] == [3, 10]
    table = (tmp_path / "table5.md").read_text()
    assert "| gam | 6.5 ± 4.9 | 10.5 ± 4.9 |" in table
    assert "| 8.0 ± 4.9 | 12.0 ± 4.9 |" in table  # gam's fine-tuned T→V R@1, R@5

    # A second sweep reuses all of it; one seed keeps its own layout beside them.
    runs.calls.clear()
    again = sweep.run_grid(config, "table5", tmp_path, ["none", "gam"], seeds=[0, 1],
                           finetune_steps=3)
    assert runs.calls == [] and again["rows"] == record["rows"]
    single = sweep.run_grid(config, "table5", tmp_path, ["gam"], seeds=[1])
    assert runs.calls == [("train", "gam", 1, "")]
    assert single["seed"] == 1 and (grid_dir / "gam" / "eval").exists()
    # A fine-tuning interrupted (no results of its final step) runs again, alone.
    runs.calls.clear()
    (grid_dir / "seed1" / "gam" / "finetune" / "eval" / "test" / "metrics.json").unlink()
    sweep.run_grid(config, "table5", tmp_path, ["none", "gam"], seeds=[0, 1], finetune_steps=3)
    assert runs.calls == [("train", "gam/finetune", 1, str(grid_dir / "seed1" / "gam"))]


def _metrics(row_dir: pathlib.Path) -> tuple[dict, dict]:
    """A fine-tuned row's zero-shot and fine-tuned metrics.json, checked to be such."""
    zero_shot, finetuned = (json.loads((d / "eval" / "test" / "metrics.json").read_text())
                            for d in (row_dir, row_dir / sweep.FINETUNE_DIR))
    assert (zero_shot["protocol"], finetuned["protocol"]) == ("zero_shot", "fine_tuned")
    assert finetuned["step"] == 2
    assert os.listdir(row_dir / sweep.FINETUNE_DIR / "checkpoints") == ["2"]
    assert _scores(finetuned) != _scores(zero_shot)
    return zero_shot, finetuned


def _scores(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if "/" in k}


@pytest.mark.slow
def test_table5_over_two_seeds_fine_tuned_for_real(demo_data, tmp_path):
    # The untrained row, which needs no pre-training: the trained rows' fine-tuning is
    # run for real in the test above.
    config = _demo_config()
    _copy_corpus(demo_data, tmp_path)
    record = sweep.run_grid(config, "table5", tmp_path, ["none"], "cmd", seeds=[0, 1],
                            finetune_steps=2)
    row = record["rows"]["none"]
    per_seed = {seed: _metrics(tmp_path / "table5" / f"seed{seed}" / "none") for seed in (0, 1)}
    # Mean and sample std of each score over the seeds, as NumPy computes them.
    for i, scored in enumerate((row, row["finetuned"])):
        for key in ("t2v/R@1", "t2v/R@10", "t2a/R@5", "v2a/R@1", "t2a/MnR"):
            values = np.array([per_seed[seed][i][key] for seed in (0, 1)])
            assert scored["test"][key]["mean"] == pytest.approx(values.mean())
            assert scored["test"][key]["std"] == pytest.approx(values.std(ddof=1))
    cell = r"\d+\.\d ± \d+\.\d"
    table = (tmp_path / "table5.md").read_text()
    assert re.search(rf"^\| none (\| {cell} ){{14}}\| \d+\.\d \|$", table, re.MULTILINE), table

    # A bad --seeds stops the command in one line, before any work.
    command = [sys.executable, "-m", "vlsa_jax.demo.sweep", f"--config=configs/demo.py:{DEMO_ARG}",
               "--grid=table5", "--seeds=0,x", f"--workdir={tmp_path / 'bad'}"]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            capture_output=True, text=True, check=False)
    errors = [x for x in result.stderr.splitlines() if not x.startswith(("I", "W"))]
    assert result.returncode == 2 and errors == [
        "error: ValueError: --seeds=0,x: give distinct non-negative integers, e.g. "
        "--seeds=0,1,2"], result.stderr[-1500:]
    assert not (tmp_path / "bad").exists()
