#ifndef DISTTRAIN_CHDF5_SHIM_H
#define DISTTRAIN_CHDF5_SHIM_H
#include <hdf5.h>

// HDF5's predefined types and property-list classes are macros that expand to
// library globals (and call H5open first): wrap each one.
static inline hid_t disttrain_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t disttrain_h5t_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t disttrain_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t disttrain_h5t_native_int32(void) { return H5T_NATIVE_INT32; }
static inline hid_t disttrain_h5t_native_uint8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t disttrain_h5t_c_s1(void) { return H5T_C_S1; }
static inline hid_t disttrain_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t disttrain_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t disttrain_h5s_all(void) { return H5S_ALL; }
static inline unsigned disttrain_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned disttrain_h5f_acc_rdwr(void) { return H5F_ACC_RDWR; }
static inline unsigned disttrain_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline size_t disttrain_h5t_variable(void) { return H5T_VARIABLE; }
static inline hid_t disttrain_h5p_file_access(void) { return H5P_FILE_ACCESS; }
// Silence HDF5's own error stack printing: we report errors ourselves, by name.
static inline void disttrain_h5_silence_errors(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
#endif
