# The input both Python peers of `disttrain predict` read (bench/onnx_predict.py, bench/torch_predict.py): an image
# file by PIL, grey; a .dcm file by pydicom, rescaled to HU and put through the lung window (W 1500, L -600) as a
# linear VOI LUT (PS3.3 C.11.2.1.2.1), as `predict --window lung` does.
import numpy as np
from PIL import Image

def load_image(f):
    if not f.endswith('.dcm'): return Image.open(f).convert('L')
    import pydicom
    ds = pydicom.dcmread(f)
    hu = ds.pixel_array.astype(np.float32) * float(getattr(ds, 'RescaleSlope', 1)) + float(getattr(ds, 'RescaleIntercept', 0))
    w, c = 1500.0, -600.0
    v = np.clip(np.round(((hu - (c - 0.5)) / (w - 1) + 0.5) * 255), 0, 255)
    v[hu <= c - 0.5 - (w - 1) / 2] = 0; v[hu > c - 0.5 + (w - 1) / 2] = 255
    return Image.fromarray(v.astype(np.uint8))
