"""Small argument checks shared by layers, builders and the registry.

Every failure is a ``ValueError`` whose message names the valid choices, so a
typo on the command line or in a notebook tells the user what to type instead.
"""

import difflib
import importlib.util
import math
import numbers
import os


class UserError(Exception):
    """A failure the user can fix; its message says how. The scripts print it as one
    line and exit 2 (as they do for ``ValueError`` from the checks below)."""


def installed(module):
    """Whether ``module`` can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it; a module set to None
        return False


def check_choice(what, value, choices):
    """Return ``value`` if it is one of ``choices``, else raise a clear error."""
    choices = list(choices)
    if isinstance(value, str) and value in choices:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    raise ValueError(
        f"Unknown {what} {value!r}. Valid choices: "
        f"{', '.join(repr(c) for c in choices)}.{hint}"
    )


def check_int(what, value, minimum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{what}` must be an integer, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{what}` must be >= {minimum}, got {value}.")
    return int(value)


def check_float(what, value, low=None, high=None, low_open=False, high_open=False):
    """``value`` as a finite float within the bounds, else a ``ValueError`` naming them."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{what}` must be a number, got {value!r}.")
    value = float(value)
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or bad_low or bad_high:
        lo = "(" if low_open or low is None else "["
        hi = ")" if high_open or high is None else "]"
        raise ValueError(
            f"`{what}` must be a finite number in {lo}{low if low is not None else '-inf'}, "
            f"{high if high is not None else 'inf'}{hi}, got {value}."
        )
    return value


# A container's memory limit and use: cgroup v2, then v1 (a limit of "max" is none).
_CGROUP_MEMORY = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                  ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                   "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def available_memory():
    """Bytes this process can still allocate: the kernel's MemAvailable (else the physical
    memory), within the container's limit."""
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f
                        if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        free = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit, usage in _CGROUP_MEMORY:
        try:
            with open(limit) as f, open(usage) as g:
                free = min(free, int(f.read()) - int(g.read()))
        except (OSError, ValueError):
            continue
    return free


def check_memory(option, count, per_item, fixed=0, what="data"):
    """Refuse, before it is allocated, a ``count`` (the value of ``option``) whose
    ``count * per_item + fixed`` bytes exceed :func:`available_memory`, naming the largest
    count that fits: a native library that runs out of memory may crash the process
    (a segmentation fault) instead of raising."""
    available = available_memory()
    need = count * per_item + fixed
    if need <= available:
        return
    fits = (available - fixed) // per_item
    raise ValueError(
        f"{option} {count} needs about {need / 2**30:.1f} GiB of memory ({what}), more than "
        f"the {max(available, 0) / 2**30:.1f} GiB available: "
        + (f"use {option} {fits} or less." if fits >= 1 else "free memory first."))
