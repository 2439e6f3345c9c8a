"""The entry set-up: Orbax's and JAX's backend-probe INFO records stay out of absl's log,
their warnings get through."""
import logging as std_logging
import subprocess
import sys

import pytest
from absl import logging

from vlsa_jax import cli

_ORBAX_FILE = "/site-packages/orbax/checkpoint/_src/checkpointers/async_checkpointer.py"
_JAX_PROBE_FILE = "/site-packages/jax/_src/xla_bridge.py"


def _record(level, pathname):
    return std_logging.LogRecord("some.logger", level, pathname, 1, "message", None, None)


@pytest.fixture
def absl_handler():
    """absl's handler without the set-up's filter (as a process starts); restored after."""
    handler = logging.get_absl_handler()
    filters = list(handler.filters)
    handler.removeFilter(cli._not_library_info)
    yield handler
    handler.filters[:] = filters


@pytest.mark.parametrize("library_file", [_ORBAX_FILE, _JAX_PROBE_FILE])
def test_setup_process_keeps_library_info_out_of_the_absl_log(absl_handler, library_file):
    assert absl_handler.filter(_record(std_logging.INFO, library_file))  # before set-up
    cli.setup_process()
    assert not absl_handler.filter(_record(std_logging.INFO, library_file))
    assert not absl_handler.filter(_record(std_logging.DEBUG, library_file))
    for level in (std_logging.WARNING, std_logging.ERROR):
        assert absl_handler.filter(_record(level, library_file))
    for level in (std_logging.INFO, std_logging.WARNING):
        assert absl_handler.filter(_record(level, "/home/someone/vlsa_jax/train.py"))


class _Stopped(Exception):
    exit_code = 0


@pytest.mark.parametrize("error, code, line", [
    (ValueError("bad value\nmore detail"), cli.USAGE_ERROR, "error: ValueError: bad value"),
    (FileNotFoundError("no such file: x.csv"), cli.USAGE_ERROR,
     "error: FileNotFoundError: no such file: x.csv"),
    (RuntimeError("the work failed"), cli.FAILURE, "error: RuntimeError: the work failed")])
def test_an_error_is_one_line_and_an_exit_code(capsys, error, code, line):
    def main(_):
        raise error

    with pytest.raises(SystemExit) as exit_:
        cli._reporting_errors(main, ["prog"])
    assert exit_.value.code == code
    assert capsys.readouterr().err.splitlines() == [line]


def test_debug_shows_the_traceback_and_a_saved_stop_is_no_error(monkeypatch, capsys):
    def stopped(_):
        raise _Stopped("SIGTERM: stopped at step 3")

    with pytest.raises(SystemExit) as exit_:
        cli._reporting_errors(stopped, ["prog"])
    assert exit_.value.code == 0 and capsys.readouterr().err == ""
    monkeypatch.setenv("VLSA_DEBUG", "1")
    with pytest.raises(KeyError):
        cli._reporting_errors(lambda _: {}["missing"], ["prog"])


def test_a_mistyped_override_is_named_with_its_nearest_field():
    argv = ["prog", "--config=configs/pretrain.py:variant=tiny", "--config.train.batch_size=4",
            "--config.trian.steps=3"]
    assert cli._override_problem(argv) == (
        "ConfigError: trian: unknown field (did you mean train?)")
    argv[-1] = "--config.train.batch_sizee=3"
    assert cli._override_problem(argv) == (
        "ConfigError: train.batch_sizee: unknown field (did you mean train.batch_size?)")
    argv[1] = "--config=configs/pretrain.py:variant=tinyy"
    assert cli._override_problem(argv).startswith(
        "--config=configs/pretrain.py:variant=tinyy: ValueError: variant='tinyy'")


@pytest.mark.slow
def test_entry_points_fail_in_one_line_before_any_work(tmp_path):
    from tests.helpers import ROOT, child_env

    workdir = tmp_path / "run"
    for args, line in [
        (["--config=configs/pretrain.py:variant=tiny", "--config.train.batch_sizee=3"],
         "error: ConfigError: train.batch_sizee: unknown field (did you mean "
         "train.batch_size?)"),
        (["--config=configs/missing.py"], "error: --config=configs/missing.py: "
         f"FileNotFoundError: [Errno 2] No such file or directory: '{ROOT}/configs/missing.py'"),
        (["--config=configs/pretrain.py:variant=tiny", "--config.train.batch_size=1"],
         "error: ConfigError: train.batch_size: 1 is too small; contrastive losses need at "
         "least 2")]:
        result = subprocess.run(
            [sys.executable, "-m", "vlsa_jax.main", f"--workdir={workdir}", *args],
            cwd=ROOT, env=child_env(1), capture_output=True, text=True)
        errors = [x for x in result.stderr.splitlines() if not x.startswith(("I", "W"))]
        assert result.returncode == cli.USAGE_ERROR and errors == [line], result.stderr[-1500:]
        assert not workdir.exists()
