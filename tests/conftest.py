"""Shared test configuration.

One OpenBLAS thread: the filters multiply small matrices (N x N with N <= 100,
n = 40) thousands of times per run; on the 2-core machines we test on, a
multithreaded OpenBLAS spends more time synchronising its threads than
computing, and when other processes load the machine the runs become 10 to 40
times slower.  One thread keeps the suite fast and its run time predictable.
This must run before numpy is imported; a value set by the caller wins.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
