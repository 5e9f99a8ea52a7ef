"""NERO-Net genotypes: Fast-DENSER's two-level encoding, its grammar and its mutations.

Outer level: an ordered list of layers in two blocks, ``features`` (1-30 layers) and
``classification`` (1-10 layers), followed by a fixed output layer, plus one ``learning``
macro block. Inner level: each layer's parameters, drawn from the grammar below.

The grammar and the default ranges are Fast-DENSER's ``example/cnn.grammar`` (cdvetal/
fast-denser3), which NERO-Net (Valentim, Antunes, Lourenco) builds on::

    <features>       ::= <convolution> | <convolution> | <pooling> | <pooling> | <dropout> | <batch-norm>
    <convolution>    ::= layer:conv [num-filters,int,32,256] [filter-shape,int,2,5] [stride,int,1,3]
                         <padding> <activation-function> <bias>
    <pooling>        ::= (pool-avg | pool-max) [kernel-size,int,2,5] [stride,int,1,3] <padding>
    <dropout>        ::= layer:dropout [rate,float,0,0.7]
    <classification> ::= <fully-connected> | <dropout>
    <fully-connected>::= layer:fc <activation-function> [num-units,int,128,2048] <bias>
    <activation>     ::= linear | relu | sigmoid
    <learning>       ::= (gradient-descent | rmsprop | adam) [batch_size,int,50,500] ...

Mutation operators and their default rates are Fast-DENSER's (``example/config.json``,
``engine.py::mutation``): add layer 0.25 (tried 1-2 times per block; a new layer is a copy
of an existing one -- "reuse" -- with probability 0.15), remove layer 0.25 (1-2 tries),
per-layer DSGE mutation 0.15, learning-block mutation 0.3, and "train longer" 0.2, which
applies no other mutation and adds one training-budget unit. DSGE mutation changes either a
grammar choice (e.g. the layer type, padding, activation) or one number: integers are
redrawn uniformly, floats get Gaussian noise with std 0.15 and are clipped.

Genotypes are plain ``dict``/``list``/``str``/``int``/``float``/``bool`` data, so they go
to YAML (``yaml.safe_load`` only) and JSON unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robust_lightning._validation import is_int, is_number
from robust_lightning.errors import InvalidArgumentError

__all__ = [
    "ACTIVATIONS",
    "FEATURE_LAYERS",
    "CLASSIFICATION_LAYERS",
    "OPTIMIZERS",
    "Genotype",
    "MutationRates",
    "SearchSpace",
    "default_genotype",
    "load_genotype",
    "mutate",
    "random_genotype",
    "validate_genotype",
]

ACTIVATIONS: tuple[str, ...] = ("linear", "relu", "sigmoid")
PADDINGS: tuple[str, ...] = ("same", "valid")
OPTIMIZERS: tuple[str, ...] = ("sgd", "rmsprop", "adam")
# The grammar lists conv and pooling twice in <features>: they are drawn twice as often.
FEATURE_LAYERS: tuple[str, ...] = ("conv", "conv", "pool", "pool", "dropout", "batch_norm")
CLASSIFICATION_LAYERS: tuple[str, ...] = ("fc", "dropout")
BLOCKS: tuple[str, ...] = ("features", "classification")
# Fast-DENSER's float mutation: value + N(0, 0.15), clipped to the range.
FLOAT_MUTATION_STD = 0.15


IntRange = tuple[int, int]
FloatRange = tuple[float, float]


@dataclass
class SearchSpace:
    """Ranges of the grammar's numbers and block sizes (Fast-DENSER's defaults).

    Args:
        features_layers: min/max layers of the features block (Fast-DENSER: 1-30).
        classification_layers: min/max layers of the classification block (1-10).
        init_features_layers: layer counts a random individual's features block starts with
            (Fast-DENSER's ``network_structure_init``: 2, 3 or 4).
        init_classification_layers: same for the classification block (1).
        conv_filters: output channels of a convolution.
        conv_kernel: convolution kernel size.
        conv_stride: convolution stride.
        pool_kernel: pooling kernel size.
        pool_stride: pooling stride.
        dropout_rate: dropout probability.
        fc_units: hidden units of a fully connected layer.
        lr: learning rate (all optimizers).
        momentum: SGD momentum.
        weight_decay: L2 penalty ("decay" in the grammar).
        rho: RMSprop smoothing constant.
        beta1: Adam's first-moment decay.
        beta2: Adam's second-moment decay. The grammar allows up to 1; torch requires < 1,
            so our default stops at 0.999.
        batch_size: training batch size.
        optimizers: optimizers the learning block may use.
        activations: activations conv and fc layers may use.
    """

    features_layers: IntRange = (1, 30)
    classification_layers: IntRange = (1, 10)
    init_features_layers: tuple[int, ...] = (2, 3, 4)
    init_classification_layers: tuple[int, ...] = (1,)
    conv_filters: IntRange = (32, 256)
    conv_kernel: IntRange = (2, 5)
    conv_stride: IntRange = (1, 3)
    pool_kernel: IntRange = (2, 5)
    pool_stride: IntRange = (1, 3)
    dropout_rate: FloatRange = (0.0, 0.7)
    fc_units: IntRange = (128, 2048)
    lr: FloatRange = (0.0001, 0.1)
    momentum: FloatRange = (0.68, 0.99)
    weight_decay: FloatRange = (0.000001, 0.001)
    rho: FloatRange = (0.5, 0.999)
    beta1: FloatRange = (0.5, 0.999)
    beta2: FloatRange = (0.5, 0.999)
    batch_size: IntRange = (50, 500)
    optimizers: tuple[str, ...] = OPTIMIZERS
    activations: tuple[str, ...] = ACTIVATIONS

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("optimizers", "activations"):
                allowed = OPTIMIZERS if f.name == "optimizers" else ACTIVATIONS
                value = tuple(value)
                if not value or any(v not in allowed for v in value):
                    raise ValueError(f"space.{f.name} must be a non-empty subset of {allowed}, got {value!r}")
                setattr(self, f.name, value)
            elif f.name.startswith("init_"):
                value = tuple(value)
                if not value or any(not is_int(v) or v < 1 for v in value):
                    raise ValueError(f"space.{f.name} must be a non-empty list of ints >= 1, got {value!r}")
                setattr(self, f.name, value)
            else:
                if len(value) != 2:
                    raise ValueError(f"space.{f.name} must be a (min, max) pair, got {value!r}")
                lo, hi = value
                int_range = f.type in ("IntRange",) or f.type is IntRange
                if int_range and not all(is_int(v) for v in value):
                    raise ValueError(f"space.{f.name} must hold ints, got {value!r}")
                if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or lo < 0:
                    raise ValueError(f"space.{f.name} must be 0 <= min <= max, got {value!r}")
                setattr(self, f.name, (lo, hi))
        if self.features_layers[0] < 1 or self.classification_layers[0] < 1:
            raise ValueError("space.features_layers and space.classification_layers need min >= 1")
        for name, block in (("features", self.features_layers), ("classification", self.classification_layers)):
            init = getattr(self, f"init_{name}_layers")
            if any(not block[0] <= n <= block[1] for n in init):
                raise ValueError(f"space.init_{name}_layers {init} must lie in space.{name}_layers {block}")
        if self.dropout_rate[1] >= 1.0:
            raise ValueError(f"space.dropout_rate must stay below 1, got {self.dropout_rate}")
        for name in ("rho", "beta1", "beta2"):
            if getattr(self, name)[1] >= 1.0:
                raise ValueError(f"space.{name} must stay below 1 (torch's optimizers require it)")
        if self.lr[0] <= 0 or self.batch_size[0] < 1 or self.conv_filters[0] < 1 or self.fc_units[0] < 1:
            raise ValueError("space.lr, batch_size, conv_filters and fc_units need min > 0")
        for name in ("conv_kernel", "conv_stride", "pool_kernel", "pool_stride"):
            if getattr(self, name)[0] < 1:
                raise ValueError(f"space.{name} needs min >= 1")


@dataclass
class MutationRates:
    """Mutation probabilities (Fast-DENSER's ``config.json`` defaults).

    Args:
        add_layer: per try (1-2 tries per block), probability of inserting a layer.
        reuse_layer: probability that an inserted layer copies an existing one.
        remove_layer: per try (1-2 tries per block), probability of deleting a layer.
        dsge_layer: per layer, probability of a parameter (DSGE) mutation.
        macro_layer: probability of mutating the learning block.
        train_longer: probability that the offspring only gets one more budget unit.
    """

    add_layer: float = 0.25
    reuse_layer: float = 0.15
    remove_layer: float = 0.25
    dsge_layer: float = 0.15
    macro_layer: float = 0.3
    train_longer: float = 0.2

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not is_number(value) or not 0.0 <= value <= 1.0:
                raise InvalidArgumentError(f"mutation.{f.name} must be a probability in [0, 1], got {value!r}")


# -- layer specs ------------------------------------------------------------------------
# For each layer type: parameter -> ("int"|"float", SearchSpace field) or ("choice", options).
def _layer_params(layer_type: str, space: SearchSpace) -> dict[str, tuple[str, Any]]:
    if layer_type == "conv":
        return {"filters": ("int", space.conv_filters), "kernel": ("int", space.conv_kernel),
                "stride": ("int", space.conv_stride), "padding": ("choice", PADDINGS),
                "activation": ("choice", space.activations), "bias": ("choice", (True, False))}
    if layer_type == "pool":
        return {"pool": ("choice", ("max", "avg")), "kernel": ("int", space.pool_kernel),
                "stride": ("int", space.pool_stride), "padding": ("choice", PADDINGS)}
    if layer_type == "dropout":
        return {"rate": ("float", space.dropout_rate)}
    if layer_type == "batch_norm":
        return {}
    if layer_type == "fc":
        return {"units": ("int", space.fc_units), "activation": ("choice", space.activations),
                "bias": ("choice", (True, False))}
    raise ValueError(f"unknown layer type {layer_type!r}")


def _learning_params(optimizer: str, space: SearchSpace) -> dict[str, tuple[str, Any]]:
    params: dict[str, tuple[str, Any]] = {"lr": ("float", space.lr),
                                         "weight_decay": ("float", space.weight_decay)}
    if optimizer == "sgd":
        params.update(momentum=("float", space.momentum), nesterov=("choice", (True, False)))
    elif optimizer == "rmsprop":
        params.update(rho=("float", space.rho))
    elif optimizer == "adam":
        params.update(beta1=("float", space.beta1), beta2=("float", space.beta2))
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    params["batch_size"] = ("int", space.batch_size)
    return params


def _draw(kind: str, domain: Any, rng: random.Random) -> Any:
    if kind == "int":
        return rng.randint(domain[0], domain[1])
    if kind == "float":
        return rng.uniform(domain[0], domain[1])
    return rng.choice(list(domain))


def _random_layer(block: str, rng: random.Random, space: SearchSpace,
                  layer_type: str | None = None) -> dict[str, Any]:
    if layer_type is None:
        layer_type = rng.choice(FEATURE_LAYERS if block == "features" else CLASSIFICATION_LAYERS)
    layer: dict[str, Any] = {"type": layer_type}
    for name, (kind, domain) in _layer_params(layer_type, space).items():
        layer[name] = _draw(kind, domain, rng)
    return layer


def _random_learning(rng: random.Random, space: SearchSpace, optimizer: str | None = None) -> dict[str, Any]:
    optimizer = optimizer or rng.choice(list(space.optimizers))
    learning: dict[str, Any] = {"optimizer": optimizer}
    for name, (kind, domain) in _learning_params(optimizer, space).items():
        learning[name] = _draw(kind, domain, rng)
    return learning


# -- the genotype -----------------------------------------------------------------------
@dataclass
class Genotype:
    """A network as Fast-DENSER encodes it: two layer blocks and a learning block.

    Attributes:
        features: layers before flattening (conv, pool, batch_norm, dropout).
        classification: layers after flattening (fc, dropout); the output layer with
            ``num_classes`` units is fixed and not part of the genotype.
        learning: optimizer name, its hyper-parameters and the batch size.
    """

    features: list[dict[str, Any]] = field(default_factory=list)
    classification: list[dict[str, Any]] = field(default_factory=list)
    learning: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (a deep copy), fit for YAML and JSON."""
        return copy.deepcopy({"features": self.features, "classification": self.classification,
                              "learning": self.learning})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genotype:
        """Build and check a genotype from plain data.

        Raises:
            ValueError: naming the offending layer and key when the data is not a genotype.
        """
        if not isinstance(data, Mapping):
            raise TypeError("genotype must be a mapping with features/classification/learning, "
                            f"got {type(data).__name__}")
        unknown = set(data) - {"features", "classification", "learning"}
        if unknown:
            raise ValueError(f"genotype has unknown keys {sorted(unknown)}; "
                             "expected features, classification, learning")
        genotype = cls(features=copy.deepcopy(list(data.get("features") or [])),
                       classification=copy.deepcopy(list(data.get("classification") or [])),
                       learning=copy.deepcopy(dict(data.get("learning") or {})))
        validate_genotype(genotype)
        return genotype

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    def key(self) -> str:
        """A canonical string of the genotype (equal genotypes, equal keys)."""
        return json.dumps({"features": self.features, "classification": self.classification,
                           "learning": self.learning}, sort_keys=True)

    def describe(self) -> str:
        """Short human-readable summary, e.g. ``conv32k3s1-pool-max-bn | fc128 | adam``."""
        def short(layer: dict[str, Any]) -> str:
            t = layer["type"]
            if t == "conv":
                return (f"conv{layer['filters']}k{layer['kernel']}s{layer['stride']}{layer['padding'][0]}"
                        f"-{layer['activation']}")
            if t == "pool":
                return f"{layer['pool']}pool{layer['kernel']}s{layer['stride']}{layer['padding'][0]}"
            if t == "dropout":
                return f"drop{layer['rate']:.2f}"
            if t == "batch_norm":
                return "bn"
            return f"fc{layer['units']}-{layer['activation']}"

        learning = self.learning
        return (" ".join(short(x) for x in self.features) + " | " + " ".join(short(x) for x in self.classification)
                + f" | {learning.get('optimizer')} lr={learning.get('lr', 0):.2g} bs={learning.get('batch_size')}")


def validate_genotype(genotype: Genotype, space: SearchSpace | None = None) -> None:
    """Check structure and types; with ``space``, also that every value lies in its range.

    Raises:
        ValueError: with the offending block, layer index and key.
    """
    check_space = space is not None
    # Without a search space, the hard limits of a buildable network still apply.
    space = space or SearchSpace(features_layers=(1, 10**6), classification_layers=(1, 10**6),
                                 conv_filters=(1, 10**9), conv_kernel=(1, 10**9), conv_stride=(1, 10**9),
                                 pool_kernel=(1, 10**9), pool_stride=(1, 10**9), dropout_rate=(0.0, 0.999999),
                                 fc_units=(1, 10**9), lr=(1e-300, 1e300), momentum=(0.0, 1e300),
                                 weight_decay=(0.0, 1e300), rho=(0.0, 0.999999), beta1=(0.0, 0.999999),
                                 beta2=(0.0, 0.999999), batch_size=(1, 10**9))
    for block, allowed in (("features", set(FEATURE_LAYERS)), ("classification", set(CLASSIFICATION_LAYERS))):
        layers = getattr(genotype, block)
        if not isinstance(layers, list):
            raise ValueError(f"genotype.{block} must be a list of layers, got {type(layers).__name__}")
        lo, hi = getattr(space, f"{block}_layers")
        if not lo <= len(layers) <= hi:
            raise ValueError(f"genotype.{block} has {len(layers)} layers, expected {lo}-{hi}")
        for i, layer in enumerate(layers):
            where = f"genotype.{block}[{i}]"
            if not isinstance(layer, dict) or layer.get("type") not in allowed:
                raise ValueError(f"{where} must be a mapping with type in {sorted(allowed)}, got {layer!r}")
            _check_params(where, layer, _layer_params(layer["type"], space))
    learning = genotype.learning
    if not isinstance(learning, dict) or learning.get("optimizer") not in OPTIMIZERS:
        raise ValueError(f"genotype.learning.optimizer must be one of {OPTIMIZERS}, got {learning!r}")
    if check_space and learning["optimizer"] not in space.optimizers:
        raise ValueError(f"genotype.learning.optimizer {learning['optimizer']!r} is not in space.optimizers")
    _check_params("genotype.learning", learning, _learning_params(learning["optimizer"], space),
                  extra_keys={"optimizer"})


def _check_params(where: str, values: dict[str, Any], spec: dict[str, tuple[str, Any]],
                  extra_keys: frozenset[str] | set[str] = frozenset({"type"})) -> None:
    unknown = set(values) - set(spec) - set(extra_keys)
    missing = set(spec) - set(values)
    if unknown or missing:
        raise ValueError(f"{where}: expected keys {sorted(spec)}, missing {sorted(missing)}, "
                         f"unknown {sorted(unknown)}")
    for name, (kind, domain) in spec.items():
        value = values[name]
        if kind == "int":
            if not is_int(value):
                raise InvalidArgumentError(f"{where}.{name} must be an int, got {value!r}")
        elif kind == "float":
            if not is_number(value) or not math.isfinite(value):
                raise InvalidArgumentError(f"{where}.{name} must be a finite number, got {value!r}")
        elif value not in domain:
            raise ValueError(f"{where}.{name} must be one of {list(domain)}, got {value!r}")
        if kind in ("int", "float"):
            lo, hi = domain
            if not lo <= value <= hi:
                raise ValueError(f"{where}.{name}={value!r} is outside [{lo}, {hi}]")


def random_genotype(rng: random.Random, space: SearchSpace) -> Genotype:
    """A random individual (Fast-DENSER's initialisation: block sizes from ``init_*_layers``)."""
    features = [_random_layer("features", rng, space) for _ in range(rng.choice(space.init_features_layers))]
    classification = [_random_layer("classification", rng, space)
                      for _ in range(rng.choice(space.init_classification_layers))]
    return Genotype(features, classification, _random_learning(rng, space))


def default_genotype() -> Genotype:
    """A small built-in network (for ``train_best.yaml`` without a prior search)."""
    conv = {"type": "conv", "kernel": 3, "stride": 1, "padding": "same", "activation": "relu", "bias": True}
    return Genotype(
        features=[{**conv, "filters": 32}, {"type": "batch_norm"},
                  {"type": "pool", "pool": "max", "kernel": 2, "stride": 2, "padding": "valid"},
                  {**conv, "filters": 64}, {"type": "batch_norm"},
                  {"type": "pool", "pool": "max", "kernel": 2, "stride": 2, "padding": "valid"}],
        classification=[{"type": "fc", "units": 128, "activation": "relu", "bias": True},
                        {"type": "dropout", "rate": 0.3}],
        learning={"optimizer": "adam", "lr": 0.002, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0001,
                  "batch_size": 64},
    )


def load_genotype(source: str | Path | Mapping[str, Any] | Genotype) -> Genotype:
    """A genotype from a YAML file path, a mapping or a :class:`Genotype`.

    A YAML written by the search (``best_genotype.yaml``) may wrap the genotype under a
    ``genotype:`` key next to its metrics; both forms load. Files are read with
    ``yaml.safe_load`` only.

    Raises:
        FileNotFoundError: when the path does not exist.
        ValueError / TypeError: when the content is not a genotype.
    """
    if isinstance(source, Genotype):
        return Genotype.from_dict(source.to_dict())
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"genotype file {str(path)!r} does not exist")
        data = yaml.safe_load(path.read_text())
        if isinstance(data, Mapping) and "genotype" in data:
            data = data["genotype"]
        return Genotype.from_dict(data)
    if isinstance(source, Mapping):
        data = source["genotype"] if "genotype" in source else source
        return Genotype.from_dict(data)
    raise TypeError(f"genotype must be a path to a YAML file or a mapping, got {type(source).__name__}")


# -- mutation ---------------------------------------------------------------------------
def _mutate_values(values: dict[str, Any], spec: dict[str, tuple[str, Any]], rng: random.Random,
                   grammar_choices: int) -> str:
    """Fast-DENSER's ``mutation_dsge`` on one layer/learning dict; returns a description.

    ``grammar_choices`` counts extra "ge" options (the layer type or optimizer) that the
    caller handles; the number picked here is in ``spec`` order.
    """
    choices = [name for name, (kind, domain) in spec.items() if kind != "choice" or len(domain) > 1]
    numbers = [n for n in choices if spec[n][0] in ("int", "float")]
    categorical = [n for n in choices if spec[n][0] == "choice"]
    # Fast-DENSER lists 'ga' twice against one 'ge': numbers are mutated 2:1 over choices.
    options = ["ge"] * (grammar_choices + len(categorical) > 0) + ["ga", "ga"] * (len(numbers) > 0)
    if not options:
        return "none"
    if rng.choice(options) == "ga":
        name = rng.choice(numbers)
        kind, (lo, hi) = spec[name]
        if kind == "int":
            values[name] = rng.randint(lo, hi)
        else:
            values[name] = float(min(max(values[name] + rng.gauss(0.0, FLOAT_MUTATION_STD), lo), hi))
        return f"{name}={values[name]!r}"
    pick = rng.randrange(grammar_choices + len(categorical))
    if pick < grammar_choices:
        return "ge"
    name = categorical[pick - grammar_choices]
    alternatives = [v for v in spec[name][1] if v != values[name]]
    if not alternatives:
        return "none"
    values[name] = rng.choice(alternatives)
    return f"{name}={values[name]!r}"


def _mutate_layer(block: str, layer: dict[str, Any], rng: random.Random,
                  space: SearchSpace) -> tuple[dict[str, Any], str]:
    types = FEATURE_LAYERS if block == "features" else CLASSIFICATION_LAYERS
    new = copy.deepcopy(layer)
    result = _mutate_values(new, _layer_params(new["type"], space), rng, grammar_choices=1)
    if result == "ge":
        # Another expansion of <features>/<classification>: a fresh layer of another type.
        other = [t for t in dict.fromkeys(types) if t != layer["type"]]
        new = _random_layer(block, rng, space, layer_type=rng.choice(other))
        return new, f"type {layer['type']}->{new['type']}"
    return new, result


def _mutate_learning(learning: dict[str, Any], rng: random.Random, space: SearchSpace) -> tuple[dict[str, Any], str]:
    new = copy.deepcopy(learning)
    grammar_choices = 1 if len(space.optimizers) > 1 else 0
    result = _mutate_values(new, _learning_params(new["optimizer"], space), rng, grammar_choices)
    if result == "ge":
        other = [o for o in space.optimizers if o != learning["optimizer"]]
        fresh = _random_learning(rng, space, optimizer=rng.choice(other))
        # The batch size is its own grammar symbol: switching optimizer keeps it.
        fresh["batch_size"] = learning["batch_size"]
        return fresh, f"optimizer {learning['optimizer']}->{fresh['optimizer']}"
    return new, result


def mutate(genotype: Genotype, rng: random.Random, space: SearchSpace, rates: MutationRates,
           max_tries: int = 20) -> tuple[Genotype, bool, list[str]]:
    """One offspring of ``genotype`` (Fast-DENSER's ``engine.mutation``).

    Returns:
        ``(child, train_longer, operations)``: with ``train_longer`` the child is the parent's
        genotype unchanged and gets one more training-budget unit (no other mutation, as in
        Fast-DENSER); otherwise the budget resets to one unit. ``operations`` describes what
        changed, for the logs.

    Our reading (not Fast-DENSER): when no operator fires, Fast-DENSER returns an unchanged
    copy that is trained again; we redraw (up to ``max_tries``) so each offspring differs
    from its parent, which matters with the small lambda of quick searches.
    """
    if rng.random() <= rates.train_longer:
        return Genotype.from_dict(genotype.to_dict()), True, ["train_longer"]
    for _ in range(max_tries):
        child = Genotype.from_dict(genotype.to_dict())
        ops: list[str] = []
        for block in BLOCKS:
            layers = getattr(child, block)
            lo, hi = getattr(space, f"{block}_layers")
            for _ in range(rng.randint(1, 2)):
                if len(layers) < hi and rng.random() <= rates.add_layer:
                    if rng.random() <= rates.reuse_layer:
                        # Fast-DENSER reuses a layer by reference (shared genes); our copy is by
                        # value, so later mutations of one copy leave the other alone.
                        new_layer, how = copy.deepcopy(rng.choice(layers)), "reuse"
                    else:
                        new_layer, how = _random_layer(block, rng, space), "add"
                    position = rng.randint(0, len(layers))
                    layers.insert(position, new_layer)
                    ops.append(f"{how} {block}[{position}] {new_layer['type']}")
            for _ in range(rng.randint(1, 2)):
                if len(layers) > lo and rng.random() <= rates.remove_layer:
                    position = rng.randrange(len(layers))
                    removed = layers.pop(position)
                    ops.append(f"remove {block}[{position}] {removed['type']}")
            for i in range(len(layers)):
                if rng.random() <= rates.dsge_layer:
                    layers[i], what = _mutate_layer(block, layers[i], rng, space)
                    ops.append(f"dsge {block}[{i}] {what}")
        if rng.random() <= rates.macro_layer:
            child.learning, what = _mutate_learning(child.learning, rng, space)
            ops.append(f"learning {what}")
        if child.key() != genotype.key():
            validate_genotype(child)
            return child, False, ops
    return child, False, ops
