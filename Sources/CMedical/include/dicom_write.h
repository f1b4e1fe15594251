// DICOM results through DCMTK (dcmsr, dcmdata): a Comprehensive SR document
// with a series' probabilities and a Secondary Capture image per slice, both
// in the source study, plus the small readers the tests and the checks use.
// Errors: functions return 0 on success, else nonzero with a one-line
// message in `err` (naming the cause; the caller names the file).
#ifndef DISTTRAIN_DICOM_WRITE_H
#define DISTTRAIN_DICOM_WRITE_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/// One source slice: a DICOM file (only its header is read) and, for a
/// multi-frame file, its frame (1-based; 0 for a single-frame file).
typedef struct {
    const char *path;
    int frame;
    double probability;        // p(positive class) of this slice
} dt_result_slice;

/// What made the result and what it says about the series as a whole.
typedef struct {
    const char *uid_root;               // root for new UIDs (digits and dots), or NULL/"" for DCMTK's
    const char *manufacturer;           // General Equipment: Manufacturer, Model Name, Software Versions
    const char *model_name;
    const char *software_versions;
    const char *device_uid;             // Device Observer UID (121012)
    const char *algorithm_name;         // 111001
    const char *algorithm_version;      // 111003
    const char *algorithm_parameters;   // 111002: checkpoint fingerprint, threshold, window
    const char *finding_value, *finding_scheme, *finding_meaning;  // what is found, e.g. 840539006 SCT COVID-19
    double probability;                 // the series' probability (mean of the slices')
    int positive;                       // the decision at the threshold: 1 present, 0 absent
    int sr_series_number, sc_series_number;
    const char *sr_series_description, *sc_series_description;
    const char *derivation_description; // of the Secondary Capture images
} dt_result_info;

/// A new UID under `root` (NULL or "": DCMTK's site root) into `out` (65 bytes).
int dt_new_uid(const char *root, char *out, char *err, int errlen);

/// Writes the Comprehensive SR of `n` slices (all of one study) to `path`:
/// patient and study modules copied from the first slice's file, a new series
/// `series_uid` (from dt_new_uid), the evidence list of every source instance.
int dt_write_sr(const char *path, const dt_result_info *info, const dt_result_slice *slices, int n,
                const char *series_uid, char *err, int errlen);

/// Writes one RGB Secondary Capture image (rows x cols x 3 bytes, interleaved)
/// derived from `source` to `path`, in the source study, series `series_uid`.
int dt_write_sc(const char *path, const dt_result_info *info, const dt_result_slice *source, const uint8_t *rgb,
                int rows, int cols, const char *series_uid, int instance_number, char *err, int errlen);

/// The value at `tag_path` (DCMTK's path syntax, dictionary names: e.g.
/// "SourceImageSequence[0].ReferencedSOPInstanceUID"), all values joined by '\',
/// text converted to UTF-8 from the file's SpecificCharacterSet, into `out`; a missing element is an error.
int dt_dicom_get(const char *path, const char *tag_path, char *out, int outlen, char *err, int errlen);

/// The 8-bit PixelData of a file (a Secondary Capture image) into `dst`: `count`
/// bytes exactly, else an error naming both sizes.
int dt_dicom_pixels8(const char *path, uint8_t *dst, int64_t count, char *err, int errlen);
/// The byte count of a file's PixelData (8-bit), for dt_dicom_pixels8.
int dt_dicom_pixels8_count(const char *path, int64_t *count, char *err, int errlen);

/// An SR document read back through dcmsr, as lines of tab-separated fields
/// (malloc'd into *text; free with dt_free): "study UID", "series UID", "sopclass UID",
/// "sop UID", "num CONCEPT VALUE UNIT [REF_CLASS REF_INSTANCE FRAME]" per NUM item,
/// "code CONCEPT VALUE" per CODE item, "text CONCEPT VALUE" per TEXT item,
/// "evidence STUDY SERIES CLASS INSTANCE" per evidence reference.
int dt_read_sr(const char *path, char **text, char *err, int errlen);
void dt_free(void *p);

/// SHA-256 of a file's bytes as 64 lowercase hex digits (+ NUL) into `hex`.
int dt_sha256_file(const char *path, char *hex, char *err, int errlen);

#ifdef __cplusplus
}
#endif
#endif
