"""Genotype grammar, mutation operators and YAML round trips."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import yaml

from robust_lightning.lightning_modules.nero_net import (
    Genotype,
    MutationRates,
    SearchSpace,
    default_genotype,
    load_genotype,
    mutate,
    random_genotype,
    validate_genotype,
)

SPACE = SearchSpace()


@pytest.mark.parametrize("seed", range(40))
def test_mutation_chains_stay_valid(seed: int) -> None:
    rng = random.Random(seed)
    genotype = random_genotype(rng, SPACE)
    validate_genotype(genotype, SPACE)
    assert len(genotype.features) in SPACE.init_features_layers
    assert len(genotype.classification) in SPACE.init_classification_layers
    for _ in range(25):
        child, longer, ops = mutate(genotype, rng, SPACE, MutationRates())
        validate_genotype(child, SPACE)  # every layer and value inside the grammar's ranges
        assert ops
        if longer:
            assert ops == ["train_longer"] and child.key() == genotype.key()
        else:
            assert child.key() != genotype.key(), "an offspring must differ from its parent"
        genotype = child


def test_block_size_limits_hold_under_forced_adds_and_removes() -> None:
    space = SearchSpace(features_layers=(1, 4), classification_layers=(1, 2), init_features_layers=(2,))
    rng = random.Random(0)
    genotype = random_genotype(rng, space)
    grow = MutationRates(add_layer=1.0, reuse_layer=0.5, remove_layer=0.0, dsge_layer=0.0, macro_layer=0.0,
                         train_longer=0.0)
    shrink = MutationRates(add_layer=0.0, remove_layer=1.0, dsge_layer=0.0, macro_layer=0.0, train_longer=0.0)
    for _ in range(10):
        genotype, _, _ = mutate(genotype, rng, space, grow)
        validate_genotype(genotype, space)
    assert len(genotype.features) == 4 and len(genotype.classification) == 2
    for _ in range(10):
        genotype, _, _ = mutate(genotype, rng, space, shrink)
        validate_genotype(genotype, space)
    assert len(genotype.features) == 1 and len(genotype.classification) == 1


def test_every_operator_fires_with_fast_denser_rates() -> None:
    rng = random.Random(1)
    counts: Counter[str] = Counter()
    genotype = random_genotype(rng, SPACE)
    for _ in range(300):
        child, _, ops = mutate(genotype, rng, SPACE, MutationRates())
        counts.update(op.split()[0] for op in ops)
        # Layer-type changes and optimizer changes are the grammar ("ge") mutations.
        counts.update("ge_type" for op in ops if "->" in op)
        genotype = child
    for op in ("train_longer", "add", "reuse", "remove", "dsge", "learning", "ge_type"):
        assert counts[op] > 0, f"operator {op} never fired: {counts}"
    # train_longer has probability 0.2 per offspring.
    assert 30 < counts["train_longer"] < 90


def test_yaml_round_trip_and_wrapped_file(tmp_path: Path) -> None:
    genotype = random_genotype(random.Random(3), SPACE)
    path = tmp_path / "g.yaml"
    genotype.save(path)
    assert load_genotype(path).key() == genotype.key()
    wrapped = tmp_path / "best_genotype.yaml"
    wrapped.write_text(yaml.safe_dump({"genotype": genotype.to_dict(), "fitness": 1.5}))
    assert load_genotype(wrapped).key() == genotype.key()
    assert load_genotype(genotype.to_dict()).key() == genotype.key()


def test_yaml_is_read_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(yaml.YAMLError):
        load_genotype(path)


@pytest.mark.parametrize(
    ("mutate_dict", "match"),
    [
        (lambda d: d["features"].append({"type": "lstm"}), r"features\[6\].*type"),
        (lambda d: d["features"][0].update(filters="many"), r"features\[0\]\.filters must be an int"),
        (lambda d: d["features"][0].pop("kernel"), r"missing \['kernel'\]"),
        (lambda d: d["classification"][1].update(rate=1.5), r"rate=1.5 is outside"),
        (lambda d: d["learning"].update(optimizer="lbfgs"), r"learning.optimizer must be one of"),
        (lambda d: d.update(extra=1), r"unknown keys \['extra'\]"),
        (lambda d: d.update(features=[]), r"features has 0 layers"),
    ],
)
def test_bad_genotypes_name_the_problem(mutate_dict, match: str) -> None:
    data = default_genotype().to_dict()
    mutate_dict(data)
    with pytest.raises(ValueError, match=match):
        Genotype.from_dict(data)


def test_bad_inputs_raise_early(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_genotype(tmp_path / "missing.yaml")
    with pytest.raises(TypeError, match="genotype must be"):
        load_genotype(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="space.conv_filters"):
        SearchSpace(conv_filters=(64, 32))
    with pytest.raises(ValueError, match="space.beta2"):
        SearchSpace(beta2=(0.5, 1.0))
    with pytest.raises(ValueError, match="space.optimizers"):
        SearchSpace(optimizers=("lbfgs",))
    with pytest.raises(ValueError, match="mutation.add_layer"):
        MutationRates(add_layer=1.5)
    with pytest.raises(ValueError, match="init_features_layers"):
        SearchSpace(features_layers=(1, 3), init_features_layers=(2, 3, 4))
    with pytest.raises(ValueError, match="outside"):
        validate_genotype(default_genotype(), SearchSpace(conv_filters=(8, 16)))
