"""The set-up that every command-line entry of vlsa_jax runs before its work."""
import logging as std_logging

import jax
from absl import logging

from vlsa_jax import sharding


def _not_orbax_info(record: std_logging.LogRecord) -> bool:
    # Orbax logs every stage of every save at INFO; keep its warnings and errors only.
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def setup_process(distributed: bool = False, **initialize_kwargs) -> None:
    """Sizes XLA's CPU thread pool, quiets Orbax's log and, on a cluster, joins the peers.

    Must run before anything touches a device.

    Args:
      distributed: call `jax.distributed.initialize(**initialize_kwargs)` (multi-host
        clusters; on TPU pods and SLURM it finds its peers itself).
      **initialize_kwargs: coordinator_address, num_processes, process_id; None
        leaves each to be discovered.
    """
    sharding.enlarge_cpu_thread_pool()
    logging.get_absl_handler().addFilter(_not_orbax_info)
    if distributed:
        jax.distributed.initialize(**initialize_kwargs)
    logging.info("process %d/%d, %d local / %d global devices (%s)",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count(), jax.default_backend())
