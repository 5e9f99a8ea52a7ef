"""Tests of the shared layers and backbones: Normalize, GradientReversal, SmallCNN, PreActResNet18."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robust_lightning.nn import GradientReversal, Normalize, PreActResNet18, SmallCNN, dann_lambda, grad_reverse


# -- Normalize ----------------------------------------------------------------------------------
def test_normalize_math():
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.25, 0.5)
    layer = Normalize(mean, std)
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    out = layer(x)
    for c in range(3):
        assert torch.allclose(out[:, c], (x[:, c] - mean[c]) / std[c], atol=1e-6)
    assert out.shape == x.shape and out.dtype == torch.float32


def test_normalize_single_channel_and_float64():
    layer = Normalize([0.5], [0.5])
    x = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    out = layer(x)
    assert out.dtype == torch.float64
    assert torch.allclose(out, x * 2 - 1)


def test_normalize_has_gradient_through_it():
    layer = Normalize([0.0, 0.0], [0.5, 0.25])
    x = torch.rand(1, 2, 2, 2, requires_grad=True)
    layer(x).sum().backward()
    assert torch.allclose(x.grad[:, 0], torch.full((1, 2, 2), 2.0))
    assert torch.allclose(x.grad[:, 1], torch.full((1, 2, 2), 4.0))


def test_normalize_stats_are_buffers_not_parameters():
    layer = Normalize((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))
    assert list(layer.parameters()) == []
    assert set(dict(layer.named_buffers())) == {"mean", "std"}
    assert set(layer.state_dict()) == {"mean", "std"}
    assert "mean=" in repr(layer) and "std=" in repr(layer)


@pytest.mark.parametrize("shape", [(2, 1, 4, 4), (2, 4, 4, 4), (2, 3, 4), (3, 4, 4)])
def test_normalize_rejects_wrong_channels_or_rank(shape):
    layer = Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        layer(torch.rand(shape))


@pytest.mark.parametrize(
    "mean,std,match",
    [((0.5, 0.5), (0.5,), "same non-zero length"), ((), (), "same non-zero length"),
     ((0.5,), (0.0,), "positive"), ((0.5, 0.5), (0.5, -1.0), "positive")],
)
def test_normalize_invalid_args(mean, std, match):
    with pytest.raises(ValueError, match=match):
        Normalize(mean, std)


def test_normalize_follows_the_module_device_and_dtype():
    layer = Normalize((0.5,), (0.5,)).double()
    assert layer.mean.dtype == torch.float64
    assert torch.allclose(layer(torch.ones(1, 1, 1, 1, dtype=torch.float64)), torch.ones(1, 1, 1, 1, dtype=torch.float64))


# -- GradientReversal -----------------------------------------------------------------------------
def test_gradient_reversal_forward_is_identity():
    layer = GradientReversal(0.7)
    x = torch.randn(3, 4)
    out = layer(x)
    assert torch.equal(out, x)


@pytest.mark.parametrize("coef", [0.0, 0.3, 1.0, 2.5])
def test_gradient_reversal_backward_is_minus_coef_times_grad(coef):
    layer = GradientReversal(coef)
    x = torch.randn(3, 4, requires_grad=True)
    upstream = torch.randn(3, 4)
    layer(x).backward(upstream)
    assert torch.allclose(x.grad, -coef * upstream)


def test_gradient_reversal_inside_a_network_reverses_only_what_is_before_it():
    torch.manual_seed(0)
    features, head = nn.Linear(4, 4), nn.Linear(4, 1)
    x = torch.randn(5, 4)

    def grads(with_grl):
        features.zero_grad()
        head.zero_grad()
        h = features(x)
        if with_grl:
            h = GradientReversal(0.5)(h)
        head(h).sum().backward()
        return features.weight.grad.clone(), head.weight.grad.clone()

    f_plain, h_plain = grads(False)
    f_grl, h_grl = grads(True)
    assert torch.allclose(h_grl, h_plain)
    assert torch.allclose(f_grl, -0.5 * f_plain, atol=1e-6)


def test_gradient_reversal_coefficient_can_change_between_steps():
    layer = GradientReversal(1.0)
    x = torch.ones(2, requires_grad=True)
    layer(x).sum().backward()
    assert torch.allclose(x.grad, -torch.ones(2))
    x.grad = None
    layer.lambda_ = 0.25
    layer(x).sum().backward()
    assert torch.allclose(x.grad, torch.full((2,), -0.25))
    assert "0.25" in repr(layer)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_gradient_reversal_has_no_parameters_and_rejects_bad_coefficients(bad):
    assert list(GradientReversal().parameters()) == []
    assert GradientReversal().lambda_ == 1.0
    with pytest.raises(ValueError, match="lambda_"):
        GradientReversal(bad)
    with pytest.raises(ValueError, match="lambda_"):
        grad_reverse(torch.ones(1), bad)


def test_grad_reverse_function():
    x = torch.randn(4, requires_grad=True)
    out = grad_reverse(x, 0.5)
    assert torch.equal(out, x)
    out.backward(torch.arange(4.0))
    assert torch.allclose(x.grad, -0.5 * torch.arange(4.0))


def test_dann_lambda_schedule():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + torch.exp(torch.tensor(-10.0)).item()) - 1)
    values = [dann_lambda(p / 10) for p in range(11)]
    assert values == sorted(values) and 0.99 < values[-1] < 1.0
    assert dann_lambda(0.5, gamma=0.0) == 0.0
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match="progress"):
            dann_lambda(bad)


# -- backbones ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [8, 16, 28, 32])
def test_small_cnn_shapes(in_channels, size):
    model = SmallCNN(num_classes=7, in_channels=in_channels, width=4, hidden=8)
    out = model(torch.rand(2, in_channels, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_small_cnn_non_square_inputs_and_eval_mode_single_sample():
    model = SmallCNN(num_classes=3, in_channels=1, width=4, hidden=8).eval()
    assert model(torch.rand(1, 1, 12, 20)).shape == (1, 3)


def test_small_cnn_activation_is_swappable():
    model = SmallCNN(width=4, hidden=8, activation=nn.Tanh)
    assert any(isinstance(m, nn.Tanh) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_preact_resnet18_activation_is_swappable_without_changing_state_dict_keys():
    model = PreActResNet18(width=2, activation=nn.Tanh)
    assert any(isinstance(m, nn.Tanh) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert set(model.state_dict()) == set(PreActResNet18(width=2).state_dict())
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 10)


def test_small_cnn_defaults():
    model = SmallCNN()
    assert model.num_classes == 10
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [8, 16, 32])
def test_preact_resnet18_shapes(in_channels, size):
    model = PreActResNet18(num_classes=5, in_channels=in_channels, width=4)
    out = model(torch.rand(2, in_channels, size, size))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


def test_preact_resnet18_structure():
    model = PreActResNet18(width=2)
    assert model.num_classes == 10
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # stem + 4 stages x 2 blocks x 2 convs + 3 projection shortcuts
    assert len(convs) == 1 + 16 + 3
    assert model.linear.in_features == 2 * 8
    full = PreActResNet18()
    n_params = sum(p.numel() for p in full.parameters())
    assert 11_000_000 < n_params < 11_300_000  # the standard ~11.17M parameters


def test_backbones_backpropagate_to_inputs():
    for model in (SmallCNN(width=4, hidden=8), PreActResNet18(in_channels=1, width=4)):
        x = torch.rand(2, 1, 8, 8, requires_grad=True)
        model(x).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"in_channels": 0}, {"width": -1}, {"hidden": 0},
                                    {"num_classes": 2.5}, {"width": "8"}])
def test_small_cnn_invalid_args(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        SmallCNN(**kwargs)


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"in_channels": -3}, {"width": 0}, {"width": 1.5}])
def test_preact_resnet18_invalid_args(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        PreActResNet18(**kwargs)
