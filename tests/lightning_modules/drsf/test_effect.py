"""Effect test: trained on printed digit renders only, DRSF reads real handwritten digits; ERM does not.

The source is :class:`SyntheticDigitsDataModule` in a "printed" look (dark ink on a light
background, the natural look of rendered text); the target is scikit-learn's scanned digits
(light ink on black), never seen in training. ERM learns the source's polarity and falls to
about chance on the target.

Control: DRSF with its own components removed (no MixStyle, no decoupling/reassembly attention,
no soft-fusion discriminators, no consistency loss), i.e. two-view cross-entropy on the image and
its random-convolution view alone. At our scale the control does as well as full DRSF, so the
test asserts the measured relation (README, "Ablations"): both beat ERM on every seed, and full
DRSF is not better than the control by any margin worth the name.

A shorter run (12 px, 1,500 renders, 3 epochs, batch 32) of the README table's setting, through
``benchmarks/drsf_digits.py``'s own ``run``, so the test measures exactly the setting of
``benchmarks/results/drsf_digits_printed_short*.json``. Each seed sets the renders, the real
digits' test split and the training randomness.
"""

from __future__ import annotations

import pytest

from benchmarks.drsf_digits import run

#: DRSFClassifier overrides that remove DRSF's components but keep the two-view training.
TWO_VIEW_CE_ONLY = {"mixstyle_levels": [], "attention_levels": [], "fusion_weight": 0.0, "consistency_weight": 0.0}
SHORT = {"image_size": 12, "num_train": 1500, "epochs": 3, "width": 16, "batch_size": 32, "lr": 2e-3,
         "source_style": "printed"}


@pytest.mark.slow
def test_drsf_and_its_two_view_control_beat_erm_on_real_digits_when_trained_on_printed_renders(
        single_thread: None) -> None:
    # Measured with this exact setting (benchmarks/results/drsf_digits_printed_short*.json), real-digit
    # accuracy for seeds 0/1/2: ERM 0.126/0.144/0.145, DRSF 0.346/0.394/0.430, two-view CE only
    # 0.477/0.424/0.429. Smallest gaps over ERM: DRSF +0.220, control +0.280 (margin 0.15 for both);
    # DRSF minus control: -0.131/-0.030/+0.001, so "DRSF is at most 0.03 above its control" is
    # what holds. Should a change make DRSF's components pay off, this fails: update the README.
    for seed in (0, 1, 2):
        erm = run("erm", seed, **SHORT)["real_acc"]
        drsf = run("drsf", seed, **SHORT)["real_acc"]
        control = run("drsf", seed, overrides=TWO_VIEW_CE_ONLY, **SHORT)["real_acc"]
        print(f"seed {seed}: ERM {erm:.3f}, DRSF {drsf:.3f}, two-view CE only {control:.3f}")
        assert drsf > erm + 0.15, f"seed {seed}: DRSF {drsf:.3f} vs ERM {erm:.3f} on real digits"
        assert control > erm + 0.15, f"seed {seed}: two-view CE only {control:.3f} vs ERM {erm:.3f}"
        assert drsf < control + 0.03, f"seed {seed}: DRSF {drsf:.3f} now beats its control {control:.3f}"
