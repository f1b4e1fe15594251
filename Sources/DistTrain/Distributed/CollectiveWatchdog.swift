import Foundation

/// Bounds how long a rank waits in a collective. A peer that stops for good
/// (SIGSTOP, a frozen node, a rank spinning in a loop) never joins the next
/// all-reduce or barrier, and MPI itself waits without limit: the job would
/// hang silently. Each collective registers while it waits; a thread checks
/// once a second and, past `limit` seconds, ends the job through `expire`
/// (MPI_Abort, callable from any thread under MPI_THREAD_MULTIPLE), naming
/// the collective. As Horovod's stall check (HOROVOD_STALL_SHUTDOWN_TIME_SECONDS).
///
/// The limit is far above any wait a healthy job has: a collective waits
/// for the slowest rank's step or for rank 0 writing a checkpoint (seconds),
/// never for the evaluation and CAM stage, which rank 0 runs after the other
/// ranks left their last collective.
final class CollectiveWatchdog: @unchecked Sendable {
    /// DISTTRAIN_COLLECTIVE_TIMEOUT seconds; 0 waits forever.
    static let defaultLimit: Double = 600

    let limit: Double
    private let expire: (String) -> Void
    private let lock = NSLock()
    private var waits: [Int: (what: String, since: Double)] = [:]
    private var next = 0
    private var thread: Thread?

    init(limit: Double, expire: @escaping (String) -> Void) {
        self.limit = limit
        self.expire = expire
    }

    /// The limit from the environment: a positive number of seconds, 0 for none; anything else is an error naming the variable.
    static func limit(from environment: [String: String]) throws -> Double {
        guard let text = environment["DISTTRAIN_COLLECTIVE_TIMEOUT"] else { return defaultLimit }
        guard let v = Double(text), v.isFinite, v >= 0 else {
            throw RuntimeError("DISTTRAIN_COLLECTIVE_TIMEOUT='\(text)': give seconds (0 waits without limit)")
        }
        return v
    }

    /// Runs `body` (one collective) with its wait watched.
    func watch<T>(_ what: String, _ body: () -> T) -> T {
        guard limit > 0 else { return body() }
        lock.lock()
        let token = next
        next += 1
        waits[token] = (what, ProcessInfo.processInfo.systemUptime)
        if thread == nil {
            let t = Thread { [weak self] in self?.loop() }
            t.stackSize = 1 << 18
            thread = t
            t.start()
        }
        lock.unlock()
        defer { lock.lock(); waits[token] = nil; lock.unlock() }
        return body()
    }

    private func loop() {
        while true {
            usleep(UInt32(min(1, limit / 4) * 1_000_000))
            lock.lock()
            let now = ProcessInfo.processInfo.systemUptime
            let stalled = waits.values.first { now - $0.since > limit }
            lock.unlock()
            if let stalled {
                expire(String(format: "%@ has waited %.0f s for the other ranks (one of them stopped, hung or lost its node?); "
                              + "ending the job (DISTTRAIN_COLLECTIVE_TIMEOUT=%@ s, 0 waits without limit)",
                              stalled.what, now - stalled.since, shortNumber(limit)))
                return
            }
        }
    }
}
