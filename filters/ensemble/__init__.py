"""Ensemble Kalman filters: EnKF, ETKF, DEnKF, serial EnSRF and LETKF.

The analyses are pure functions of arrays (``._equations``); the filter
classes (``._filters``) are short loops over them.  This face only hands both
on, so that ``filters.ensemble.<name>`` stays the path of every name.
"""

from ._equations import (GC_HALF_WIDTH_PER_RADIUS, denkf_analysis, enkf_analysis, ensrf_analysis,
                         etkf_analysis, gaspari_cohn, letkf_analysis, random_rotation,
                         taper_matrix)
from ._filters import DEnKF, EnKF, EnSRF, ETKF, LETKF

__all__ = ["EnKF", "ETKF", "DEnKF", "EnSRF", "LETKF",
           "enkf_analysis", "etkf_analysis", "denkf_analysis", "ensrf_analysis",
           "letkf_analysis", "gaspari_cohn", "taper_matrix", "random_rotation"]
