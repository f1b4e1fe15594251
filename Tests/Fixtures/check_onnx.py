"""Checks an exported model with the ONNX tools (dev-time; CI compares the export's bytes with tiny.onnx).

  .venv/bin/python Tests/Fixtures/check_onnx.py MODEL.onnx PREDICTIONS.csv
    onnx.checker on the model; then every image of PREDICTIONS.csv (`disttrain predict ... --cams none`,
    images at the model's own size) through onnxruntime, normalised as the metadata says: p of the last
    class must equal disttrain's within 1e-4.
  .venv/bin/python Tests/Fixtures/check_onnx.py Tests/Fixtures/tiny.onnx
    onnx.checker and one onnxruntime run of the committed CI fixture.
"""
import csv
import sys

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

model = onnx.load(sys.argv[1])
onnx.checker.check_model(model, full_check=True)
meta = {p.key: p.value for p in model.metadata_props}
session = ort.InferenceSession(sys.argv[1])
size, channels = int(meta["input_size"]), int(meta["input_channels"])
mean = np.array([float(v) for v in meta["mean"].split(",")], dtype=np.float32)
std = np.array([float(v) for v in meta["std"].split(",")], dtype=np.float32)
print(f"onnx.checker: ok (opset {model.opset_import[0].version}, {len(model.graph.node)} nodes); metadata {meta}")
if len(sys.argv) < 3:
    out = session.run(None, {"image": np.zeros((2, channels, size, size), np.float32)})[0]
    print("onnxruntime:", out.tolist())
    sys.exit(0)
worst, n = 0.0, 0
for row in csv.DictReader(open(sys.argv[2])):
    img = np.asarray(Image.open(row["file"]).convert("L"), dtype=np.float32) / 255
    assert img.shape == (size, size), f"{row['file']} is {img.shape}, the model takes {size}x{size}"
    x = np.stack([(img - mean[min(c, len(mean) - 1)]) / std[min(c, len(std) - 1)] for c in range(channels)])[None]
    p = session.run(None, {"image": x.astype(np.float32)})[0][0, -1]
    ours = float([v for k, v in row.items() if k.startswith("p_")][0])
    worst = max(worst, abs(p - ours))
    n += 1
print(f"{n} images: largest |p_onnxruntime - p_disttrain| = {worst:.2e}")
assert worst <= 1e-4
