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
// Non-blocking all-reduce (the overlapped gradient buckets), with its
// request arrays handled here so Swift passes plain pointers.
static inline MPI_Request disttrain_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline int disttrain_mpi_iallreduce_sum_float(float *data, int count, MPI_Comm comm, MPI_Request *request) {
    return MPI_Iallreduce(MPI_IN_PLACE, data, count, MPI_FLOAT, MPI_SUM, comm, request);
}
static inline int disttrain_mpi_waitall(int n, MPI_Request *requests) { return MPI_Waitall(n, requests, MPI_STATUSES_IGNORE); }
static inline int disttrain_mpi_testall(int n, MPI_Request *requests, int *done) {
    return MPI_Testall(n, requests, done, MPI_STATUSES_IGNORE);
}
#endif
