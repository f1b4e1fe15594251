# The PyTorch peer of `disttrain predict` for bench/infer_throughput: the run's best checkpoint loaded by key
# into torchvision's ResNet (conv1 for the run's input channels; DESIGN.md: no conversion), eval mode, the same
# input as bench/onnx_predict.py (PIL decode, grey, bilinear resize, the run's mean and std; a .dcm file through
# pydicom, HU and the lung window), batches of 32, softmax, under torch.inference_mode(), $THREADS threads.
# --precision bf16: CPU autocast to bfloat16 with the model and input channels_last (PyTorch's one-line
# mixed precision). Prints one JSON line.
# Usage: python torch_predict.py RUN [--precision fp32|bf16] FILE...   (torch, torchvision, h5py, numpy, Pillow)
import json, os, sys, time
t0 = time.perf_counter()
import h5py, numpy as np, torch, torch.nn as nn, torchvision
from predict_input import load_image
args = sys.argv[1:]
run = args.pop(0)
precision = 'fp32'
if args[:1] == ['--precision']:
    precision = args[1]; args = args[2:]
files = args
torch.set_num_threads(int(os.environ.get('THREADS', '2')))
cfg = json.load(open(os.path.join(run, 'config.json')))
C, S = cfg['inChannels'], cfg['imageSize']
mean, std = cfg['mean'], cfg['std']
if cfg.get('width', 64) != 64: sys.exit(f"torch_predict: width {cfg['width']} has no torchvision model")
m = getattr(torchvision.models, cfg['arch'])(num_classes=cfg['numClasses'])
m.conv1 = nn.Conv2d(C, 64, 7, 2, 3, bias=False)
with h5py.File(os.path.join(run, 'ckpt', 'best.h5'), 'r') as f:
    state = {k: torch.from_numpy(np.array(v)) for k, v in f['model'].items()}
m.load_state_dict(state)
m.eval()
bf16 = precision == 'bf16'
if bf16: m = m.to(memory_format=torch.channels_last)
probs = []
with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
    for i in range(0, len(files), 32):
        batch = []
        for f in files[i:i + 32]:
            a = np.asarray(load_image(f).resize((S, S), 2), dtype=np.float32) / 255  # 2: PIL's BILINEAR
            batch.append(np.stack([(a - mean[min(c, len(mean) - 1)]) / std[min(c, len(std) - 1)] for c in range(C)]))
        x = torch.from_numpy(np.stack(batch))
        if bf16: x = x.contiguous(memory_format=torch.channels_last)
        probs.append(torch.softmax(m(x).float(), 1).numpy())
p = np.concatenate(probs)
print(json.dumps({'images': len(files), 'seconds': time.perf_counter() - t0, 'mean_p1': float(p[:, 1].mean())}))
