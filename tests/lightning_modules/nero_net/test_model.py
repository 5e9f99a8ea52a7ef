"""Genotype -> nn.Module: shape inference, repair, parameter budget."""

from __future__ import annotations

import random

import pytest
import torch

from robust_lightning.lightning_modules.nero_net import (
    Genotype,
    InvalidGenotypeError,
    NeroNet,
    SearchSpace,
    default_genotype,
    infer_shapes,
    random_genotype,
    repair_genotype,
)

SMALL = SearchSpace(conv_filters=(4, 16), fc_units=(8, 32), features_layers=(1, 8))


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 32, 32), (3, 13, 21)])
def test_random_genotypes_build_with_the_right_output(input_shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    built = 0
    for seed in range(25):
        genotype = random_genotype(random.Random(seed), SMALL)
        network = NeroNet(genotype, input_shape, num_classes=7)
        x = torch.rand(3, *input_shape)
        features = network.features(x)
        shapes = infer_shapes(network.genotype, input_shape)
        assert tuple(features.shape[1:]) == shapes[len(network.genotype.features) - 1]
        out = network(x)
        assert out.shape == (3, 7) and torch.isfinite(out).all()
        out.sum().backward()
        built += 1
    assert built == 25


def test_paper_scale_genotypes_build_or_are_rejected_with_a_reason() -> None:
    space = SearchSpace()
    rejected = 0
    for seed in range(30):
        genotype = random_genotype(random.Random(seed), space)
        try:
            network = NeroNet(genotype, (3, 32, 32), 10, max_params=3_000_000)
        except InvalidGenotypeError as error:
            assert "max_params" in str(error)
            rejected += 1
            continue
        assert network(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert rejected < 30


def _conv(kernel: int, stride: int, padding: str) -> dict:
    return {"type": "conv", "filters": 4, "kernel": kernel, "stride": stride, "padding": padding,
            "activation": "relu", "bias": True}


def _genotype(features: list[dict]) -> Genotype:
    base = default_genotype().to_dict()
    base["features"] = features
    return Genotype.from_dict(base)


def test_same_padding_keeps_ceil_size_for_every_stride() -> None:
    genotype = _genotype([_conv(4, 3, "same"),
                          {"type": "pool", "pool": "avg", "kernel": 5, "stride": 2, "padding": "same"},
                          {"type": "pool", "pool": "max", "kernel": 3, "stride": 2, "padding": "same"}])
    network = NeroNet(genotype, (1, 17, 17), 10)
    features = network.features(torch.rand(2, 1, 17, 17))
    # 17 -> ceil(17/3)=6 -> ceil(6/2)=3 -> ceil(3/2)=2
    assert features.shape == (2, 4, 2, 2)


def test_same_avg_pool_averages_only_real_pixels() -> None:
    genotype = _genotype([{"type": "pool", "pool": "avg", "kernel": 3, "stride": 1, "padding": "same"}])
    network = NeroNet(genotype, (1, 4, 4), 10)
    assert torch.allclose(network.features(torch.ones(1, 1, 4, 4)), torch.ones(1, 1, 4, 4))


def test_too_large_valid_kernel_is_repaired_or_rejected() -> None:
    genotype = _genotype([_conv(3, 1, "valid"), _conv(5, 1, "valid")])
    with pytest.raises(InvalidGenotypeError, match=r"features\[1\].*would output"):
        NeroNet(genotype, (1, 6, 6), 10, repair=False)
    repaired, notes = repair_genotype(genotype, (1, 6, 6))
    assert repaired.features[1]["padding"] == "same" and len(notes) == 1
    network = NeroNet(genotype, (1, 6, 6), 10)
    assert network.repairs == notes
    assert network(torch.rand(1, 1, 6, 6)).shape == (1, 10)


def test_parameter_budget_counts_like_torch() -> None:
    network = NeroNet(default_genotype(), (1, 16, 16), 10)
    n_params = sum(p.numel() for p in network.parameters())
    NeroNet(default_genotype(), (1, 16, 16), 10, max_params=n_params)
    with pytest.raises(InvalidGenotypeError, match=f"{n_params} parameters"):
        NeroNet(default_genotype(), (1, 16, 16), 10, max_params=n_params - 1)


def test_bad_arguments_raise_early() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        NeroNet(default_genotype(), (16, 16), 10)
    with pytest.raises(ValueError, match="num_classes"):
        NeroNet(default_genotype(), (1, 16, 16), 1)
    with pytest.raises(ValueError, match="max_params"):
        NeroNet(default_genotype(), (1, 16, 16), 10, max_params=0)
