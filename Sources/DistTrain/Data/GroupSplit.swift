import Foundation
import Net

/// Patient-level splits (`prepare --split-by group`): every group (patient,
/// scan) lies in one split only, so no slice of a test patient is seen in
/// training; class-stratified at the group level and seeded.
public struct GroupSplit: Sendable {
    public var val: Double, test: Double, seed: UInt64

    public init(val: Double, test: Double, seed: UInt64) { self.val = val; self.test = test; self.seed = seed }

    /// prepare's defaults (--val 0.1 --test 0.2 --seed 0), also what DICOM/NIfTI sources get when none is given.
    public static let standard = GroupSplit(val: 0.1, test: 0.2, seed: 0)

    /// Per class (a group's class is its most frequent label), the groups in a
    /// seeded random order go to test until it holds `test` of the class's
    /// images, then to val likewise, the rest to train.
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
            let images = Double(groups.reduce(0) { $0 + byGroup[$1]!.count })
            var taken = (test: 0.0, val: 0.0)
            for g in groups {
                let n = Double(byGroup[g]!.count)
                if taken.test < test * images { splits["test"]! += byGroup[g]!; taken.test += n
                } else if taken.val < val * images { splits["val"]! += byGroup[g]!; taken.val += n
                } else { splits["train"]! += byGroup[g]! }
            }
        }
        return ["train", "val", "test"].map { ($0, splits[$0]!) }
    }

    /// The splits as CSV files (filename,label,group) for review.
    public static func write(_ splits: [(String, [Sample])], to dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, samples) in splits {
            let csv = "filename,label,group\n" + samples.map { "\($0.name),\($0.label),\($0.group ?? "")\n" }.joined()
            try durableWrite("\(dir)/\(name).csv", data: Data(csv.utf8))
        }
    }
}
