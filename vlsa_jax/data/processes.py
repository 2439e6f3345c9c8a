"""Worker processes for the media stages (generation, preparation, TFDS encoding)."""
import contextlib
import multiprocessing


@contextlib.contextmanager
def worker_pool(num_workers: int):
    """A pool of `num_workers` spawned processes (spawn: the parent may hold JAX's threads).

    Joined on the way out, so that neither its processes nor its handler threads
    outlive the block (`with Pool()` only terminates): the workers finish their tasks
    after a normal exit, and are terminated after an error.
    """
    pool = multiprocessing.get_context("spawn").Pool(num_workers)
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()
