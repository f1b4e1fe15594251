import Foundation

/// The collectives training needs, over MPI or for one process. All ranks
/// must call the same collectives in the same order (Horovod's rule).
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// In-place sum over ranks.
    func allreduceSum(_ data: UnsafeMutablePointer<Float>, count: Int)
    func allreduceSum(_ data: UnsafeMutablePointer<Double>, count: Int)
    func allreduceMax(_ value: Double) -> Double
    /// Rank 0's bytes to every rank.
    func broadcast(_ data: UnsafeMutableRawPointer, bytes: Int)
    func barrier()
    /// A barrier without the collective time limit (CollectiveWatchdog), for
    /// the ranks waiting while rank 0 does set-up work as long as the data
    /// (preparing a data set folder on a first run).
    func barrierWithoutTimeLimit()
    /// Ends the whole job: prints `[rank N] error: ...` and exits non-zero on every rank.
    func abort(_ message: String) -> Never
    /// Starts an in-place sum of `count` floats (MPI_Iallreduce); the data may
    /// not be touched until `waitAll`. Returns nothing: requests are kept in order.
    func startAllreduceSum(_ data: UnsafeMutablePointer<Float>, count: Int)
    /// Lets started reductions progress (MPI only progresses inside MPI calls).
    func progress()
    /// Waits for every started reduction.
    func waitAll()
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }

    /// In-place mean over ranks (sum, then 1/size): gradients, BN statistics.
    public func allreduceMean(_ data: UnsafeMutablePointer<Float>, count: Int) {
        guard size > 1 else { return }
        allreduceSum(data, count: count)
        let inv = 1 / Float(size)
        for i in 0..<count { data[i] *= inv }
    }

    public func allreduceSum(_ values: inout [Double]) {
        values.withUnsafeMutableBufferPointer { allreduceSum($0.baseAddress!, count: $0.count) }
    }
    public func allreduceSum(_ values: inout [Float]) {
        values.withUnsafeMutableBufferPointer { allreduceSum($0.baseAddress!, count: $0.count) }
    }
    public func broadcast(_ values: inout [Float]) {
        values.withUnsafeMutableBytes { broadcast($0.baseAddress!, bytes: $0.count) }
    }
    public func broadcast(_ values: inout [Int64]) {
        values.withUnsafeMutableBytes { broadcast($0.baseAddress!, bytes: $0.count) }
    }
    /// A string from rank 0 (length first, then bytes).
    public func broadcast(_ s: String) -> String {
        var bytes = Array(s.utf8)
        var n = [Int64(bytes.count)]
        broadcast(&n)
        if !isRoot { bytes = [UInt8](repeating: 0, count: Int(n[0])) }
        bytes.withUnsafeMutableBytes { if $0.count > 0 { broadcast($0.baseAddress!, bytes: $0.count) } }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Rank 0's value of any Codable (a config, the training state) as one
    /// encoded block; Doubles arrive bit for bit, infinities included.
    public func broadcast<T: Codable>(_ value: T) throws -> T {
        let enc = JSONEncoder()
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let text = broadcast(isRoot ? String(decoding: try enc.encode(value), as: UTF8.self) : "")
        let dec = JSONDecoder()
        dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try dec.decode(T.self, from: Data(text.utf8))
    }
}
