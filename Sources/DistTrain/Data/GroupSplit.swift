import Foundation
import Net

/// Patient-level splits (`prepare --split-by group`): every group (patient,
/// scan) lies in one split only, so no slice of a test patient is seen in
/// training; class-stratified at the group level and seeded.
public struct GroupSplit: Sendable {
    public var val: Double, test: Double, seed: UInt64
    /// k-fold cross-validation (`--folds K --fold I`): test is fold I of K, `test` is unused.
    public var folds: (count: Int, test: Int)? = nil

    public init(val: Double, test: Double, seed: UInt64, folds: (count: Int, test: Int)? = nil) {
        self.val = val; self.test = test; self.seed = seed; self.folds = folds
    }

    /// prepare's defaults (--val 0.1 --test 0.2 --seed 0), also what DICOM/NIfTI sources get when none is given.
    public static let standard = GroupSplit(val: 0.1, test: 0.2, seed: 0)

    /// Per class (a group's class is its most frequent label), the groups in a
    /// seeded random order go to test until it holds `test` of the class's
    /// images, then to val likewise, the rest to train. With `folds`, the groups
    /// are dealt into K folds first; fold I is test and val is carved, by group,
    /// out of the other folds (`val` of their images).
    public func apply(_ samples: [Sample]) throws -> [(String, [Sample])] {
        var byGroup: [String: [Sample]] = [:], order: [String] = []
        for s in samples {
            guard let g = s.group else { throw RuntimeError("--split-by group needs a 'group' column in the CSVs ('\(s.file)' has none)") }
            if byGroup[g] == nil { order.append(g) }
            byGroup[g, default: []].append(s)
        }
        func majority(_ g: String) -> Int {
            var count: [Int: Int] = [:]
            for s in byGroup[g]! { count[s.label, default: 0] += 1 }
            return count.max { ($0.value, -$0.key) < ($1.value, -$1.key) }!.key
        }
        var rng = Xoshiro256(seed: seed)
        var splits: [String: [Sample]] = ["train": [], "val": [], "test": []]
        for k in Set(order.map(majority)).sorted() {
            var groups = order.filter { majority($0) == k }
            for i in stride(from: groups.count - 1, to: 0, by: -1) { groups.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            func size(_ g: String) -> Double { Double(byGroup[g]!.count) }
            var rest = groups
            if let folds {
                guard groups.count >= folds.count else {
                    throw RuntimeError("class \(k) has \(groups.count) group(s), fewer than the \(folds.count) folds: every fold needs "
                                       + "one of each class (fewer folds, or groups that are patients)")
                }
                // Each group, in the seeded order, to the fold with the fewest of the class's images so far (ties:
                // the lower fold), so folds balance images, not only groups; fold `test` is the test split. The
                // assignment does not depend on which fold is tested: the K test splits of one seed partition the data.
                var load = [Double](repeating: 0, count: folds.count), fold: [String: Int] = [:]
                for g in groups {
                    let f = load.indices.min { (load[$0], $0) < (load[$1], $1) }!
                    fold[g] = f; load[f] += size(g)
                }
                rest = groups.filter { fold[$0] != folds.test }
                for g in groups where fold[g] == folds.test { splits["test"]! += byGroup[g]! }
            }
            // Validation carved out by group: of the images left (all, or the training folds), `val` of them; without
            // folds, `test` of all first.
            let images = rest.reduce(0.0) { $0 + size($1) }
            var taken = (test: 0.0, val: 0.0)
            for g in rest {
                if folds == nil && taken.test < test * images { splits["test"]! += byGroup[g]!; taken.test += size(g)
                } else if taken.val < val * images { splits["val"]! += byGroup[g]!; taken.val += size(g)
                } else { splits["train"]! += byGroup[g]! }
            }
        }
        return ["train", "val", "test"].map { ($0, splits[$0]!) }
    }

    /// The splits as CSV files (filename,label,group) for review, quoted by CSV.row: a file
    /// name or group with a comma, quote or newline is one field, never a forged row.
    public static func write(_ splits: [(String, [Sample])], to dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, samples) in splits {
            let rows = samples.map { CSV.row([$0.name, String($0.label), $0.group ?? ""]) }
            let csv = CSV.row(["filename", "label", "group"]) + rows.joined()
            try durableWrite("\(dir)/\(name).csv", data: Data(csv.utf8))
        }
    }

    /// Split CSVs written to a temporary folder beside their target, swapped in by `commit`
    /// (prepare does so once the data set is written) or removed by `discard`.
    struct Staged {
        var tmp: String, target: String

        func commit() throws {
            let old = target + ".old-\(getpid())"
            let fm = FileManager.default
            try? fm.removeItem(atPath: old)
            let had = fm.fileExists(atPath: target)
            if had && rename(target, old) != 0 { throw RuntimeError("cannot move '\(target)' aside to replace it: \(errnoText())") }
            guard rename(tmp, target) == 0 else {
                let e = errnoText()
                if had { rename(old, target) }
                throw RuntimeError("cannot rename '\(tmp)' to '\(target)': \(e)")
            }
            if had { try? fm.removeItem(atPath: old) }
        }

        func discard() { try? FileManager.default.removeItem(atPath: tmp) }
    }

    /// Writes the splits for `target` (a folder) into a temporary folder beside it; nothing
    /// at `target` changes until `commit`. A `target` that exists and is no folder is refused.
    static func stage(_ splits: [(String, [Sample])], for target: String) throws -> Staged {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: target, isDirectory: &isDir), !isDir.boolValue {
            throw RuntimeError("'\(target)' (where the splits go) exists and is not a folder")
        }
        let staged = Staged(tmp: target + ".tmp-\(getpid())", target: target)
        staged.discard()
        do { try write(splits, to: staged.tmp) } catch {
            staged.discard()
            throw error
        }
        return staged
    }
}
