"""KGAT's detector: any mmdet 3.x detector behind a plain-tensor interface.

The wrapper is shared with the other detection methods, so it lives in
:mod:`robust_lightning.nn.mmdet_detector`; this module keeps KGAT's folder shape
(``model.py`` beside ``lightning_module.py``) and its import path.
"""

from robust_lightning.nn.mmdet_detector import MMDetDetector, build_detector_config, mmdet_available

__all__ = ["MMDetDetector", "build_detector_config", "mmdet_available"]
