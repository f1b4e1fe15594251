import Foundation

/// One process, no MPI: collectives are identities.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) {}
    public func allreduceSum(_ data: UnsafeMutablePointer<Double>, count: Int) {}
    public func allreduceMax(_ value: Double) -> Double { value }
    public func broadcast(_ data: UnsafeMutableRawPointer, bytes: Int) {}
    public func barrier() {}
    public func barrierWithoutTimeLimit() {}
    public func startAllreduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) {}
    public func progress() {}
    public func waitAll() {}
    public func abort(_ message: String) -> Never {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        exit(1)
    }
}
