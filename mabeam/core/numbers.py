"""What counts as a number in a setting or an argument: an int or a float, finite, not a bool.

`float()` reads `nan` and `inf` as readily as a number, and `nan` passes every `x <= 0` check
(a heartbeat of `nan` seconds would), so every check of a number a user gives starts here.
"""

from __future__ import annotations

import math
from typing import TypeGuard

__all__ = ["is_number"]


def is_number(value: object) -> TypeGuard[int | float]:
    """True for a finite int or float (a bool is not a number here, nor `nan` or `inf`)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
