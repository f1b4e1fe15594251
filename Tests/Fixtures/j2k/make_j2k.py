#!/usr/bin/env python3
"""JPEG 2000 DICOM fixtures and the HU that pydicom decodes from them.

Dev-time only (CI reads the committed files): pydicom 3 with pylibjpeg-openjpeg
(its own build of OpenJPEG) encodes and decodes; opj_compress (Debian
libopenjp2-tools) writes the one JP2-wrapped frame, and OpenJPH's ojph_compress (Debian
openjph-tools) the HTJ2K ones. Run from the repository root:
    /work/venv29/bin/python Tests/Fixtures/j2k/make_j2k.py
Writes Tests/Fixtures/j2k/:
  *.dcm            the fixtures (see FIXTURES below), 1.2.840.10008.1.2.4.90 / .91, and HTJ2K
                   .201 / .202 / .203
  *.hu.f32         per fixture, pydicom's decode: ds.pixel_array * RescaleSlope +
                   RescaleIntercept, float32 little endian, frames x rows x cols
  bad/*.dcm        damaged or inconsistent files (a truncated codestream, a
                   corrupt one, Rows/Columns that are not the codestream's, the
                   sign of the codestream against PixelRepresentation, samples
                   over BitsStored, three components, a wrong offset table)
  study/j2k/ and study/native/  the same 8-patient, 2-class study (32 x 32, two
                   slices a patient, labels.csv) as J2K lossless and as explicit
                   VR little endian: prepare and predict must make the same of both
For lossless fixtures the script also checks that pydicom's decode is the
array it encoded; for lossy ones it prints the maximum error against it.
"""
import os, shutil, subprocess, tempfile
import numpy as np
import openjpeg
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEG2000, CTImageStorage

OUT = "Tests/Fixtures/j2k"
for d in ["bad", "study"]:
    shutil.rmtree(f"{OUT}/{d}", ignore_errors=True)
for f in os.listdir(OUT) if os.path.isdir(OUT) else []:
    if f.endswith((".dcm", ".f32")):
        os.remove(f"{OUT}/{f}")
os.makedirs(f"{OUT}/bad")
rng = np.random.default_rng(29)
STUDY = "1.2.826.0.1.3680043.2.1143.29.1"


def phantom(size, shift=0.0, lesion=False):
    """A CT-like slice in HU: air, a body ellipse (soft tissue), two lungs, a bone ring, noise."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    hu = np.full((size, size), -1000.0)
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 <= 1
    hu[body] = 40
    hu[body & ((x / 0.9) ** 2 + (y / 0.7) ** 2 >= 0.85)] = 700
    for cx in (-0.42, 0.42):
        lung = ((x - cx) / 0.33) ** 2 + ((y - shift * 0.1) / 0.5) ** 2 <= 1
        hu[lung] = -850
        if lesion:
            hu[lung & (((x - cx) / 0.12) ** 2 + ((y + 0.1) / 0.12) ** 2 <= 1)] = -550
    return hu + rng.normal(0, 25, hu.shape)


def dataset(stored, *, signed, bits_stored, slope=1, intercept=-1024, patient="J2K1", series=None, instance=1, z=0.0):
    frames = stored.shape[0] if stored.ndim == 3 else 1
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient
    ds.PatientName = patient
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = series or pydicom.uid.generate_uid()
    ds.Modality = "CT"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0, 0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.RescaleType = "HU"
    ds.WindowCenter = -600
    ds.WindowWidth = 1500
    ds.PixelData = stored.astype("<i2" if signed else "<u2").tobytes()
    return ds


def pydicom_hu(path):
    ds = pydicom.dcmread(path)
    a = ds.pixel_array  # decoded by pylibjpeg-openjpeg, the only J2K plugin in the venv
    hu = a.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return hu.reshape((-1, ds.Rows, ds.Columns)).astype(np.float32)


def save(name, ds, syntax, **kw):
    original = ds.pixel_array.copy()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, encoding_plugin="pylibjpeg", generate_instance_uid=False, **kw)
    path = f"{OUT}/{name}"
    ds.save_as(path, enforce_file_format=True)
    return path, original.reshape((-1,) + original.shape[-2:])


# The decoded fixtures: (file, stored array, signed, BitsStored, slope, intercept, syntax, lossy options).
s16 = np.clip(phantom(64) + 1024, -32768, 32767).round().astype(np.int16) - 1024   # signed, below 0 as stored too
s16[0, :4] = [-32768, -1, 0, 32767]                                                 # the extremes, losslessly
u12 = np.stack([np.clip(phantom(64, shift=k) + 1024, 0, 4095).round() for k in range(3)]).astype(np.uint16)
lossy = np.clip(phantom(128, lesion=True), -1024, 3071).round().astype(np.int16)
lossy3 = np.stack([np.clip(phantom(64, shift=k, lesion=k == 1), -1024, 3071) for k in range(2)]).round().astype(np.int16)
FIXTURES = [
    ("lossless_s16.dcm", s16, True, 16, 1, -1024, JPEG2000Lossless, {}),
    ("lossless_u12_3frames.dcm", u12, False, 12, 1, -1024, JPEG2000Lossless, {}),
    ("lossy_s16.dcm", lossy, True, 16, 1, -1024, JPEG2000, {"j2k_cr": [12]}),
    ("lossy_s16_2frames.dcm", lossy3, True, 16, 1, -1024, JPEG2000, {"j2k_cr": [6]}),
]
for name, arr, signed, bits, slope, intercept, syntax, kw in FIXTURES:
    path, original = save(name, dataset(arr, signed=signed, bits_stored=bits, slope=slope, intercept=intercept), syntax, **kw)
    hu = pydicom_hu(path)
    want = (original.astype(np.float64) * slope + intercept).astype(np.float32)
    if syntax == JPEG2000Lossless:
        assert np.array_equal(hu, want), name
    else:
        print(f"{name}: lossy, max |decoded - original| = {np.abs(hu - want).max()} HU")
    hu.astype("<f4").tofile(f"{OUT}/{name[:-4]}.hu.f32")
    print(f"{name}: {hu.shape}, {os.path.getsize(path)} bytes")

# One frame as a JP2 file (a wrapped codestream, as some writers store it), by OpenJPEG's own encoder.
with tempfile.TemporaryDirectory() as tmp:
    s = s16[:32, :48].copy()  # 48 wide, 32 high: not square
    s.astype("<i2").tofile(f"{tmp}/f.rawl")
    subprocess.run(["opj_compress", "-i", f"{tmp}/f.rawl", "-o", f"{tmp}/f.jp2", "-F", "48,32,1,16,s"], check=True,
                   stdout=subprocess.DEVNULL)
    jp2 = open(f"{tmp}/f.jp2", "rb").read()
assert jp2[4:8] == b"jP  "
ds = dataset(s, signed=True, bits_stored=16)
ds.PixelData = encapsulate([jp2])
ds["PixelData"].VR = "OB"
ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
ds.save_as(f"{OUT}/lossless_jp2.dcm", enforce_file_format=True)
hu = pydicom_hu(f"{OUT}/lossless_jp2.dcm")
assert np.array_equal(hu, (s.astype(np.float64) - 1024).astype(np.float32)[None])
hu.astype("<f4").tofile(f"{OUT}/lossless_jp2.hu.f32")

# HTJ2K (Part 15), by OpenJPH's encoder (Debian openjph-tools; OpenJPEG decodes HTJ2K but does not encode it).
# Unsigned 12 bit: ojph_compress 0.9 misreads signed raw input.
def htj2k(frames, reversible, order, qstep=None):
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in frames:
            f.astype("<u2").tofile(f"{tmp}/f.raw")
            cmd = ["ojph_compress", "-i", f"{tmp}/f.raw", "-o", f"{tmp}/f.j2c", "-reversible", str(reversible).lower(),
                   "-dims", "{%d,%d}" % (f.shape[1], f.shape[0]), "-num_comps", "1", "-signed", "false", "-bit_depth", "12",
                   "-downsamp", "{1,1}", "-prog_order", order] + (["-qstep", str(qstep)] if qstep else [])
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            out.append(open(f"{tmp}/f.j2c", "rb").read())
    return out


for name, syntax, frames, reversible, order, qstep in [
        ("htj2k_lossless_u12.dcm", "1.2.840.10008.1.2.4.201", u12[:1], True, "CPRL", None),
        ("htj2k_rpcl_u12.dcm", "1.2.840.10008.1.2.4.202", u12[1:2], True, "RPCL", None),
        ("htj2k_lossy_u12_2frames.dcm", "1.2.840.10008.1.2.4.203", u12[:2], False, "RPCL", 0.002)]:
    ds = dataset(frames if len(frames) > 1 else frames[0], signed=False, bits_stored=12)
    ds.PixelData = encapsulate(htj2k(frames, reversible, order, qstep))
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(f"{OUT}/{name}", enforce_file_format=True)
    hu = pydicom_hu(f"{OUT}/{name}")
    want = (frames.astype(np.float64) - 1024).astype(np.float32)
    if reversible:
        assert np.array_equal(hu, want), name
    else:
        print(f"{name}: lossy, max |decoded - original| = {np.abs(hu - want).max()} HU")
    hu.astype("<f4").tofile(f"{OUT}/{name[:-4]}.hu.f32")
    print(f"{name}: {hu.shape}, {os.path.getsize(f'{OUT}/{name}')} bytes")

# A frame split over two fragments, with the Basic Offset Table: the reader joins them.
ds = pydicom.dcmread(f"{OUT}/lossless_u12_3frames.dcm")
frames = [f for f in pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=3)]
ds.PixelData = encapsulate(frames, fragments_per_frame=2, has_bot=True)
ds.save_as(f"{OUT}/lossless_u12_3frames_fragmented.dcm", enforce_file_format=True)
u12hu = np.fromfile(f"{OUT}/lossless_u12_3frames.hu.f32", "<f4").reshape(3, 64, 64)
assert np.array_equal(pydicom_hu(f"{OUT}/lossless_u12_3frames_fragmented.dcm"), u12hu)
# The same without a Basic Offset Table: each frame's first fragment is the one that starts with SOC.
ds.PixelData = encapsulate(frames, fragments_per_frame=2, has_bot=False)
ds.save_as(f"{OUT}/lossless_u12_3frames_fragmented_nobot.dcm", enforce_file_format=True)
assert np.array_equal(pydicom_hu(f"{OUT}/lossless_u12_3frames_fragmented_nobot.dcm"), u12hu)
# A Basic Offset Table whose second entry points inside a fragment.
data = bytearray(encapsulate(frames, fragments_per_frame=2, has_bot=True))
data[12:16] = (int.from_bytes(data[12:16], "little") + 2).to_bytes(4, "little")  # after the item tag, length and entry 1
ds.PixelData = bytes(data)
os.makedirs(f"{OUT}/bad", exist_ok=True)
ds.save_as(f"{OUT}/bad/offset_table.dcm", enforce_file_format=True)

# 8-bit storage (BitsAllocated 8, no rescale: the stored values are the output).
u8 = np.clip((phantom(64) + 1000) / 8, 0, 255).round().astype(np.uint8)
ds = dataset(u8.astype(np.int16), signed=False, bits_stored=8)
ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
del ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType
ds.PixelData = u8.tobytes()
ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
ds.save_as(f"{OUT}/lossless_u8.dcm", enforce_file_format=True)
hu = pydicom.dcmread(f"{OUT}/lossless_u8.dcm").pixel_array.astype(np.float32)[None]
assert np.array_equal(hu, u8.astype(np.float32)[None])
hu.astype("<f4").tofile(f"{OUT}/lossless_u8.hu.f32")

# Damaged and inconsistent files, 32 x 32 (the encoder's 5 decomposition levels need 32 pixels).
small = s16[:32, :32].copy()


def bad(name, change):
    ds = dataset(small, signed=True, bits_stored=16)
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    stream = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    stream = change(ds, stream)
    ds.PixelData = encapsulate([stream])
    ds.save_as(f"{OUT}/bad/{name}", enforce_file_format=True)


bad("truncated.dcm", lambda ds, s: s[: len(s) // 2])
bad("corrupt.dcm", lambda ds, s: s[:200] + bytes(b ^ 0x5A for b in s[200:]))
bad("not_j2k.dcm", lambda ds, s: b"\x00\x01" * 40)


def wrong_rows(ds, s):
    ds.Rows = 16
    return s


def unsigned(ds, s):
    ds.PixelRepresentation = 0
    return s


def over_bits_stored(ds, s):
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    return openjpeg.encode(np.full((32, 32), 40000, np.uint16), bits_stored=16)


bad("wrong_rows.dcm", wrong_rows)
bad("unsigned.dcm", unsigned)
bad("over_bits_stored.dcm", over_bits_stored)
bad("rgb.dcm", lambda ds, s: openjpeg.encode(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8), photometric_interpretation=1))

# The study: 8 patients (4 a class), two slices each, J2K lossless and native.
labels = []
for p in range(8):
    patient, covid = f"JP{p + 1:02d}", p % 2 == 1
    labels.append(f"{patient},{int(covid)},{'COVID' if covid else 'NORMAL'}")
    series = pydicom.uid.generate_uid()
    for k in range(2):
        arr = np.clip(phantom(32, shift=k, lesion=covid) + 1024, -32768, 32767).round().astype(np.int16)
        ds = dataset(arr, signed=True, bits_stored=16, patient=patient, series=series, instance=k + 1, z=5.0 * k)
        for kind in ["j2k", "native"]:
            os.makedirs(f"{OUT}/study/{kind}/{patient}", exist_ok=True)
            d = ds.copy()
            if kind == "j2k":
                d.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
            d.save_as(f"{OUT}/study/{kind}/{patient}/IM{k + 1}.dcm", enforce_file_format=True)
for kind in ["j2k", "native"]:
    open(f"{OUT}/study/{kind}/labels.csv", "w").write("PatientID,label,class\n" + "\n".join(labels) + "\n")

total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
print(f"total {total} bytes")
