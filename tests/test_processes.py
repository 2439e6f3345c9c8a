"""The media stages' worker pool: spawned processes, joined on the way out."""
import multiprocessing
import os
import time

import pytest

from vlsa_jax.data.processes import worker_pool


def _alive(pid):
    return pid in {p.pid for p in multiprocessing.active_children()}


def test_the_workers_finish_their_tasks_and_are_joined():
    with worker_pool(2) as pool:
        assert pool.map(abs, [-1, -2, 3]) == [1, 2, 3]
        worker = pool.apply(os.getpid)
        pending = pool.apply_async(time.sleep, (0.3,))
        assert worker != os.getpid() and _alive(worker)
    # The task submitted last ran to its end before the block was left.
    assert pending.ready() and pending.successful()
    assert not _alive(worker)


def test_an_error_in_the_block_terminates_the_workers():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="stop"):
        with worker_pool(1) as pool:
            worker = pool.apply(os.getpid)
            pool.apply_async(time.sleep, (60,))
            raise RuntimeError("stop")
    assert time.monotonic() - start < 30  # not waited for
    assert not _alive(worker)
