"""Test session set-up: eight fake CPU devices, so sharded code paths run on a laptop."""
import os
import tempfile

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
from absl import flags  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
# XLA's CPU compiles dominate the suite's time: skip most backend optimizations,
# and share compiled programs between tests (and test workers) through a disk cache.
jax.config.update("jax_disable_most_optimizations", True)
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(tempfile.gettempdir(), "vlsa_jax_test_compilation_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# grain worker processes read absl flags; pytest never parses them.
flags.FLAGS.mark_as_parsed()
