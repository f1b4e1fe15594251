"""The step-time model of docs/scaling.md: calibrated on this machine, projected to clusters.

step = compute(b) + exposed,  b = images per rank, one rank per node with all its cores
compute(b) = b * t_img / (cores * eff(cores))          t_img: seconds per 224x224 image on one core
all-reduce (ring, P ranks, S bytes) = 2 (P-1)/P * S / (eta * link) + 2 (P-1) * alpha
exposed = max(all-reduce - f * compute(b), last * all-reduce)
                                                       f: the share of compute the overlap covers;
                                                       last: the bucket of the first layers, ready only
                                                       when backward ends, is never hidden
Efficiency = compute(b) / step (strong scaling: global batch fixed; weak: batch per rank fixed).
Run: python3 bench/scaling_model.py   (prints the tables of docs/scaling.md)
"""
# Calibration (bench/mpi_scaling and bench/mpi_scaling links on the 2-core Zen 4 machine, one rank x 1 thread):
MODELS = {
    # t_img: s per image per core at 224 (step time x cores / images); bytes: fp32 gradients;
    # f: overlap cover, (blocking - overlapped exposed) / compute, at 1 Gbit/s with 25 MiB buckets.
    # last: size of the final 25 MiB bucket (the rest of the buffer after whole buckets from its end) / all.
    "ResNet-18": {"t_img": 1.76 * 2 / 32, "bytes": 11.2e6 * 4, "f": (0.641 - 0.236) / 1.76, "last": 18.6 / 44.8},
    "ResNet-50": {"t_img": 2.39 * 2 / 16, "bytes": 23.5e6 * 4, "f": (1.505 - 0.163) / 2.39, "last": 15.4 / 94.0},
}
ETA = 0.55        # achieved / nominal bandwidth of the TCP ring at 1 Gbit/s (0.56 R18, 0.54 R50 measured)
ALPHA = 50e-6     # seconds per ring step (TCP latency; netem was not available to measure it here)
EFF = {2: 0.97, 16: 0.85, 64: 0.70}  # threading efficiency: 2 measured (1x2 threads vs 2x1), 16/64 assumed


def step(m, cores, link_gbit, ranks, b):
    compute = b * m["t_img"] / (cores * EFF[cores])
    allreduce = (2 * (ranks - 1) / ranks * m["bytes"] / (ETA * link_gbit * 1e9 / 8) + 2 * (ranks - 1) * ALPHA) if ranks > 1 else 0
    exposed = max(allreduce - m["f"] * compute, m["last"] * allreduce)
    return compute, allreduce, exposed


def efficiency(m, cores, link, ranks, b):
    c, _, e = step(m, cores, link, ranks, b)
    return c / (c + e)


def min_batch_for(m, cores, link, ranks, target=0.9):
    for b in range(1, 4097):
        if efficiency(m, cores, link, ranks, b) >= target:
            return b * ranks
    return None


nodes = [4, 8, 16, 32, 64]
for name, m in MODELS.items():
    print(f"\n{name}: efficiency, strong scaling (global batch 256) / weak scaling (32 per node)\n")
    print("| cores/node | link | " + " | ".join(f"{n} nodes" for n in nodes) + " |")
    print("|---|---|" + "---|" * len(nodes))
    for cores in (2, 16, 64):
        for link in (10, 25, 100):
            cells = []
            for n in nodes:
                strong = efficiency(m, cores, link, n, 256 / n)
                weak = efficiency(m, cores, link, n, 32)
                cells.append(f"{100 * strong:.0f} / {100 * weak:.0f} %")
            print(f"| {cores} | {link} Gbit/s | " + " | ".join(cells) + " |")
    print(f"\n{name}: smallest global batch with efficiency >= 90 %\n")
    print("| cores/node | link | " + " | ".join(f"{n} nodes" for n in nodes) + " |")
    print("|---|---|" + "---|" * len(nodes))
    for cores in (2, 16, 64):
        for link in (10, 25, 100):
            cells = [str(min_batch_for(m, cores, link, n) or "> 4096/node") for n in nodes]
            print(f"| {cores} | {link} Gbit/s | " + " | ".join(cells) + " |")
