r"""Self-attention's forward and backward: this project's form against jax.nn's.

    python benchmarks/attention.py                       # the video decoder's 1,568 tokens
    python benchmarks/attention.py --tokens=496 --dtypes=float32

`vlsa_jax.models.transformer.dot_product_attention` computes what
`jax.nn.dot_product_attention(implementation="xla")` computes. Each is jitted as the
gradient of a loss over its output with respect to q, k and v (batch --batch_size,
--tokens tokens, 12 heads of 64: the base model), and timed over --repeats calls after
one warm-up, the two alternating so that a slow spell of a shared machine lands on
both. Reports the medians of wall time and of this process's CPU time (all its
threads), the ratio jax.nn / ours, and the largest difference between their outputs and
gradients. Prints a table and one JSON line.
"""
import datetime
import json
import os
import pathlib
import statistics
import sys

from absl import app, flags

_ROOT = pathlib.Path(__file__).parents[1]
if str(_ROOT) not in sys.path:  # `python benchmarks/attention.py` from anywhere
    sys.path.insert(0, str(_ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import report  # noqa: E402
from vlsa_jax.models.transformer import dot_product_attention  # noqa: E402

flags.DEFINE_integer("batch_size", 2, "Batch.")
flags.DEFINE_integer("tokens", 1568, "Sequence length (the video decoder's: 8 x 196).")
flags.DEFINE_integer("heads", 12, "Attention heads.")
flags.DEFINE_integer("head_dim", 64, "Width of each head.")
flags.DEFINE_list("dtypes", list(report.DTYPES), "Dtypes of q, k and v.")
flags.register_validator("dtypes", lambda dtypes: set(dtypes) <= set(report.DTYPES),
                         f"--dtypes takes {', '.join(report.DTYPES)}")
flags.DEFINE_integer("repeats", 7, "Timed calls of each form (medians reported).")
FLAGS = flags.FLAGS

_FORMS = {
    "jax.nn.dot_product_attention": lambda q, k, v: jax.nn.dot_product_attention(
        q, k, v, implementation="xla"),
    "transformer.dot_product_attention": lambda q, k, v: dot_product_attention(
        q, k, v, None),
}


def gradient_step(attend, cotangent):
    """The jitted loss and its gradients with respect to q, k and v."""
    def loss(q, k, v):
        return jnp.sum(attend(q, k, v).astype(jnp.float32) * cotangent)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def time_dtype(dtype: str) -> dict:
    rng = np.random.default_rng(0)
    shape = (FLAGS.batch_size, FLAGS.tokens, FLAGS.heads, FLAGS.head_dim)
    q, k, v = (jnp.asarray(rng.normal(size=shape), dtype) for _ in range(3))
    cotangent = jnp.asarray(rng.normal(size=shape), jnp.float32)
    steps = {name: gradient_step(attend, cotangent) for name, attend in _FORMS.items()}
    outputs = {name: jax.block_until_ready(step(q, k, v)) for name, step in steps.items()}
    reference, ours = outputs.values()
    difference = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
                     for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(ours)))
    seconds = {name: [] for name in steps}  # (wall, CPU) of each call
    for _ in range(FLAGS.repeats):
        for name, step in steps.items():
            seconds[name].append(report.wall_and_cpu_seconds(
                lambda step=step: jax.block_until_ready(step(q, k, v))))
    figures = {"max_difference": difference}
    for name, calls in seconds.items():
        wall, cpu = zip(*calls)
        figures[f"{name}_wall_s"] = round(statistics.median(wall), 4)
        figures[f"{name}_cpu_s"] = round(statistics.median(cpu), 4)
    theirs, mine = _FORMS
    figures["ratio_wall"] = round(figures[f"{theirs}_wall_s"] / figures[f"{mine}_wall_s"], 3)
    figures["ratio_cpu"] = round(figures[f"{theirs}_cpu_s"] / figures[f"{mine}_cpu_s"], 3)
    return figures


def main(argv):
    del argv
    results = {dtype: time_dtype(dtype) for dtype in FLAGS.dtypes}
    print(f"attention forward + backward: batch {FLAGS.batch_size}, {FLAGS.tokens} tokens, "
          f"{FLAGS.heads} heads of {FLAGS.head_dim}; median of {FLAGS.repeats} "
          f"({jax.devices()[0].device_kind})")
    rows = []
    for dtype, figures in results.items():
        for name in _FORMS:
            rows.append((dtype, name, figures[f"{name}_wall_s"], figures[f"{name}_cpu_s"], ""))
        rows.append((dtype, "jax.nn / ours", figures["ratio_wall"], figures["ratio_cpu"],
                     f"{figures['max_difference']:.2g}"))
    report.print_rows(("dtype", "form", "wall s", "cpu s", "max difference"), rows)
    print(json.dumps({
        "benchmark": "attention",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": report.cpu_model(), "cores": os.cpu_count(), "device": jax.devices()[0].device_kind,
        "batch_size": FLAGS.batch_size, "tokens": FLAGS.tokens, "heads": FLAGS.heads,
        "head_dim": FLAGS.head_dim, "repeats": FLAGS.repeats, "results": results,
    }))


if __name__ == "__main__":
    app.run(main)
