"""The compiled cycle path of :func:`filters.assimilate` (private package).

``_lapack`` (the BLAS/LAPACK calls numpy makes), ``_analysis`` (the ensemble
analyses, inflations and rotation) and ``_block`` (a block of cycles) are Numba
kernels; ``_runner`` decides whether a run can take this path and drives it.
"""

from ._runner import CompiledRun, run_compiled, unsupported_reason

__all__ = ["CompiledRun", "run_compiled", "unsupported_reason"]
