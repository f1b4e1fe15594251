// JPEG 2000 frames of DICOM pixel data through OpenJPEG (include/j2k.h).
//
// As in medical.cpp, the bytes are hostile until checked: the codestream's
// header (image size, components, precision, sign) is compared with the data
// set's Rows, Columns, BitsAllocated and PixelRepresentation before anything
// is decoded, so a frame can never make OpenJPEG allocate more than the data
// set (already checked against the limits) says; a decoder error or warning
// (OpenJPEG in strict mode fails on a truncated codestream) is a refusal, and
// every decoded sample must fit BitsStored. No C++ exception leaves this file.
#include "j2k.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <openjpeg.h>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"

namespace {

std::string str(long long v) { return std::to_string(v); }

/// The bytes of one frame, read by OpenJPEG through the callbacks below.
struct Source {
    const uint8_t *data;
    size_t size, pos;
};

OPJ_SIZE_T readBytes(void *buffer, OPJ_SIZE_T n, void *user) {
    Source *s = static_cast<Source *>(user);
    if (s->pos >= s->size) return (OPJ_SIZE_T)-1;  // the end of the stream, in OpenJPEG's words
    n = std::min<OPJ_SIZE_T>(n, s->size - s->pos);
    std::memcpy(buffer, s->data + s->pos, n);
    s->pos += n;
    return n;
}

OPJ_OFF_T skipBytes(OPJ_OFF_T n, void *user) {
    Source *s = static_cast<Source *>(user);
    if (n < 0) {
        if ((size_t)-n > s->pos) return -1;
        s->pos -= (size_t)-n;
        return n;
    }
    const size_t step = std::min<size_t>((size_t)n, s->size - s->pos);  // past the end: stop there
    if (step == 0 && n > 0) return -1;                                  // at the end: no progress, never a loop
    s->pos += step;
    return (OPJ_OFF_T)step;
}

OPJ_BOOL seekTo(OPJ_OFF_T n, void *user) {
    Source *s = static_cast<Source *>(user);
    if (n < 0 || (size_t)n > s->size) return OPJ_FALSE;
    s->pos = (size_t)n;
    return OPJ_TRUE;
}

/// OpenJPEG's first error and first warning (each ends in a newline, dropped here).
struct Messages {
    std::string error, warning;
};

void keep(std::string &slot, const char *msg) {
    if (!slot.empty() || !msg) return;
    slot = msg;
    while (!slot.empty() && (slot.back() == '\n' || slot.back() == ' ')) slot.pop_back();
}

void onError(const char *msg, void *user) { keep(static_cast<Messages *>(user)->error, msg); }
void onWarning(const char *msg, void *user) { keep(static_cast<Messages *>(user)->warning, msg); }

const uint8_t kCodestream[4] = {0xFF, 0x4F, 0xFF, 0x51};  // SOC then SIZ: a J2K codestream
const uint8_t kJP2[12] = {0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A};  // the JP2 signature box

bool startsWith(const uint8_t *data, size_t size, const uint8_t *magic, size_t n) {
    return size >= n && std::memcmp(data, magic, n) == 0;
}

/// One frame into dst; an empty string on success, else the reason.
std::string decode(const uint8_t *data, size_t size, int rows, int cols, int bitsAllocated, int bitsStored, bool isSigned, void *dst) {
    OPJ_CODEC_FORMAT format;
    if (startsWith(data, size, kCodestream, sizeof kCodestream)) format = OPJ_CODEC_J2K;
    else if (startsWith(data, size, kJP2, sizeof kJP2)) format = OPJ_CODEC_JP2;
    else {
        char head[40] = "";
        for (size_t i = 0; i < std::min<size_t>(size, 4); ++i) std::snprintf(head + 3 * i, 4, "%02X ", data[i]);
        return "decoding failed (corrupt compressed pixel data: not a JPEG 2000 codestream or JP2 file; it starts " +
               (size ? std::string(head, 3 * std::min<size_t>(size, 4) - 1) : std::string("empty")) + ")";
    }
    Messages messages;
    auto corrupt = [&](const char *what) {
        const std::string &why = !messages.error.empty() ? messages.error : !messages.warning.empty() ? messages.warning : std::string(what);
        return "decoding failed (corrupt compressed pixel data: JPEG 2000: " + why + ")";
    };
    struct Owned {
        opj_codec_t *codec = nullptr;
        opj_stream_t *stream = nullptr;
        opj_image_t *image = nullptr;
        ~Owned() {
            if (image) opj_image_destroy(image);
            if (stream) opj_stream_destroy(stream);
            if (codec) opj_destroy_codec(codec);
        }
    } o;
    Source source{data, size, 0};
    o.codec = opj_create_decompress(format);
    o.stream = opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_TRUE);
    if (!o.codec || !o.stream) return "out of memory";
    opj_stream_set_read_function(o.stream, readBytes);
    opj_stream_set_skip_function(o.stream, skipBytes);
    opj_stream_set_seek_function(o.stream, seekTo);
    opj_stream_set_user_data(o.stream, &source, nullptr);
    opj_stream_set_user_data_length(o.stream, size);
    opj_set_error_handler(o.codec, onError, &messages);
    opj_set_warning_handler(o.codec, onWarning, &messages);
    opj_set_info_handler(o.codec, nullptr, nullptr);
    opj_dparameters_t parameters;
    opj_set_default_decoder_parameters(&parameters);
    if (!opj_setup_decoder(o.codec, &parameters) || !opj_decoder_set_strict_mode(o.codec, OPJ_TRUE))
        return "the JPEG 2000 decoder could not be set up";
    if (!opj_read_header(o.stream, o.codec, &o.image) || !o.image) return corrupt("unreadable main header");
    // The header against the data set, before any tile is decoded.
    const opj_image_t *im = o.image;
    const long long w = (long long)im->x1 - im->x0, h = (long long)im->y1 - im->y0;
    if (im->numcomps != 1)
        return "the JPEG 2000 codestream has " + str(im->numcomps) + " components, the data set 1 (SamplesPerPixel)";
    if (w != cols || h != rows)
        return "the JPEG 2000 codestream is " + str(w) + "x" + str(h) + " pixels, the data set says " + str(cols) + "x" + str(rows) +
               " (Columns x Rows)";
    const opj_image_comp_t &c0 = im->comps[0];
    if (c0.dx != 1 || c0.dy != 1) return "the JPEG 2000 component is subsampled (" + str(c0.dx) + "x" + str(c0.dy) + ")";
    if ((c0.sgnd != 0) != isSigned)
        return std::string("the JPEG 2000 codestream is ") + (c0.sgnd ? "signed" : "unsigned") + ", PixelRepresentation " +
               (isSigned ? "1 (signed)" : "0 (unsigned)");
    if (c0.prec < 1 || (int)c0.prec > bitsAllocated)
        return "the JPEG 2000 codestream has " + str(c0.prec) + "-bit samples, over BitsAllocated " + str(bitsAllocated);
    if (!opj_decode(o.codec, o.stream, o.image) || !opj_end_decompress(o.codec, o.stream)) return corrupt("the decoder failed");
    if (!messages.error.empty() || !messages.warning.empty()) return corrupt("");
    const opj_image_comp_t &c = o.image->comps[0];
    if (!c.data || (long long)c.w != cols || (long long)c.h != rows) return corrupt("no samples decoded");
    const long lo = isSigned ? -(1L << (bitsStored - 1)) : 0, hi = isSigned ? (1L << (bitsStored - 1)) - 1 : (1L << bitsStored) - 1;
    const size_t n = (size_t)rows * (size_t)cols;
    for (size_t i = 0; i < n; ++i) {
        const long v = c.data[i];
        if (v < lo || v > hi)
            return "decoded JPEG 2000 sample " + str(v) + " (pixel " + str((long long)i) + ") is outside BitsStored " + str(bitsStored) +
                   " (" + str(lo) + "..." + str(hi) + "; the codestream has " + str(c.prec) + "-bit samples)";
        if (bitsAllocated == 8) static_cast<uint8_t *>(dst)[i] = (uint8_t)(v & 0xFF);
        else static_cast<uint16_t *>(dst)[i] = (uint16_t)(v & 0xFFFF);
    }
    return "";
}

/// The fragments (item indices into the pixel sequence; item 0 is the offset table) of each frame.
bool frameFragments(DcmPixelSequence *seq, long frames, std::vector<std::pair<unsigned long, unsigned long>> &out, std::string &why) {
    const unsigned long items = seq->card(), fragments = items > 0 ? items - 1 : 0;
    out.clear();
    if (frames < 1 || fragments < (unsigned long)frames) {
        why = str(frames) + " frames in " + str((long long)fragments) + " compressed fragments (truncated?)";
        return false;
    }
    if (frames == 1) { out.push_back({1, items}); return true; }
    if (fragments == (unsigned long)frames) {
        for (unsigned long i = 1; i < items; ++i) out.push_back({i, i + 1});
        return true;
    }
    // Several fragments a frame: the Basic Offset Table gives each frame's first byte, counted from
    // the first fragment's item tag; each must be where an item starts.
    DcmPixelItem *table = nullptr;
    std::vector<unsigned long> starts;
    if (seq->getItem(table, 0).good() && table && table->getLength() == 4 * (Uint32)frames) {
        Uint8 *bytes = nullptr;
        if (table->getUint8Array(bytes).bad() || !bytes) { why = "the Basic Offset Table could not be read"; return false; }
        std::vector<unsigned long long> itemAt(items, 0);
        unsigned long long at = 0;
        for (unsigned long i = 1; i < items; ++i) {
            DcmPixelItem *item = nullptr;
            if (seq->getItem(item, i).bad() || !item) { why = "fragment " + str((long long)i) + " could not be read"; return false; }
            itemAt[i] = at;
            at += 8ULL + item->getLength();
        }
        unsigned long next = 1;
        for (long f = 0; f < frames; ++f) {
            const unsigned long long offset = (unsigned long long)bytes[4 * f] | (unsigned long long)bytes[4 * f + 1] << 8 |
                                              (unsigned long long)bytes[4 * f + 2] << 16 | (unsigned long long)bytes[4 * f + 3] << 24;
            while (next < items && itemAt[next] < offset) ++next;
            if (next >= items || itemAt[next] != offset || (f == 0 && next != 1) || (!starts.empty() && next <= starts.back())) {
                why = "the Basic Offset Table's entry for frame " + str(f + 1) + " (" + str((long long)offset) +
                      ") is not where a fragment starts";
                return false;
            }
            starts.push_back(next);
        }
    } else {
        // No table: each frame's first fragment begins with a codestream (SOC, SIZ) or a JP2 signature.
        for (unsigned long i = 1; i < items; ++i) {
            DcmPixelItem *item = nullptr;
            Uint8 *bytes = nullptr;
            if (seq->getItem(item, i).bad() || !item) { why = "fragment " + str((long long)i) + " could not be read"; return false; }
            const Uint32 n = item->getLength();
            if (n >= 4 && item->getUint8Array(bytes).good() && bytes &&
                (startsWith(bytes, n, kCodestream, sizeof kCodestream) || startsWith(bytes, n, kJP2, sizeof kJP2)))
                starts.push_back(i);
        }
        if (starts.size() != (size_t)frames || starts[0] != 1) {
            why = str((long long)fragments) + " compressed fragments without a Basic Offset Table begin " + str((long long)starts.size()) +
                  " JPEG 2000 codestreams, not one for each of " + str(frames) + " frames";
            return false;
        }
    }
    for (size_t f = 0; f < starts.size(); ++f) out.push_back({starts[f], f + 1 < starts.size() ? starts[f + 1] : items});
    return true;
}

}  // namespace

extern "C" int dt_j2k_handles(const char *uid) {
    // JPEG 2000 lossless only, JPEG 2000; HTJ2K lossless only, HTJ2K lossless RPCL, HTJ2K (OpenJPEG 2.5 decodes Part 15).
    for (const char *known : {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                              "1.2.840.10008.1.2.4.203"})
        if (uid && std::strcmp(uid, known) == 0) return 1;
    return 0;
}

extern "C" int dt_j2k_decode(const uint8_t *data, size_t size, int rows, int cols, int bits_allocated, int bits_stored, int is_signed,
                             void *dst, char *err, int errlen) {
    std::string why;
    try {
        if (!data || !dst || rows < 1 || cols < 1 || (bits_allocated != 8 && bits_allocated != 16) || bits_stored < 1 ||
            bits_stored > bits_allocated)
            why = "bad arguments";
        else
            why = decode(data, size, rows, cols, bits_allocated, bits_stored, is_signed != 0, dst);
    } catch (...) {
        why = "out of memory";
    }
    if (why.empty()) return 0;
    if (err && errlen > 0) std::snprintf(err, (size_t)errlen, "%s", why.c_str());
    return 1;
}

bool dt_j2k_decode_frames(DcmPixelSequence *sequence, long frames, int rows, int cols, int bits_allocated, int bits_stored,
                          int is_signed, void *dst, std::string &message) {
    try {
        std::vector<std::pair<unsigned long, unsigned long>> ranges;
        if (!frameFragments(sequence, frames, ranges, message)) return false;
        const size_t frameBytes = (size_t)rows * (size_t)cols * (size_t)(bits_allocated / 8);
        std::vector<uint8_t> joined;
        for (size_t f = 0; f < ranges.size(); ++f) {
            const uint8_t *bytes = nullptr;
            size_t size = 0;
            joined.clear();
            for (unsigned long i = ranges[f].first; i < ranges[f].second; ++i) {
                DcmPixelItem *item = nullptr;
                Uint8 *p = nullptr;
                if (sequence->getItem(item, i).bad() || !item || (item->getLength() > 0 && (item->getUint8Array(p).bad() || !p))) {
                    message = "compressed fragment " + str((long long)i) + " could not be read (truncated?)";
                    return false;
                }
                if (ranges[f].second - ranges[f].first == 1) { bytes = p; size = item->getLength(); }
                else joined.insert(joined.end(), p, p + item->getLength());
            }
            if (ranges[f].second - ranges[f].first > 1) { bytes = joined.data(); size = joined.size(); }
            static const uint8_t none = 0;
            char err[512];
            if (dt_j2k_decode(bytes ? bytes : &none, size, rows, cols, bits_allocated, bits_stored, is_signed,
                              static_cast<uint8_t *>(dst) + f * frameBytes, err, sizeof err) != 0) {
                message = frames > 1 ? "frame " + str((long long)f + 1) + " of " + str(frames) + ": " + err : std::string(err);
                return false;
            }
        }
        return true;
    } catch (...) {
        message = "out of memory";
        return false;
    }
}
