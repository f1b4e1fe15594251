import Foundation

// The prepared data set (DESIGN.md "Data"): one HDF5 file with
//   images      uint8 [N, C, H, W], one chunk per image (ranks read their shard only)
//   labels      int64 [N]
//   filenames   strings [N] (relative to the source folder)
//   groups      strings [N], optional: the patient or scan of each image (CSV `group` column)
//   split/train, split/val, split/test   int64 indices into N
//   class_names strings [K]
//   mean, std   float64 [C]: per-channel statistics of the train split, pixel/255
// attributes: format "disttrain-dataset", version, source, fingerprint.

/// The splits a data set may have, by their stored names.
public enum Split: String, CaseIterable, Codable, Sendable { case train, val, test }

public final class Dataset {
    public let path: String
    public let file: HDF5File
    public let count: Int, channels: Int, height: Int, width: Int
    public let labels: [Int]
    public let classNames: [String]
    public let splits: [String: [Int]]
    public let mean: [Double], std: [Double]
    public let fingerprint: String

    public init(path: String) throws {
        self.path = path
        file = try HDF5File(path)
        guard try file.stringAttribute("format") == "disttrain-dataset" else {
            throw RuntimeError("'\(path)' is not a disttrain data set (make one with `disttrain prepare`)")
        }
        let shape = try file.shape("images")
        guard shape.count == 4 else { throw RuntimeError("'\(path)': dataset 'images' must be [N, C, H, W], is \(shape)") }
        (count, channels, height, width) = (shape[0], shape[1], shape[2], shape[3])
        labels = try file.readInt64s("labels").values.map { Int($0) }
        classNames = try file.readStrings("class_names")
        var s: [String: [Int]] = [:]
        for name in Split.allCases.map(\.rawValue) where file.exists("split/" + name) {
            s[name] = try file.readInt64s("split/" + name).values.map { Int($0) }
        }
        splits = s
        mean = try file.readDoubles("mean").values
        std = try file.readDoubles("std").values
        fingerprint = try file.stringAttribute("fingerprint") ?? ""
        guard labels.count == count else { throw RuntimeError("'\(path)': \(labels.count) labels for \(count) images") }
        let classes = classNames.isEmpty ? DatasetSource.maxClasses : classNames.count
        if let bad = labels.firstIndex(where: { $0 < 0 || $0 >= classes }) {
            throw RuntimeError("'\(path)': label \(labels[bad]) of image \(bad) is not a class 0...\(classes - 1)")
        }
        for (name, indices) in splits {
            if let bad = indices.first(where: { $0 < 0 || $0 >= count }) {
                throw RuntimeError("'\(path)': split/\(name) holds index \(bad), outside 0..<\(count)")
            }
        }
        guard mean.count == channels, std.count == channels, (mean + std).allSatisfy(\.isFinite), std.allSatisfy({ $0 > 0 }) else {
            throw RuntimeError("'\(path)': mean/std must be \(channels) finite values each, std positive")
        }
    }

    /// Indices (into the images) of a split; empty when the data set has none.
    public subscript(split split: Split) -> [Int] { splits[split.rawValue] ?? [] }

    public func filenames() throws -> [String] { try file.readStrings("filenames") }

    /// The group (patient) of every image, when the source had a group column.
    public func groups() throws -> [String]? { file.exists("groups") ? try file.readStrings("groups") : nil }

    /// The images `indices` as uint8 CHW, back to back.
    public func readImages(_ indices: [Int]) throws -> [UInt8] { try file.readRows("images", indices: indices).bytes }
}
