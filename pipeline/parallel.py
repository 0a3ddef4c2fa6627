"""Training several networks at once, one process per CPU core.

A candidate's network is too small for its steps to be split across threads
(pipeline.train.cpu_threads_for keeps each on one), so on a machine with
several cores the candidates, and later the members of the refit, train side
by side. Every fit seeds itself and runs on one thread either way, so the
results are those of training one after the other. (Workers are spawned: a
script that calls this needs the usual `if __name__ == "__main__":` guard.)
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .data import Dataset
    from .presets import TrainConfig
    from .train import TrainResult

# Below this many training rows starting the processes (each imports torch)
# costs more than training side by side saves.
PARALLEL_MIN_ROWS = 20_000


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's share, a taskset), not the machine's.

    The one count of cores: training workers, scoring threads, and the service's workers and ONNX Runtime threads.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fit_all(
    configs: Sequence[TrainConfig],
    train: Dataset,
    validation: Dataset | None,
    progress: Callable[..., None] | None = None,
) -> list[TrainResult]:
    """[TrainResult] for each config, in order: side by side when that pays."""
    from .train import fit, resolve_device

    if len(configs) > 1 and on_a_dask_worker():  # a backtest's window on a cluster: each candidate a task too
        return fit_on_dask(configs, train, validation)
    workers = min(len(configs), usable_cores())
    cpu_only = all(c.engine == "manual" or resolve_device(c.device) == "cpu" for c in configs)
    # A daemonic process (a Dask worker's) may not start processes of its own: its fits run one after another.
    daemonic = multiprocessing.current_process().daemon
    if workers < 2 or not cpu_only or len(train) < PARALLEL_MIN_ROWS or daemonic:
        return [fit(train, validation, config, progress) for config in configs]
    # Only what fit reads travels to the workers: no weeks.
    train, validation = _bare(train), _bare(validation)
    threads = max(1, usable_cores() // workers)
    # spawn, not fork: a forked child of a process that has used OpenMP can hang.
    others = set(multiprocessing.active_children())  # processes started before: not this pool's workers
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_set_threads, initargs=(threads,)
    )
    try:
        futures = [pool.submit(fit, train, validation, config) for config in configs]
        results = [future.result() for future in futures]
    except BaseException:
        # Ctrl-C, a fit that failed, or a worker that died (the executor says so at once): stop the others
        # now rather than after every fit under way, the ones still starting too.
        workers_started = [p for p in multiprocessing.active_children() if p not in others]
        pool.shutdown(wait=False, cancel_futures=True)
        for process in workers_started:
            process.terminate()
        raise
    pool.shutdown()
    return results


def on_a_dask_worker() -> bool:
    """Whether this runs in a task of a Dask worker (pipeline.cluster); Dask is not imported to find out."""
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def fit_on_dask(configs: Sequence[TrainConfig], train: Dataset, validation: Dataset | None) -> list[TrainResult]:
    """Each config's fit as a task of the cluster this task runs on, the data sent once; results in order."""
    from distributed import worker_client

    from .train import fit

    with worker_client() as client:  # this task waits without holding its worker's thread
        train_data, validation_data = client.scatter([_bare(train), _bare(validation)], hash=False)
        futures = [client.submit(fit, train_data, validation_data, config, pure=False) for config in configs]
        return list(client.gather(futures))


def _bare(data):
    from .data import Dataset

    # What a fit reads, and no more (the grid of weeks, the tails): the spec names X's columns and says
    # which are on the log scale.
    return None if data is None else Dataset(data.X, data.y, series=data.series, spec=data.spec)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
