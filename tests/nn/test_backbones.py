"""SmallCNN / PreActResNet18: the activation factory is swappable and backward compatible."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from robust_lightning.lightning_modules.rct_af import CurvatureTunableActivation
from robust_lightning.nn import PreActResNet18, SmallCNN

BUILDERS = {
    "small_cnn": (lambda **kw: SmallCNN(num_classes=10, in_channels=1, width=8, hidden=16, **kw), (2, 1, 16, 16), 3),
    "preact_resnet18": (lambda **kw: PreActResNet18(num_classes=10, in_channels=3, width=4, **kw), (2, 3, 16, 16), 17),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_default_is_one_relu_module_per_use(name: str) -> None:
    build, shape, uses = BUILDERS[name]
    model = build()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == uses
    assert len({id(m) for m in relus}) == uses, "each use needs its own module so it can be swapped alone"
    assert model(torch.rand(*shape)).shape == (2, 10)


@pytest.mark.parametrize("name", BUILDERS)
def test_activation_factory_changes_function_not_state_dict(name: str) -> None:
    build, shape, uses = BUILDERS[name]
    torch.manual_seed(0)
    relu = build().eval()
    torch.manual_seed(0)
    smooth = build(activation=functools.partial(CurvatureTunableActivation, 8.0, "silu")).eval()
    assert sum(isinstance(m, CurvatureTunableActivation) for m in smooth.modules()) == uses
    assert list(smooth.state_dict()) == list(relu.state_dict())
    smooth.load_state_dict(relu.state_dict())
    x = torch.rand(*shape)
    assert not torch.allclose(smooth(x), relu(x))
    swapped = build(activation=nn.SiLU)
    assert sum(isinstance(m, nn.SiLU) for m in swapped.modules()) == uses


def test_preact_resnet_state_dict_keys_are_the_reference_layout() -> None:
    """Checkpoints written before the activation factory existed still load (keys unchanged)."""
    keys = set(PreActResNet18(width=4).state_dict())
    assert "layers.0.0.bn1.weight" in keys and "layers.3.1.conv2.weight" in keys
    assert "bn.running_mean" in keys and "linear.weight" in keys
    assert not any("act" in key for key in keys)


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("bad", ["relu", torch.relu])
def test_bad_activation_is_rejected_in_the_constructor(name: str, bad) -> None:
    build, _, _ = BUILDERS[name]
    with pytest.raises(TypeError, match="activation"):
        build(activation=bad)
