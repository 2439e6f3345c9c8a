r"""How well the jitted pre-training step uses this machine: time, FLOPs, MFU, memory.

    python benchmarks/train_step.py                      # quick: tiny and small, float32
    python benchmarks/train_step.py --variants=base,small --dtypes=float32,bfloat16
    python benchmarks/train_step.py --variants=small --batch_size=16 --remat_policies=none,full

One row per variant x dtype x remat policy, each in a fresh process (so that its peak
memory is its own): compile time; the median (and range) of the step time over
`--steps` timed steps after one warm-up step; examples/s; the model FLOPs of a step
(`vlsa_jax.flops.model_flops_per_step`: the analytic count, 1 multiply-add = 2
FLOPs, a step = 3 x forward, recomputation by remat not counted); the matmul peak of
this machine in the row's dtype, measured in the same process just before and just
after the step's timing (2 n^3 FLOPs over the median time of a jitted n x n matmul:
float32 operands, or bfloat16 operands accumulating in float32 for bfloat16 rows);
MFU = model FLOPs / step time / peak; and peak memory: the device's
`peak_bytes_in_use` where the device reports it, else the process's peak host RSS
(which includes the Python and XLA runtime and the compiler's own peak).

Prints a table and one JSON line with the same figures, the date and the machine.
"""
import concurrent.futures
import datetime
import json
import multiprocessing
import os
import pathlib
import platform
import resource
import statistics
import sys
import time

from absl import app, flags

_ROOT = pathlib.Path(__file__).parents[1]
if str(_ROOT) not in sys.path:  # `python benchmarks/train_step.py` from anywhere
    sys.path.insert(0, str(_ROOT))

from benchmarks import report  # noqa: E402

_CONFIG = _ROOT / "configs" / "pretrain.py"

flags.DEFINE_list("variants", ["tiny", "small"], "Config variants.")
flags.DEFINE_list("dtypes", ["float32"], "Activation dtypes (config.dtype).")
flags.register_validator("dtypes", lambda dtypes: set(dtypes) <= set(report.DTYPES),
                         f"--dtypes takes {', '.join(report.DTYPES)}")
flags.DEFINE_list("remat_policies", ["none"], "model.remat_policy values.")
flags.DEFINE_integer("batch_size", 2, "Global batch size.")
flags.DEFINE_integer("steps", 5, "Timed steps (after one warm-up step); at least 5.")
flags.DEFINE_integer("peak_size", 0,
                     "Side of the square matmul that measures the peak; 0: 2048 on a CPU, "
                     "8192 on an accelerator.")
flags.DEFINE_integer("peak_repeats", 5,
                     "Timed matmuls for the peak, before and again after the step (median).")
flags.DEFINE_bool("isolate", True,
                  "Run each row in a fresh process (its own peak memory). Off: all rows "
                  "in this process, and peak memory is the process's peak so far.")
FLAGS = flags.FLAGS


def peak_memory() -> tuple[float, str]:
    """(bytes, what): the device's peak allocation where it reports one, else peak host RSS."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return float(stats["peak_bytes_in_use"]), "device"
    try:  # VmHWM: the peak resident set, in kB
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) * 1024, "host RSS"
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "host RSS"


def run_row(variant: str, dtype: str, remat: str, batch_size: int, steps: int,
            peak_size: int, peak_repeats: int) -> dict:
    """Compiles and times one config's step; returns the row (see the module docstring)."""
    import jax

    from vlsa_jax import config_lib, flops, sharding, train
    from vlsa_jax.data.source import RandomBatchSource

    config = config_lib.load_config_module(_CONFIG).get_config(
        f"variant={variant},batch_size={batch_size}")
    config.dtype = dtype
    config.model.remat_policy = remat

    platform_name = jax.devices()[0].platform
    size = peak_size or (2048 if platform_name == "cpu" else 8192)
    # Matmuls are timed before and after the step, so that a machine whose load
    # changes during the row is sampled at both ends; the peak is their median.
    peak_times = report.matmul_times(dtype, size, peak_repeats)

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
    for _ in range(steps):
        batch = sharding.global_batch(next(source), mesh)
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    peak_times += report.matmul_times(dtype, size, peak_repeats)
    peak = 2.0 * size**3 / statistics.median(peak_times)
    model_flops = flops.model_flops_per_step(config)
    memory, memory_kind = peak_memory()
    return {
        "variant": variant, "dtype": dtype, "remat_policy": remat, "batch_size": batch_size,
        "compile_s": round(compile_s, 2), "step_s_median": round(median, 4),
        "step_s_min": round(min(times), 4), "step_s_max": round(max(times), 4),
        "examples_per_s": round(batch_size / median, 3),
        "model_flops_per_step": model_flops, "achieved_flops_per_s": model_flops / median,
        "peak_flops_per_s": peak, "peak_matmul_size": size,
        "mfu": round(model_flops / median / peak, 4),
        "peak_memory_gib": round(memory / 2**30, 2), "peak_memory_of": memory_kind,
    }


def _run_isolated(kwargs: dict) -> dict:
    """`run_row` in a fresh process; a process that dies (e.g. out of memory) gives a
    row that says so, and the other rows still run."""
    context = multiprocessing.get_context("spawn")  # never fork a process that ran JAX
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as executor:
        try:
            return executor.submit(run_row, **kwargs).result()
        except concurrent.futures.BrokenExecutor:
            return {"variant": kwargs["variant"], "dtype": kwargs["dtype"],
                    "remat_policy": kwargs["remat"], "batch_size": kwargs["batch_size"],
                    "error": "the row's process died (out of memory?)"}


_COLUMNS = (("variant", "variant"), ("dtype", "dtype"), ("remat", "remat_policy"),
            ("batch", "batch_size"), ("compile s", "compile_s"),
            ("step s (median)", "step_s_median"), ("min", "step_s_min"), ("max", "step_s_max"),
            ("examples/s", "examples_per_s"), ("GFLOP/step", "model_flops_per_step"),
            ("GFLOP/s", "achieved_flops_per_s"), ("peak GFLOP/s", "peak_flops_per_s"),
            ("MFU", "mfu"), ("peak mem GiB", "peak_memory_gib"))


def main(argv):
    del argv
    if FLAGS.steps < 5:
        raise app.UsageError("--steps must be at least 5")
    rows = []
    for variant in FLAGS.variants:
        for dtype in FLAGS.dtypes:
            for remat in FLAGS.remat_policies:
                kwargs = dict(variant=variant, dtype=dtype, remat=remat,
                              batch_size=FLAGS.batch_size, steps=FLAGS.steps,
                              peak_size=FLAGS.peak_size, peak_repeats=FLAGS.peak_repeats)
                row = _run_isolated(kwargs) if FLAGS.isolate else run_row(**kwargs)
                print(json.dumps(row), flush=True)
                rows.append(row)

    import jax

    device = jax.devices()[0]
    machine = (report.cpu_model() if device.platform == "cpu"
               else f"{device.device_kind} (host {report.cpu_model()})")
    date = datetime.date.today().isoformat()
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"\n{date}, {machine}, {jax.device_count()} x {device.platform}, "
          f"{multiprocessing.cpu_count()} CPUs (load average now {load[0]}), "
          f"jax {jax.__version__}; peak memory is "
          f"{next((r['peak_memory_of'] for r in rows if 'error' not in r), '-')}")
    table = [[_format(row, key) for _, key in _COLUMNS] for row in rows]
    report.print_rows([name for name, _ in _COLUMNS], table)
    print(json.dumps({"benchmark": "train_step", "date": date, "machine": machine,
                      "platform": device.platform, "devices": jax.device_count(),
                      "cpu_count": multiprocessing.cpu_count(), "load_average": load,
                      "python": platform.python_version(), "jax": jax.__version__,
                      "rows": rows}))


def _format(row: dict, key: str) -> str:
    if "error" in row:
        return row["error"] if key == "compile_s" else row.get(key, "")
    if key == "mfu":
        return f"{100 * row[key]:.1f}%"
    if "flops" in key:
        return f"{row[key] / 1e9:.4g}"
    return str(row[key])


if __name__ == "__main__":
    app.run(main)
