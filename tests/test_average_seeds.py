"""Averaging retrieval results over seeds: mean and sample std against NumPy, the one-line
error of a missing metrics.json, and the warning when runs were evaluated at other steps."""
import json
import logging
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, child_env
from vlsa_jax import average_seeds

# Known values per seed: (R@1, R@5, R@10, R@50, MdR, MnR) of t2v; v2t is t2v minus 1.
_VALUES = {"s0": (27.0, 57.0, 69.0, 90.0, 4.0, 30.5),
           "s1": (27.5, 57.9, 68.4, 91.0, 4.0, 29.0),
           "s2": (26.8, 57.1, 69.3, 90.4, 5.0, 31.25)}


def _write_run(run_dir: pathlib.Path, split: str, values, step: int = 720,
               directions=("t2v", "v2t"), **header) -> None:
    """A metrics.json as `vlsa_jax.evaluate` writes it."""
    metrics = {"step": step, "split_dir": f"data/msrvtt/{split}", "distractors": None,
               "protocol": "fine_tuned", "caption_mode": "all"} | header
    for offset, direction in enumerate(directions):
        for name, value in zip(average_seeds.METRICS, values):
            metrics[f"{direction}/{name}"] = value - offset
        metrics[f"{direction}/num_queries"] = metrics[f"{direction}/num_gallery"] = 1000
    path = average_seeds.metrics_path(run_dir, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2))


@pytest.fixture
def runs(tmp_path):
    """Three seeds' runs evaluated on 1k-A at step 720; seed 2 also on 'extra'."""
    dirs = []
    for seed, values in _VALUES.items():
        _write_run(tmp_path / seed, "1k-A", values)
        dirs.append(str(tmp_path / seed))
    _write_run(tmp_path / "s2", "extra", _VALUES["s2"])
    return dirs


def test_mean_and_sample_std_match_numpy(runs):
    record = average_seeds.average_runs(runs)
    assert list(record["splits"]) == ["1k-A"]  # 'extra' is not in every run
    split = record["splits"]["1k-A"]
    assert split["num_runs"] == 3 and not split["warnings"]
    assert [run["step"] for run in split["runs"]] == [720, 720, 720]
    for offset, direction in enumerate(("t2v", "v2t")):
        for i, metric in enumerate(average_seeds.METRICS):
            values = np.array([v[i] for v in _VALUES.values()]) - offset
            summary = split["directions"][direction][metric]
            assert summary["values"] == pytest.approx(values.tolist())
            assert summary["mean"] == pytest.approx(np.mean(values))
            assert summary["std"] == pytest.approx(np.std(values, ddof=1))


def test_the_table_shows_mean_plus_minus_std(runs):
    text = average_seeds.format_markdown(average_seeds.average_runs(runs))
    r1 = np.array([v[0] for v in _VALUES.values()])
    assert f"| t2v | {r1.mean():.1f} ± {r1.std(ddof=1):.1f} |" in text
    assert "## 1k-A: 3 runs, fine_tuned" in text
    assert "(step 720)" in text and "Warning" not in text


def test_one_run_has_no_deviation(runs):
    split = average_seeds.average_runs(runs[:1])["splits"]["1k-A"]
    assert split["directions"]["t2v"]["R@1"] == {"mean": 27.0, "std": None, "values": [27.0]}
    assert "| t2v | 27.0 | 57.0 | 69.0 |" in average_seeds.format_split(split)


def test_a_step_mismatch_is_warned_of(runs, caplog):
    _write_run(pathlib.Path(runs[1]), "1k-A", _VALUES["s1"], step=650)
    with caplog.at_level(logging.WARNING):
        split = average_seeds.average_runs(runs, ["1k-A"])["splits"]["1k-A"]
    assert [run["step"] for run in split["runs"]] == [720, 650, 720]
    assert any("differ in step" in w and "650" in w for w in split["warnings"])
    assert any("differ in step" in r.getMessage() for r in caplog.records)
    assert "**Warning:** the runs differ in step" in average_seeds.format_split(split)


def test_a_protocol_mix_is_warned_of(runs):
    _write_run(pathlib.Path(runs[2]), "1k-A", _VALUES["s2"], protocol="zero_shot")
    split = average_seeds.average_runs(runs)["splits"]["1k-A"]
    assert any("differ in protocol" in w for w in split["warnings"])


def test_a_missing_metrics_file_names_the_run_and_split(runs):
    with pytest.raises(FileNotFoundError, match=r"run .*s0 has no results for split 'extra'"):
        average_seeds.average_runs(runs, ["extra"])


def test_a_run_without_evaluations_is_named(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no eval/<split>/metrics.json"):
        average_seeds.average_runs(runs + [str(tmp_path / "empty")])


def test_out_writes_markdown_and_the_json_record(runs, tmp_path):
    record = average_seeds.average_runs(runs)
    text = average_seeds.format_markdown(record)
    md, js = average_seeds.write_outputs(record, text, tmp_path / "out" / "msrvtt.md")
    assert md.read_text() == text
    assert json.loads(js.read_text()) == json.loads(json.dumps(record))
    with pytest.raises(ValueError, match="Markdown"):
        average_seeds.record_path(tmp_path / "out.json")


@pytest.mark.slow
def test_the_command_prints_tables_and_fails_in_one_line(runs, tmp_path):
    def command(*args):
        return subprocess.run([sys.executable, "-m", "vlsa_jax.average_seeds", *args],
                              capture_output=True, text=True, cwd=ROOT, env=child_env(1),
                              timeout=120)

    done = command(*runs, "--split=1k-A", f"--out={tmp_path / 'r.md'}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (tmp_path / "r.md").read_text()
    assert "| t2v | 27.1 ± 0.4 |" in done.stdout
    failed = command(*runs, "--split=extra")
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith(
        "error: FileNotFoundError: run ")
    assert "'extra'" in failed.stderr
