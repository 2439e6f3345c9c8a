"""The ablation sweep: its grids, its table, resuming, and one real two-row run."""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.helpers import load_config
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
        self.calls.append(("train", pathlib.Path(workdir).name))
        pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(workdir) / "config.json").write_text(json.dumps(config.to_dict()))
        return {"step": config.train.num_steps, "params": "trained"}

    def initial_params(self, config):
        self.calls.append(("init", None))
        return "initial"

    def score_params(self, config, params, step, row_dir):
        out = row_dir / "eval" / "test"
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"step": step} | _fake_scores(step)))


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
def test_two_rows_of_table5_for_real_then_from_the_command_line(tmp_path):
    # In process, on the 8 fake devices: test_demo.py's programs are compiled already.
    config = _demo_config()
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
