// A small C surface over DCMTK (DICOM) and niftilib (NIfTI-1) for disttrain:
// read a file's pixels as Hounsfield units (or the file's own units) with the
// metadata prepare needs, and write the synthetic studies of `synth`.
// Errors: functions return 0 on success, else nonzero with a one-line
// message in `err` (naming the cause; the caller names the file).
#ifndef DISTTRAIN_MEDICAL_H
#define DISTTRAIN_MEDICAL_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/// What one file may hold, checked from its header before anything is allocated:
/// `max_pixels` per frame or slice (rows x cols; --max-pixels), `max_voxels` in all
/// (every frame of a multi-frame DICOM, every slice of a volume).
typedef struct {
    int64_t max_pixels, max_voxels;
} dt_limits;

typedef struct {
    int rows, cols, frames;
    int bits_allocated, bits_stored, pixel_representation;
    int calibrated;            // RescaleSlope/Intercept present: values are HU (CT) or the modality's units
    int inverted;              // MONOCHROME1 without calibration: stored values were inverted
    double slope, intercept;
    int has_window;
    double window_center, window_width;
    int has_position;
    double position[3];        // ImagePositionPatient
    int has_orientation;
    double orientation[6];     // ImageOrientationPatient (row, then column direction cosines)
    int instance_number;
    char photometric[32];
    char modality[17];
    char transfer_syntax[80];  // the file's transfer syntax UID
    char patient_id[80], study_uid[80], series_uid[80], sop_uid[80];
    void *handle;              // the decoded file when read with pixels, for dt_dicom_values; NULL otherwise
} dt_dicom;

/// Reads `path` (a regular file) and checks it against `limits`; with `want_pixels`
/// the pixel data is decoded too (compressed data in full, any decoder warning is an
/// error) and kept until dt_dicom_free; with 0 only the header is read.
int dt_dicom_read(const char *path, int want_pixels, dt_limits limits, dt_dicom *out, char *err, int errlen);
/// The pixels in HU (or the file's units) into `dst`, frames * rows * cols floats, row-major.
int dt_dicom_values(const dt_dicom *d, float *dst, int64_t count, char *err, int errlen);
void dt_dicom_free(dt_dicom *d);

/// Writes one CT slice: signed 16-bit stored values, HU = stored + intercept
/// (slope 1), explicit VR little endian, Part 10 with preamble.
int dt_dicom_write_ct(const char *path, const int16_t *stored, int rows, int cols, double intercept,
                      const char *patient_id, const char *study_uid, const char *series_uid, const char *sop_uid,
                      int instance_number, double z, double spacing, double window_center, double window_width,
                      char *err, int errlen);

typedef struct {
    int nx, ny, nz;            // voxels along i, j, k
    int slice_axis;            // 0, 1 or 2: the axis closest to inferior-superior (2 when unknown)
    double slope, intercept;   // scl_slope / scl_inter as applied (1, 0 when absent)
    void *handle;              // the header, for dt_nifti_values
} dt_nifti;

/// Reads the header of `path` (a regular .nii or .nii.gz file, no extensions or voxels)
/// and checks it: 2-D or 3-D, a supported datatype, `limits`, finite scaling, and
/// for uncompressed files voxel data inside the file.
int dt_nifti_read(const char *path, dt_limits limits, dt_nifti *out, char *err, int errlen);
/// Reads and scales the voxels into `dst` (nx * ny * nz floats, i fastest); a short
/// file or stream, or a value that is not finite once scaled, is an error.
int dt_nifti_values(const dt_nifti *v, float *dst, int64_t count, char *err, int errlen);
void dt_nifti_free(dt_nifti *v);
/// Writes int16 voxels (i fastest) with scl_slope 1 and scl_inter `intercept`;
/// `.nii.gz` is compressed. Axial: k runs inferior to superior.
int dt_nifti_write(const char *path, const int16_t *voxels, int nx, int ny, int nz, double intercept, double spacing,
                   char *err, int errlen);

#ifdef __cplusplus
}
#endif
#endif
