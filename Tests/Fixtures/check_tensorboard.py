"""Reads a run's TensorBoard event files with TensorBoard's own reader and checks every
per-epoch scalar against metrics.csv (dev-time; CI checks the framing and CRCs itself).

Run: .venv/bin/python Tests/Fixtures/check_tensorboard.py RUN_FOLDER   (pip install tensorboard)
"""
import csv
import math
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run = sys.argv[1]
acc = EventAccumulator(run, size_guidance={"scalars": 0, "images": 0})
acc.Reload()
tags = acc.Tags()
rows = list(csv.DictReader(open(f"{run}/metrics.csv")))
pairs = {"loss/train": "train_loss", "loss/val": "val_loss", "loss/test": "test_loss", "accuracy/train": "train_accuracy",
         "accuracy/val": "val_accuracy", "accuracy/test": "test_accuracy", "auc/val": "val_auc", "auc/test": "test_auc",
         "lr": "lr", "images_per_second": "images_per_second"}
checked = 0
for tag, column in pairs.items():
    events = {e.step: e.value for e in acc.Scalars(tag)}
    for r in rows:
        want = float(r[column]) if r[column] else math.nan
        if math.isnan(want):
            continue
        got = events[int(r["epoch"])]
        assert abs(got - want) <= 1e-5 * max(1, abs(want)) + 1e-6, (tag, r["epoch"], got, want)
        checked += 1
steps = [e.step for e in acc.Scalars("loss/train_step")]
assert steps == sorted(set(steps)), "per-step loss: one value per step"
print(f"{checked} per-epoch scalars match metrics.csv; {len(steps)} per-step losses (steps {steps[0]}..{steps[-1]}); "
      f"images: {tags['images']}")
