/// An error from `run()`: one line on stderr, exit code 1 (under MPI,
/// `[rank N] error: ...` and MPI_Abort). Say what failed, where, what to do.
/// The line stays one line whatever it quotes: a file name, a DICOM string or
/// a CSV cell with CR or LF in it is shown with `\r` / `\n`, so a hostile
/// input cannot add lines to the message (or forge a second one).
public struct RuntimeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ s: String) { description = DatasetSource.oneLine(s) }
}
