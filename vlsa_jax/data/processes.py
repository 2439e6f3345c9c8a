"""Worker processes for the media stages (generation, preparation, TFDS encoding)."""
import contextlib
import multiprocessing


@contextlib.contextmanager
def worker_pool(num_workers: int):
    """A pool of `num_workers` spawned processes (spawn: the parent may hold JAX's threads).

    On a normal exit the workers finish and the pool is joined. A pool that is only
    terminated, as `with Pool()` does, leaves its result-handler thread behind in the
    parent, and an XLA computation later in the same process can then abort.
    """
    pool = multiprocessing.get_context("spawn").Pool(num_workers)
    try:
        yield pool
        pool.close()
    finally:
        pool.terminate()
        pool.join()
