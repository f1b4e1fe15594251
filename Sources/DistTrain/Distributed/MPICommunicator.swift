import CMPI
import Foundation

/// MPI_COMM_WORLD. Counts are split into buckets of at most 2^28 elements,
/// since MPI counts are Int32.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    let comm = disttrain_mpi_comm_world()
    static let bucket = 1 << 28

    /// The gradient buckets' own communicator (a duplicate of the world), so
    /// the reducer thread's collectives never interleave with the main thread's.
    private var gradientComm: MPI_Comm?
    /// MPI_THREAD_MULTIPLE granted: started buckets are reduced by a background
    /// thread (Horovod's design), so they progress while backward computes.
    /// Otherwise MPI_Iallreduce, progressed by MPI_Testall between blocks.
    public let backgroundReduction: Bool
    /// Ends the job when a collective waits past DISTTRAIN_COLLECTIVE_TIMEOUT (a peer that stopped).
    private var watchdog: CollectiveWatchdog!

    /// MPI_Init; errors return codes (checked here) instead of aborting inside MPI.
    public init() {
        var provided: Int32 = 0
        MPI_Init_thread(nil, nil, Int32(MPI_THREAD_MULTIPLE), &provided)
        MPI_Comm_set_errhandler(comm, disttrain_mpi_errors_return())
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r); size = Int(s)
        backgroundReduction = provided >= Int32(MPI_THREAD_MULTIPLE)
        if backgroundReduction {
            var dup: MPI_Comm? = nil
            MPI_Comm_dup(comm, &dup)
            gradientComm = dup
            if let dup { MPI_Comm_set_errhandler(dup, disttrain_mpi_errors_return()) }
        }
        let limit: Double
        do { limit = try CollectiveWatchdog.limit(from: ProcessInfo.processInfo.environment) } catch {
            limit = CollectiveWatchdog.defaultLimit
            FileHandle.standardError.write(Data("[rank \(rank)] error: \(error)\n".utf8))
            MPI_Abort(comm, 1)
        }
        // MPI_Abort from the watchdog's thread needs MPI_THREAD_MULTIPLE (the main thread is inside a
        // collective); without it the rank exits, and mpirun ends the job as for any rank that dies.
        watchdog = CollectiveWatchdog(limit: limit) { [comm, rank, backgroundReduction] message in
            FileHandle.standardError.write(Data("[rank \(rank)] error: \(message)\n".utf8))
            if backgroundReduction { MPI_Abort(comm, 1) }
            _exit(1)
        }
    }

    /// True when started by mpirun/mpiexec (OpenMPI, or a PMI launcher).
    public static var launchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMI_SIZE"] != nil || env["PMIX_RANK"] != nil
    }

    public func finalize() {
        stopReducer()
        MPI_Finalize()
    }

    func check(_ rc: Int32, _ what: String) {
        if rc != disttrain_mpi_success() {
            var len: Int32 = 0
            var buf = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING))
            MPI_Error_string(rc, &buf, &len)
            abort("\(what) failed: \(String(cString: buf))")
        }
    }

    /// In-place MPI_SUM over buckets of at most 2^28 elements.
    func allreduceSum<T>(_ data: UnsafeMutablePointer<T>, count: Int, type: MPI_Datatype, on communicator: MPI_Comm? = nil) {
        let comm = communicator ?? self.comm
        var off = 0
        while off < count {
            let n = min(MPICommunicator.bucket, count - off)
            check(watchdog.watch("MPI_Allreduce") { MPI_Allreduce(disttrain_mpi_in_place(), data + off, Int32(n), type, disttrain_mpi_sum(), comm) },
                  "MPI_Allreduce")
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
        check(watchdog.watch("MPI_Allreduce") { MPI_Allreduce(disttrain_mpi_in_place(), &v, 1, disttrain_mpi_double(), disttrain_mpi_max(), comm) },
              "MPI_Allreduce")
        return v
    }

    public func broadcast(_ data: UnsafeMutableRawPointer, bytes: Int) {
        var off = 0
        while off < bytes {
            let n = min(MPICommunicator.bucket, bytes - off)
            check(watchdog.watch("MPI_Bcast") { MPI_Bcast(data + off, Int32(n), disttrain_mpi_uint8(), 0, comm) }, "MPI_Bcast")
            off += n
        }
    }

    public func barrier() { check(watchdog.watch("MPI_Barrier") { MPI_Barrier(comm) }, "MPI_Barrier") }
    public func barrierWithoutTimeLimit() { check(MPI_Barrier(comm), "MPI_Barrier") }

    private var requests: [MPI_Request?] = []

    // The background reducer: a queue of buckets, reduced in order with
    // blocking MPI_Allreduce on gradientComm (the same sums as the blocking path).
    private let queue = NSCondition()
    private var waiting: [(UnsafeMutablePointer<Float>, Int)] = []
    private var inFlight = 0
    private var reducer: Thread?
    private var stopping = false

    private func reducerLoop() {
        while true {
            queue.lock()
            while waiting.isEmpty && !stopping { queue.wait() }
            if waiting.isEmpty && stopping { queue.unlock(); return }
            let (data, count) = waiting.removeFirst()
            queue.unlock()
            allreduceSum(data, count: count, type: disttrain_mpi_float(), on: gradientComm!)
            queue.lock()
            inFlight -= 1
            queue.broadcast()
            queue.unlock()
        }
    }

    private func stopReducer() {
        guard let t = reducer else { return }
        queue.lock(); stopping = true; queue.broadcast(); queue.unlock()
        while !t.isFinished { usleep(1000) }
        reducer = nil
    }

    public func startAllreduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) {
        if backgroundReduction {
            if reducer == nil {
                let t = Thread { [unowned self] in self.reducerLoop() }
                t.stackSize = 1 << 20
                reducer = t
                t.start()
            }
            queue.lock()
            waiting.append((data, count)); inFlight += 1
            queue.signal()
            queue.unlock()
            return
        }
        var off = 0
        while off < count {
            let n = min(MPICommunicator.bucket, count - off)
            var request: MPI_Request? = disttrain_mpi_request_null()
            check(disttrain_mpi_iallreduce_sum_float(data + off, Int32(n), comm, &request), "MPI_Iallreduce")
            requests.append(request)
            off += n
        }
    }

    public func progress() {
        guard !backgroundReduction, !requests.isEmpty else { return }
        var done: Int32 = 0
        check(disttrain_mpi_testall(Int32(requests.count), &requests, &done), "MPI_Testall")
    }

    public func waitAll() {
        if backgroundReduction {
            queue.lock()
            while inFlight > 0 { queue.wait() }  // the reducer thread's MPI_Allreduce calls are watched
            queue.unlock()
            return
        }
        guard !requests.isEmpty else { return }
        check(watchdog.watch("MPI_Waitall (gradient buckets)") { disttrain_mpi_waitall(Int32(requests.count), &requests) }, "MPI_Waitall")
        requests.removeAll(keepingCapacity: true)
    }

    public func abort(_ message: String) -> Never {
        FileHandle.standardError.write(Data("[rank \(rank)] error: \(message)\n".utf8))
        MPI_Abort(comm, 1)
        exit(1)
    }
}
