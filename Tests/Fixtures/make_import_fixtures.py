#!/usr/bin/env python3
"""Weights files for Tests/DistTrainTests/ImportTests.swift:

  import_r18w4.pth          torch.save zip of a width-4 torchvision ResNet-18 (3 channels,
                            10 classes), wrapped as {"state_dict": {"module." + key: ...}}
  import_r18w4_half.pth     the same state dict in float16, and bfloat16 for the BN tensors
  import_r18w4.safetensors  the same in safetensors (written by hand: header + raw bytes)
  import_expected.h5        the float32 values every import must reproduce bit-exactly
  malicious.pth             a torch.save-shaped zip whose data.pkl calls os.system

    .venv/bin/python Tests/Fixtures/make_import_fixtures.py
"""
import json
import os
import struct
import zipfile
import h5py
import numpy as np
import torch
from make_cam_fixtures import narrow_resnet18
from make_fixtures import fill_formula

HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    torch.manual_seed(0)
    m = narrow_resnet18(width=4, in_ch=3, classes=10)
    fill_formula(m)
    sd = m.state_dict()
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, os.path.join(HERE, "import_r18w4.pth"))
    half = {k: (v.bfloat16() if "bn" in k and v.is_floating_point() else v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    torch.save(half, os.path.join(HERE, "import_r18w4_half.pth"))
    # safetensors by hand: 8-byte little-endian header length, JSON header, data.
    header, blobs, offset = {}, [], 0
    for k, v in sd.items():
        a = v.numpy()
        dtype = {np.float32: "F32", np.int64: "I64"}[a.dtype.type]
        b = a.tobytes()
        header[k] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    with open(os.path.join(HERE, "import_r18w4.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    with h5py.File(os.path.join(HERE, "import_expected.h5"), "w") as f:
        for k, v in sd.items():
            f.create_dataset("full/" + k, data=v.float().numpy())
            f.create_dataset("half/" + k, data=half[k].float().numpy())
    # A pickle that would run `os.system("echo pwned")` if unpickled by Python.
    evil = b"\x80\x02cos\nsystem\nq\x00X\n\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."
    with zipfile.ZipFile(os.path.join(HERE, "malicious.pth"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", evil)
        z.writestr("archive/version", "3\n")
    print("wrote import fixtures")
