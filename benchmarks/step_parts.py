r"""Where the pre-training step's time goes: each transformer pass it makes, timed alone.

    python benchmarks/step_parts.py                            # base, batch 2, float32
    python benchmarks/step_parts.py --dtype=bfloat16 --variant=small

The default objective runs these stacks (`vlsa_jax.flops.flops_breakdown` counts the
same passes): the joint LPMM encoder pass over the visible tokens of every modality,
one decoder pass per modality over all its tokens, and the unimodal global passes of
GAM (over the visible tokens, `gam.masked_inputs`). Each is built as a
`models.transformer.Stack` of the config's sizes and timed as the jitted gradient of
a loss over its output with respect to its parameters and input, median of
--repeats calls after one warm-up, in wall time and in this process's CPU time.
Beside each: its model FLOPs (3 x `flops.stack_flops` x batch), attention's share of
them (Q K^T and A V), and the share of the matmul peak (`report.matmul_times`,
timed before and after the parts) it reaches. The parts' sum against the whole step
(benchmarks/train_step.py) is what the rest costs: embeddings, masking's gathers and
scatters, heads and losses, the optimizer.

Prints a table and one JSON line.
"""
import datetime
import json
import os
import pathlib
import statistics
import sys

from absl import app, flags

_ROOT = pathlib.Path(__file__).parents[1]
if str(_ROOT) not in sys.path:  # `python benchmarks/step_parts.py` from anywhere
    sys.path.insert(0, str(_ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks import report  # noqa: E402
from vlsa_jax import config_lib, flops  # noqa: E402
from vlsa_jax.models.transformer import Stack, StackSpec  # noqa: E402

_CONFIG = _ROOT / "configs" / "pretrain.py"

flags.DEFINE_string("variant", "base", "Config variant.")
flags.DEFINE_integer("batch_size", 2, "Batch.")
flags.DEFINE_enum("dtype", "float32", report.DTYPES, "Activation dtype (config.dtype).")
flags.DEFINE_integer("repeats", 3, "Timed calls of each part (medians reported).")
flags.DEFINE_integer("peak_size", 2048, "Side of the square matmul that measures the peak.")
FLAGS = flags.FLAGS


def step_parts(config) -> list[tuple[str, int, StackSpec]]:
    """(name, tokens, spec) of each transformer pass of the default objective."""
    m = config.model
    total, kept = flops.token_counts(config)
    encoder = StackSpec(width=m.width, depth=m.depth, num_heads=m.num_heads,
                        mlp_dim=m.mlp_dim, dtype=jnp.dtype(config.dtype))
    decoder = StackSpec(width=m.decoder_width, depth=m.decoder_depth,
                        num_heads=m.decoder_num_heads, mlp_dim=m.decoder_mlp_dim,
                        dtype=jnp.dtype(config.dtype))
    global_tokens = kept if config.gam.masked_inputs else total
    parts = [("encoder, LPMM joint pass", sum(kept.values()), encoder)]
    parts += [(f"decoder, {modality}", tokens, decoder) for modality, tokens in total.items()]
    parts += [(f"encoder, global {modality} pass", tokens, encoder)
              for modality, tokens in global_tokens.items()]
    return parts


def time_part(tokens: int, spec: StackSpec, batch_size: int, repeats: int) -> dict:
    make = lambda: Stack(spec, rngs=nnx.Rngs(0))  # noqa: E731
    with nnx.use_eager_sharding(False):
        graphdef = nnx.graphdef(nnx.eval_shape(make))
        params = jax.jit(lambda: nnx.state(make()))()
    x = jax.random.normal(jax.random.key(1), (batch_size, tokens, spec.width), spec.dtype)

    def loss(params, x):
        return jnp.sum(nnx.merge(graphdef, params)(x).astype(jnp.float32) ** 2)

    gradient = jax.jit(jax.grad(loss, argnums=(0, 1)))
    jax.block_until_ready(gradient(params, x))
    wall, cpu = zip(*(report.wall_and_cpu_seconds(
        lambda: jax.block_until_ready(gradient(params, x))) for _ in range(repeats)))
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


def main(argv):
    del argv
    config = config_lib.load_config_module(_CONFIG).get_config(
        f"variant={FLAGS.variant},batch_size={FLAGS.batch_size}")
    config.dtype = FLAGS.dtype
    peak_times = report.matmul_times(FLAGS.dtype, FLAGS.peak_size, 5)
    rows = []
    for name, tokens, spec in step_parts(config):
        figures = time_part(tokens, spec, FLAGS.batch_size, FLAGS.repeats)
        layer = flops.stack_flops(tokens, spec.width, 1, spec.mlp_dim)
        attention = 4.0 * tokens * tokens * spec.width
        figures.update(name=name, tokens=tokens, width=spec.width, depth=spec.depth,
                       model_flops=flops.TRAIN_STEP_MULTIPLIER * FLAGS.batch_size
                       * flops.stack_flops(tokens, spec.width, spec.depth, spec.mlp_dim),
                       attention_share=attention / layer)
        rows.append(figures)
    peak_times += report.matmul_times(FLAGS.dtype, FLAGS.peak_size, 5)
    peak = 2.0 * FLAGS.peak_size**3 / statistics.median(peak_times)
    for row in rows:
        row["share_of_peak"] = row["model_flops"] / row["wall_s"] / peak
    total_wall = sum(row["wall_s"] for row in rows)
    print(f"{FLAGS.variant}, batch {FLAGS.batch_size}, {FLAGS.dtype}: forward + backward of "
          f"each stack alone; matmul peak {peak / 1e9:.1f} GFLOP/s; median of {FLAGS.repeats}")
    report.print_rows(
        ("part", "layers x width over tokens", "wall s", "cpu s", "share of time",
         "GFLOP", "share of peak", "attention's FLOPs"),
        [(row["name"], f"{row['depth']} x {row['width']} over {row['tokens']}",
          f"{row['wall_s']:.2f}", f"{row['cpu_s']:.2f}", f"{row['wall_s'] / total_wall:.0%}",
          f"{row['model_flops'] / 1e9:.0f}", f"{row['share_of_peak']:.0%}",
          f"{row['attention_share']:.0%}") for row in rows]
        + [("sum of the parts", "", f"{total_wall:.2f}",
            f"{sum(row['cpu_s'] for row in rows):.2f}", "100%",
            f"{sum(row['model_flops'] for row in rows) / 1e9:.0f}",
            f"{sum(row['model_flops'] for row in rows) / total_wall / peak:.0%}", "")])
    print(json.dumps({
        "benchmark": "step_parts",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": report.cpu_model(), "cores": os.cpu_count(),
        "device": jax.devices()[0].device_kind, "variant": FLAGS.variant,
        "batch_size": FLAGS.batch_size, "dtype": FLAGS.dtype, "repeats": FLAGS.repeats,
        "peak_flops_per_s": peak, "parts": rows,
    }))


if __name__ == "__main__":
    app.run(main)
