"""Ordered parallel map over a stream (wikitext cleaning in worker processes) and batching."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from typing import TypeVar

T = TypeVar("T")



R = TypeVar("R")



def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` over worker processes, in order, with a bounded number of tasks in
    flight (the input is a stream: never read ahead of what the workers can take)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    # fork where there is one: spawn would re-run the caller's main script in every worker (an
    # unguarded script then fails) and costs ~0.3 s per worker. The workers only run pure-Python
    # cleaning, never torch/tokenizers, so threads the parent holds can't bite them.
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=get_context(method))
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(ex.submit(fn, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)



def batched(it: Iterable[T], n: int) -> Iterator[list[T]]:
    it = iter(it)
    while batch := list(itertools.islice(it, n)):
        yield batch
