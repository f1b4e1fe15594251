# The peer of `disttrain predict` for bench/infer_throughput: onnxruntime on our own exported model, as a
# user of it would run it: PIL decode, grey, resize to the model's input (bilinear), normalise with the
# model's metadata (mean, std), batches of 32, softmax out, $THREADS intra-op threads. Prints one JSON line.
# A .dcm file: pydicom, HU, the lung window (bench/predict_input.py, shared with bench/torch_predict.py).
# Usage: python onnx_predict.py MODEL.onnx FILE... (numpy, Pillow, onnxruntime)
import json, os, sys, time
t0 = time.perf_counter()
import numpy as np, onnxruntime as ort
from PIL import Image
from predict_input import load_image
model, files = sys.argv[1], sys.argv[2:]
threads = int(os.environ.get('THREADS', '2'))
opts = ort.SessionOptions(); opts.intra_op_num_threads = threads; opts.inter_op_num_threads = 1
sess = ort.InferenceSession(model, opts, providers=['CPUExecutionProvider'])
meta = sess.get_modelmeta().custom_metadata_map
mean = json.loads(meta['mean']) if meta.get('mean', '').startswith('[') else [float(v) for v in meta['mean'].split(',')]
std = json.loads(meta['std']) if meta.get('std', '').startswith('[') else [float(v) for v in meta['std'].split(',')]
inp = sess.get_inputs()[0]; C, S = inp.shape[1], inp.shape[2]
probs = []
for i in range(0, len(files), 32):
    batch = []
    for f in files[i:i + 32]:
        a = np.asarray(load_image(f).resize((S, S), Image.BILINEAR), dtype=np.float32) / 255
        batch.append(np.stack([(a - mean[min(c, len(mean) - 1)]) / std[min(c, len(std) - 1)] for c in range(C)]))
    probs.append(sess.run(None, {inp.name: np.stack(batch)})[0])
p = np.concatenate(probs)
print(json.dumps({'images': len(files), 'seconds': time.perf_counter() - t0, 'mean_p1': float(p[:, 1].mean())}))
