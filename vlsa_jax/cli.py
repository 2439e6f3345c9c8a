"""What every command-line entry of vlsa_jax shares: process set-up and one-line errors.

An entry point calls `cli.run(main)` instead of `absl.app.run(main)`: an error, whether
in parsing the flags and the config or in the work itself, ends the process with one
line on stderr (`error: <kind>: <what is wrong and what to do>`) and a non-zero exit
code (see USAGE_ERROR); `--debug` (or VLSA_DEBUG=1) shows the traceback instead. A stop that saved its
work (`exit_code` on the exception, e.g. training preempted) is a warning, not an error.
"""
import difflib
import functools
import logging as std_logging
import os
import re
import sys
from collections.abc import Callable, Sequence

import jax
from absl import app, flags, logging

from vlsa_jax import config_lib, sharding

# transformers advises, in every process that imports it, that PyTorch is absent: vlsa_jax
# uses it for tokenizers alone. Set before it is imported, and inherited by workers.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

FLAGS = flags.FLAGS
flags.DEFINE_bool("debug", False, "On an error, show its traceback instead of one line "
                  "(also VLSA_DEBUG=1).")

# Exit codes: 2 a bad command line, config or input (a file that is not there, a value
# that does not fit), 1 any other failure of the work.
USAGE_ERROR = 2
FAILURE = 1
_INPUT_ERRORS = (config_lib.ConfigError, app.UsageError, FileNotFoundError,
                 NotADirectoryError, ValueError)


def run(main: Callable[[list[str]], object]) -> None:
    """`absl.app.run(main)` with errors reported in one line (see the module docstring)."""
    app.run(functools.partial(_reporting_errors, main), flags_parser=_parse_flags)


def _debug() -> bool:
    return os.environ.get("VLSA_DEBUG", "") not in ("", "0") or (
        FLAGS.is_parsed() and FLAGS.debug)


def _parse_flags(argv: Sequence[str]) -> list[str]:
    """Parses the flags and loads the config file (lazily loaded otherwise), so that a
    bad command line or config fails here, before any work."""
    try:
        rest = FLAGS(argv)
        if "config" in FLAGS and FLAGS["config"].present:
            # A file that failed to load raises on the config's first attribute access.
            FLAGS.config.keys()
        return rest
    except Exception as error:  # config files raise whatever their code raises
        if _debug() or "--debug" in argv:
            raise
        _exit(_override_problem(argv) or _describe(error), USAGE_ERROR)


def _reporting_errors(main, argv):
    try:
        return main(argv)
    except Exception as error:
        if _debug():
            raise
        stop_code = getattr(error, "exit_code", None)
        if stop_code is not None:
            logging.warning("%s", error)
            sys.exit(stop_code)
        _exit(_describe(error), USAGE_ERROR if isinstance(error, _INPUT_ERRORS) else FAILURE)


def _describe(error: BaseException) -> str:
    """'<kind>: <message>' in one line. Errors raised while parsing a flag or loading a
    config file carry the cause's traceback in their text: its last line is the cause."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Pass --help")]
    if isinstance(error, (flags.Error, OSError)) and len(lines) > 1:
        return lines[-1]
    text = lines[0] if lines else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _exit(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _override_problem(argv: Sequence[str]) -> str | None:
    """Names the first `--config.a.b=v` override whose field the config lacks."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return None
    path, _, arg = spec.partition(":")
    try:
        config = config_lib.load_config_module(path).get_config(arg or None)
    except Exception as error:
        return f"--config={spec}: {_describe(error)}"
    for override in argv:
        match = re.match(r"--config\.([\w.]+)=", override)
        if not match:
            continue
        node, keys = config, match.group(1).split(".")
        for depth, key in enumerate(keys):
            if not hasattr(node, "keys") or key not in node:
                near = difflib.get_close_matches(key, list(node.keys()) if hasattr(
                    node, "keys") else [], n=1)
                hint = f" (did you mean {'.'.join(keys[:depth] + near)}?)" if near else ""
                return f"ConfigError: {'.'.join(keys[:depth + 1])}: unknown field{hint}"
            node = node[key]
    return None


# Libraries whose INFO records are noise on a user's console: Orbax logs every stage of
# every save, JAX's backend probe every platform it does not find (libtpu on a CPU).
_QUIET_AT_INFO = ("/orbax/", "/jax/_src/xla_bridge.py")


def _not_library_info(record: std_logging.LogRecord) -> bool:
    """Keeps the warnings and errors of `_QUIET_AT_INFO`, and everything else."""
    return record.levelno >= std_logging.WARNING or not any(
        part in record.pathname for part in _QUIET_AT_INFO)


def setup_process(distributed: bool = False, **initialize_kwargs) -> None:
    """Sizes XLA's CPU thread pool, quiets libraries' INFO records, joins a cluster's peers.

    Must run before anything touches a device.

    Args:
      distributed: call `jax.distributed.initialize(**initialize_kwargs)` (multi-host
        clusters; on TPU pods and SLURM it finds its peers itself).
      **initialize_kwargs: coordinator_address, num_processes, process_id; None
        leaves each to be discovered.
    """
    sharding.enlarge_cpu_thread_pool()
    logging.get_absl_handler().addFilter(_not_library_info)
    if distributed:
        jax.distributed.initialize(**initialize_kwargs)
    logging.info("process %d/%d, %d local / %d global devices (%s)",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count(), jax.default_backend())
