"""What every dataset loader returns (:class:`RawDataset`) and raises (:class:`DataError`)."""
from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["RawDataset", "DataError"]


class DataError(ValueError):
    """Raw data is missing, corrupt or inconsistent. The message says which file and what to do."""


@dataclasses.dataclass
class RawDataset:
    images: np.ndarray
    labels: np.ndarray
    info: dict
