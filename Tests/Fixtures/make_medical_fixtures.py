#!/usr/bin/env python3
"""Small DICOM and NIfTI fixtures with their expected Hounsfield-unit arrays.

Dev-time only (CI reads the committed files): pydicom and nibabel from PyPI,
and DCMTK's command-line tools (Debian `dcmtk`) for the compressed transfer
syntaxes. Run from the repository root:
    python3 Tests/Fixtures/make_medical_fixtures.py
Writes Tests/Fixtures/medical/*.dcm, series/, volume.nii.gz, and expected.h5
holding, per fixture, the HU array [frames, rows, cols] computed here from the
stored values (HU = stored * RescaleSlope + RescaleIntercept; uncalibrated
MONOCHROME1 inverted over its stored range) and the slice order of series/.
"""
import os, random, shutil, subprocess
import h5py, nibabel as nib, numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, CTImageStorage,
                         SecondaryCaptureImageStorage)

OUT = "Tests/Fixtures/medical"
shutil.rmtree(OUT, ignore_errors=True)
os.makedirs(OUT + "/series")
rng = np.random.default_rng(7)
expected = {}


def dataset(stored, *, signed, bits_stored, slope=None, intercept=None, photometric="MONOCHROME2", frames=1,
            patient="PAT1", series="1.2.826.0.1.3680043.2.1143.1", position=None, instance=1, sop_class=CTImageStorage):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1143.99"
    ds.SeriesInstanceUID = series
    ds.Modality = "CT"
    ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = [0, 0, position]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    ds.PixelData = stored.astype("<i2" if signed else "<u2").tobytes()
    return ds


def hu(stored, *, signed, bits_stored, slope=None, intercept=None, photometric="MONOCHROME2"):
    v = stored.astype(np.float64)
    if photometric == "MONOCHROME1" and slope is None:
        lo, hi = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
        v = lo + hi - v
    if slope is not None:
        v = v * slope + intercept
    return v.reshape((-1,) + stored.shape[-2:]).astype(np.float32)


def save(name, ds, syntax=ExplicitVRLittleEndian):
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(f"{OUT}/{name}", enforce_file_format=True, little_endian=True, implicit_vr=syntax == ImplicitVRLittleEndian)


# Signed 16-bit with a negative intercept (CT as most scanners write it), explicit VR little endian.
s16 = rng.integers(-1024, 3000, size=(12, 10)).astype(np.int16)
s16[0, :4] = [-32768, -1, 0, 32767]
save("explicit_le_s16.dcm", dataset(s16, signed=True, bits_stored=16, slope=1, intercept=-1024))
expected["explicit_le_s16"] = hu(s16, signed=True, bits_stored=16, slope=1, intercept=-1024)

# Unsigned 12 bits stored in 16, slope 2, implicit VR little endian.
u12 = rng.integers(0, 4096, size=(12, 10)).astype(np.uint16)
save("implicit_le_u12.dcm", dataset(u12, signed=False, bits_stored=12, slope=2, intercept=-1000), ImplicitVRLittleEndian)
expected["implicit_le_u12"] = hu(u12, signed=False, bits_stored=12, slope=2, intercept=-1000)

# Compressed copies of the 12-bit image: JPEG lossless (process 14, SV1), JPEG-LS lossless, RLE lossless (DCMTK's encoders).
src = f"{OUT}/explicit_u12.tmp"
save("explicit_u12.tmp", dataset(u12, signed=False, bits_stored=12, slope=2, intercept=-1000))
for name, cmd in [("jpeg_lossless_u12.dcm", ["dcmcjpeg", "--encode-lossless-sv1"]), ("jpegls_u12.dcm", ["dcmcjpls", "--encode-lossless"]),
                  ("rle_u12.dcm", ["dcmcrle"])]:
    subprocess.run(cmd + [src, f"{OUT}/{name}"], check=True)
    expected[name[:-4]] = expected["implicit_le_u12"]
os.remove(src)
# RLE of the signed image too.
src = f"{OUT}/explicit_s16.tmp"
shutil.copy(f"{OUT}/explicit_le_s16.dcm", src)
subprocess.run(["dcmcrle", src, f"{OUT}/rle_s16.dcm"], check=True)
os.remove(src)
expected["rle_s16"] = expected["explicit_le_s16"]

# MONOCHROME1: uncalibrated (inverted over 0...1023) and HU-calibrated (left as is).
u10 = rng.integers(0, 1024, size=(8, 8)).astype(np.uint16)
save("mono1_uncalibrated.dcm", dataset(u10, signed=False, bits_stored=10, photometric="MONOCHROME1", sop_class=SecondaryCaptureImageStorage))
expected["mono1_uncalibrated"] = hu(u10, signed=False, bits_stored=10, photometric="MONOCHROME1")
save("mono1_calibrated.dcm", dataset(u10, signed=False, bits_stored=10, slope=1, intercept=-1024, photometric="MONOCHROME1"))
expected["mono1_calibrated"] = hu(u10, signed=False, bits_stored=10, slope=1, intercept=-1024, photometric="MONOCHROME1")

# Multi-frame: 3 frames.
mf = rng.integers(0, 2000, size=(3, 6, 5)).astype(np.uint16)
save("multiframe.dcm", dataset(mf, signed=False, bits_stored=16, slope=1, intercept=-1024, frames=3))
expected["multiframe"] = hu(mf, signed=False, bits_stored=16, slope=1, intercept=-1024)

# A transfer syntax DCMTK cannot decode (JPEG 2000; the codestream is a stub): must be refused by name.
j2k = dataset(u12, signed=False, bits_stored=12, slope=1, intercept=0)
j2k.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])
j2k["PixelData"].VR = "OB"
j2k.file_meta.TransferSyntaxUID = JPEG2000Lossless
j2k.save_as(f"{OUT}/jpeg2000.dcm", enforce_file_format=True)

# Truncated (half the pixel data cut) and not DICOM at all.
raw = open(f"{OUT}/explicit_le_s16.dcm", "rb").read()
open(f"{OUT}/truncated.dcm", "wb").write(raw[: len(raw) - 120])
open(f"{OUT}/not_dicom.dcm", "wb").write(b"patient,label\nP1,1\n" * 20)

# Two series of one patient, 3 slices each, files named so that name order is not slice order.
order = []
for k, uid in enumerate(["1.2.826.0.1.3680043.2.1143.501", "1.2.826.0.1.3680043.2.1143.502"]):
    for z, pos in enumerate([-30.0, -25.0, -20.0]):
        img = np.full((4, 4), 100 * k + z, dtype=np.int16)
        name = f"{random.Random(k * 10 + z).randrange(16**8):08X}.dcm"
        save(f"series/{name}", dataset(img, signed=True, bits_stored=16, slope=1, intercept=0, series=uid, position=pos,
                                        instance=3 - z))
        order.append((uid, name, 100 * k + z))

# NIfTI: int16 volume 8 x 6 x 4 with scl_slope 2, scl_inter -1000, RAS (k inferior to superior).
vol = rng.integers(-500, 1500, size=(8, 6, 4)).astype(np.int16)
img = nib.Nifti1Image(vol, np.diag([0.7, 0.7, 2.5, 1]))
img.header.set_slope_inter(2, -1000)
img.header.set_qform(np.diag([0.7, 0.7, 2.5, 1]), code=1)
nib.save(img, f"{OUT}/volume.nii.gz")
# Slice k across axis 2: [k][y][x] = vol[x, y, k] (x fastest).
expected["volume"] = (vol.astype(np.float64) * 2 - 1000).transpose(2, 1, 0).astype(np.float32)

with h5py.File(f"{OUT}/expected.h5", "w") as f:
    for name, a in expected.items():
        f[name] = a
    f["series/order_values"] = np.array([v for _, _, v in order], dtype=np.int64)
    f.attrs["generator"] = "Tests/Fixtures/make_medical_fixtures.py"
print("wrote", sorted(os.listdir(OUT)))
