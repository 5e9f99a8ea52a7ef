"""Tests of the module protocol: batch helpers, defaults, AdversarialMixin, protocol_method."""

from __future__ import annotations

from collections import OrderedDict, namedtuple

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_lightning.protocol import (
    PROTOCOL_METHODS,
    AdversarialMixin,
    batch_size_of,
    default_attack_loss,
    default_prediction_correct,
    default_with_adversarial_inputs,
    index_batch,
    protocol_method,
    replace_batch_contents,
    split_batch,
)

B, C = 5, 3
Pair = namedtuple("Pair", ["image", "label"])
INPUT_KEYS = ("inputs", "input", "image", "images", "x")
TARGET_KEYS = ("target", "targets", "label", "labels", "y")


@pytest.fixture
def xy():
    g = torch.Generator().manual_seed(0)
    return torch.rand(B, 4, generator=g), torch.randint(0, C, (B,), generator=g)


class Linear(AdversarialMixin, nn.Module):
    def __init__(self, out_shape=None):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, C)
        self.out_shape = out_shape

    def forward(self, x):
        out = self.net(x)
        if self.out_shape == "3d":
            return out[..., None]
        if self.out_shape == "1d":
            return out[:, 0]
        if self.out_shape == "tuple":
            return out, out
        if self.out_shape == "short":
            return out[:-1]
        return out


# -- split_batch --------------------------------------------------------------------------------
def test_split_batch_sequences(xy):
    x, y = xy
    for batch in ([x, y], (x, y), [x, y, torch.arange(B)], (x, y, "meta")):
        inputs, target = split_batch(batch)
        assert inputs is x and target is y


@pytest.mark.parametrize("x_key", INPUT_KEYS)
@pytest.mark.parametrize("y_key", TARGET_KEYS)
def test_split_batch_dicts_with_supported_keys(xy, x_key, y_key):
    x, y = xy
    inputs, target = split_batch({x_key: x, y_key: y, "index": torch.arange(B)})
    assert inputs is x and target is y


def test_split_batch_ordered_dict(xy):
    x, y = xy
    inputs, target = split_batch(OrderedDict(label=y, image=x))
    assert inputs is x and target is y


@pytest.mark.parametrize("keys", [("img", "label"), ("image", "cls"), ("a", "b"), ()])
def test_split_batch_dict_without_supported_keys_names_the_keys(xy, keys):
    x, y = xy
    batch = dict(zip(keys, (x, y), strict=False))
    with pytest.raises(TypeError, match="attack_inputs") as info:
        split_batch(batch)
    for key in keys:
        assert repr(key) in str(info.value)
    assert "'image'" in str(info.value) and "'label'" in str(info.value)


@pytest.mark.parametrize("batch", [torch.rand(B, 4), [torch.rand(B, 4)], (), "xy", b"xy", 3, None])
def test_split_batch_unsupported_batches_raise_type_error(batch):
    with pytest.raises(TypeError, match="attack_inputs"):
        split_batch(batch)


def test_batch_size_of(xy):
    x, y = xy
    assert batch_size_of([x, y]) == B
    assert batch_size_of({"image": x[:2], "label": y[:2]}) == 2


# -- index_batch ---------------------------------------------------------------------------------
def test_index_batch_selects_batch_tensors_and_keeps_the_rest(xy):
    x, y = xy
    weights = torch.rand(C)  # not batch-shaped: kept as is
    scalar = torch.tensor(2.0)
    index = torch.tensor([4, 1])
    batch = {"image": x, "label": y, "class_weights": weights, "scale": scalar, "name": "digits", "k": 3,
             "nested": [x, (y, weights)]}
    out = index_batch(batch, index, B)
    assert torch.equal(out["image"], x[index]) and torch.equal(out["label"], y[index])
    assert out["class_weights"] is weights and out["scale"] is scalar
    assert out["name"] == "digits" and out["k"] == 3
    assert isinstance(out["nested"], list) and isinstance(out["nested"][1], tuple)
    assert torch.equal(out["nested"][0], x[index])
    assert torch.equal(out["nested"][1][0], y[index]) and out["nested"][1][1] is weights
    # the original batch is untouched
    assert batch["image"] is x and batch["image"].shape[0] == B


def test_index_batch_keeps_container_types(xy):
    x, y = xy
    index = torch.tensor([0, 2, 3])
    as_list = index_batch([x, y], index, B)
    as_tuple = index_batch((x, y), index, B)
    assert type(as_list) is list and type(as_tuple) is tuple
    assert torch.equal(as_list[0], x[index]) and torch.equal(as_tuple[1], y[index])
    assert torch.equal(index_batch(x, index, B), x[index])


def test_index_batch_keeps_namedtuples(xy):
    x, y = xy
    index = torch.tensor([1, 3])
    out = index_batch(Pair(x, y), index, B)
    assert type(out) is Pair
    assert torch.equal(out.image, x[index]) and torch.equal(out.label, y[index])


def test_namedtuple_batches_with_the_defaults(xy):
    x, y = xy
    batch = Pair(x, y)
    inputs, target = split_batch(batch)
    assert inputs is x and target is y
    new = default_with_adversarial_inputs(Linear(), batch, x + 0.01)
    assert type(new) is Pair and torch.equal(new.image, x + 0.01) and new.label is y
    with pytest.raises(TypeError, match="collate_fn"):
        replace_batch_contents(batch, new)


# -- replace_batch_contents ------------------------------------------------------------------
def test_replace_list_contents_in_place(xy):
    x, y = xy
    batch = [x, y]
    x_adv = x + 0.1
    replace_batch_contents(batch, [x_adv, y])
    assert batch[0] is x_adv and batch[1] is y
    replace_batch_contents(batch, (x, y, "extra"))
    assert len(batch) == 3 and batch[0] is x and batch[1] is y and batch[2] == "extra"


def test_replace_dict_contents_in_place(xy):
    x, y = xy
    batch = {"image": x, "label": y, "stale": 1}
    original = batch
    x_adv = x + 0.1
    replace_batch_contents(batch, {"image": x_adv, "label": y})
    assert batch is original
    assert set(batch) == {"image", "label"}
    assert batch["image"] is x_adv


def test_replace_never_writes_into_tensors(xy):
    x, y = xy
    x_before = x.clone()
    batch = [x, y]
    replace_batch_contents(batch, [torch.zeros_like(x), y])
    assert torch.equal(x, x_before)


def test_replace_same_object_is_a_no_op(xy):
    x, y = xy
    batch = [x, y]
    replace_batch_contents(batch, batch)
    assert batch[0] is x and len(batch) == 2


def test_replace_tuple_batch_raises_a_clear_type_error(xy):
    x, y = xy
    with pytest.raises(TypeError, match="collate_fn") as info:
        replace_batch_contents((x, y), (x + 0.1, y))
    assert "tuple" in str(info.value)


@pytest.mark.parametrize("batch,new", [({"image": 1}, [1]), ([1, 2], {"image": 1})])
def test_replace_with_mismatched_container_raises(batch, new):
    with pytest.raises(TypeError):
        replace_batch_contents(batch, new)


# -- defaults ---------------------------------------------------------------------------------------
def test_mixin_defaults_for_list_batches(xy):
    x, y = xy
    model = Linear()
    batch = [x, y]
    assert model.attack_inputs(batch) is x
    loss = model.attack_loss(x, batch)
    assert loss.shape == (B,)
    assert torch.allclose(loss, F.cross_entropy(model(x), y, reduction="none"))
    assert loss.requires_grad
    x_adv = x + 0.01
    new = model.with_adversarial_inputs(batch, x_adv)
    assert type(new) is list and new[0] is x_adv and new[1] is y
    assert batch[0] is x  # the original container is not mutated


def test_mixin_defaults_for_tuple_batches_keep_extra_items(xy):
    x, y = xy
    model = Linear()
    extra = torch.arange(B)
    new = model.with_adversarial_inputs((x, y, extra), x + 0.01)
    assert type(new) is tuple and len(new) == 3
    assert torch.equal(new[0], x + 0.01) and new[1] is y and new[2] is extra


@pytest.mark.parametrize("x_key,y_key", [("image", "label"), ("inputs", "target"), ("x", "y")])
def test_mixin_defaults_for_dict_batches(xy, x_key, y_key):
    x, y = xy
    model = Linear()
    batch = {x_key: x, y_key: y, "id": "abc"}
    assert model.attack_inputs(batch) is x
    assert model.attack_loss(x, batch).shape == (B,)
    x_adv = x + 0.01
    new = model.with_adversarial_inputs(batch, x_adv)
    assert new[x_key] is x_adv and new[y_key] is y and new["id"] == "abc"
    assert batch[x_key] is x


def test_with_adversarial_inputs_on_an_unsupported_dict_raises_type_error(xy):
    x, y = xy
    with pytest.raises(TypeError, match="attack_inputs"):
        default_with_adversarial_inputs(Linear(), {"img": x, "cls": y}, x)


def test_prediction_correct(xy):
    x, y = xy
    model = Linear()
    correct = model.prediction_correct(x, [x, y])
    assert correct.dtype == torch.bool and correct.shape == (B,)
    assert torch.equal(correct, model(x).argmax(1) == y)
    assert not correct.requires_grad
    all_right = model.prediction_correct(x, [x, model(x).argmax(1)])
    assert bool(all_right.all())


def test_int32_targets_are_accepted(xy):
    x, y = xy
    loss = default_attack_loss(Linear(), x, [x, y.int()])
    assert torch.allclose(loss, F.cross_entropy(Linear()(x), y, reduction="none"))


@pytest.mark.parametrize("out_shape", ["3d", "1d", "tuple", "short"])
def test_default_attack_loss_rejects_non_logit_outputs(xy, out_shape):
    x, y = xy
    with pytest.raises(ValueError, match=r"\(B, C\).*attack_loss"):
        default_attack_loss(Linear(out_shape), x, [x, y])
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        default_prediction_correct(Linear(out_shape), x, [x, y])


@pytest.mark.parametrize(
    "target",
    [
        torch.rand(B),  # float
        torch.randint(0, C, (B, 1)),  # extra dim
        torch.randint(0, C, (B + 1,)),  # wrong length
        F.one_hot(torch.randint(0, C, (B,)), C),  # one-hot
        torch.randint(0, C, (B,)).to(torch.uint8),
    ],
)
def test_default_attack_loss_rejects_bad_targets(xy, target):
    x, _ = xy
    with pytest.raises(ValueError, match="integer class targets"):
        default_attack_loss(Linear(), x, [x, target])


# -- protocol_method ----------------------------------------------------------------------------------
def test_protocol_methods():
    assert PROTOCOL_METHODS == ("attack_inputs", "attack_loss", "with_adversarial_inputs", "prediction_correct")


def test_protocol_method_prefers_the_modules_own_method(xy):
    x, y = xy
    calls = []

    class Custom(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(4, C)

        def forward(self, x):
            return self.net(x)

        def attack_loss(self, inputs, batch):
            calls.append(inputs)
            return -F.cross_entropy(self(inputs), batch[1], reduction="none")

    module = Custom()
    loss = protocol_method(module, "attack_loss")(x, [x, y])
    assert len(calls) == 1 and calls[0] is x
    assert torch.allclose(loss, -F.cross_entropy(module(x), y, reduction="none"))
    # the methods it does not define fall back to the defaults
    assert protocol_method(module, "attack_inputs")([x, y]) is x
    new = protocol_method(module, "with_adversarial_inputs")([x, y], x + 1)
    assert torch.equal(new[0], x + 1)
    correct = protocol_method(module, "prediction_correct")(x, [x, y])
    assert torch.equal(correct, module(x).argmax(1) == y)


def test_protocol_method_on_a_plain_module_uses_defaults(xy):
    x, y = xy
    module = nn.Linear(4, C)
    loss = protocol_method(module, "attack_loss")(x, [x, y])
    assert torch.allclose(loss, F.cross_entropy(module(x), y, reduction="none"))


def test_protocol_method_ignores_non_callable_attributes(xy):
    x, y = xy
    module = nn.Linear(4, C)
    module.attack_inputs = "not a method"
    assert protocol_method(module, "attack_inputs")([x, y]) is x


def test_protocol_method_mixin_override_wins(xy):
    x, y = xy

    class Keep(Linear):
        def with_adversarial_inputs(self, batch, inputs_adv):
            return [torch.cat([batch[0], inputs_adv]), torch.cat([batch[1], batch[1]])]

    new = protocol_method(Keep(), "with_adversarial_inputs")([x, y], x + 1)
    assert new[0].shape == (2 * B, 4) and new[1].shape == (2 * B,)


def test_protocol_method_unknown_name():
    with pytest.raises(KeyError, match="unknown protocol method"):
        protocol_method(nn.Linear(2, 2), "attack_outputs")
