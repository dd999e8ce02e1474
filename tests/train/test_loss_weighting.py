from __future__ import annotations

import math

import pytest
import torch

from mtst.config import LossWeightingConfig
from mtst.errors import ConfigError
from mtst.loss_weighting import StaticLossWeighting, UncertaintyLossWeighting, build_loss_weighting


def test_static_multiplies_each_task_loss() -> None:
    w = build_loss_weighting(LossWeightingConfig(), {"a": 1.0, "b": 0.25})
    assert isinstance(w, StaticLossWeighting) and list(w.parameters()) == []
    assert float(w("b", torch.tensor(2.0))) == 0.5
    assert w.weights() == {"a": 1.0, "b": 0.25}
    with pytest.raises(ConfigError, match=r"tasks.b.loss_weight: expected a number >= 0, got -1"):
        StaticLossWeighting({"b": -1})


def test_uncertainty_is_kendall_2018() -> None:
    w = build_loss_weighting(
        LossWeightingConfig(method="uncertainty", init_log_var=0.5), {"a": 1.0, "b": 2.0}
    )
    assert isinstance(w, UncertaintyLossWeighting)
    loss = torch.tensor(3.0)
    # exp(-s) * w * L + s
    assert float(w("a", loss).detach()) == pytest.approx(math.exp(-0.5) * 3.0 + 0.5)
    assert float(w("b", loss).detach()) == pytest.approx(math.exp(-0.5) * 6.0 + 0.5)
    assert w.weights() == pytest.approx({"a": math.exp(-0.5), "b": 2 * math.exp(-0.5)})
    assert sorted(w.state_dict()) == ["log_vars.a", "log_vars.b"]  # saved with every checkpoint


def test_uncertainty_learns_to_down_weight_the_noisier_task() -> None:
    """d/ds (exp(-s) L + s) = 0 at s = log L: a task with a larger loss ends with a smaller weight."""
    w = UncertaintyLossWeighting(["small", "large"])
    opt = torch.optim.SGD(w.parameters(), lr=0.05)
    for _ in range(2000):
        for task, value in (("small", 0.2), ("large", 4.0)):
            opt.zero_grad()
            w(task, torch.tensor(value)).backward()
            opt.step()
    s = w.log_variances()
    assert s["small"] == pytest.approx(math.log(0.2), abs=0.02)
    assert s["large"] == pytest.approx(math.log(4.0), abs=0.02)
    assert w.weights()["large"] < w.weights()["small"]
