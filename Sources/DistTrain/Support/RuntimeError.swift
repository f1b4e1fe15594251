/// An error from `run()`: one line on stderr, exit code 1 (under MPI,
/// `[rank N] error: ...` and MPI_Abort). Say what failed, where, what to do.
public struct RuntimeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ s: String) { description = s }
}
