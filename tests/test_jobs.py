"""`--mode` dispatch: the core's train, eval and export jobs, or the runner a config names."""
import json
import sys

import pytest

from tests.helpers import load_config
from vlsa_jax import jobs

_RUNNER = '''
import json


def run(config, workdir, mode):
    with open(f"{workdir}/ran.json", "w") as f:
        json.dump({"variant": config.variant, "mode": mode}, f)
    return "ran " + mode
'''


@pytest.fixture
def runner_module(tmp_path, monkeypatch):
    """The name of a module, importable from sys.path, whose `run` records its call."""
    name = "vlsa_jax_test_jobs_runner"
    (tmp_path / f"{name}.py").write_text(_RUNNER)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def core_jobs(monkeypatch):
    """The core's jobs replaced by stand-ins that record which ran, on what."""
    calls = []
    for module, function in ((jobs.train, "train_and_evaluate"),
                             (jobs.evaluate, "evaluate_checkpoint"),
                             (jobs.export, "export_checkpoint")):
        monkeypatch.setattr(module, function,
                            lambda config, workdir, f=function: calls.append((f, workdir)) or f)
    return calls


@pytest.mark.parametrize("mode", ["train", "eval", "export"])
def test_a_config_with_a_runner_is_run_by_it(runner_module, core_jobs, tmp_path, mode):
    config = load_config()
    config.runner = f"{runner_module}:run"
    assert jobs.run(config, str(tmp_path), mode) == f"ran {mode}"
    assert json.loads((tmp_path / "ran.json").read_text()) == {"variant": "tiny", "mode": mode}
    assert core_jobs == []


def test_without_a_runner_each_mode_runs_its_core_job(core_jobs, tmp_path):
    config = load_config()
    assert not config.runner
    for mode in jobs.MODES:
        jobs.run(config, str(tmp_path), mode)
    assert core_jobs == [("train_and_evaluate", str(tmp_path)),
                         ("evaluate_checkpoint", str(tmp_path)),
                         ("export_checkpoint", str(tmp_path))]


def test_an_unknown_mode_is_an_error(core_jobs, tmp_path):
    with pytest.raises(ValueError, match="'predict' is not one of"):
        jobs.run(load_config(), str(tmp_path), "predict")
    assert core_jobs == []
