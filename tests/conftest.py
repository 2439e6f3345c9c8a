"""Test session set-up: eight fake CPU devices, so sharded code paths run on a laptop."""
import os
import tempfile

# A collective still stuck after 2 minutes aborts the run instead of hanging it.
os.environ.setdefault("XLA_FLAGS", " ".join([
    "--xla_force_host_platform_device_count=8",
    "--xla_cpu_collective_call_warn_stuck_timeout_seconds=30",
    "--xla_cpu_collective_call_terminate_timeout_seconds=120",
]))

import jax  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

from vlsa_jax import sharding  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
# Before JAX initialises its backends, as the entry points do: eight fake devices can
# exhaust XLA's CPU thread pool with their collectives and deadlock (seen within a few
# dozen steps of the data2_fsdp4 layout); with 64 threads, over 600 runs of init and two
# steps passed.
sharding.enlarge_cpu_thread_pool()
# XLA's CPU compiles dominate the suite's time: skip most backend optimizations,
# and share compiled programs between tests (and test workers) through a disk cache.
jax.config.update("jax_disable_most_optimizations", True)
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(tempfile.gettempdir(), "vlsa_jax_test_compilation_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# grain worker processes read absl flags; pytest never parses them.
flags.FLAGS.mark_as_parsed()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: runs a command, the demo or the sweep end to end (deselect with "
        "-m 'not slow')")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """(config, workdir, records) of the tiny model trained 2 steps on a prepared 6-clip split.

    The retrieval tests (eval, export, search, fine-tuning) start from it.
    """
    from tests.data_helpers import prepared_split
    from vlsa_jax import train

    directory = tmp_path_factory.mktemp("trained_run")
    config, _, records = prepared_split(directory)
    # The training tests' schedule and mesh: their compiled step is reused.
    config.train.num_steps, config.train.stop_after_steps = 200, 2
    config.eval.splits = str(records / "train")
    config.eval.every_steps = 2  # the periodic sweep runs at the last step
    workdir = directory / "run"
    train.train_and_evaluate(config, str(workdir))
    return config, workdir, records
