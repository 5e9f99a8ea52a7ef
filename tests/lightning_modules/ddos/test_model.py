"""SignedLogStandardize, TabularMLP and TabularCNN."""

from __future__ import annotations

import pytest
import torch

from robust_lightning.lightning_modules.ddos import (
    SignedLogStandardize,
    TabularCNN,
    TabularMLP,
)


def test_signed_log_standardize_fits_training_statistics() -> None:
    x = torch.tensor([[-1.0, 0.0, 1e9], [0.0, 0.0, 1e3], [3.0, 0.0, 0.0]])
    layer = SignedLogStandardize(3)
    assert not layer.fitted
    torch.testing.assert_close(layer(x), torch.sign(x) * torch.log1p(x.abs()))
    layer.fit(x)
    assert layer.fitted
    z = layer(x)
    torch.testing.assert_close(z[:, [0, 2]].mean(0), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(z[:, [0, 2]].std(0), torch.ones(2), atol=1e-5, rtol=0)
    assert torch.equal(z[:, 1], torch.zeros(3))  # a constant feature keeps std 1, not a division by zero
    assert z[0, 0] < z[1, 0] < z[2, 0]  # the -1 sentinel stays below 0
    state = layer.state_dict()
    assert bool(state["fitted_flag"])
    restored = SignedLogStandardize(3)
    restored.load_state_dict(state)
    assert restored.fitted and torch.equal(restored(x), z)


def test_signed_log_standardize_errors() -> None:
    layer = SignedLogStandardize(3)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        layer(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="at least 2 flows"):
        layer.fit(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="non-finite"):
        layer.fit(torch.tensor([[1.0, 2.0, float("inf")], [1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="num_features"):
        SignedLogStandardize(0)


@pytest.mark.parametrize("network", [TabularMLP(12, hidden=(8, 4)), TabularCNN(12, channels=(4, 8), hidden=8)])
def test_networks_map_flows_to_two_logits_and_backpropagate(network: torch.nn.Module) -> None:
    x = torch.randn(5, 12, requires_grad=True)
    logits = network(x)
    assert logits.shape == (5, 2)
    logits.sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    with pytest.raises(ValueError, match=r"\(B, 12\)"):
        network(torch.zeros(5, 11))


def test_network_argument_errors() -> None:
    with pytest.raises(ValueError, match="hidden"):
        TabularMLP(4, hidden=())
    with pytest.raises(ValueError, match="dropout"):
        TabularMLP(4, dropout=1.0)
    with pytest.raises(ValueError, match="odd"):
        TabularCNN(4, kernel_size=4)
    with pytest.raises(ValueError, match="channels"):
        TabularCNN(4, channels=[0])
