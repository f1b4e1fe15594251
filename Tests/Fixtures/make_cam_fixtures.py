#!/usr/bin/env python3
"""Writes cams.h5: every pytorch-grad-cam method's maps on a small network
with fixed weights, for Tests/NetTests/CAMFixtureTests.swift.

    .venv/bin/pip install grad-cam   # with torch, torchvision, h5py
    .venv/bin/python Tests/Fixtures/make_cam_fixtures.py

The network is torchvision's ResNet-18 structure (BasicBlock, names as
torchvision) at width 8 (stem 8 channels, layer4 64), 1 input channel and 2
classes, weights by make_fixtures.py's formula, in eval mode (as BaseCAM
puts it). Input 2x1x96x96 (layer4 is 3x3, layer3 6x6), target: the predicted class.
"""
import os
import h5py
import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock
from pytorch_grad_cam import (GradCAM, HiResCAM, EigenCAM, GradCAMPlusPlus, XGradCAM, LayerCAM,
                              EigenGradCAM, ScoreCAM, AblationCAM)
from make_fixtures import fill_formula, formula_tensor

HERE = os.path.dirname(os.path.abspath(__file__))


def narrow_resnet18(width=8, in_ch=1, classes=2):
    m = torchvision.models.resnet18(num_classes=classes)
    m.inplanes = width
    m.conv1 = nn.Conv2d(in_ch, width, 7, 2, 3, bias=False)
    m.bn1 = nn.BatchNorm2d(width)
    m.layer1 = m._make_layer(BasicBlock, width, 2)
    m.layer2 = m._make_layer(BasicBlock, width * 2, 2, stride=2)
    m.layer3 = m._make_layer(BasicBlock, width * 4, 2, stride=2)
    m.layer4 = m._make_layer(BasicBlock, width * 8, 2, stride=2)
    m.fc = nn.Linear(width * 8, classes)
    return m


if __name__ == "__main__":
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = narrow_resnet18()
    fill_formula(model)
    model.eval()
    x = formula_tensor((2, 1, 96, 96), 2000, 1.0)
    methods = {"gradcam": GradCAM, "hirescam": HiResCAM, "eigencam": EigenCAM, "gradcamplusplus": GradCAMPlusPlus,
               "xgradcam": XGradCAM, "layercam": LayerCAM, "eigengradcam": EigenGradCAM, "scorecam": ScoreCAM,
               "ablationcam": AblationCAM}
    path = os.path.join(HERE, "cams.h5")
    with h5py.File(path, "w") as f:
        f.attrs["network"] = "torchvision resnet18 structure, width 8, 1 channel, 2 classes, formula weights, eval"
        f.create_dataset("input", data=x.numpy())
        with torch.no_grad():
            logits = model(x)
        f.create_dataset("logits", data=logits.numpy())
        f.create_dataset("predicted", data=logits.argmax(1).numpy())
        for layer_name in ["layer4", "layer3"]:
            layer = getattr(model, layer_name)
            for name, cls in methods.items():
                cam = cls(model=model, target_layers=[layer])
                if hasattr(cam, "batch_size"):
                    cam.batch_size = 32
                maps = cam(input_tensor=x, targets=None)
                f.create_dataset(f"{layer_name}/{name}", data=np.asarray(maps, np.float32), compression="gzip", shuffle=True)
    print("wrote", path, os.path.getsize(path), "bytes")
