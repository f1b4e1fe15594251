import Foundation

// Files that are either whole or absent: written to `<target>.tmp`, closed
// and fsynced with every result checked, then renamed over the target. On
// any failure the .tmp is removed and the target (a good older file, or
// nothing) stays as it was. ENOSPC reads "No space left on device".

/// The C library's words for errno (e.g. "No space left on device").
func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

/// What a stat() mode is when it is not a regular file ("a FIFO", "a folder", ...), for messages; nil for a regular file.
func nonRegularKind(_ mode: mode_t) -> String? {
    switch mode & S_IFMT {
    case S_IFREG: return nil
    case S_IFDIR: return "a folder"
    case S_IFCHR: return "a character device"
    case S_IFBLK: return "a block device"
    case S_IFIFO: return "a FIFO"
    case S_IFSOCK: return "a socket"
    case S_IFLNK: return "a symbolic link"
    default: return "of an unknown kind"
    }
}

/// fsync the file, rename over the target, fsync the folder: a reader sees
/// the old file or the new one, never half of one. Throws (and removes `tmp`)
/// when any step fails.
func durableRename(_ tmp: String, _ target: String) throws {
    do {
        let fd = open(tmp, O_RDONLY)
        guard fd >= 0 else { throw RuntimeError("cannot reopen '\(tmp)' to sync it: \(errnoText())") }
        let synced = fsync(fd) == 0 ? nil : errnoText()
        let closed = close(fd) == 0 ? nil : errnoText()
        if let e = synced ?? closed { throw RuntimeError("cannot write '\(target)': \(e)") }
        if rename(tmp, target) != 0 { throw RuntimeError("cannot rename '\(tmp)' to '\(target)': \(errnoText())") }
    } catch {
        unlink(tmp)
        throw error
    }
    let dir = (target as NSString).deletingLastPathComponent
    let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY)
    if dfd >= 0 {
        // Some file systems cannot sync a folder (EINVAL): the file itself is safe by then.
        if fsync(dfd) != 0 && errno != EINVAL {
            let e = errnoText()
            close(dfd)
            throw RuntimeError("cannot sync the folder of '\(target)': \(e)")
        }
        close(dfd)
    }
}

/// The file a durable write replaces: `target` when it is a regular file or
/// absent; through a symbolic link, the regular file it leads to (the link
/// stays, as when a program writes to it). Anything else is refused before
/// a byte is written: rename(2) replaces whatever the name holds, and as root
/// `--onnx /dev/full` would have replaced the device node itself.
func durableTarget(_ target: String) throws -> String {
    var st = stat()
    guard lstat(target, &st) == 0 else { return target }  // absent: created
    if st.st_mode & S_IFMT == S_IFLNK {
        guard let resolved = realpath(target, nil) else {
            throw RuntimeError("'\(target)' is a symbolic link that does not resolve (\(errnoText())): refusing to write through it")
        }
        defer { free(resolved) }
        let path = String(cString: resolved)
        guard stat(path, &st) == 0 else { throw RuntimeError("cannot stat '\(path)' (the link '\(target)'): \(errnoText())") }
        if let k = nonRegularKind(st.st_mode) {
            throw RuntimeError("'\(target)' links to '\(path)', which is \(k), not a regular file: refusing to replace it")
        }
        return path
    }
    if let k = nonRegularKind(st.st_mode) { throw RuntimeError("'\(target)' is \(k), not a regular file: refusing to replace it") }
    return target
}

/// Writes `target` through `body` on `target.tmp`, then durableRename;
/// `target` must be a regular file or absent (`durableTarget`).
func durableWrite(_ target: String, _ body: (String) throws -> Void) throws {
    let target = try durableTarget(target)
    let tmp = target + ".tmp"
    unlink(tmp)
    do { try body(tmp) } catch {
        unlink(tmp)
        throw error
    }
    try durableRename(tmp, target)
}

/// Data written whole (text files: metrics.csv, config.json, reports).
func durableWrite(_ target: String, data: Data) throws {
    try durableWrite(target) { tmp in
        guard FileManager.default.createFile(atPath: tmp, contents: nil) else {
            throw RuntimeError("cannot create '\(tmp)': \(errnoText())")
        }
        let fd = open(tmp, O_WRONLY | O_TRUNC)
        guard fd >= 0 else { throw RuntimeError("cannot open '\(tmp)': \(errnoText())") }
        defer { close(fd) }
        try data.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = write(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw RuntimeError("cannot write '\(target)': \(errnoText())")
                }
                off += n
            }
        }
    }
}

/// An HDF5 file written whole: `body` fills it in memory (HDF5's core
/// driver), then its bytes go to disk through durableWrite, every write and
/// the fsync checked. HDF5 itself never meets a full disk: a failed flush
/// inside the library would leave a half-closed file that its exit handler
/// crashes on.
func durableHDF5(_ target: String, _ body: (HDF5File) throws -> Void) throws {
    let f = try HDF5File(target, .createInMemory)
    try body(f)
    let bytes = try f.image()
    try f.close()
    try durableWrite(target, data: bytes)
}

/// Copies `source` over `target` as durableRename writes: via target.tmp.
func durableCopy(_ source: String, _ target: String) throws {
    try durableWrite(target) { tmp in
        do { try FileManager.default.copyItem(atPath: source, toPath: tmp) } catch {
            throw RuntimeError("cannot copy '\(source)' to '\(target)': \(error.localizedDescription)")
        }
    }
}
