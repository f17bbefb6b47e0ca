"""A time-wise split inside every recording (the other splits live in :mod:`privkit.data.imu`).

:func:`~privkit.data.imu.split_recordings` sends whole recordings to train or test; when every
subject has only one recording per activity and arm (the seglearn watch data), that split tests
re-identification across arms or exercises only. :func:`split_time` keeps the start of every
recording for training and its end for testing, dropping the windows in between that would
overlap both sides, so every recording, subject and activity is on both sides and no sample is.

>>> from privkit.data.imu import synthetic_imu
>>> ds = synthetic_imu(n_subjects=2, n_activities=2, trials=1, seconds=8, window=32, step=16)
>>> train, test = split_time(ds, 0.5, gap=1)
>>> sorted(set(train.recording)) == sorted(set(test.recording))
True
>>> len(train) + len(test) == len(ds) - len(set(ds.recording))
True
"""

from __future__ import annotations

import numpy as np

from ..errors import DataFormatError, ParameterError
from .imu import IMUDataset

__all__ = ["split_time"]


def split_time(ds: IMUDataset, test_fraction: float = 0.5, *, gap: int = 1
               ) -> tuple[IMUDataset, IMUDataset]:
    """Per recording (windows in time order): the last ``test_fraction`` of its windows go to
    test, the first ones to train, and ``gap`` windows between them are dropped (with windows
    of ``w`` samples every ``s``, ``gap = ceil(w / s) - 1`` leaves no shared sample)."""
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if gap < 0:
        raise ParameterError(f"gap must be >= 0, got {gap}")
    train_idx, test_idx = [], []
    for r in np.unique(ds.recording):
        idx = np.flatnonzero(ds.recording == r)
        n_test = round(test_fraction * len(idx))
        n_train = len(idx) - n_test - gap
        if n_test < 1 or n_train < 1:
            continue
        train_idx.append(idx[:n_train])
        test_idx.append(idx[len(idx) - n_test:])
    if not train_idx:
        raise DataFormatError("split_time: no recording has enough windows for both sides "
                              f"(need at least {gap + 2})")
    return ds.subset(np.concatenate(train_idx)), ds.subset(np.concatenate(test_idx))
