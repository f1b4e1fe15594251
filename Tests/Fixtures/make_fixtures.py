#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures the Swift tests compare against.

Run by hand (CI never needs torch):
    python3 -m venv .venv && .venv/bin/pip install torch torchvision h5py
    .venv/bin/python Tests/Fixtures/make_fixtures.py

As llm.c's train_gpt2.py write_state: weights come from a formula both sides
compute bit-identically (an integer hash, so no libm differences), PyTorch
runs forward, backward and optimizer steps, and every tensor the tests check
is written by name. Tensors over SUMMARY_LIMIT elements are summarised: a
strided sample of SAMPLE elements plus their float64 sum and sum of |x|, so
the fixtures stay small (well under 5 MB in all).

Files:
  layers.h5     per-layer cases: conv2d, batchnorm2d (train, eval, fused ReLU),
                maxpool, avgpool, linear, cross-entropy with label smoothing.
  resnet18.h5   resnet18(num_classes=2), conv1 with 1 input channel, input 2x1x64x64.
  resnet50.h5   resnet50(num_classes=2), 3 input channels, input 2x3x64x64.
  resnet18_keys.txt, resnet50_keys.txt: state_dict keys and shapes, in order.
"""
import os
import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
SUMMARY_LIMIT = 4096
SAMPLE = 512
torch.use_deterministic_algorithms(True)


def hash_uniform(count, salt):
    """u in [0, 1) from a 32-bit integer hash of (i, salt), exact in float64:
    h = (i * 2654435761 + salt * 40503) mod 2^32, then the murmur3 finaliser
    (xor-shift, multiply) so that tensors of different salts are uncorrelated."""
    M = np.uint64(0xFFFFFFFF)
    i = np.arange(count, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(salt) * np.uint64(40503)) & M
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & M
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & M
    h ^= h >> np.uint64(16)
    return h.astype(np.float64) / float(1 << 32)


def formula_tensor(shape, salt, scale, offset=0.0):
    """float32(offset + (2u - 1) * scale): the same bits in Tests/NetTests/Formula.swift."""
    n = int(np.prod(shape)) if len(shape) else 1
    u = hash_uniform(n, salt)
    v = offset + (2.0 * u - 1.0) * scale
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def fill_formula(model):
    """Fills every float state_dict entry by formula; entry index k is the salt.

    The last BN of each residual branch (bn2 in BasicBlock, bn3 in Bottleneck)
    gets gamma near 0.1 instead of 1, in the spirit of zero_init_residual.
    Without it a 16-block ResNet-50 in train mode is chaotic at this size:
    PyTorch's own float32 gradients differ from its float64 ones by up to 30 %
    (rounding grows ~1.2x per BatchNorm layer and flips ReLU signs), so no
    float32 engine could be checked against it. With it float32 agrees with
    float64 to < 1 % on every gradient (err32 in the files records by how much)."""
    last = "bn3" if isinstance(model.layer1[0], torchvision.models.resnet.Bottleneck) else "bn2"
    sd = model.state_dict()
    with torch.no_grad():
        for k, (name, t) in enumerate(sd.items()):
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_mean"):
                t.zero_()
            elif name.endswith("running_var"):
                t.fill_(1.0)
            elif t.dim() == 4:  # conv: uniform with Kaiming fan_out std
                fan_out = t.shape[0] * t.shape[2] * t.shape[3]
                t.copy_(formula_tensor(t.shape, k + 1, np.sqrt(3.0) * np.sqrt(2.0 / fan_out)))
            elif name.startswith("fc."):
                t.copy_(formula_tensor(t.shape, k + 1, 1.0 / np.sqrt(model.fc.in_features)))
            elif name.startswith("layer") and name.endswith(last + ".weight"):  # residual branch's last gamma
                t.copy_(formula_tensor(t.shape, k + 1, 0.05, 0.1))
            elif name.endswith("weight"):  # BN gamma around 1
                t.copy_(formula_tensor(t.shape, k + 1, 0.1, 1.0))
            else:  # BN beta around 0
                t.copy_(formula_tensor(t.shape, k + 1, 0.1))


def put(group, name, t):
    """Writes t whole, or summarised when large: name.sample, name.stats."""
    a = t.detach().double().numpy().reshape(-1) if isinstance(t, torch.Tensor) else np.asarray(t, np.float64).reshape(-1)
    if a.size <= SUMMARY_LIMIT:
        group.create_dataset(name, data=a.astype(np.float32).reshape(tuple(t.shape)) if isinstance(t, torch.Tensor) else a.astype(np.float32))
    else:
        step = a.size // SAMPLE
        group.create_dataset(name + ".sample", data=a[::step][:SAMPLE].astype(np.float64))
        group.create_dataset(name + ".stats", data=np.array([a.sum(), np.abs(a).sum(), step], np.float64))


def make_resnet(arch, in_ch):
    m = getattr(torchvision.models, arch)(num_classes=2)
    m.conv1 = nn.Conv2d(in_ch, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return m


def write_keys(model, path):
    with open(path, "w") as f:
        for name, t in model.state_dict().items():
            f.write(f"{name} {'x'.join(str(s) for s in t.shape) or 'scalar'}\n")


def run_reference(arch, in_ch, dtype, bf16=False):
    """Forward, backward and 3 steps each of SGD and AdamW in `dtype`; with
    `bf16`, forward and loss under CPU autocast to bfloat16 (PyTorch's mixed
    precision: convolutions and linear in bf16, float32 weights and optimizer).
    Returns {fixture path: tensor} for everything the tests check."""
    cast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    torch.manual_seed(0)
    model = make_resnet(arch, in_ch)
    fill_formula(model)
    model = model.to(dtype)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    x = formula_tensor((2, in_ch, 64, 64), 1000, 1.0).to(dtype)
    y = torch.tensor([0, 1])
    out = {"input": x.clone(), "labels": y}
    model.train()
    x.requires_grad_(True)
    with cast():
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    loss.backward()
    out["logits"] = logits.detach()
    out["loss"] = loss.detach().reshape(1)
    out["input_grad"] = x.grad.clone()
    for name, p in model.named_parameters():
        out["grads/" + name] = p.grad.clone()
    for name, t in model.state_dict().items():
        if "running" in name or "num_batches" in name:
            out["buffers_after_1/" + name] = t.clone()
    for opt_name, lr, make in [("sgd", 0.01, lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=1e-4)),
                               # eps 1e-3, not 1e-8: Adam's first steps move a weight by ~lr*sign(g),
                               # so with a tiny eps a gradient component below float32 noise would flip
                               # a whole lr-sized step between two correct engines (we saw 1 % errors
                               # from that alone). With eps above that noise the update is continuous
                               # in g and the test still exercises every term of the rule.
                               ("adamw", 1e-3, lambda ps, lr: torch.optim.AdamW(ps, lr=lr, weight_decay=0.01, eps=1e-3))]:
        model.load_state_dict(init)
        opt = make(model.parameters(), lr)
        losses = []
        for _ in range(3):
            opt.zero_grad()
            with cast():
                loss = F.cross_entropy(model(x.detach()), y)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        out[opt_name + "/losses"] = torch.stack(losses)
        for name, t in model.state_dict().items():
            # Parameters as the change from the initial value: what the steps did.
            out[f"{opt_name}/delta/{name}"] = t.double() - init[name].double()
    return model, out


def rel_l2(a, b):
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def error_group(f, group, ref, other):
    """group/<name>: relative L2 error of `other` against the float64 `ref`
    (over the stored sample for summarised tensors)."""
    if group in f:
        del f[group]
    e = f.create_group(group)
    for name, t in ref.items():
        if name in ("labels", "input"):
            continue
        a, b = other[name].double().reshape(-1), t.double().reshape(-1)
        if b.numel() > SUMMARY_LIMIT:
            step = b.numel() // SAMPLE
            a, b = a[::step][:SAMPLE], b[::step][:SAMPLE]
        e.create_dataset(name.replace("/", "|"), data=np.array([rel_l2(a, b)], np.float64))


def bf16_errors(arch, in_ch, path):
    """errbf16/<name>: the same error for PyTorch's CPU autocast to bf16, the
    yardstick for our --precision bf16. Added to an existing file (the float64
    reference and err32 stay as they are)."""
    _, ref = run_reference(arch, in_ch, torch.float64)
    _, bf = run_reference(arch, in_ch, torch.float32, bf16=True)
    with h5py.File(path, "a") as f:
        f.attrs["bf16_reference"] = f"torch {torch.__version__} CPU autocast bfloat16"
        error_group(f, "errbf16", ref, bf)
    print("added errbf16 to", path)


def resnet_fixture(arch, in_ch, path):
    """The reference is PyTorch in float64; `err32/<name>` records PyTorch's
    own float32 result's relative L2 error against it (over the stored sample
    for summarised tensors), so the tests can hold us to PyTorch's accuracy."""
    model, ref = run_reference(arch, in_ch, torch.float64)
    _, f32 = run_reference(arch, in_ch, torch.float32)
    write_keys(make_resnet(arch, in_ch), os.path.join(HERE, f"{arch}_keys.txt"))
    with h5py.File(path, "w") as f:
        f.attrs["arch"] = arch
        f.attrs["in_channels"] = in_ch
        f.attrs["reference"] = "torch float64"
        e = f.create_group("err32")
        for name, t in ref.items():
            if name in ("labels", "input"):  # exact inputs, whole
                f.create_dataset(name, data=t.numpy() if name == "labels" else t.float().numpy())
                continue
            put(f, name, t)
            a, b = f32[name].double().reshape(-1), t.double().reshape(-1)
            if b.numel() > SUMMARY_LIMIT:
                step = b.numel() // SAMPLE
                a, b = a[::step][:SAMPLE], b[::step][:SAMPLE]
            e.create_dataset(name.replace("/", "|"), data=np.array([rel_l2(a, b)], np.float64))
    print("wrote", path, os.path.getsize(path), "bytes")


def layer_fixtures(path):
    with h5py.File(path, "w") as f:
        def case(name, **tensors):
            g = f.create_group(name)
            for k, v in tensors.items():
                g.create_dataset(k, data=v.detach().numpy() if isinstance(v, torch.Tensor) else v)

        # Convolutions: (N, C, H, W, OC, k, stride, pad, bias)
        convs = [(2, 3, 9, 9, 4, 3, 1, 1, False), (2, 2, 11, 10, 3, 7, 2, 3, False),
                 (3, 4, 8, 8, 6, 1, 2, 0, False), (2, 5, 7, 7, 4, 1, 1, 0, True),
                 (2, 3, 10, 10, 5, 3, 2, 1, True), (40, 2, 6, 6, 3, 3, 1, 1, False)]
        for i, (N, C, H, W, OC, k, s, p, bias) in enumerate(convs):
            x = formula_tensor((N, C, H, W), 10 + i, 1.0).requires_grad_(True)
            w = formula_tensor((OC, C, k, k), 20 + i, 0.5).requires_grad_(True)
            b = formula_tensor((OC,), 30 + i, 0.5).requires_grad_(True) if bias else None
            y = F.conv2d(x, w, b, stride=s, padding=p)
            dy = formula_tensor(tuple(y.shape), 40 + i, 1.0)
            y.backward(dy)
            extra = {"bias": b, "dbias": b.grad} if bias else {}
            case(f"conv{i}", x=x, weight=w, y=y, dy=dy, dx=x.grad, dweight=w.grad,
                 config=np.array([k, s, p, int(bias)], np.int64), **extra)

        # BatchNorm2d train (with and without a ReLU after) and eval.
        for i, (relu, train) in enumerate([(False, True), (True, True), (False, False)]):
            N, C, H, W = 3, 4, 5, 6
            bn = nn.BatchNorm2d(C)
            with torch.no_grad():
                bn.weight.copy_(formula_tensor((C,), 50 + i, 0.5, 1.0))
                bn.bias.copy_(formula_tensor((C,), 60 + i, 0.5))
                bn.running_mean.copy_(formula_tensor((C,), 70 + i, 0.5))
                bn.running_var.copy_(formula_tensor((C,), 80 + i, 0.5, 1.0))
            rm0, rv0 = bn.running_mean.clone(), bn.running_var.clone()
            bn.train(train)
            x = formula_tensor((N, C, H, W), 90 + i, 2.0, 0.3).requires_grad_(True)
            y = bn(x)
            if relu:
                y = F.relu(y)
            dy = formula_tensor(tuple(y.shape), 100 + i, 1.0)
            y.backward(dy)
            case(f"bn{i}", x=x, weight=bn.weight, bias=bn.bias, running_mean0=rm0, running_var0=rv0,
                 y=y, dy=dy, dx=x.grad, dweight=bn.weight.grad, dbias=bn.bias.grad,
                 running_mean=bn.running_mean, running_var=bn.running_var,
                 config=np.array([int(relu), int(train)], np.int64))

        # MaxPool 3x3 s2 p1 and global average pool.
        x = formula_tensor((2, 3, 9, 8), 110, 1.0).requires_grad_(True)
        y = F.max_pool2d(x, 3, 2, 1)
        dy = formula_tensor(tuple(y.shape), 111, 1.0)
        y.backward(dy)
        case("maxpool", x=x, y=y, dy=dy, dx=x.grad)
        x = formula_tensor((2, 3, 4, 5), 112, 1.0).requires_grad_(True)
        y = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        dy = formula_tensor(tuple(y.shape), 113, 1.0)
        y.backward(dy)
        case("avgpool", x=x, y=y, dy=dy, dx=x.grad)

        # Linear.
        x = formula_tensor((4, 7), 120, 1.0).requires_grad_(True)
        w = formula_tensor((3, 7), 121, 0.5).requires_grad_(True)
        b = formula_tensor((3,), 122, 0.5).requires_grad_(True)
        y = F.linear(x, w, b)
        dy = formula_tensor(tuple(y.shape), 123, 1.0)
        y.backward(dy)
        case("linear", x=x, weight=w, bias=b, y=y, dy=dy, dx=x.grad, dweight=w.grad, dbias=b.grad)

        # Cross-entropy, mean, with and without label smoothing.
        for i, eps in enumerate([0.0, 0.1]):
            z = formula_tensor((5, 4), 130 + i, 3.0).requires_grad_(True)
            t = torch.tensor([0, 3, 1, 2, 3])
            loss = F.cross_entropy(z, t, label_smoothing=eps)
            loss.backward()
            case(f"ce{i}", logits=z, labels=t.numpy(), loss=np.array([loss.item()], np.float32),
                 dlogits=z.grad, smoothing=np.array([eps], np.float32))
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    import sys
    torch.set_num_threads(2)
    if sys.argv[1:] == ["--bf16"]:  # only the bf16 yardstick, into the committed files
        bf16_errors("resnet18", 1, os.path.join(HERE, "resnet18.h5"))
        bf16_errors("resnet50", 3, os.path.join(HERE, "resnet50.h5"))
        sys.exit(0)
    layer_fixtures(os.path.join(HERE, "layers.h5"))
    resnet_fixture("resnet18", 1, os.path.join(HERE, "resnet18.h5"))
    resnet_fixture("resnet50", 3, os.path.join(HERE, "resnet50.h5"))
    bf16_errors("resnet18", 1, os.path.join(HERE, "resnet18.h5"))
    bf16_errors("resnet50", 3, os.path.join(HERE, "resnet50.h5"))
