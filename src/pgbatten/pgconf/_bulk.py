"""Working through files of many thousand lines in one go."""

from __future__ import annotations

import gc
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def gc_paused(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` with the cyclic garbage collector off.

    Parsing or linting a file of 100,000 rules allocates millions of small objects, none in a reference
    cycle; every few thousand allocations the collector would walk all of them again, which costs a third
    of the time. Reference counting still frees everything; the collector resumes afterwards.
    """

    @wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        if not gc.isenabled():
            return func(*args, **kwargs)
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            gc.enable()

    return run
