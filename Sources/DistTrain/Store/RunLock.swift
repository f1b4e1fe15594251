import Foundation

/// An exclusive lock on a run folder while a process trains in it: `flock` on
/// RUN/.lock (the kernel releases it on any exit, kill -9 included), holding
/// the owner's pid. Taking it also proves the folder writable at start, not
/// after an epoch, and clears the *.tmp files a killed writer left.
public final class RunLock {
    let fd: Int32
    public let path: String

    private init(fd: Int32, path: String) { self.fd = fd; self.path = path }
    deinit { close(fd) }

    public static func acquire(_ run: String) throws -> RunLock {
        // mkdir -p with the C library's own words for what went wrong ("Read-only file system").
        var made = run.hasPrefix("/") ? "" : "."
        for part in run.split(separator: "/") {
            made += "/" + part
            if mkdir(made, 0o755) != 0 && errno != EEXIST {
                throw RuntimeError("cannot create run folder '\(run)': \(errnoText())")
            }
        }
        let path = run + "/.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw RuntimeError("run folder '\(run)' is not writable: \(errnoText())") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            var buf = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buf, 31, 0)
            close(fd)
            let holder = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
            if code == EWOULDBLOCK {
                throw RuntimeError("run folder '\(run)' is in use by process \(holder) (\(path)); "
                                   + "wait for it to end or choose another --run")
            }
            throw RuntimeError("cannot lock run folder '\(run)': \(errnoText(code))")
        }
        let pid = Array("\(getpid())\n".utf8)
        guard ftruncate(fd, 0) == 0, pwrite(fd, pid, pid.count, 0) == pid.count else {
            let e = errnoText()
            close(fd)
            throw RuntimeError("run folder '\(run)' is not writable: \(e)")
        }
        let lock = RunLock(fd: fd, path: path)
        lock.removeStaleTemporaries(run)
        return lock
    }

    /// `*.tmp` files of the run and its ckpt/ (a writer killed mid-file); only the lock holder writes there.
    func removeStaleTemporaries(_ run: String) {
        for dir in [run, run + "/ckpt", run + "/report"] {
            for f in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where f.hasSuffix(".tmp") {
                unlink(dir + "/" + f)
            }
        }
    }
}
