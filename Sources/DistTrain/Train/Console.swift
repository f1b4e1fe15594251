import Foundation
import Net

/// Prints on rank 0 only: a refreshed line on a terminal, plain lines in logs.
public struct Console {
    public let enabled: Bool
    /// --debug: a line for every step.
    public var verbose = false
    // Under mpirun a rank's stdout is a pseudo-terminal even when mpirun's own
    // output goes to a file, so ranks print plain lines.
    let tty = isatty(STDOUT_FILENO) != 0 && !MPICommunicator.launchedByMPI
    public init(enabled: Bool) { self.enabled = enabled }
    public func line(_ s: String) {
        guard enabled else { return }
        print(tty ? "\r\u{1B}[K" + s : s)
        fflush(stdout)
    }
    public func progress(_ s: String, step: Int, of total: Int) {
        guard enabled else { return }
        if tty {
            print("\r\u{1B}[K" + s, terminator: "")
            fflush(stdout)
        } else if verbose || step == total || step % max(1, total / 5) == 0 {
            print(s)
            fflush(stdout)
        }
    }
}
