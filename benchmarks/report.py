"""What every benchmark's report says about the machine and its goals."""
import pathlib
import platform
import time

# The activation dtypes a benchmark row can run (config.dtype's choices).
DTYPES = ("float32", "bfloat16")


def cpu_model() -> str:
    """The processor's model name (Linux), else the machine type."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.machine()


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def print_rows(columns, rows) -> None:
    """A plain-text table: `columns` and then `rows`, each cell left-aligned."""
    widths = [max(len(str(row[i])) for row in (columns, *rows)) for i in range(len(columns))]
    for row in (columns, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def wall_and_cpu_seconds(run) -> tuple[float, float]:
    """(wall, CPU) seconds of one call of `run`; CPU time counts every thread of this process."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - start_wall, time.process_time() - start_cpu


def matmul_times(dtype: str, size: int, repeats: int) -> list[float]:
    """Seconds of `repeats` jitted square matmuls (after one warm-up), 2 n^3 FLOPs each.

    Args:
      dtype: 'float32' (float32 operands) or 'bfloat16' (bfloat16 operands, float32
        accumulation, as the model's bfloat16 layers run).
      size: side n of the two [n, n] operands.
      repeats: timed products.

    Returns:
      The time of each product.
    """
    import jax
    import jax.numpy as jnp

    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (size, size), jnp.float32).astype(dtype)
    y = jax.random.normal(ky, (size, size), jnp.float32).astype(dtype)
    product = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    product(x, y).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product(x, y).block_until_ready()
        times.append(time.perf_counter() - start)
    return times
