"""Writes rich.dcm: one small CT slice (8 x 8, HU = stored - 1024) with full
patient and study modules and a Latin-1 patient name (SpecificCharacterSet
ISO_IR 100), for DicomResultsTests: --dicom-out must copy these into its SR
and Secondary Capture objects as they are. Run with /work/venv29/bin/python."""
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = CTImageStorage
meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.543.29.3.1"
meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds = FileDataset("rich.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
ds.SpecificCharacterSet = "ISO_IR 100"
ds.SOPClassUID = CTImageStorage
ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.543.29.1"
ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.543.29.2"
ds.PatientName = "Müller^Jürgen"
ds.PatientID = "RICH-0042"
ds.PatientBirthDate = "19610203"
ds.PatientSex = "M"
ds.StudyDate = "20260115"
ds.StudyTime = "101112"
ds.AccessionNumber = "ACC-29-7"
ds.ReferringPhysicianName = "Curie^Marie"
ds.StudyID = "S29"
ds.StudyDescription = "CT chest"
ds.BodyPartExamined = "CHEST"
ds.Modality = "CT"
ds.InstanceNumber = 1
ds.ImagePositionPatient = [0, 0, 0]
ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
ds.PixelSpacing = [0.7, 0.7]
ds.RescaleIntercept = -1024
ds.RescaleSlope = 1
ds.SamplesPerPixel = 1
ds.PhotometricInterpretation = "MONOCHROME2"
ds.Rows = ds.Columns = 8
ds.BitsAllocated = ds.BitsStored = 16
ds.HighBit = 15
ds.PixelRepresentation = 1
hu = np.linspace(-1000, 200, 64).reshape(8, 8)
ds.PixelData = (hu + 1024).astype("<i2").tobytes()
ds.save_as("rich.dcm", enforce_file_format=True)
print("wrote rich.dcm")

# multiframe_sc.dcm: 3 frames of 6 x 5, Multi-frame Grayscale Word Secondary
# Capture (a class whose frames a reference may number), HU = stored - 1024.
MF = "1.2.840.10008.5.1.4.1.1.7.3"
meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = MF
meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.543.29.6.1"
meta.TransferSyntaxUID = ExplicitVRLittleEndian
mf = FileDataset("multiframe_sc.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
mf.SOPClassUID = MF
mf.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
mf.StudyInstanceUID = "1.2.826.0.1.3680043.10.543.29.4"
mf.SeriesInstanceUID = "1.2.826.0.1.3680043.10.543.29.5"
mf.PatientName = "Frames^Three"
mf.PatientID = "MF-3"
mf.Modality = "OT"
mf.InstanceNumber = 1
mf.NumberOfFrames = 3
mf.FrameIncrementPointer = 0x00181063  # FrameTime
mf.FrameTime = 100
mf.RescaleIntercept = -1024
mf.RescaleSlope = 1
mf.RescaleType = "HU"
mf.SamplesPerPixel = 1
mf.PhotometricInterpretation = "MONOCHROME2"
mf.Rows, mf.Columns = 6, 5
mf.BitsAllocated = mf.BitsStored = 16
mf.HighBit = 15
mf.PixelRepresentation = 0
frames = np.stack([np.full((6, 5), 1024 - 800 + 300 * k) for k in range(3)])
mf.PixelData = frames.astype("<u2").tobytes()
mf.save_as("multiframe_sc.dcm", enforce_file_format=True)
print("wrote multiframe_sc.dcm")
