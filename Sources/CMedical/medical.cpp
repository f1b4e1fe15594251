// DCMTK and niftilib behind the C surface of include/medical.h.
//
// Hostile files are the rule here: a 3 KB DICOM may claim 65535 x 65535
// pixels or 2^31 - 1 frames, a 9 KB .nii half a gigabyte, a 2 MB .nii.gz
// gigabytes once inflated. So every size is checked from the header, against
// the limits and (where it can be) against the bytes the file really holds,
// before anything is allocated; a file whose data end early is an error,
// never zero-filled; and no C++ exception crosses extern "C" (each entry
// point runs its body through `guarded`, which turns them into the message).
#include "guarded.hpp"
#include "medical.h"
#include "j2k.h"

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include <sys/stat.h>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmdata/dccodec.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/oflog/oflog.h"
#include "dcmtk/oflog/spi/logevent.h"

extern "C" {
#include <nifti1_io.h>
}

namespace {

using cmedical::fail;
using cmedical::Refusal;
using cmedical::refuse;
using cmedical::guarded;

std::string str(long long v) { return std::to_string(v); }
std::string num(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

/// What a path that is not a regular file is, in the words of DatasetSource.regularFileProblem.
const char *kind(mode_t mode) {
    return S_ISFIFO(mode) ? "a FIFO" : S_ISDIR(mode) ? "a folder" : S_ISSOCK(mode) ? "a socket"
           : S_ISCHR(mode) || S_ISBLK(mode) ? "a device" : "of an unknown kind";
}

/// The size of `path`, which must be a regular file (links followed). Called
/// before anything opens it: open() on a FIFO blocks until a writer comes.
long long regularFileSize(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) refuse(std::string("cannot read (") + std::strerror(errno) + ")");
    if (!S_ISREG(st.st_mode)) refuse(std::string("not a regular file (") + kind(st.st_mode) + ")");
    return (long long)st.st_size;
}

/// Frames (or slices) of width x height against the limits: per frame, then in all.
void checkExtent(const dt_limits &lim, unsigned long long width, unsigned long long height, unsigned long long frames,
                 const char *what) {
    const unsigned long long area = width * height;  // both < 2^16 (DICOM) or 2^15 (NIfTI-1): no overflow
    if ((long long)area > lim.max_pixels)
        refuse(str(width) + "x" + str(height) + " pixels is over the limit of " + str(lim.max_pixels) + " pixels (--max-pixels)");
    const unsigned long long total = area * frames;  // < 2^32 x 2^31
    if ((long long)total > lim.max_voxels)
        refuse(str(frames) + " " + what + " of " + str(width) + "x" + str(height) + " make " + str(total) + " pixels, over the limit of " +
               str(lim.max_voxels) + " pixels in one file (4 x --max-pixels, at least 2^28)");
}

// MARK: decoder messages

/// DCMTK's decoders report a damaged stream that they could still finish (libijg's
/// "Corrupt JPEG data: premature end of data segment", with the rest of the image
/// grey; JPEG-LS "bitstream invalid or incomplete"; an RLE stripe "filling remaining
/// pixels") only as log warnings, and the reason of a failed decode as log errors.
/// While a thread decodes, its first such message is kept here: a decode that warned
/// is refused as corrupt, as our libjpeg path refuses the same bytes in a .jpg.
thread_local std::string *decodeMessage = nullptr;

class DecodeMessageAppender : public dcmtk::log4cplus::Appender {
public:
    ~DecodeMessageAppender() override { destructorImpl(); }
    void close() override {}

protected:
    void append(const dcmtk::log4cplus::spi::InternalLoggingEvent &event) override {
        if (decodeMessage && decodeMessage->empty()) *decodeMessage = event.getMessage().c_str();
    }
};

/// Collects the decoders' messages on this thread for its lifetime.
struct DecodeMessages {
    std::string first;
    DecodeMessages() { decodeMessage = &first; }
    ~DecodeMessages() { decodeMessage = nullptr; }
};

void registerCodecs() {
    static std::once_flag once;
    std::call_once(once, [] {
        // DCMTK logs to stderr by default; our errors carry the reason. The decoders'
        // loggers go to DecodeMessageAppender only (warnings and up), never to stderr.
        OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
        dcmtk::log4cplus::SharedAppenderPtr appender(new DecodeMessageAppender);
        for (const char *name : {"dcmtk.dcmjpeg", "dcmtk.dcmjpls", "dcmtk.dcmdata"}) {
            OFLogger logger = OFLog::getLogger(name);
            logger.setLogLevel(OFLogger::WARN_LOG_LEVEL);
            logger.setAdditivity(false);
            logger.addAppender(appender);
        }
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

/// A DS attribute: false when absent or empty; its value must be a finite number.
bool decimal(DcmItem *ds, const DcmTagKey &key, const char *name, double &v) {
    if (!ds->tagExistsWithValue(key)) return false;
    OFString text;
    ds->findAndGetOFString(key, text);
    Float64 f = 0;
    if (ds->findAndGetFloat64(key, f).bad() || !std::isfinite(f))
        refuse(std::string(name) + " '" + text.c_str() + "' is not a finite number");
    v = f;
    return true;
}

/// What the pixel conversion needs, read (again, after decoding) from the data set.
struct Bits {
    Uint16 allocated = 0, stored = 0, high = 0, representation = 0;
    long lo = 0, hi = 0;  // the stored range

    void read(DcmItem *ds) {
        allocated = stored = high = representation = 0;
        ds->findAndGetUint16(DCM_BitsAllocated, allocated);
        if (ds->findAndGetUint16(DCM_BitsStored, stored).bad()) stored = allocated;
        if (ds->findAndGetUint16(DCM_HighBit, high).bad()) high = stored ? stored - 1 : 0;
        ds->findAndGetUint16(DCM_PixelRepresentation, representation);
        if (allocated != 8 && allocated != 16) refuse("BitsAllocated " + str(allocated) + " is not supported (8 or 16)");
        if (stored < 1 || stored > allocated || high + 1 < stored || high >= allocated)
            refuse("inconsistent BitsStored " + str(stored) + " / HighBit " + str(high));
        lo = representation ? -(1L << (stored - 1)) : 0;
        hi = representation ? (1L << (stored - 1)) - 1 : (1L << stored) - 1;
    }
};

/// The decoded file behind dt_dicom.handle.
struct DicomPixels {
    std::unique_ptr<DcmFileFormat> file;
    Bits bits;
    const Uint16 *p16 = nullptr;
    const Uint8 *p8 = nullptr;
    std::vector<Uint16> decoded16;  // JPEG 2000 frames, decoded here (j2k.cpp) rather than by a DCMTK codec
    std::vector<Uint8> decoded8;
};

/// Every frame of JPEG 2000 pixel data through OpenJPEG into `px`, as stored values in BitsStored bits.
void decodeJPEG2000(DcmPixelData *pixelData, E_TransferSyntax xfer, DicomPixels &px, Uint16 rows, Uint16 cols, Sint32 frames) {
    DcmPixelSequence *sequence = nullptr;
    if (pixelData->getEncapsulatedRepresentation(xfer, nullptr, sequence).bad() || !sequence) refuse("compressed pixel data without fragments");
    const size_t n = (size_t)rows * cols * (size_t)frames;
    void *dst;
    if (px.bits.allocated == 16) { px.decoded16.resize(n); dst = px.decoded16.data(); }
    else { px.decoded8.resize(n); dst = px.decoded8.data(); }
    std::string why;
    if (!dt_j2k_decode_frames(sequence, frames, rows, cols, px.bits.allocated, px.bits.stored, px.bits.representation, dst, why)) refuse(why);
    px.bits.high = px.bits.stored - 1;  // samples are plain integers: nothing to shift
    px.p16 = px.bits.allocated == 16 ? px.decoded16.data() : nullptr;
    px.p8 = px.bits.allocated == 8 ? px.decoded8.data() : nullptr;
}

/// slope * stored + intercept must be a float for every stored value (1e300 or
/// a NaN would make a flat slice), and a slope of 0 makes every pixel the same.
void checkRescale(double slope, double intercept, const Bits &b) {
    if (slope == 0) refuse("RescaleSlope 0 makes every pixel the same value");
    const double a = slope * (double)b.lo + intercept, z = slope * (double)b.hi + intercept;
    if (!(std::fabs(a) <= FLT_MAX && std::fabs(z) <= FLT_MAX))
        refuse("RescaleSlope " + num(slope) + " with RescaleIntercept " + num(intercept) + " takes stored values " + str(b.lo) + "..." +
               str(b.hi) + " beyond float32");
}

}  // namespace

// MARK: DICOM

extern "C" int dt_dicom_read(const char *path, int want_pixels, dt_limits limits, dt_dicom *out, char *err, int errlen) {
    std::memset(out, 0, sizeof *out);
    return guarded(err, errlen, [&] {
        registerCodecs();
        const long long fileSize = regularFileSize(path);
        auto pixels = std::make_unique<DicomPixels>();
        pixels->file = std::make_unique<DcmFileFormat>();
        // Elements over 4 KiB (the pixel data) stay on disk until asked for, after the checks below.
        OFCondition st = pixels->file->loadFile(path, EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
        if (st.bad()) refuse(std::string("not a readable DICOM file (") + st.text() + ")");
        DcmDataset *ds = pixels->file->getDataset();
        const E_TransferSyntax xfer = ds->getOriginalXfer();
        DcmXfer x(xfer);
        // DCMTK 3.6.7 predates HTJ2K (1.2.840.10008.1.2.4.201-203): it reads such a file as explicit VR little
        // endian, its pixel data a sequence of fragments kept under that syntax. The meta header's UID tells.
        OFString declared;
        pixels->file->getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, declared);
        const bool unknownSyntax = !declared.empty() && DcmXfer(declared.c_str()).getXfer() == EXS_Unknown;
        const std::string syntax = unknownSyntax ? declared.c_str() : x.getXferID();
        std::snprintf(out->transfer_syntax, sizeof out->transfer_syntax, "%s", syntax.c_str());
        Uint16 rows = 0, cols = 0, spp = 1;
        DcmElement *pixelData = nullptr;
        if (ds->findAndGetUint16(DCM_Rows, rows).bad() || ds->findAndGetUint16(DCM_Columns, cols).bad() ||
            ds->findAndGetElement(DCM_PixelData, pixelData).bad() || !pixelData)
            refuse("not a DICOM image (no Rows, Columns or PixelData)");
        // (7FE0,0010) is a DcmPixelData only with VR OB, OW or ox; a file may declare it LO, SQ or UN,
        // and the compressed path below casts it.
        if (pixelData->ident() != EVR_PixelData)
            refuse(std::string("PixelData has VR ") + DcmVR(pixelData->getVR()).getVRName() + ", not OB or OW");
        DcmPixelSequence *fragments = nullptr;  // an unknown syntax is compressed when DCMTK found fragments, native otherwise
        const bool encapsulated = x.isEncapsulated() || (unknownSyntax && static_cast<DcmPixelData *>(pixelData)->
                                                             getEncapsulatedRepresentation(xfer, nullptr, fragments).good() && fragments);
        if (rows == 0 || cols == 0) refuse("Rows " + str(rows) + ", Columns " + str(cols) + ": an image needs one row and one column at least");
        Sint32 frames = 1;
        if (ds->tagExistsWithValue(DCM_NumberOfFrames)) {
            OFString text;
            ds->findAndGetOFString(DCM_NumberOfFrames, text);
            if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1)
                refuse(std::string("NumberOfFrames '") + text.c_str() + "' is not a frame count (1 or more)");
        }
        checkExtent(limits, cols, rows, (unsigned long long)frames, "frames");
        out->rows = rows; out->cols = cols; out->frames = frames;
        ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
        if (spp != 1) refuse("colour DICOM (SamplesPerPixel " + str(spp) + ") is not supported: CT is grayscale");
        pixels->bits.read(ds);
        copyString(ds, DCM_PhotometricInterpretation, out->photometric, sizeof out->photometric);
        copyString(ds, DCM_Modality, out->modality, sizeof out->modality);
        copyString(ds, DCM_PatientID, out->patient_id, sizeof out->patient_id);
        copyString(ds, DCM_StudyInstanceUID, out->study_uid, sizeof out->study_uid);
        copyString(ds, DCM_SeriesInstanceUID, out->series_uid, sizeof out->series_uid);
        copyString(ds, DCM_SOPInstanceUID, out->sop_uid, sizeof out->sop_uid);
        Sint32 instance = 0;
        if (ds->findAndGetSint32(DCM_InstanceNumber, instance).good()) out->instance_number = instance;
        double slope = 1, intercept = 0;
        const bool hasSlope = decimal(ds, DCM_RescaleSlope, "RescaleSlope", slope);
        const bool hasIntercept = decimal(ds, DCM_RescaleIntercept, "RescaleIntercept", intercept);
        out->calibrated = hasSlope || hasIntercept;
        checkRescale(slope, intercept, pixels->bits);
        out->slope = slope; out->intercept = intercept;
        Float64 wc = 0, ww = 0;
        if (ds->findAndGetFloat64(DCM_WindowCenter, wc).good() && ds->findAndGetFloat64(DCM_WindowWidth, ww).good() &&
            std::isfinite(wc) && std::isfinite(ww) && ww > 0) {
            out->has_window = 1; out->window_center = wc; out->window_width = ww;
        }
        out->has_position = 1;
        for (unsigned long i = 0; i < 3; ++i)
            if (ds->findAndGetFloat64(DCM_ImagePositionPatient, out->position[i], i).bad()) out->has_position = 0;
        out->has_orientation = 1;
        for (unsigned long i = 0; i < 6; ++i)
            if (ds->findAndGetFloat64(DCM_ImageOrientationPatient, out->orientation[i], i).bad()) out->has_orientation = 0;

        const unsigned long long n = (unsigned long long)rows * cols * (unsigned long long)frames;
        if (encapsulated) {
            // Compressed: each frame needs a fragment at least (so that a listing of frames
            // grows with the file); the decoded size is bounded by the limits above.
            DcmPixelSequence *sequence = nullptr;
            if (static_cast<DcmPixelData *>(pixelData)->getEncapsulatedRepresentation(xfer, nullptr, sequence).bad() || !sequence)
                refuse("compressed pixel data without fragments");
            const unsigned long fragments = sequence->card() > 0 ? sequence->card() - 1 : 0;  // the first item is the offset table
            if (fragments < (unsigned long)frames)
                refuse(str(frames) + " frames in " + str((long long)fragments) + " compressed fragments (truncated?)");
        } else {
            const unsigned long long need = n * (pixels->bits.allocated / 8), have = pixelData->getLength();
            if ((long long)have > fileSize) refuse("pixel data claims " + str(have) + " bytes in a file of " + str(fileSize) + " (truncated?)");
            if (have < need)
                refuse("pixel data holds " + str(have) + " bytes; " + str(frames) + " frame(s) of " + str(cols) + "x" + str(rows) + " at " +
                       str(pixels->bits.allocated) + " bits need " + str(need) + " (truncated, or Rows/Columns/NumberOfFrames wrong)");
        }
        out->bits_allocated = pixels->bits.allocated; out->bits_stored = pixels->bits.stored;
        out->pixel_representation = pixels->bits.representation;
        if (!want_pixels) return;

        const bool j2k = encapsulated && dt_j2k_handles(syntax.c_str());
        if (j2k) {
            decodeJPEG2000(static_cast<DcmPixelData *>(pixelData), xfer, *pixels, rows, cols, frames);
        } else if (encapsulated) {
            // A syntax without a decoder is unsupported; one whose decoder fails or warns is corrupt.
            if (unknownSyntax) refuse("transfer syntax " + syntax + " (unknown to DCMTK " OFFIS_DCMTK_VERSION_STRING ") cannot be decoded here");
            if (!DcmCodecList::canChangeCoding(xfer, EXS_LittleEndianExplicit))
                refuse(std::string("transfer syntax ") + x.getXferID() + " (" + x.getXferName() + ") cannot be decoded here");
            DecodeMessages messages;
            st = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
            if (st.bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit) || !messages.first.empty())
                refuse("decoding failed (corrupt compressed pixel data: " + (messages.first.empty() ? std::string(st.text()) : messages.first) +
                       ")");
            pixels->bits.read(ds);  // the decoder sets BitsAllocated/Stored from the stream
            checkRescale(slope, intercept, pixels->bits);
        }
        unsigned long count = 0;
        if (j2k) {
            count = (unsigned long)n;  // every frame decoded above
        } else if (pixels->bits.allocated == 16) {
            if (ds->findAndGetUint16Array(DCM_PixelData, pixels->p16, &count).bad() || !pixels->p16) refuse("pixel data could not be read");
        } else {
            if (ds->findAndGetUint8Array(DCM_PixelData, pixels->p8, &count).bad() || !pixels->p8) refuse("pixel data could not be read");
        }
        if (count < n)
            refuse("pixel data holds " + str((long long)count) + " values, " + str((long long)n) + " expected (truncated?)");
        // HU-calibrated images need no inversion (the values are physical); uncalibrated MONOCHROME1 is inverted so that high = bright.
        out->inverted = std::strncmp(out->photometric, "MONOCHROME1", 11) == 0 && !out->calibrated;
        out->bits_allocated = pixels->bits.allocated; out->bits_stored = pixels->bits.stored;
        out->pixel_representation = pixels->bits.representation;
        out->handle = pixels.release();
    });
}

extern "C" int dt_dicom_values(const dt_dicom *d, float *dst, int64_t count, char *err, int errlen) {
    return guarded(err, errlen, [&] {
        const DicomPixels *px = static_cast<const DicomPixels *>(d->handle);
        const long long n = (long long)d->rows * d->cols * (long long)d->frames;
        if (!px || !dst || count != n) refuse("pixels were not read");
        const Bits &b = px->bits;
        const int shift = b.high + 1 - b.stored;
        const long mask = (1L << b.stored) - 1;
        const double slope = d->slope, intercept = d->intercept;
        for (long long i = 0; i < n; ++i) {
            long v = ((long)(b.allocated == 16 ? px->p16[i] : px->p8[i]) >> shift) & mask;
            if (b.representation && (v & (1L << (b.stored - 1)))) v -= (1L << b.stored);  // two's complement in BitsStored bits
            if (d->inverted) v = b.lo + b.hi - v;
            dst[i] = (float)(slope * (double)v + intercept);  // finite: checkRescale bounded both ends of the stored range
        }
    });
}

extern "C" void dt_dicom_free(dt_dicom *d) {
    delete static_cast<DicomPixels *>(d->handle);
    d->handle = nullptr;
}

extern "C" int dt_dicom_write_ct(const char *path, const int16_t *stored, int rows, int cols, double intercept,
                                 const char *patient_id, const char *study_uid, const char *series_uid, const char *sop_uid,
                                 int instance_number, double z, double spacing, double window_center, double window_width,
                                 char *err, int errlen) {
    return guarded(err, errlen, [&] {
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
        if (!ok) refuse("could not build the DICOM data set");
        OFCondition st = ff.saveFile(path, EXS_LittleEndianExplicit);
        if (st.bad()) refuse(std::string("cannot write (") + st.text() + ")");
    });
}

// MARK: NIfTI

namespace {

/// The checked header behind dt_nifti.handle.
struct NiftiHeader {
    std::string path;
    bool compressed = false, swapped = false;
    int datatype = 0, bytesPerVoxel = 0;
    long long offset = 0;
};

/// Bytes per voxel of the datatypes read here (0: not supported), and their range (for the integer ones).
int voxelBytes(int datatype, double &lo, double &hi) {
    switch (datatype) {
        case DT_UINT8: lo = 0; hi = 255; return 1;
        case DT_INT8: lo = -128; hi = 127; return 1;
        case DT_INT16: lo = -32768; hi = 32767; return 2;
        case DT_UINT16: lo = 0; hi = 65535; return 2;
        case DT_INT32: lo = -2147483648.0; hi = 2147483647.0; return 4;
        case DT_UINT32: lo = 0; hi = 4294967295.0; return 4;
        case DT_FLOAT32: lo = hi = 0; return 4;  // floats: each value is checked as it is read
        case DT_FLOAT64: lo = hi = 0; return 8;
        default: return 0;
    }
}

}  // namespace

extern "C" int dt_nifti_read(const char *path, dt_limits limits, dt_nifti *out, char *err, int errlen) {
    std::memset(out, 0, sizeof *out);
    return guarded(err, errlen, [&] {
        nifti_set_debug_level(0);
        const long long fileSize = regularFileSize(path);
        auto header = std::make_unique<NiftiHeader>();
        header->path = path;
        header->compressed = nifti_is_gzfile(path) != 0;
        // The 348-byte header only: nifti_image_read would also read the extensions
        // (sized by vox_offset, a bomb of their own inside a .gz) and, to load the
        // voxels, allocate what the header claims and zero-fill what the file lacks.
        int swapped = 0;
        std::unique_ptr<nifti_1_header, void (*)(void *)> h(nifti_read_header(path, &swapped, 1), std::free);
        if (!h) refuse("not a readable NIfTI-1 file");
        header->swapped = swapped != 0;
        if (!NIFTI_ONEFILE(*h)) refuse("not a single-file NIfTI-1 image (its magic is not 'n+1')");
        const int ndim = h->dim[0];
        std::string dims;
        for (int i = 1; i <= ndim && i <= 7; ++i) dims += (i > 1 ? "x" : "") + str(h->dim[i]);
        if (ndim < 2) refuse("a NIfTI volume needs at least 2 dimensions (dim " + dims + ")");
        for (int i = 1; i <= ndim && i <= 7; ++i)
            if (h->dim[i] < 1) refuse("dim[" + str(i) + "] is " + str(h->dim[i]) + " (dim " + dims + ")");
        // 4-D and up (time, or dim[5..7] vectors/tensors) would be cut to their first volume: refused instead.
        for (int i = 4; i <= ndim && i <= 7; ++i)
            if (h->dim[i] > 1) refuse(str(ndim) + "-D NIfTI (dim " + dims + ") is not supported: give one 3-D volume");
        const long long nx = h->dim[1], ny = h->dim[2], nz = ndim >= 3 ? h->dim[3] : 1;
        double lo = 0, hi = 0;
        header->datatype = h->datatype;
        header->bytesPerVoxel = voxelBytes(h->datatype, lo, hi);
        if (header->bytesPerVoxel == 0) refuse(std::string("NIfTI datatype ") + nifti_datatype_string(h->datatype) + " is not supported");
        if (!(std::isfinite(h->vox_offset) && h->vox_offset >= 0 && h->vox_offset < 2147483648.0))
            refuse("vox_offset " + num(h->vox_offset) + " is not a file offset");
        header->offset = std::max<long long>((long long)h->vox_offset, (long long)sizeof(nifti_1_header));  // as niftilib reads it

        // The slice axis: the one closest to inferior-superior in the qform/sform (the third without them).
        std::unique_ptr<nifti_image, void (*)(nifti_image *)> nim(nifti_convert_nhdr2nim(*h, path), nifti_image_free);
        if (!nim) refuse("not a readable NIfTI-1 file");
        out->slice_axis = 2;
        if (nim->sform_code > 0 || nim->qform_code > 0) {
            mat44 m = nim->sform_code > 0 ? nim->sto_xyz : nim->qto_xyz;
            int code[3];
            nifti_mat44_to_orientation(m, &code[0], &code[1], &code[2]);
            for (int a = 0; a < 3; ++a)
                if (code[a] == NIFTI_I2S || code[a] == NIFTI_S2I) out->slice_axis = a;
        }
        const long long extent[3] = {nx, ny, nz};
        const int a0 = out->slice_axis == 0 ? 1 : 0, a1 = out->slice_axis == 2 ? 1 : 2;
        checkExtent(limits, extent[a0], extent[a1], extent[out->slice_axis], "slices");
        const long long bytes = nx * ny * nz * header->bytesPerVoxel;
        if (!header->compressed && header->offset + bytes > fileSize)
            refuse("voxel data would end at byte " + str(header->offset + bytes) + " (vox_offset " + str(header->offset) + " + dim " + dims +
                   " x " + str(header->bytesPerVoxel) + " bytes), the file has " + str(fileSize) + " (truncated?)");

        // NIfTI-1: a scl_slope of 0 means no scaling (scl_inter is then unused); a
        // non-finite one is read the same way, as niftilib and nibabel read it (such
        // headers exist: nibabel's own examples show scl_slope nan). A finite slope with
        // a non-finite scl_inter has no reading and is refused.
        double slope = h->scl_slope, inter = h->scl_inter;
        if (slope == 0 || !std::isfinite(slope)) {
            slope = 1; inter = 0;
        } else if (!std::isfinite(inter)) {
            refuse("scl_inter " + num(inter) + " is not a finite number");
        }
        if (lo != hi && !(std::fabs(slope * lo + inter) <= FLT_MAX && std::fabs(slope * hi + inter) <= FLT_MAX))
            refuse("scl_slope " + num(slope) + " with scl_inter " + num(inter) + " takes " + nifti_datatype_string(h->datatype) +
                   " values beyond float32");
        out->nx = (int)nx; out->ny = (int)ny; out->nz = (int)nz;
        out->slope = slope; out->intercept = inter;
        out->handle = header.release();
    });
}

extern "C" int dt_nifti_values(const dt_nifti *v, float *dst, int64_t count, char *err, int errlen) {
    return guarded(err, errlen, [&] {
        const NiftiHeader *h = static_cast<const NiftiHeader *>(v->handle);
        const long long n = (long long)v->nx * v->ny * (long long)v->nz;
        if (!h || !dst || count != n) refuse("the header was not read");
        regularFileSize(h->path.c_str());
        znzFile fp = znzopen(h->path.c_str(), "rb", h->compressed ? 1 : 0);
        if (znz_isnull(fp)) refuse(std::string("cannot open (") + std::strerror(errno) + ")");
        struct Closer { znzFile &f; ~Closer() { znzclose(f); } } closer{fp};
        if (znzseek(fp, h->offset, SEEK_SET) < 0) refuse("vox_offset " + str(h->offset) + " is past the end of the data");
        // Read in pieces into the caller's floats: the voxels are held once, whatever the datatype.
        const size_t B = (size_t)h->bytesPerVoxel, chunk = 1 << 18;
        std::vector<unsigned char> buf(chunk * B);
        const double slope = v->slope, inter = v->intercept;
        for (long long done = 0; done < n;) {
            const size_t want = (size_t)std::min<long long>((long long)chunk, n - done);
            // Size 1: znzread counts whole items, and on a short .gz read would count a partial one as read.
            const size_t got = znzread(buf.data(), 1, want * B, fp);
            if (got == (size_t)-1) refuse("voxel data corrupt after " + str(done) + " of " + str(n) + " voxels (the stream does not inflate)");
            if (got != want * B) refuse("voxel data ends after " + str(done + (long long)(got / B)) + " of " + str(n) + " voxels (truncated)");
            if (h->swapped && B > 1) nifti_swap_Nbytes(want, (int)B, buf.data());
            const unsigned char *p = buf.data();
            for (size_t i = 0; i < want; ++i, p += B) {
                double x;
                switch (h->datatype) {
                    case DT_UINT8: x = *p; break;
                    case DT_INT8: x = *(const int8_t *)p; break;
                    case DT_INT16: { int16_t t; std::memcpy(&t, p, 2); x = t; break; }
                    case DT_UINT16: { uint16_t t; std::memcpy(&t, p, 2); x = t; break; }
                    case DT_INT32: { int32_t t; std::memcpy(&t, p, 4); x = t; break; }
                    case DT_UINT32: { uint32_t t; std::memcpy(&t, p, 4); x = t; break; }
                    case DT_FLOAT32: { float t; std::memcpy(&t, p, 4); x = t; break; }
                    default: { double t; std::memcpy(&t, p, 8); x = t; break; }
                }
                const float f = (float)(slope * x + inter);
                if (!std::isfinite(f))
                    refuse("voxel " + str(done + (long long)i) + " is " + num(x) + ", " + num(slope * x + inter) +
                           " once scaled: not a finite float32");
                dst[done + (long long)i] = f;
            }
            done += (long long)want;
        }
    });
}

extern "C" void dt_nifti_free(dt_nifti *v) {
    delete static_cast<NiftiHeader *>(v->handle);
    v->handle = nullptr;
}

extern "C" int dt_nifti_write(const char *path, const int16_t *voxels, int nx, int ny, int nz, double intercept, double spacing,
                              char *err, int errlen) {
    return guarded(err, errlen, [&] {
        int dims[8] = {3, nx, ny, nz, 1, 1, 1, 1};
        nifti_image *nim = nifti_make_new_nim(dims, DT_INT16, 1);  // 1: allocate the voxels
        if (!nim || !nim->data) refuse("could not make a NIfTI image");
        struct Guard { nifti_image *n; ~Guard() { nifti_image_free(n); } } guard{nim};
        if (nifti_set_filenames(nim, path, 0, 1) != 0) refuse("bad NIfTI file name (use .nii or .nii.gz)");
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
        if (!f) refuse("cannot write");
        std::fclose(f);
    });
}
