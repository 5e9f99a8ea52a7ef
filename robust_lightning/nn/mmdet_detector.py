"""Any mmdet 3.x detector behind a plain-tensor interface (no Lightning).

:class:`MMDetDetector` builds a detector from an mmdet model config and takes images as
``(B, C, H, W)`` floats in [0, 1] plus per-image boxes/labels. mmdet's own data preprocessor
(``DetDataPreprocessor``: 0-255 scale, mean/std, padding to the size divisor) runs inside the
forward pass, so attacks perturb [0, 1] pixels and budgets such as 8/255 mean what they say.

mmdet is imported lazily: importing :mod:`robust_lightning` stays cheap without it. Shared by
the detection methods (KGAT, DRSF detection), so it lives with the shared layers.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._checkpoint import check_checkpoint_file, load_checkpoint
from robust_lightning._validation import check_positive_int
from robust_lightning.errors import MissingExtraError

__all__ = ["MMDetDetector", "build_detector_config", "mmdet_available"]

_MMDET_CONFIG_PREFIX = "mmdet::"


def mmdet_available() -> bool:
    """Whether mmdet, mmengine and mmcv (with its compiled ops) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("mmdet", "mmengine", "mmcv"))


def _require_mmdet() -> None:
    if not mmdet_available():
        # mmcv has no wheels for recent torch: the extra alone is not enough, it needs the
        # source build first (README, "Install").
        raise MissingExtraError(
            "mmdet detectors (KGAT, DRSF detection) need mmdet, mmengine and mmcv: MMCV_WITH_OPS=1 pip install --no-build-isolation "
            "mmcv==2.1.0, then pip install 'robust-lightning[detection]'"
        )


def _mmdet_config_path(spec: str) -> Path:
    import mmdet

    relative = spec[len(_MMDET_CONFIG_PREFIX):]
    root = Path(mmdet.__file__).parent / ".mim" / "configs"
    path = (root / relative).resolve()
    if root.resolve() not in path.parents or not path.is_file():
        raise FileNotFoundError(
            f"detector={spec!r}: no config {relative!r} in mmdet's installed configs ({root}); e.g. "
            "'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'"
        )
    return path


def _strip_remote_pretrained(node: Any, where: str = "model") -> list[str]:
    """Drops ``init_cfg=dict(type='Pretrained', checkpoint=<url or missing file>)`` entries.

    Weights are never downloaded at run time; a local checkpoint file is kept.
    """
    dropped: list[str] = []
    if isinstance(node, Mapping):
        init_cfg = node.get("init_cfg")
        if isinstance(init_cfg, Mapping) and init_cfg.get("type") == "Pretrained":
            checkpoint = str(init_cfg.get("checkpoint", ""))
            if not Path(checkpoint).is_file():
                node["init_cfg"] = None
                dropped.append(f"{where}.init_cfg ({checkpoint})")
            else:
                # mmengine loads it with its own torch.load: refuse a corrupt file by name first.
                check_checkpoint_file(checkpoint, argument=f"{where}.init_cfg.checkpoint")
        for key, value in node.items():
            if key != "init_cfg":
                dropped += _strip_remote_pretrained(value, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            dropped += _strip_remote_pretrained(value, f"{where}[{i}]")
    return dropped


def _set_num_classes(node: Any, num_classes: int) -> int:
    count = 0
    if isinstance(node, Mapping):
        if "num_classes" in node:
            node["num_classes"] = num_classes
            count += 1
        for value in node.values():
            count += _set_num_classes(value, num_classes)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _set_num_classes(value, num_classes)
    return count


def build_detector_config(
    detector: str | Mapping[str, Any], num_classes: int, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The mmdet model config (a plain dict) for ``detector``.

    Args:
        detector: ``"mmdet::<folder>/<file>.py"`` (a config shipped inside the installed mmdet,
            e.g. ``mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py``), a path to a local mmdet
            config file (``.py`` files are executed by mmengine, as every mmdet tool does: only
            use your own), or the model dict itself (``type: RetinaNet, backbone: ...``).
        num_classes: Written to every ``num_classes`` entry (all heads).
        overrides: Dotted keys merged into the model config, e.g.
            ``{"backbone.depth": 18, "neck.in_channels": [64, 128, 256, 512]}``.

    Returns:
        The model config with remote ``Pretrained`` initialisations removed (a warning lists
        them; pass ``checkpoint`` to :class:`MMDetDetector` for local weights).

    Raises:
        ValueError / FileNotFoundError: On a bad ``detector`` or ``overrides``.
    """
    _require_mmdet()
    from mmengine.config import Config

    check_positive_int("num_classes", num_classes)
    if isinstance(detector, str):
        path = _mmdet_config_path(detector) if detector.startswith(_MMDET_CONFIG_PREFIX) else Path(detector)
        if not path.is_file():
            raise FileNotFoundError(
                f"detector={detector!r} is neither 'mmdet::<config>' nor an existing config file"
            )
        config = Config.fromfile(os.fspath(path))
        if "model" not in config:
            raise ValueError(f"detector config {path} has no 'model' entry")
        model = config.model.to_dict()
    elif isinstance(detector, Mapping):
        model = copy.deepcopy(dict(detector))
    else:
        raise ValueError(f"detector must be 'mmdet::<config>', a config path or a model dict, got {type(detector).__name__}")
    if "type" not in model:
        raise ValueError("detector model config needs a 'type' (e.g. 'RetinaNet', 'FasterRCNN', 'FCOS')")
    if overrides:
        if not isinstance(overrides, Mapping):
            raise ValueError(f"detector_overrides must be a mapping of dotted keys to values, got {overrides!r}")
        merged = Config({"model": model})
        merged.merge_from_dict({f"model.{key}": value for key, value in overrides.items()})
        model = merged.model.to_dict()
    if _set_num_classes(model, num_classes) == 0:
        raise ValueError("the detector config has no 'num_classes' entry to set; is it a detection model?")
    dropped = _strip_remote_pretrained(model)
    if dropped:
        warnings.warn(
            "robust_lightning never downloads weights: dropped remote pretrained initialisation(s) "
            f"{dropped}; those parts start from random weights (pass a local checkpoint to use pretrained ones)",
            stacklevel=2,
        )
    return model


class MMDetDetector(nn.Module):
    """An mmdet detector taking ``[0, 1]`` images and box lists.

    Args:
        detector: See :func:`build_detector_config`.
        num_classes: Number of object classes.
        overrides: Dotted-key overrides of the model config.
        checkpoint: Local state dict (``torch.save`` of ``state_dict()`` or an mmdet checkpoint
            with a ``state_dict`` entry), read with ``weights_only=True``.
    """

    def __init__(
        self,
        detector: str | Mapping[str, Any],
        num_classes: int,
        overrides: Mapping[str, Any] | None = None,
        checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        config = build_detector_config(detector, num_classes, overrides)
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        from mmengine.config import ConfigDict

        register_all_modules(init_default_scope=True)
        config.setdefault("data_preprocessor", {"type": "DetDataPreprocessor"})
        try:
            self.detector = MODELS.build(ConfigDict(config))
        except Exception as error:  # mmengine wraps registry errors; keep the cause readable
            raise ValueError(f"could not build the mmdet detector from its config: {error}") from error
        # mmengine logs one INFO line per parameter from init_weights; keep the console readable.
        from mmengine.logging import MMLogger

        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            self.detector.init_weights()
        finally:
            logger.setLevel(level)
        self.num_classes = num_classes
        self.config = config
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

    def load_checkpoint(self, checkpoint: str) -> None:
        """Loads local weights (``weights_only=True``); reports keys that did not match."""
        state = load_checkpoint(checkpoint, argument="checkpoint")
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise ValueError(f"checkpoint {checkpoint} holds no state dict")
        result = self.detector.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            warnings.warn(
                f"checkpoint {checkpoint}: {len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
                f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})",
                stacklevel=2,
            )

    def data_samples(self, boxes: Sequence[Tensor], labels: Sequence[Tensor], image_shape: tuple[int, int],
                     image_ids: Sequence[int] | None = None) -> list[Any]:
        """Mmdet ``DetDataSample`` s holding the ground truth of a batch of ``image_shape`` images."""
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData

        samples = []
        for i, (b, y) in enumerate(zip(boxes, labels, strict=True)):
            sample = DetDataSample(metainfo={
                "img_shape": tuple(image_shape), "ori_shape": tuple(image_shape), "scale_factor": (1.0, 1.0),
                "img_id": int(image_ids[i]) if image_ids is not None else i,
            })
            sample.gt_instances = InstanceData(bboxes=b.float().reshape(-1, 4), labels=y.long().reshape(-1))
            samples.append(sample)
        return samples

    def preprocess(self, images: Tensor, samples: list[Any]) -> tuple[Tensor, list[Any]]:
        """Mmdet's data preprocessor on ``[0, 1]`` images (gray is replicated to RGB); differentiable.

        Batch augmentations of the config (``batch_augments``) are not applied: augmentation
        belongs to the datamodule, and an attack must see the images it perturbs.
        """
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be (B, 1 or 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        preprocessor = self.detector.data_preprocessor
        # mmengine's preprocessor casts data to the device it remembers from its own .to();
        # Lightning moves the parent module, which never calls that, so keep it in sync.
        preprocessor._device = images.device
        packed = preprocessor({"inputs": images * 255.0, "data_samples": samples}, False)
        return packed["inputs"], packed["data_samples"]

    def loss(self, images: Tensor, samples: list[Any]) -> dict[str, Tensor]:
        """The detector's loss dict (mmdet's ``loss`` mode)."""
        inputs, samples = self.preprocess(images, samples)
        return self.detector.loss(inputs, samples)

    @torch.no_grad()
    def predict(self, images: Tensor, samples: list[Any]) -> list[Any]:
        """Post-processed detections per image (``InstanceData`` with bboxes, scores, labels)."""
        inputs, samples = self.preprocess(images, samples)
        results = self.detector.predict(inputs, samples, rescale=False)
        return [r.pred_instances for r in results]

    @override
    def forward(self, images: Tensor, samples: list[Any]) -> dict[str, Tensor]:
        return self.loss(images, samples)
