#ifndef DISTTRAIN_CMPI_SHIM_H
#define DISTTRAIN_CMPI_SHIM_H
#include <mpi.h>

// OpenMPI's handles are macros over addresses of global objects, which Swift
// cannot import: each one is wrapped in a static inline function.
static inline MPI_Comm disttrain_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype disttrain_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype disttrain_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype disttrain_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype disttrain_mpi_uint8(void) { return MPI_UINT8_T; }
static inline MPI_Op disttrain_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op disttrain_mpi_max(void) { return MPI_MAX; }
static inline MPI_Op disttrain_mpi_min(void) { return MPI_MIN; }
static inline void *disttrain_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline int disttrain_mpi_success(void) { return MPI_SUCCESS; }
static inline MPI_Errhandler disttrain_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
#endif
