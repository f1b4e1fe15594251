import Foundation

/// fsync the file, rename over the target, fsync the folder: a reader sees
/// the old file or the new one, never half of one.
func durableRename(_ tmp: String, _ target: String) throws {
    let fd = open(tmp, O_RDONLY)
    if fd >= 0 { fsync(fd); close(fd) }
    if rename(tmp, target) != 0 { throw RuntimeError("cannot rename '\(tmp)' to '\(target)': \(String(cString: strerror(errno)))") }
    let dir = (target as NSString).deletingLastPathComponent
    let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY)
    if dfd >= 0 { fsync(dfd); close(dfd) }
}

/// Copies `source` over `target` as durableRename writes: via target.tmp.
func durableCopy(_ source: String, _ target: String) throws {
    let tmp = target + ".tmp"
    try? FileManager.default.removeItem(atPath: tmp)
    try FileManager.default.copyItem(atPath: source, toPath: tmp)
    try durableRename(tmp, target)
}
