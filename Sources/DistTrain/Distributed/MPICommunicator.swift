import CMPI
import Foundation

/// MPI_COMM_WORLD. Counts are split into buckets of at most 2^28 elements,
/// since MPI counts are Int32.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    let comm = disttrain_mpi_comm_world()
    static let bucket = 1 << 28

    /// MPI_Init; errors return codes (checked here) instead of aborting inside MPI.
    public init() {
        var provided: Int32 = 0
        MPI_Init_thread(nil, nil, Int32(MPI_THREAD_FUNNELED), &provided)
        MPI_Comm_set_errhandler(comm, disttrain_mpi_errors_return())
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r); size = Int(s)
    }

    /// True when started by mpirun/mpiexec (OpenMPI, or a PMI launcher).
    public static var launchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMI_SIZE"] != nil || env["PMIX_RANK"] != nil
    }

    public func finalize() { MPI_Finalize() }

    func check(_ rc: Int32, _ what: String) {
        if rc != disttrain_mpi_success() {
            var len: Int32 = 0
            var buf = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING))
            MPI_Error_string(rc, &buf, &len)
            abort("\(what) failed: \(String(cString: buf))")
        }
    }

    /// In-place MPI_SUM over buckets of at most 2^28 elements.
    func allreduceSum<T>(_ data: UnsafeMutablePointer<T>, count: Int, type: MPI_Datatype) {
        var off = 0
        while off < count {
            let n = min(MPICommunicator.bucket, count - off)
            check(MPI_Allreduce(disttrain_mpi_in_place(), data + off, Int32(n), type, disttrain_mpi_sum(), comm), "MPI_Allreduce")
            off += n
        }
    }

    public func allreduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) {
        allreduceSum(data, count: count, type: disttrain_mpi_float())
    }
    public func allreduceSum(_ data: UnsafeMutablePointer<Double>, count: Int) {
        allreduceSum(data, count: count, type: disttrain_mpi_double())
    }

    public func allreduceMax(_ value: Double) -> Double {
        var v = value
        check(MPI_Allreduce(disttrain_mpi_in_place(), &v, 1, disttrain_mpi_double(), disttrain_mpi_max(), comm), "MPI_Allreduce")
        return v
    }

    public func broadcast(_ data: UnsafeMutableRawPointer, bytes: Int) {
        var off = 0
        while off < bytes {
            let n = min(MPICommunicator.bucket, bytes - off)
            check(MPI_Bcast(data + off, Int32(n), disttrain_mpi_uint8(), 0, comm), "MPI_Bcast")
            off += n
        }
    }

    public func barrier() { check(MPI_Barrier(comm), "MPI_Barrier") }

    public func abort(_ message: String) -> Never {
        FileHandle.standardError.write(Data("[rank \(rank)] error: \(message)\n".utf8))
        MPI_Abort(comm, 1)
        exit(1)
    }
}
