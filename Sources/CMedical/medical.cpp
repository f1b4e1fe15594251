// DCMTK and niftilib behind the C surface of include/medical.h.
#include "medical.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/oflog/oflog.h"

extern "C" {
#include <nifti1_io.h>
}

namespace {

int fail(char *err, int errlen, const std::string &message) {
    if (err && errlen > 0) std::snprintf(err, (size_t)errlen, "%s", message.c_str());
    return 1;
}

void registerCodecs() {
    static std::once_flag once;
    std::call_once(once, [] {
        // DCMTK logs decoder problems to stderr by default; our errors carry the reason.
        OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
        DJDecoderRegistration::registerCodecs();    // JPEG baseline, extended, lossless (processes 14, SV1)
        DJLSDecoderRegistration::registerCodecs();  // JPEG-LS
        DcmRLEDecoderRegistration::registerCodecs();
    });
}

void copyString(DcmItem *ds, const DcmTagKey &key, char *dst, size_t n) {
    OFString s;
    dst[0] = 0;
    if (ds->findAndGetOFString(key, s).good()) std::snprintf(dst, n, "%s", s.c_str());
}

}  // namespace

extern "C" int dt_dicom_read(const char *path, int want_pixels, dt_dicom *out, char *err, int errlen) {
    registerCodecs();
    std::memset(out, 0, sizeof *out);
    DcmFileFormat ff;
    // Header only: elements over 4 KiB (the pixel data) stay on disk.
    OFCondition st = ff.loadFile(path, EXS_Unknown, EGL_noChange, want_pixels ? DCM_MaxReadLength : 4096, ERM_autoDetect);
    if (st.bad()) return fail(err, errlen, std::string("not a readable DICOM file (") + st.text() + ")");
    DcmDataset *ds = ff.getDataset();
    E_TransferSyntax xfer = ds->getOriginalXfer();
    DcmXfer x(xfer);
    std::snprintf(out->transfer_syntax, sizeof out->transfer_syntax, "%s", x.getXferID());
    Uint16 rows = 0, cols = 0, spp = 1, ba = 0, bs = 0, pr = 0, hb = 0;
    if (ds->findAndGetUint16(DCM_Rows, rows).bad() || ds->findAndGetUint16(DCM_Columns, cols).bad() || !ds->tagExists(DCM_PixelData))
        return fail(err, errlen, "not a DICOM image (no Rows, Columns or PixelData)");
    ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
    ds->findAndGetUint16(DCM_BitsAllocated, ba);
    if (ds->findAndGetUint16(DCM_BitsStored, bs).bad()) bs = ba;
    if (ds->findAndGetUint16(DCM_HighBit, hb).bad()) hb = bs ? bs - 1 : 0;
    ds->findAndGetUint16(DCM_PixelRepresentation, pr);
    Sint32 frames = 1;
    if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1) frames = 1;
    out->rows = rows; out->cols = cols; out->frames = frames;
    out->bits_allocated = ba; out->bits_stored = bs; out->pixel_representation = pr;
    copyString(ds, DCM_PhotometricInterpretation, out->photometric, sizeof out->photometric);
    copyString(ds, DCM_Modality, out->modality, sizeof out->modality);
    copyString(ds, DCM_PatientID, out->patient_id, sizeof out->patient_id);
    copyString(ds, DCM_StudyInstanceUID, out->study_uid, sizeof out->study_uid);
    copyString(ds, DCM_SeriesInstanceUID, out->series_uid, sizeof out->series_uid);
    copyString(ds, DCM_SOPInstanceUID, out->sop_uid, sizeof out->sop_uid);
    Sint32 instance = 0;
    if (ds->findAndGetSint32(DCM_InstanceNumber, instance).good()) out->instance_number = instance;
    Float64 slope = 1, intercept = 0;
    bool hasSlope = ds->findAndGetFloat64(DCM_RescaleSlope, slope).good();
    bool hasIntercept = ds->findAndGetFloat64(DCM_RescaleIntercept, intercept).good();
    out->calibrated = hasSlope || hasIntercept;
    if (!hasSlope) slope = 1;
    if (!hasIntercept) intercept = 0;
    out->slope = slope; out->intercept = intercept;
    Float64 wc = 0, ww = 0;
    if (ds->findAndGetFloat64(DCM_WindowCenter, wc).good() && ds->findAndGetFloat64(DCM_WindowWidth, ww).good() && ww > 0) {
        out->has_window = 1; out->window_center = wc; out->window_width = ww;
    }
    out->has_position = 1;
    for (unsigned long i = 0; i < 3; ++i)
        if (ds->findAndGetFloat64(DCM_ImagePositionPatient, out->position[i], i).bad()) out->has_position = 0;
    out->has_orientation = 1;
    for (unsigned long i = 0; i < 6; ++i)
        if (ds->findAndGetFloat64(DCM_ImageOrientationPatient, out->orientation[i], i).bad()) out->has_orientation = 0;
    if (!want_pixels) return 0;

    if (spp != 1) return fail(err, errlen, "colour DICOM (SamplesPerPixel " + std::to_string(spp) + ") is not supported: CT is grayscale");
    if (ba != 8 && ba != 16) return fail(err, errlen, "BitsAllocated " + std::to_string(ba) + " is not supported (8 or 16)");
    if (bs < 1 || bs > ba || hb + 1 < bs || hb >= ba)
        return fail(err, errlen, "inconsistent BitsStored " + std::to_string(bs) + " / HighBit " + std::to_string(hb));
    // Compressed pixel data is decoded in place (JPEG, JPEG-LS, RLE); anything else is refused by name.
    if (x.isEncapsulated() &&
        (ds->chooseRepresentation(EXS_LittleEndianExplicit, NULL).bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit)))
        return fail(err, errlen, std::string("transfer syntax ") + x.getXferID() + " (" + x.getXferName() + ") cannot be decoded here");
    const size_t n = (size_t)rows * cols * (size_t)frames;
    std::vector<long> raw(n);
    if (ba == 16) {
        const Uint16 *p = nullptr; unsigned long count = 0;
        if (ds->findAndGetUint16Array(DCM_PixelData, p, &count).bad() || !p) return fail(err, errlen, "pixel data could not be read");
        if (count < n) return fail(err, errlen, "pixel data holds " + std::to_string(count) + " values, " + std::to_string(n) + " expected (truncated?)");
        for (size_t i = 0; i < n; ++i) raw[i] = p[i];
    } else {
        const Uint8 *p = nullptr; unsigned long count = 0;
        if (ds->findAndGetUint8Array(DCM_PixelData, p, &count).bad() || !p) return fail(err, errlen, "pixel data could not be read");
        if (count < n) return fail(err, errlen, "pixel data holds " + std::to_string(count) + " bytes, " + std::to_string(n) + " expected (truncated?)");
        for (size_t i = 0; i < n; ++i) raw[i] = p[i];
    }
    const int shift = hb + 1 - bs;
    const long mask = (1L << bs) - 1;
    const bool monochrome1 = std::strncmp(out->photometric, "MONOCHROME1", 11) == 0;
    // HU-calibrated images need no inversion (the values are physical); uncalibrated MONOCHROME1 is inverted so that high = bright.
    out->inverted = monochrome1 && !out->calibrated;
    const long lo = pr ? -(1L << (bs - 1)) : 0, hi = pr ? (1L << (bs - 1)) - 1 : mask;
    out->values = (float *)std::malloc(n * sizeof(float));
    if (!out->values) return fail(err, errlen, "out of memory");
    for (size_t i = 0; i < n; ++i) {
        long v = (raw[i] >> shift) & mask;
        if (pr && (v & (1L << (bs - 1)))) v -= (1L << bs);  // two's complement in bs bits
        if (out->inverted) v = lo + hi - v;
        out->values[i] = (float)(slope * (double)v + intercept);
    }
    return 0;
}

extern "C" void dt_dicom_free(dt_dicom *d) {
    std::free(d->values);
    d->values = nullptr;
}

extern "C" int dt_dicom_write_ct(const char *path, const int16_t *stored, int rows, int cols, double intercept,
                                 const char *patient_id, const char *study_uid, const char *series_uid, const char *sop_uid,
                                 int instance_number, double z, double spacing, double window_center, double window_width,
                                 char *err, int errlen) {
    DcmFileFormat ff;
    DcmDataset *ds = ff.getDataset();
    char buf[128];
    auto put = [&](const DcmTagKey &k, const char *v) { return ds->putAndInsertString(k, v).good(); };
    bool ok = put(DCM_SOPClassUID, UID_CTImageStorage) && put(DCM_SOPInstanceUID, sop_uid) && put(DCM_StudyInstanceUID, study_uid) &&
              put(DCM_SeriesInstanceUID, series_uid) && put(DCM_PatientID, patient_id) && put(DCM_PatientName, patient_id) &&
              put(DCM_Modality, "CT") && put(DCM_PhotometricInterpretation, "MONOCHROME2") && put(DCM_RescaleSlope, "1") &&
              put(DCM_RescaleType, "HU");
    std::snprintf(buf, sizeof buf, "%g", intercept); ok = ok && put(DCM_RescaleIntercept, buf);
    std::snprintf(buf, sizeof buf, "%d", instance_number); ok = ok && put(DCM_InstanceNumber, buf);
    std::snprintf(buf, sizeof buf, "0\\0\\%g", z); ok = ok && put(DCM_ImagePositionPatient, buf);
    ok = ok && put(DCM_ImageOrientationPatient, "1\\0\\0\\0\\1\\0");
    std::snprintf(buf, sizeof buf, "%g\\%g", spacing, spacing); ok = ok && put(DCM_PixelSpacing, buf);
    std::snprintf(buf, sizeof buf, "%g", window_center); ok = ok && put(DCM_WindowCenter, buf);
    std::snprintf(buf, sizeof buf, "%g", window_width); ok = ok && put(DCM_WindowWidth, buf);
    ok = ok && ds->putAndInsertUint16(DCM_SamplesPerPixel, 1).good() && ds->putAndInsertUint16(DCM_Rows, (Uint16)rows).good() &&
         ds->putAndInsertUint16(DCM_Columns, (Uint16)cols).good() && ds->putAndInsertUint16(DCM_BitsAllocated, 16).good() &&
         ds->putAndInsertUint16(DCM_BitsStored, 16).good() && ds->putAndInsertUint16(DCM_HighBit, 15).good() &&
         ds->putAndInsertUint16(DCM_PixelRepresentation, 1).good() &&
         ds->putAndInsertUint16Array(DCM_PixelData, (const Uint16 *)stored, (unsigned long)rows * cols).good();
    if (!ok) return fail(err, errlen, "could not build the DICOM data set");
    OFCondition st = ff.saveFile(path, EXS_LittleEndianExplicit);
    if (st.bad()) return fail(err, errlen, std::string("cannot write (") + st.text() + ")");
    return 0;
}

extern "C" int dt_nifti_read(const char *path, dt_nifti *out, char *err, int errlen) {
    std::memset(out, 0, sizeof *out);
    nifti_set_debug_level(0);
    nifti_image *nim = nifti_image_read(path, 1);
    if (!nim) return fail(err, errlen, "not a readable NIfTI-1 file");
    struct Guard { nifti_image *n; ~Guard() { nifti_image_free(n); } } guard{nim};
    if (nim->ndim < 2 || nim->nx < 1 || nim->ny < 1) return fail(err, errlen, "a NIfTI volume needs at least 2 dimensions");
    if (nim->nt > 1 || nim->nu > 1) return fail(err, errlen, "4-D NIfTI (nt " + std::to_string(nim->nt) + ") is not supported: give one 3-D volume");
    const size_t n = (size_t)nim->nx * nim->ny * (size_t)std::max(nim->nz, 1);
    if (!nim->data || nim->nvox < n) return fail(err, errlen, "voxel data missing or truncated");
    double slope = nim->scl_slope, inter = nim->scl_inter;
    if (!std::isfinite(slope) || slope == 0) { slope = 1; inter = 0; }
    if (!std::isfinite(inter)) inter = 0;
    out->values = (float *)std::malloc(n * sizeof(float));
    if (!out->values) return fail(err, errlen, "out of memory");
    for (size_t i = 0; i < n; ++i) {
        double v;
        switch (nim->datatype) {
            case DT_UINT8: v = ((const uint8_t *)nim->data)[i]; break;
            case DT_INT8: v = ((const int8_t *)nim->data)[i]; break;
            case DT_INT16: v = ((const int16_t *)nim->data)[i]; break;
            case DT_UINT16: v = ((const uint16_t *)nim->data)[i]; break;
            case DT_INT32: v = ((const int32_t *)nim->data)[i]; break;
            case DT_UINT32: v = ((const uint32_t *)nim->data)[i]; break;
            case DT_FLOAT32: v = ((const float *)nim->data)[i]; break;
            case DT_FLOAT64: v = ((const double *)nim->data)[i]; break;
            default:
                dt_nifti_free(out);
                return fail(err, errlen, std::string("NIfTI datatype ") + nifti_datatype_string(nim->datatype) + " is not supported");
        }
        out->values[i] = (float)(slope * v + inter);
    }
    out->nx = nim->nx; out->ny = nim->ny; out->nz = std::max(nim->nz, 1);
    out->slope = slope; out->intercept = inter;
    out->slice_axis = 2;
    mat44 m = nim->sform_code > 0 ? nim->sto_xyz : nim->qform_code > 0 ? nim->qto_xyz : nim->qto_xyz;
    if (nim->sform_code > 0 || nim->qform_code > 0) {
        int code[3];
        nifti_mat44_to_orientation(m, &code[0], &code[1], &code[2]);
        for (int a = 0; a < 3; ++a)
            if (code[a] == NIFTI_I2S || code[a] == NIFTI_S2I) out->slice_axis = a;
    }
    return 0;
}

extern "C" void dt_nifti_free(dt_nifti *v) {
    std::free(v->values);
    v->values = nullptr;
}

extern "C" int dt_nifti_write(const char *path, const int16_t *voxels, int nx, int ny, int nz, double intercept, double spacing,
                              char *err, int errlen) {
    int dims[8] = {3, nx, ny, nz, 1, 1, 1, 1};
    nifti_image *nim = nifti_make_new_nim(dims, DT_INT16, 1);  // 1: allocate the voxels
    if (!nim || !nim->data) return fail(err, errlen, "could not make a NIfTI image");
    struct Guard { nifti_image *n; ~Guard() { nifti_image_free(n); } } guard{nim};
    if (nifti_set_filenames(nim, path, 0, 1) != 0) return fail(err, errlen, "bad NIfTI file name (use .nii or .nii.gz)");
    std::memcpy(nim->data, voxels, (size_t)nx * ny * nz * sizeof(int16_t));
    nim->scl_slope = 1; nim->scl_inter = (float)intercept;
    nim->dx = nim->dy = nim->dz = (float)spacing;
    nim->pixdim[1] = nim->pixdim[2] = nim->pixdim[3] = (float)spacing;
    nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;  // identity rotation: i L->R... k I->S
    nim->quatern_b = nim->quatern_c = nim->quatern_d = 0; nim->qfac = 1;
    nim->qto_xyz = nifti_quatern_to_mat44(0, 0, 0, 0, 0, 0, nim->dx, nim->dy, nim->dz, 1);
    nim->xyz_units = NIFTI_UNITS_MM;
    nifti_image_write(nim);
    FILE *f = std::fopen(path, "rb");
    if (!f) return fail(err, errlen, "cannot write");
    std::fclose(f);
    return 0;
}
