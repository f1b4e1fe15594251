#!/usr/bin/env python3
"""PyTorch's training step, identical to `disttrain bench`: torchvision ResNet
with conv1 widened/narrowed to the input channels, synthetic data, cross-entropy,
SGD momentum 0.9 (weight decay 1e-4), lr 0.01. Prints per-step times and a JSON line.
--precision bf16 is PyTorch's one-line mixed precision on CPU: torch.autocast("cpu",
dtype=torch.bfloat16) around forward and loss, model and input channels_last
(oneDNN's fastest layout for bf16 convolutions). --profile: after the timed steps, 4 more under
torch.profiler, and the self CPU time per step of the convolution ops against everything else (the
profiler slows the step; compare the parts, not the total, with `disttrain bench --profile`)."""
import argparse, json, resource, statistics, time
import torch, torch.nn as nn, torch.nn.functional as F, torchvision

p = argparse.ArgumentParser()
p.add_argument("--arch", default="resnet18")
p.add_argument("--channels", type=int, default=1)
p.add_argument("--image-size", type=int, default=224)
p.add_argument("--batch-size", type=int, default=32)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--steps", type=int, default=8)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
p.add_argument("--profile", action="store_true")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
m = getattr(torchvision.models, a.arch)(num_classes=2)
m.conv1 = nn.Conv2d(a.channels, 64, 7, 2, 3, bias=False)
m.train()
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
x = torch.randn(a.batch_size, a.channels, a.image_size, a.image_size)
y = torch.arange(a.batch_size) % 2
bf16 = a.precision == "bf16"
if bf16:
    m = m.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
def step():
    opt.zero_grad(set_to_none=False)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(m(x), y)
    loss.backward()
    opt.step()
    return loss
times = []
for s in range(a.warmup + a.steps):
    t0 = time.perf_counter()
    loss = step()
    dt = time.perf_counter() - t0
    if s >= a.warmup:
        times.append(dt)
    print(f"{'timed' if s >= a.warmup else 'warm-up'} step {s + 1}: {dt:.3f} s, {a.batch_size / dt:.1f} img/s, loss {loss.item():.4f}", flush=True)
med = statistics.median(times)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"pytorch {torch.__version__} {a.precision} {a.arch} {a.channels}ch {a.image_size}x{a.image_size} batch {a.batch_size}, {a.threads} threads: "
      f"median {med:.3f} s/step, {a.batch_size / med:.2f} img/s, peak RSS {rss:.0f} MiB")
if a.profile:
    from torch.profiler import profile, ProfilerActivity
    n = 4
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    parts = sorted(((e.self_cpu_time_total / 1e6 / n, e.key) for e in prof.key_averages()), reverse=True)
    conv = sum(t for t, k in parts if "conv" in k.lower())
    for t, k in parts[:10]:
        print(f"  {t:7.3f} s/step  {k}")
    print(f"  self CPU per step: convolution ops {conv:.3f} s, everything else {sum(t for t, _ in parts) - conv:.3f} s")
print(json.dumps({"impl": "pytorch", "img_per_s": a.batch_size / med, "median_step_s": med, "peak_rss_mib": rss}))
