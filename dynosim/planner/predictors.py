"""Load predictors: one value per interval in, the next interval's value out.

All of them ignore the leading idle intervals (zeros before the first load),
treat NaN as 0, and never predict below 0. Registry keys are the names users
type (``--planner-predictor``).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np


class _Series:
    """Observations after the first non-zero one."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def add(self, value: float) -> None:
        v = 0.0 if value is None or math.isnan(value) else float(value)
        if not self.values and v == 0.0:
            return
        self.values.append(v)


class ConstantPredictor(_Series):
    """The next interval looks like the last one."""

    name = "constant"

    def predict(self) -> float:
        return self.values[-1] if self.values else 0.0


class MovingAveragePredictor(_Series):
    """Mean of the last ``window`` intervals: smooths noise, lags trends."""

    name = "moving-average"

    def __init__(self, window: int = 3) -> None:
        super().__init__()
        if window < 1:
            raise ValueError("moving-average window must be >= 1")
        self.window = window

    def predict(self) -> float:
        if not self.values:
            return 0.0
        return float(np.mean(self.values[-self.window:]))


class KalmanPredictor(_Series):
    """Local linear trend (level + slope) Kalman filter, one-step-ahead prediction.

    State x = [level, slope], F = [[1, 1], [0, 1]], H = [1, 0], process noise
    diag(q_level, q_trend), observation noise r, P0 = 1000 I (Dynamo's
    planner defaults). Until ``min_points`` observations it returns the last value.
    """

    name = "kalman"

    def __init__(self, q_level: float = 1.0, q_trend: float = 0.1, r: float = 10.0, min_points: int = 5) -> None:
        super().__init__()
        self.F = np.array([[1.0, 1.0], [0.0, 1.0]])
        self.Q = np.diag([q_level, q_trend])
        self.r = r
        self.min_points = min_points
        self.x: np.ndarray | None = None
        self.P = np.eye(2) * 1000.0

    def add(self, value: float) -> None:
        n = len(self.values)
        super().add(value)
        if len(self.values) == n:
            return
        z = self.values[-1]
        if self.x is None:
            self.x = np.array([z, 0.0])
            return
        x = self.F @ self.x                      # predict
        P = self.F @ self.P @ self.F.T + self.Q
        s = P[0, 0] + self.r                     # update with H = [1, 0]
        k = P[:, 0] / s
        self.x = x + k * (z - x[0])
        self.P = P - np.outer(k, P[0, :])

    def predict(self) -> float:
        if not self.values:
            return 0.0
        if len(self.values) < self.min_points or self.x is None:
            return self.values[-1]
        return max(0.0, float((self.F @ self.x)[0]))


class ArimaPredictor(_Series):
    """ARIMA(p, d, q) from statsmodels, the order picked by AIC.

    Like an auto-ARIMA fitted once and then updated: the order is chosen
    (least AIC over a small grid) when ``min_points`` observations exist, and
    refitted every ``reselect_every`` points; in between the chosen order is
    refitted on all data (one fit per interval, tens of ms). Fewer points or a
    constant series give the last value; a failed fit falls back to it.
    """

    name = "arima"
    ORDERS = ((0, 1, 1), (1, 1, 0), (1, 1, 1), (1, 0, 0), (2, 1, 0), (0, 1, 0))

    def __init__(self, min_points: int = 5, window: int = 50, reselect_every: int = 10) -> None:
        super().__init__()
        self.min_points = min_points
        self.window = window
        self.reselect_every = reselect_every
        self.order: tuple[int, int, int] | None = None
        self._selected_at = 0

    def _fit(self, y: np.ndarray, order: tuple[int, int, int]):
        from statsmodels.tsa.arima.model import ARIMA

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trend = "c" if order[1] == 0 else "n"
            return ARIMA(y, order=order, trend=trend).fit()

    def predict(self) -> float:
        v = self.values
        if not v:
            return 0.0
        y = np.asarray(v[-self.window:], float)
        if len(y) < self.min_points or np.ptp(y) == 0.0:
            return v[-1]
        try:
            if self.order is None or len(v) - self._selected_at >= self.reselect_every:
                fits = []
                for order in self.ORDERS:
                    try:
                        fits.append((self._fit(y, order).aic, order))
                    except Exception:  # noqa: BLE001 - a grid point that does not converge is skipped
                        continue
                fits = [f for f in fits if np.isfinite(f[0])]
                if not fits:
                    return v[-1]
                self.order = min(fits)[1]
                self._selected_at = len(v)
            fc = float(self._fit(y, self.order).forecast(1)[0])
        except Exception:  # noqa: BLE001 - numerical failure: the last value is the honest answer
            return v[-1]
        return max(0.0, fc) if np.isfinite(fc) else v[-1]


PREDICTORS: dict[str, Callable[[], object]] = {
    "constant": ConstantPredictor,
    "moving-average": MovingAveragePredictor,
    "kalman": KalmanPredictor,
    "arima": ArimaPredictor,
}


def make_predictor(name: str):
    try:
        return PREDICTORS[name]()
    except KeyError:
        raise ValueError(f"unknown load predictor {name!r}; choose from {sorted(PREDICTORS)}") from None
