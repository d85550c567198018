"""The Kalman filter, its RTS smoother, and the extended Kalman filters.

The equations are pure functions of arrays (``._equations``); the filter
classes (``._filters``) are short loops over them.  This face only hands both
on, so that ``filters.kalman.<name>`` stays the path of every name.
"""

from ._equations import (diagonal_kalman_analysis, diagonal_kalman_predict, kalman_analysis,
                         kalman_predict, rts_smoother)
from ._filters import EKF, DiagonalEKF, KalmanFilter, SmootherResult

__all__ = ["KalmanFilter", "EKF", "DiagonalEKF", "kalman_analysis", "kalman_predict",
           "diagonal_kalman_analysis", "diagonal_kalman_predict", "rts_smoother",
           "SmootherResult"]
