r"""Times exact retrieval ranks over a large gallery beside faiss's exact top-k search.

    python -m benchmarks.retrieval
    python -m benchmarks.retrieval --num_queries=20000 --num_gallery=20000 --repeats=3

Run it from the repository root, as a module: `vlsa_jax` is then this checkout's.

On seeded random unit-norm float32 embeddings, queries [Q, D] and gallery [G, D], query
i's correct item being gallery item i mod G:

  block_ranks   vlsa_jax.metrics.block_ranks: the exact rank of every query, from all
                Q x G scores, --block_size x G of them at a time
  faiss add     faiss IndexFlatIP (exact inner product): adding the gallery (a copy)
  faiss search  index.search(queries, 50): each query's top 50, enough for R@1..R@50
                but not for the median or mean rank; with faiss-cpu absent
                (pip install faiss-cpu) both faiss rows are skipped

Each pass of a method runs in a fresh spawned process that generates the embeddings
itself, so its peak resident memory (ru_maxrss, Linux) is its own: the table gives it
whole and beyond the RSS right after the embeddings were made, which is what the
method adds. Passes alternate between the methods; wall times are medians over
--repeats passes, peaks the largest. Both libraries use every core: block_ranks'
matrix products run on NumPy's BLAS threads (its counting on one thread), faiss on
its OpenMP and BLAS threads. The table names each thread pool loaded and its size,
the CPU seconds of the process, the cores busy (CPU time / wall time) and the 1-minute
load average at the end of the pass: where other work shares the cores, wall times
follow it and the CPU seconds are the steadier figure. As a check, both report how
many queries have their correct item within the top K; the counts must agree.

Goal: block_ranks no slower than faiss's search and at most 2 GiB peak beyond the
embeddings. Prints a table and one JSON line with every figure.
"""
import concurrent.futures
import datetime
import importlib.util
import json
import multiprocessing
import os
import pathlib
import resource
import statistics
import time

import numpy as np
import threadpoolctl
from absl import app, flags

from benchmarks.report import cpu_model, print_rows, verdict
from vlsa_jax import metrics

_GIB = 2**30
_TOP_K = max(metrics.RECALL_KS)
_PEAK_GOAL_GIB = 2.0

flags.DEFINE_integer("num_queries", 100_000, "Queries Q.")
flags.DEFINE_integer("num_gallery", 100_000, "Gallery items G.")
flags.DEFINE_integer("dim", 768, "Embedding width D.")
flags.DEFINE_integer("block_size", 1024,
                     "block_ranks' block_size (query rows scored at once; the config's "
                     "eval.block_size).")
flags.DEFINE_integer("repeats", 1, "Passes per method; medians are reported.")
flags.DEFINE_integer("seed", 0, "Seed of the embeddings.")
FLAGS = flags.FLAGS


def unit_embeddings(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """[rows, dim] float32 with unit rows, with no temporary as large as the result."""
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x


def current_rss() -> int:
    """Resident bytes of this process now (Linux)."""
    pages = int(pathlib.Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def thread_pools() -> str:
    """Each thread pool loaded in this process and its size, e.g. 'libgomp 16'."""
    return ", ".join(f"{pool['prefix']} {pool['num_threads']}"
                     for pool in threadpoolctl.threadpool_info())


def hits_within(top: np.ndarray, correct: np.ndarray) -> dict[str, int]:
    """Queries whose correct item is among their first K of `top` [Q, >= 50], per K."""
    found = top == correct[:, None]
    return {f"top{k}": int(np.count_nonzero(found[:, :k].any(axis=1)))
            for k in metrics.RECALL_KS}


def measure(method: str, num_queries: int, num_gallery: int, dim: int, block_size: int,
            seed: int) -> dict:
    """One pass of `method` ('block_ranks' or 'faiss') in this process; its figures."""
    rng = np.random.default_rng(seed)
    queries = unit_embeddings(rng, num_queries, dim)
    gallery = unit_embeddings(rng, num_gallery, dim)
    correct = np.arange(num_queries) % num_gallery
    data_rss = current_rss()
    figures = {}
    start, start_cpu = time.perf_counter(), time.process_time()
    if method == "block_ranks":
        ranks = metrics.block_ranks(queries, gallery, correct, np.arange(num_gallery),
                                    block_size=block_size)
        figures["hits"] = {f"top{k}": int(np.count_nonzero(ranks <= k))
                           for k in metrics.RECALL_KS}
    else:
        import faiss

        index = faiss.IndexFlatIP(dim)
        index.add(gallery)
        figures["add_s"] = time.perf_counter() - start
        start, start_cpu = time.perf_counter(), time.process_time()
        _, top = index.search(queries, _TOP_K)
        figures["hits"] = hits_within(top, correct)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    figures.update({
        "wall_s": wall,
        "cpu_s": cpu,
        "cores_busy": cpu / wall,
        "load_1min": os.getloadavg()[0],
        "threads": thread_pools(),
        "data_gib": (queries.nbytes + gallery.nbytes) / _GIB,
        "data_rss_gib": data_rss / _GIB,
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / _GIB,
    })
    figures["beyond_data_gib"] = figures["peak_gib"] - figures["data_rss_gib"]
    return figures


def measure_in_child(method: str) -> dict:
    """`measure` in a fresh process. A spawned child's ru_maxrss starts from its parent's
    RSS, so this parent never holds embeddings."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(measure, method, FLAGS.num_queries, FLAGS.num_gallery, FLAGS.dim,
                           FLAGS.block_size, FLAGS.seed).result()


def summarise(passes: list[dict]) -> dict:
    """Medians of the times, the largest peaks, the rest from the first pass."""
    summary = dict(passes[0])
    for key in ("wall_s", "add_s", "cpu_s", "cores_busy", "load_1min"):
        if key in summary:
            summary[key] = round(statistics.median(p[key] for p in passes), 3)
    for key in ("peak_gib", "beyond_data_gib"):
        summary[key] = round(max(p[key] for p in passes), 3)
    summary["data_gib"] = round(summary["data_gib"], 3)
    summary["data_rss_gib"] = round(summary["data_rss_gib"], 3)
    summary["wall_s_passes"] = [round(p["wall_s"], 3) for p in passes]
    return summary


def print_table(results: dict) -> None:
    ranks = results["block_ranks"]
    scores = FLAGS.num_queries * FLAGS.num_gallery
    print(f"retrieval: {FLAGS.num_queries} queries x {FLAGS.num_gallery} gallery, D "
          f"{FLAGS.dim} float32 ({ranks['data_gib']:.2f} GiB of embeddings), block_size "
          f"{FLAGS.block_size}; {os.cpu_count()} cores; median of {FLAGS.repeats}")
    faiss_figures = results.get("faiss")
    goal = f"<= {_PEAK_GOAL_GIB:g} GiB beyond: " + verdict(
        ranks["beyond_data_gib"] <= _PEAK_GOAL_GIB)
    if faiss_figures:
        goal = (f"<= faiss search: {verdict(ranks['wall_s'] <= faiss_figures['wall_s'])}; "
                + goal)
    rows = [("block_ranks (all ranks)", ranks["wall_s"], ranks["cpu_s"],
             round(scores / ranks["wall_s"] / 1e6), ranks["threads"], ranks["cores_busy"],
             ranks["load_1min"], ranks["peak_gib"], ranks["beyond_data_gib"], goal)]
    if faiss_figures:
        rows += [
            ("faiss add", faiss_figures["add_s"], "", "", "", "", "", "", "", ""),
            (f"faiss search (top {_TOP_K})", faiss_figures["wall_s"], faiss_figures["cpu_s"],
             round(scores / faiss_figures["wall_s"] / 1e6), faiss_figures["threads"],
             faiss_figures["cores_busy"], faiss_figures["load_1min"], faiss_figures["peak_gib"],
             faiss_figures["beyond_data_gib"], ""),
        ]
    print_rows(("method", "wall s", "CPU s", "Mscores/s", "threads", "cores busy", "load",
                 "peak GiB", "beyond data GiB", "goal"), rows)
    if faiss_figures:
        agree = ranks["hits"] == faiss_figures["hits"]
        print(f"queries with the correct item in the top K (K = {metrics.RECALL_KS}): "
              f"{list(ranks['hits'].values())}, faiss "
              f"{list(faiss_figures['hits'].values())}: {'agree' if agree else 'DIFFER'}")
    else:
        print("faiss: skipped (not installed; pip install faiss-cpu)")


def main(argv):
    del argv
    methods = ["block_ranks"]
    if importlib.util.find_spec("faiss") is not None:
        methods.append("faiss")
    passes = {method: [] for method in methods}
    # Alternating keeps a slow spell of a shared machine from landing on one method only.
    for _ in range(FLAGS.repeats):
        for method in methods:
            passes[method].append(measure_in_child(method))
    results = {method: summarise(method_passes) for method, method_passes in passes.items()}
    print_table(results)
    print(json.dumps({
        "benchmark": "retrieval",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": os.cpu_count(),
        "num_queries": FLAGS.num_queries, "num_gallery": FLAGS.num_gallery,
        "dim": FLAGS.dim, "block_size": FLAGS.block_size, "repeats": FLAGS.repeats,
        "seed": FLAGS.seed, "faiss": "faiss" in results, "results": results,
    }))


if __name__ == "__main__":
    app.run(main)
