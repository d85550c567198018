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

import pytest  # noqa: E402  (after the environment is set)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads and lose a lot on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def float64_rmsnorm(monkeypatch):
    """Llama's RMSNorm computes in float32 whatever the dtype; make it float64 for FD checks."""
    import torch
    from transformers.models.llama import modeling_llama

    def forward(self, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", forward)
