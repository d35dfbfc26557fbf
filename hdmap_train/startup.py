"""A process's heavy imports (torch, Lightning, anomalib; matplotlib and pandas in the pictures helper) without
garbage collection, and out of the collector's sight afterwards.
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_imports_frozen = False


@contextmanager
def heavy_imports() -> Iterator[None]:
    """The process's first heavy imports with the garbage collector paused, then every object so far out of its sight
    for good (gc.freeze); later uses import nothing new and freeze nothing. The imports leave about a million lasting
    objects and next to no garbage: every full collection on the way walks all of them (0.1-0.2 s each, 0.6 s in
    all), and one landed in every run's pictures later.
    """
    global _imports_frozen
    if _imports_frozen:
        yield
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        _imports_frozen = True
        if was_enabled:
            gc.enable()
