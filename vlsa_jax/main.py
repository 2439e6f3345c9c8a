r"""Entry point.

    python -m vlsa_jax.main --config=configs/demo.py --workdir=DIR   # the whole demo
    python -m vlsa_jax.main --config=configs/pretrain.py:variant=tiny --workdir=DIR
    python -m vlsa_jax.main --config=... --workdir=DIR --mode=eval     # retrieval sweep
    python -m vlsa_jax.main --config=... --workdir=DIR --mode=export   # embeddings to .npy

A config is a `get_config(arg)` file; fields are overridden with `--config.x.y=v`.
On a multi-host cluster (TPU pod, SLURM) pass `--distributed` so that every process
joins through `jax.distributed.initialize()` before any device is touched.
"""
from absl import app, flags
from ml_collections import config_flags

from vlsa_jax import cli, jobs

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "A get_config(arg) file: path[:key=value,...].", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the config.")
flags.DEFINE_enum("mode", "train", jobs.MODES,
                  "train: pre-train or fine-tune (resuming in --workdir); eval: the retrieval "
                  "sweep of config.eval on a checkpoint; export: that checkpoint's embeddings "
                  "of the config.eval splits, as .npy files.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() (multi-host clusters). On TPU pods and "
                  "SLURM it finds its peers itself; elsewhere give the three flags below.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (with --distributed).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --distributed).")
flags.DEFINE_integer("process_id", None, "This process's index (with --distributed).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.setup_process(FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                      num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    jobs.run(FLAGS.config, FLAGS.workdir, FLAGS.mode)


if __name__ == "__main__":
    cli.run(main)
