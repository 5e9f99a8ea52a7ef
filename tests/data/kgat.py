"""Small mmdet detectors for the KGAT tests: mmdet's own configs with a 1/4-width ResNet-18-style
backbone, so a training step takes well under a second on CPU."""

from __future__ import annotations

from typing import Any

_TINY_BACKBONE: dict[str, Any] = {
    "backbone.depth": 18, "backbone.base_channels": 16, "backbone.style": "pytorch", "backbone.frozen_stages": -1,
    "backbone.norm_cfg": {"type": "BN", "requires_grad": True}, "backbone.norm_eval": False,
    "neck.in_channels": [16, 32, 64, 128], "neck.out_channels": 32,
}

DETECTORS: dict[str, tuple[str, dict[str, Any]]] = {
    "fcos": ("mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py", {
        **_TINY_BACKBONE, "bbox_head.in_channels": 32, "bbox_head.feat_channels": 32, "bbox_head.stacked_convs": 1,
        "bbox_head.norm_cfg": {"type": "GN", "num_groups": 8},
        "data_preprocessor.mean": [127.5] * 3, "data_preprocessor.std": [63.75] * 3,
    }),
    "retinanet": ("mmdet::retinanet/retinanet_r50_fpn_1x_coco.py", {
        **_TINY_BACKBONE, "neck.start_level": 1, "bbox_head.in_channels": 32, "bbox_head.feat_channels": 32,
        "bbox_head.stacked_convs": 1, "bbox_head.anchor_generator.octave_base_scale": 2,
    }),
    "faster_rcnn": ("mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", {
        **_TINY_BACKBONE, "rpn_head.in_channels": 32, "rpn_head.feat_channels": 32,
        "rpn_head.anchor_generator.scales": [4], "roi_head.bbox_roi_extractor.out_channels": 32,
        "roi_head.bbox_head.in_channels": 32, "roi_head.bbox_head.fc_out_channels": 64,
        "train_cfg.rpn.sampler.num": 64, "train_cfg.rcnn.sampler.num": 64,
    }),
}


def tiny_detector(name: str) -> dict[str, Any]:
    """``detector``/``detector_overrides`` keyword arguments of a small detector."""
    config, overrides = DETECTORS[name]
    return {"detector": config, "detector_overrides": dict(overrides)}
