#ifndef DISTTRAIN_CBLAS_SHIM_H
#define DISTTRAIN_CBLAS_SHIM_H
// OpenBLAS's cblas.h (pkg-config openblas puts its folder on the include path).
#include <cblas.h>

// Enum constants re-exported as plain ints so Swift call sites stay short.
static inline CBLAS_ORDER disttrain_cblas_row_major(void) { return CblasRowMajor; }
static inline CBLAS_TRANSPOSE disttrain_cblas_no_trans(void) { return CblasNoTrans; }
static inline CBLAS_TRANSPOSE disttrain_cblas_trans(void) { return CblasTrans; }
#endif
