#!/usr/bin/env python3
"""Independent check of `disttrain predict ... --out PRED --dicom-out DICOM`
with pydicom and highdicom (not used by the tests or CI; run by hand with the
venv that has them, e.g. /work/venv29/bin/python tools/check_dicom_results.py PRED DICOM).

For every DICOM/series-N/sr.dcm: highdicom reads it (highdicom.sr.srread);
it must be a Comprehensive SR in the study of its source instances, in a new
series; its series-level Probability NUM (DCM 122157, the one without an image)
must equal series.csv's mean for that series and the mean of predictions.csv's
slice probabilities within 1e-4; each per-slice NUM must equal its slice's
predictions.csv value within 1e-4 and refer to that slice's SOP instance; its
evidence must list every source instance. Every sc-K.dcm must be a Secondary
Capture in the same study, in its own series, naming slice K's instance in
SourceImageSequence, its RGB pixels equal to the overlay PNG of that slice when
one is given with --png-suffix (e.g. -gradcam.png). Prints one line per series
and exits 1 on the first failed check."""
import argparse
import csv
import os
import sys

import highdicom as hd
import numpy as np
import pydicom

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def walk(items, depth=0):
    """Content items depth first, with their parent chain."""
    for it in items:
        yield it
        if "ContentSequence" in it:
            yield from walk(it.ContentSequence, depth + 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pred")
    ap.add_argument("dicom")
    ap.add_argument("--png-suffix", default="")
    a = ap.parse_args()
    rows = list(csv.reader(open(os.path.join(a.pred, "predictions.csv"))))[1:]
    series_csv = {r[0]: float(r[2]) for r in list(csv.reader(open(os.path.join(a.pred, "series.csv"))))[1:]}
    by_series = {}
    for file, p, _ in rows:
        if not os.path.exists(file) or not pydicom.misc.is_dicom(file):
            continue
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        by_series.setdefault(ds.SeriesInstanceUID, []).append((file, float(p), ds))
    folders = sorted((d for d in os.listdir(a.dicom) if d.startswith("series-")), key=lambda d: int(d.split("-")[1]))
    if len(folders) != len(by_series):
        fail(f"{len(folders)} result folders for {len(by_series)} DICOM series")
    for folder in folders:
        path = os.path.join(a.dicom, folder)
        sr = hd.sr.srread(os.path.join(path, "sr.dcm"))
        if sr.SOPClassUID != SR_CLASS:
            fail(f"{folder}: SOP class {sr.SOPClassUID}")
        evidence = {(s.SeriesInstanceUID, r.ReferencedSOPInstanceUID)
                    for st in sr.CurrentRequestedProcedureEvidenceSequence for s in st.ReferencedSeriesSequence
                    for r in s.ReferencedSOPSequence}
        src_series = {s for s, _ in evidence}
        if len(src_series) != 1:
            fail(f"{folder}: evidence spans series {src_series}")
        src_uid = src_series.pop()
        slices = by_series.get(src_uid)
        if slices is None:
            fail(f"{folder}: evidence series {src_uid} is none that predict read")
        study = slices[0][2].StudyInstanceUID
        if sr.StudyInstanceUID != study:
            fail(f"{folder}: study {sr.StudyInstanceUID}, source study {study}")
        if sr.SeriesInstanceUID == src_uid:
            fail(f"{folder}: the SR is in the source series")
        if sr.PatientID != slices[0][2].PatientID or str(sr.PatientName) != str(slices[0][2].PatientName):
            fail(f"{folder}: patient differs")
        want_sops = {ds.SOPInstanceUID for _, _, ds in slices}
        if {sop for _, sop in evidence} != want_sops:
            fail(f"{folder}: evidence {len(evidence)} instances, sources {len(want_sops)}")
        nums = []  # (value, referenced SOP instance or None)
        for it in walk(sr.ContentSequence):
            if it.ValueType == "NUM" and it.ConceptNameCodeSequence[0].CodeValue == "122157":
                v = float(it.MeasuredValueSequence[0].NumericValue)
                unit = it.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
                if (unit.CodeValue, unit.CodingSchemeDesignator) != ("1", "UCUM"):
                    fail(f"{folder}: unit {unit.CodeValue} {unit.CodingSchemeDesignator}")
                ref = None
                for c in it.get("ContentSequence", []):
                    if c.ValueType == "IMAGE":
                        ref = c.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                nums.append((v, ref))
        series_nums = [v for v, ref in nums if ref is None]
        slice_nums = [(v, ref) for v, ref in nums if ref is not None]
        mean = float(np.mean([p for _, p, _ in slices]))
        if len(series_nums) != 1 or abs(series_nums[0] - mean) > 1e-4 or abs(series_nums[0] - series_csv[src_uid]) > 1e-4:
            fail(f"{folder}: series probability {series_nums} against mean {mean:.6f} / series.csv {series_csv[src_uid]}")
        if len(slice_nums) != len(slices):
            fail(f"{folder}: {len(slice_nums)} slice values for {len(slices)} slices")
        for (v, ref), (file, p, ds) in zip(slice_nums, slices):
            if abs(v - p) > 1e-4 or ref != ds.SOPInstanceUID:
                fail(f"{folder}: slice {file}: {v} -> {ref}, want {p} -> {ds.SOPInstanceUID}")
        decision = [it for it in walk(sr.ContentSequence) if it.ValueType == "CODE"
                    and it.ConceptNameCodeSequence[0].CodeValue == "840539006"]
        present = decision and decision[0].ConceptCodeSequence[0].CodeValue == "52101004"
        if not decision or present != (mean > 0.5):
            fail(f"{folder}: decision {decision[:1]} for mean {mean}")
        scs = sorted(f for f in os.listdir(path) if f.startswith("sc-"))
        sc_series = set()
        for k, name in enumerate(scs):
            sc = pydicom.dcmread(os.path.join(path, name))
            file, _, ds = slices[int(name[3:7]) - 1]
            ref = sc.SourceImageSequence[0]
            if (sc.SOPClassUID != SC_CLASS or sc.StudyInstanceUID != study or ref.ReferencedSOPInstanceUID != ds.SOPInstanceUID
                    or sc.PhotometricInterpretation != "RGB" or sc.SeriesInstanceUID in (src_uid, sr.SeriesInstanceUID)):
                fail(f"{folder}/{name}: class {sc.SOPClassUID}, study {sc.StudyInstanceUID}, source {ref.ReferencedSOPInstanceUID}")
            sc_series.add(sc.SeriesInstanceUID)
            if a.png_suffix:
                from PIL import Image
                stem = os.path.basename(os.path.dirname(file)) + "_" + os.path.splitext(os.path.basename(file))[0]
                png = np.asarray(Image.open(os.path.join(a.pred, stem + a.png_suffix)).convert("RGB"))
                if not np.array_equal(png, sc.pixel_array):
                    fail(f"{folder}/{name}: pixels differ from {stem + a.png_suffix}")
        if len(sc_series) > 1:
            fail(f"{folder}: Secondary Capture images in {len(sc_series)} series")
        print(f"{folder}: SR (highdicom {type(sr).__name__}) in study {study}: p = {series_nums[0]:.6f} "
              f"(series.csv {series_csv[src_uid]:.6f}, mean of {len(slices)} slices {mean:.6f}), "
              f"{len(slice_nums)} slice values with their images, evidence {len(evidence)}/{len(want_sops)} instances, "
              f"{'present' if present else 'absent'}; {len(scs)} Secondary Capture images"
              f"{' = the PNG overlays' if a.png_suffix else ''}")
    print("all checks passed")


if __name__ == "__main__":
    main()
