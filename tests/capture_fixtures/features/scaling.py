"""The one local module that uses a third-party library."""

import numpy as np


def scale(value: float) -> float:
    return float(np.sqrt(value))
