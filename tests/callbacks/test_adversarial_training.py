"""Tests of the AdversarialTraining callback with a plain user LightningModule."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from robust_lightning.attacks import FGSM, PGD
from robust_lightning.callbacks import AdversarialTraining

EPS = 0.1
B = 8


def linf(a, b):
    return (a - b).flatten(1).abs().amax(1)


def attack(**kwargs):
    options = dict(eps=EPS, alpha=0.05, steps=3)
    options.update(kwargs)
    return PGD(**options)


# -- with a real Trainer ---------------------------------------------------------------------------
def test_training_step_receives_perturbed_inputs(helpers):
    x, y = helpers.make_data(n=2 * B)
    x_before, y_before = x.clone(), y.clone()
    module = helpers.PlainClassifier()
    trainer = helpers.make_trainer([AdversarialTraining(attack(), seed=0)])
    trainer.fit(module, helpers.make_loader(x, y))
    assert len(module.seen) == 2
    for i, (_epoch, seen_x, seen_y) in enumerate(module.seen):
        clean = x[i * B : (i + 1) * B]
        dist = linf(seen_x, clean)
        assert torch.all(dist <= EPS + 1e-6)
        assert torch.all(dist > 0)  # every sample was perturbed
        assert float(seen_x.min()) >= 0 and float(seen_x.max()) <= 1
        assert torch.equal(seen_y, y[i * B : (i + 1) * B])  # targets untouched
        with torch.no_grad():  # the perturbation is adversarial: it raises the loss
            assert F.cross_entropy(module(seen_x), seen_y) > F.cross_entropy(module(clean), seen_y)
    # the Dataset's tensors are never written into
    assert torch.equal(x, x_before) and torch.equal(y, y_before)


def test_parameters_are_restored_after_the_attack(helpers):
    x, y = helpers.make_data(n=B)
    module = helpers.PlainClassifier(lr=0.1)
    trainer = helpers.make_trainer([AdversarialTraining(attack(), seed=0)])
    trainer.fit(module, helpers.make_loader(x, y))
    assert all(p.requires_grad for p in module.parameters())
    assert module.training  # fit leaves the module as Lightning left it
    # with lr > 0 the optimiser step happened with gradients of the training loss
    assert not torch.equal(module.net[-1].weight, helpers.PlainClassifier().net[-1].weight)


@pytest.mark.parametrize("ratio,expected", [(0.5, 4), (0.3, 2), (0.8, 6), (1.0, 8)])
def test_ratio_perturbs_exactly_round_ratio_times_batch(helpers, ratio, expected):
    x, y = helpers.make_data(n=3 * B)
    module = helpers.PlainClassifier()
    trainer = helpers.make_trainer([AdversarialTraining(attack(), ratio=ratio, seed=0)])
    trainer.fit(module, helpers.make_loader(x, y))
    subsets = []
    for i, (_, seen_x, _) in enumerate(module.seen):
        dist = linf(seen_x, x[i * B : (i + 1) * B])
        changed = dist > 0
        assert int(changed.sum()) == expected
        assert torch.all(dist <= EPS + 1e-6)
        subsets.append(changed)
    if expected < B:
        assert not all(torch.equal(subsets[0], s) for s in subsets[1:])  # a fresh subset per batch


def test_tiny_ratio_rounding_to_zero_samples_leaves_batches_clean(helpers):
    x, y = helpers.make_data(n=B)
    module = helpers.PlainClassifier()
    trainer = helpers.make_trainer([AdversarialTraining(attack(), ratio=0.05, seed=0)])
    trainer.fit(module, helpers.make_loader(x, y))
    assert torch.equal(module.seen[0][1], x)


def test_start_epoch_leaves_earlier_epochs_clean(helpers):
    x, y = helpers.make_data(n=2 * B)
    module = helpers.PlainClassifier()
    trainer = helpers.make_trainer([AdversarialTraining(attack(), start_epoch=1, seed=0)], max_epochs=3)
    trainer.fit(module, helpers.make_loader(x, y))
    assert [epoch for epoch, _, _ in module.seen] == [0, 0, 1, 1, 2, 2]
    for i, (epoch, seen_x, _) in enumerate(module.seen):
        clean = x[(i % 2) * B : (i % 2 + 1) * B]
        if epoch == 0:
            assert torch.equal(seen_x, clean)
        else:
            assert torch.all(linf(seen_x, clean) > 0)
            assert torch.all(linf(seen_x, clean) <= EPS + 1e-6)


def test_dict_batches(helpers):
    x, y = helpers.make_data(n=2 * B)
    module = helpers.PlainClassifier()
    trainer = helpers.make_trainer([AdversarialTraining(attack(), seed=0)])
    trainer.fit(module, helpers.make_loader(x, y, dict_batches=True))
    assert len(module.seen) == 2
    for i, (_, seen_x, seen_y) in enumerate(module.seen):
        dist = linf(seen_x, x[i * B : (i + 1) * B])
        assert torch.all(dist > 0) and torch.all(dist <= EPS + 1e-6)
        assert torch.equal(seen_y, y[i * B : (i + 1) * B])


def test_dict_batches_with_ratio_keep_every_key(helpers):
    x, y = helpers.make_data(n=B)
    batches = []

    class Recording(helpers.PlainClassifier):
        def training_step(self, batch, batch_idx):
            batches.append({k: v.clone() for k, v in batch.items()})
            return super().training_step(batch, batch_idx)

    module = Recording()
    trainer = helpers.make_trainer([AdversarialTraining(attack(), ratio=0.5, seed=0)])
    trainer.fit(module, helpers.make_loader(x, y, dict_batches=True))
    (batch,) = batches
    assert set(batch) == {"image", "label", "index"}
    assert torch.equal(batch["index"], torch.arange(B)) and torch.equal(batch["label"], y)
    assert int((linf(batch["image"], x) > 0).sum()) == B // 2


def test_tuple_batches_from_a_collate_fn_give_a_clear_error(helpers):
    x, y = helpers.make_data(n=B)
    loader = helpers.make_loader(x, y, collate_fn=lambda samples: tuple(default_collate(samples)))
    trainer = helpers.make_trainer([AdversarialTraining(attack(), seed=0)])
    with pytest.raises(TypeError, match="collate_fn"):
        trainer.fit(helpers.PlainClassifier(), loader)


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_namedtuple_batches_give_the_clear_error_too(helpers, ratio):
    x, y = helpers.make_data(n=B)
    trainer = helpers.make_trainer([AdversarialTraining(attack(), ratio=ratio, seed=0)])
    with pytest.raises(TypeError, match="collate_fn"):
        trainer.fit(helpers.PlainClassifier(), helpers.make_loader(x, y, namedtuples=True))


def test_same_seed_same_inputs_different_seed_different_inputs(helpers):
    x, y = helpers.make_data(n=B)

    def run(seed):
        module = helpers.PlainClassifier()
        helpers.make_trainer([AdversarialTraining(attack(), seed=seed)]).fit(module, helpers.make_loader(x, y))
        return module.seen[0][1]

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_a_module_overriding_attack_loss_gets_it_called(helpers):
    x, y = helpers.make_data(n=2 * B)
    calls = []

    class Custom(helpers.PlainClassifier):
        def attack_loss(self, inputs, batch):
            calls.append((inputs.shape, torch.is_grad_enabled(), self.training))
            # minimise the loss instead: the "attack" helps the model
            return -F.cross_entropy(self(inputs), batch[1], reduction="none")

    module = Custom()
    trainer = helpers.make_trainer([AdversarialTraining(attack(steps=4), seed=0)])
    trainer.fit(module, helpers.make_loader(x, y))
    assert len(calls) == 2 * 4  # batches x steps
    assert all(shape == (B, 1, 4, 4) and grad and not training for shape, grad, training in calls)
    for i, (_, seen_x, seen_y) in enumerate(module.seen):
        clean = x[i * B : (i + 1) * B]
        with torch.no_grad():
            assert F.cross_entropy(module(seen_x), seen_y) < F.cross_entropy(module(clean), seen_y)


def test_a_module_overriding_with_adversarial_inputs_gets_it_called(helpers):
    x, y = helpers.make_data(n=B)

    class KeepBoth(helpers.PlainClassifier):
        def with_adversarial_inputs(self, batch, inputs_adv):
            return [torch.cat([batch[0], inputs_adv]), torch.cat([batch[1], batch[1]])]

    module = KeepBoth()
    helpers.make_trainer([AdversarialTraining(attack(), seed=0)]).fit(module, helpers.make_loader(x, y))
    (_, seen_x, seen_y), = module.seen
    assert seen_x.shape[0] == 2 * B and seen_y.shape[0] == 2 * B
    assert torch.equal(seen_x[:B], x)
    assert torch.all(linf(seen_x[B:], x) > 0)


@pytest.mark.parametrize("model_mode", ["eval", "train"])
def test_bn_statistics_only_count_training_forward_passes(helpers, model_mode):
    x, y = helpers.make_data(n=2 * B)
    module = helpers.PlainClassifier(batchnorm=True)
    trainer = helpers.make_trainer([AdversarialTraining(attack(steps=5), model_mode=model_mode, seed=0)])
    trainer.fit(module, helpers.make_loader(x, y))
    # 2 training steps; the 2 x 5 attack forward passes never touch the counters
    assert int(module.net[1].num_batches_tracked) == 2
    attack_modes = [m for m in module.forward_modes]
    assert attack_modes.count(model_mode == "train") >= 10


def test_fgsm_rs_training(helpers):
    x, y = helpers.make_data(n=B)
    module = helpers.PlainClassifier()
    trainer = helpers.make_trainer([AdversarialTraining(FGSM(eps=EPS, random_start=True), seed=0)])
    trainer.fit(module, helpers.make_loader(x, y))
    dist = linf(module.seen[0][1], x)
    assert torch.all(dist > 0) and torch.all(dist <= EPS + 1e-6)


def test_bf16_mixed_precision_keeps_inputs_in_their_dtype(helpers):
    x, y = helpers.make_data(n=B)
    module = helpers.PlainClassifier()
    trainer = helpers.make_trainer([AdversarialTraining(attack(), seed=0)], precision="bf16-mixed")
    trainer.fit(module, helpers.make_loader(x, y))
    seen_x = module.seen[0][1]
    assert seen_x.dtype == torch.float32
    dist = linf(seen_x, x)
    assert torch.all(dist > 0) and torch.all(dist <= EPS + 1e-6)


def test_checkpoint_holds_the_generator_state(helpers, tmp_path):
    x, y = helpers.make_data(n=B)
    callback = AdversarialTraining(attack(), seed=0)
    trainer = helpers.make_trainer([callback])
    trainer.fit(helpers.PlainClassifier(), helpers.make_loader(x, y))
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    states = [v for k, v in checkpoint["callbacks"].items() if "AdversarialTraining" in k]
    assert len(states) == 1
    assert torch.equal(states[0]["generator_state"], callback.state_dict()["generator_state"])


# -- calling the hook directly ------------------------------------------------------------------------
def _batch(helpers, n=B):
    x, y = helpers.make_data(n=n)
    return [x, y]


def test_model_mode_train_leaves_bn_running_stats_untouched(helpers):
    module = helpers.PlainClassifier(batchnorm=True)
    module.train()
    module(torch.rand(B, 1, 4, 4))  # non-trivial statistics
    bn = module.net[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    module.forward_modes.clear()
    batch = _batch(helpers)
    x = batch[0]
    callback = AdversarialTraining(attack(steps=4), model_mode="train", seed=0)
    callback.on_train_batch_start(helpers.stub_trainer(), module, batch, 0)
    assert module.forward_modes == [True] * 4  # attacked in train mode
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert torch.equal(bn.num_batches_tracked, before[2])
    assert module.training and all(m.training for m in module.modules())
    assert all(p.requires_grad and p.grad is None for p in module.parameters())
    assert torch.all(linf(batch[0], x) > 0)


def test_model_mode_eval_attacks_in_eval_and_restores_train(helpers):
    module = helpers.PlainClassifier(batchnorm=True)
    module.train()
    batch = _batch(helpers)
    AdversarialTraining(attack(steps=2), seed=0).on_train_batch_start(helpers.stub_trainer(), module, batch, 0)
    assert module.forward_modes == [False, False]
    assert module.training and int(module.net[1].num_batches_tracked) == 0


def test_hook_before_start_epoch_does_nothing(helpers):
    module = helpers.PlainClassifier()
    batch = _batch(helpers)
    x = batch[0]
    AdversarialTraining(attack(), start_epoch=2, seed=0).on_train_batch_start(
        helpers.stub_trainer(epoch=1), module, batch, 0)
    assert batch[0] is x and module.forward_modes == []


def test_global_rng_is_untouched(helpers):
    module = helpers.PlainClassifier()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    callback = AdversarialTraining(attack(), ratio=0.5, seed=1)
    callback.on_train_batch_start(helpers.stub_trainer(), module, _batch(helpers), 0)
    assert torch.equal(torch.get_rng_state(), state)


def test_seed_none_follows_seed_everything(helpers):
    module = helpers.PlainClassifier()

    def run(global_seed):
        torch.manual_seed(global_seed)
        batch = _batch(helpers)
        AdversarialTraining(attack(), seed=None).on_train_batch_start(helpers.stub_trainer(), module, batch, 0)
        return batch[0]

    assert torch.equal(run(11), run(11))
    assert not torch.equal(run(11), run(12))


def test_state_dict_roundtrip_reproduces_the_random_stream(helpers):
    module = helpers.PlainClassifier()
    trainer = helpers.stub_trainer()
    original = AdversarialTraining(attack(), ratio=0.5, seed=0)
    assert original.state_dict() == {"generator_state": None}  # nothing drawn yet
    original.on_train_batch_start(trainer, module, _batch(helpers), 0)  # advance the stream
    state = original.state_dict()
    # through a weights_only checkpoint round trip
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    next_batch = _batch(helpers)
    original.on_train_batch_start(trainer, module, next_batch, 1)

    resumed = AdversarialTraining(attack(), ratio=0.5, seed=123)
    resumed.load_state_dict(state)
    resumed_batch = _batch(helpers)
    resumed.on_train_batch_start(trainer, module, resumed_batch, 1)
    assert torch.equal(resumed_batch[0], next_batch[0])

    fresh = AdversarialTraining(attack(), ratio=0.5, seed=0)
    fresh_batch = _batch(helpers)
    fresh.on_train_batch_start(trainer, module, fresh_batch, 1)
    assert not torch.equal(fresh_batch[0], next_batch[0])  # the stream had moved on


def test_load_state_dict_without_state_keeps_seeding(helpers):
    module = helpers.PlainClassifier()
    a = AdversarialTraining(attack(), seed=5)
    a.load_state_dict({})
    b = AdversarialTraining(attack(), seed=5)
    batch_a, batch_b = _batch(helpers), _batch(helpers)
    a.on_train_batch_start(helpers.stub_trainer(), module, batch_a, 0)
    b.on_train_batch_start(helpers.stub_trainer(), module, batch_b, 0)
    assert torch.equal(batch_a[0], batch_b[0])


# -- constructor ------------------------------------------------------------------------------------------
def test_accepts_any_callable_attack(helpers):
    module = helpers.PlainClassifier()
    batch = _batch(helpers)
    x = batch[0]
    AdversarialTraining(lambda loss_fn, inputs, generator=None: (inputs + 0.01).clamp(0, 1)).on_train_batch_start(
        helpers.stub_trainer(), module, batch, 0)
    assert torch.allclose(batch[0], (x + 0.01).clamp(0, 1))


@pytest.mark.parametrize("bad", [5, "pgd", None])
def test_invalid_attack(bad):
    with pytest.raises(TypeError, match="attack"):
        AdversarialTraining(bad)


@pytest.mark.parametrize(
    "kwargs,name",
    [({"model_mode": "test"}, "model_mode"), ({"start_epoch": -1}, "start_epoch"),
     ({"start_epoch": 1.5}, "start_epoch"), ({"start_epoch": True}, "start_epoch"),
     ({"ratio": 0.0}, "ratio"), ({"ratio": 1.5}, "ratio"), ({"ratio": -0.5}, "ratio")],
)
def test_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AdversarialTraining(attack(), **kwargs)
