// JPEG 2000 pixel data (transfer syntaxes 1.2.840.10008.1.2.4.90, lossless only, and .91;
// HTJ2K .201 lossless, .202 lossless RPCL, .203) through OpenJPEG (2.5 decodes HTJ2K), for
// the DICOM reader of medical.cpp: Debian's DCMTK has no JPEG 2000 codec. Errors: nonzero with a one-line message
// (the caller names the file).
#ifndef DISTTRAIN_J2K_H
#define DISTTRAIN_J2K_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/// Whether `transfer_syntax_uid` is one that dt_j2k_decode reads.
int dt_j2k_handles(const char *transfer_syntax_uid);

/// Decodes one frame, `size` bytes at `data`: a J2K codestream or a JP2 file (told by
/// their first bytes), one component of `cols` x `rows` samples, signed when `is_signed`.
/// Every sample must lie in the range of `bits_stored` bits; they are written to `dst`
/// (rows * cols of them, row-major) as bytes when `bits_allocated` is 8, else as 16-bit
/// words (two's complement when signed). A decoder error or warning (a truncated or
/// corrupt codestream), other dimensions, components or signedness than the data set's,
/// or a precision over `bits_allocated` is refused.
int dt_j2k_decode(const uint8_t *data, size_t size, int rows, int cols, int bits_allocated, int bits_stored, int is_signed,
                  void *dst, char *err, int errlen);

#ifdef __cplusplus
}

#include <string>
class DcmPixelSequence;

/// Every frame of an encapsulated JPEG 2000 pixel sequence, decoded into `dst`
/// (frames * rows * cols samples as for dt_j2k_decode). A frame's fragments are found
/// as DICOM PS3.5 A.4 allows: all fragments for one frame, one fragment a frame, by
/// the Basic Offset Table, or else by the codestream start marker each frame begins
/// with. False with the reason in `message` when a frame cannot be found or decoded.
bool dt_j2k_decode_frames(DcmPixelSequence *sequence, long frames, int rows, int cols, int bits_allocated, int bits_stored,
                          int is_signed, void *dst, std::string &message);
#endif
#endif
