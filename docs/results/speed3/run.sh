#!/usr/bin/env bash
# issue 28 inference benchmarks, quiet machine: fp32 224 run (1 epoch on synth), a bf16 128 run (CV fold 4 scratch), a DICOM series
set -euo pipefail
cd /work/main
echo "load before: $(cat /proc/loadavg)"
B=.build/release/disttrain
if [[ ! -f /tmp/r224/ckpt/best.h5 ]]; then
  rm -rf /tmp/s224 /tmp/r224
  $B synth --out /tmp/s224 --n 200 --size 224 >/dev/null
  $B --method scratch --data /tmp/s224 --epochs 1 --image-size 224 --precision fp32 --run /tmp/r224 --threads 2 > /tmp/r224.log 2>&1
fi
export DISTTRAIN_BIN=$B
echo "### R18 1ch 224 fp32 (1-epoch synth run), 400 CT test slices"; bench/infer_throughput /tmp/r224
echo "### R18 1ch 128 bf16 (CV fold 4 scratch), 400 CT test slices"; bench/infer_throughput /work/runs/cv/fold-4/scratch
echo "### R18 1ch 224 fp32, DICOM series of 300 slices"; SERIES=300 bench/infer_throughput /tmp/r224
echo "load after: $(cat /proc/loadavg)"
