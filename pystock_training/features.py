"""The upstream feature recipe: daily up/down flags in sliding windows.

A day "went up" when it closed above its open by more than a hair; a window of 15 consecutive
days gives 14 features (the first 14 days, oldest first) and the label (the 15th day).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GOING_UP_THRESHOLD = 0.00001
WINDOW = 15


def going_up(open_: np.ndarray, close: np.ndarray) -> np.ndarray:
    """1 where ``(close - open) / open`` exceeds the threshold, else 0, as int8."""
    open_ = np.asarray(open_, dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    return ((close - open_) / open_ > GOING_UP_THRESHOLD).astype(np.int8)


def make_windows(flags: np.ndarray, window: int = WINDOW) -> pd.DataFrame:
    """Every run of ``window`` consecutive flags as a row; the last column is the label.

    Raises:
        ValueError: Fewer flags than one window.
    """
    flags = np.asarray(flags, dtype=np.int8)
    if len(flags) < window:
        raise ValueError(f"need at least {window} days, got {len(flags)}")
    # A strided view, copied once: no per-row Python loop, whatever the length.
    rows = np.lib.stride_tricks.sliding_window_view(flags, window).copy()
    return pd.DataFrame(rows)
