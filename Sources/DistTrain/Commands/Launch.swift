import ArgumentParser
import Foundation

/// The one MPI-or-single-process dispatch: `body` runs with MPI under mpirun
/// (unless --debug), else as one process. After MPI_Init any error ends the
/// whole job through MPI_Abort, so no rank waits forever in a collective its
/// peer will never join.
func withCommunicator(debug: Bool = false, threads: ThreadOptions, _ body: (Communicator) throws -> Void) throws {
    if debug && MPICommunicator.launchedByMPI {
        throw ValidationError("--debug runs one process without MPI; start it without mpirun")
    }
    _ = threads.apply()
    if MPICommunicator.launchedByMPI {
        let comm = MPICommunicator()
        do { try body(comm) } catch { comm.abort("\(error)") }
        comm.finalize()
    } else {
        try body(SingleProcess())
    }
}
