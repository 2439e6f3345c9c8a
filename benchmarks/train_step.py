r"""Times the jitted pre-training step of a config on this machine's devices.

    python benchmarks/train_step.py --variant=base --batch_size=2 --steps=5
    python benchmarks/train_step.py --variant=small --batch_size=16 --remat_policies=none,full

Prints a table (one row per remat policy) and one JSON line with the same figures:
compile time, median and spread of the step time over `--steps` timed steps (after
one warm-up step), and examples/s.
"""
import json
import pathlib
import statistics
import time

import jax
from absl import app, flags

from vlsa_jax import config_lib, sharding, train
from vlsa_jax.data.source import RandomBatchSource

_CONFIG = pathlib.Path(__file__).parents[1] / "configs" / "pretrain.py"

flags.DEFINE_string("variant", "base", "Config variant.")
flags.DEFINE_integer("batch_size", 2, "Global batch size.")
flags.DEFINE_integer("steps", 5, "Timed steps (after one warm-up step).")
flags.DEFINE_list("remat_policies", ["none"], "model.remat_policy values to compare.")
flags.DEFINE_string("dtype", "float32", "Activation dtype.")
FLAGS = flags.FLAGS


def time_step(config) -> dict:
    mesh = sharding.make_mesh(config.mesh)
    training = train.setup_training(config, mesh)
    state = training.state.init(training.seed_key)
    source = RandomBatchSource(config)
    batch = sharding.global_batch(next(source), mesh)

    start = time.perf_counter()
    compiled = training.step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start

    state, metrics = compiled(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(FLAGS.steps):
        batch = sharding.global_batch(next(source), mesh)
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "remat_policy": config.model.remat_policy, "compile_s": round(compile_s, 2),
        "step_s_median": round(median, 4), "step_s_min": round(min(times), 4),
        "step_s_max": round(max(times), 4),
        "examples_per_s": round(config.train.batch_size / median, 3),
    }


def main(argv):
    del argv
    base = config_lib.load_config_module(_CONFIG).get_config(
        f"variant={FLAGS.variant},batch_size={FLAGS.batch_size}")
    base.dtype = FLAGS.dtype
    rows = []
    for policy in FLAGS.remat_policies:
        config = base.copy_and_resolve_references()
        config.model.remat_policy = policy
        rows.append(time_step(config))
    header = (f"variant={FLAGS.variant} batch={FLAGS.batch_size} dtype={FLAGS.dtype} "
              f"devices={jax.device_count()}x{jax.devices()[0].platform}")
    print(header)
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))
    print(json.dumps({"benchmark": "train_step", "variant": FLAGS.variant,
                      "batch_size": FLAGS.batch_size, "dtype": FLAGS.dtype,
                      "devices": jax.device_count(), "platform": jax.devices()[0].platform,
                      "rows": rows}))


if __name__ == "__main__":
    app.run(main)
