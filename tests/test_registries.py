"""The extension recipes of docs/architecture.rst: a registry line makes a new method or
placement usable everywhere (make_method / parse_methods, make_placement, compare)."""

import numpy as np
import pytest

from da_embed.baselines import DynamicEvaluation
from da_embed.compare import compare
from da_embed.methods import make_method, parse_methods, registry as method_registry
from da_embed.placements import HiddenScale, registry as placement_registry
from da_embed.protocol import PrequentialConfig
from da_embed.testing import random_input_ids, tiny_gpt2


@pytest.fixture
def scratch_registries(monkeypatch):
    """Registrations made by a test are undone after it."""
    for name in ("METHODS", "_ENTRIES", "_ALIASES"):
        monkeypatch.setattr(method_registry, name, dict(getattr(method_registry, name)))
    monkeypatch.setattr(placement_registry, "_REGISTRY", dict(placement_registry._REGISTRY))
    monkeypatch.setattr(placement_registry, "PLACEMENTS", placement_registry.PLACEMENTS)


def test_a_registered_method_runs_in_compare_like_the_class_it_builds(scratch_registries):
    @method_registry.register("slow-dyneval", "dynamic evaluation at a tenth of the rate",
                              aliases=("dyneval10",))
    def _build(members, P0, **options):
        return DynamicEvaluation(lr=0.003, **options)

    assert parse_methods("frozen, Slow_DynEval, dyneval10") == ["frozen", "slow-dyneval"]
    assert make_method("slow-dyneval").lr == 0.003
    model = tiny_gpt2()
    ids = random_input_ids(model, batch=1, length=41, seed=3)[0].numpy()
    protocol = PrequentialConfig(chunk=8, context=8)
    new = compare(model, ids, methods="slow-dyneval", protocol=protocol, print_fn=None)
    ref = compare(model, ids, methods="dyneval", protocol=protocol, print_fn=None,
                  method_options={"dyneval": {"lr": 0.003}})
    np.testing.assert_array_equal(new.datasets["slow-dyneval"]["nll"].values,
                                  ref.datasets["dyneval"]["nll"].values)
    assert [row["method"] for row in new.rows] == ["frozen", "slow-dyneval"]  # the reference row
    with pytest.raises(ValueError, match="registered already"):
        method_registry.register("dyneval10", "again")(_build)


def test_a_registered_placement_is_a_placement_name(scratch_registries):
    placement_registry.register("hidden-again", lambda model, opt: HiddenScale(model))
    model = tiny_gpt2()
    assert isinstance(placement_registry.make_placement(model, "hidden-again"), HiddenScale)
    assert "hidden-again" in placement_registry.PLACEMENTS
    with pytest.raises(ValueError, match=r"one of hidden, embedding, svf\[:targets\], rotary\[:mode\], hidden-again, got"):
        placement_registry.make_placement(model, "hidden-again:options")
    with pytest.raises(ValueError, match="placement must be one of hidden, embedding"):
        placement_registry.make_placement(model, "nowhere")
