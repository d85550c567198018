"""summary.json is strict JSON: an undefined value (the frozen row's interval) is null."""

import json

import numpy as np

from da_embed import PrequentialConfig, compare
from da_embed.testing import random_input_ids, tiny_gpt2


def _reject(constant):
    raise AssertionError(f"summary.json holds the non-JSON constant {constant}")


def test_summary_json_has_null_not_nan(tmp_path):
    model = tiny_gpt2(seed=0, initializer_range=0.2)
    ids = random_input_ids(model, 1, 8 * 4 + 1, seed=5)[0].numpy()
    out = compare(model, ids, methods="frozen,ekf", protocol=PrequentialConfig(chunk=8, context=8),
                  out=tmp_path, print_fn=None, n_boot=20)
    assert any(not np.all(np.isfinite([v for v in r.values() if isinstance(v, float)]))
               for r in out.rows)  # there is a NaN to write (frozen against itself)
    data = json.loads((tmp_path / "summary.json").read_text(), parse_constant=_reject)
    assert "null" in json.dumps(data)
