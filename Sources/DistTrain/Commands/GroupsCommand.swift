import ArgumentParser
import Foundation

extension PatientGroups.Order: ExpressibleByArgument {}

/// `disttrain groups DATA`: pseudo-patients for a data set without patient IDs.
struct Groups: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Infer patient groups for a data set without patient IDs: per class, file-number order cut where two consecutive "
            + "slices' 32x32 thumbnails are --jump times as dissimilar (1 - NCC) as the class's median pair.",
        discussion: """
        Writes OUT (filename,label,group for every image), which `prepare --groups OUT --split-by group` (and --folds) takes. \
        Prints the number of groups, their sizes, the count at other cuts, whether byte-identical images share a group, and, \
        when the data set has groups of its own (DICOM PatientID, a CSV group column), the adjusted Rand index of the inferred \
        groups against them: the known-answer check.
        """)

    @Argument(help: "A prepared data set (.h5) or an image folder (prepared once into a cache, as train does).") var data: String
    @Option(help: "Output CSV.") var out: String = "groups.csv"
    @Option(help: "A new group starts where 1 - NCC of two consecutive slices exceeds this many times the class's median.")
    var jump: Double = PatientGroups.defaultJump
    @Option(help: "Instead of --jump: the absolute consecutive-slice NCC below which a new group starts.") var cut: Double?
    @Option(help: "Walk each class by the number in the file name (number) or in the data set's stored order (stored: DICOM).")
    var order: PatientGroups.Order = .number

    func validate() throws {
        guard jump.isFinite, jump >= 1, jump <= 1000 else { throw ValidationError("--jump must be in 1...1000") }
        if let c = cut { guard c.isFinite, c > -1, c <= 1 else { throw ValidationError("--cut must be in (-1, 1]") } }
    }

    func run() throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: data, isDirectory: &isDir) else { throw RuntimeError("'\(data)' does not exist") }
        let path = isDir.boolValue ? try RunSetup.preparedCache(of: data, next: out) : data
        let ds = try Dataset(path: path)
        let t0 = now()
        let r = try PatientGroups.infer(ds, jump: jump, cut: cut, order: order)
        let sizes = r.sizes.sorted()
        for k in Set(ds.labels).sorted() {
            let name = ds.classNames.indices.contains(k) ? ds.classNames[k] : "class \(k)"
            let n = Set(ds.labels.indices.filter { ds.labels[$0] == k }.map { r.groups[$0] }).count
            print(String(format: "%@: %d images in %d groups (cut below NCC %.3f)", name, ds.labels.filter { $0 == k }.count, n,
                         r.threshold[k] ?? .nan))
        }
        print("\(r.count) groups; slices per group: median \(sizes[sizes.count / 2]), min \(sizes.first!), max \(sizes.last!)")
        if cut == nil {
            let sweep = [2, 2.5, 3, 3.5, 4, 5, 6].map { String(format: "%g: %d", $0, r.groupCount(jump: $0)) }
            print("groups at other jumps: " + sweep.joined(separator: ", "))
        }
        let pairs = try PatientGroups.identicalImages(ds)
        if !pairs.isEmpty {
            let apart = pairs.filter { r.groups[$0.0] != r.groups[$0.1] }.count
            print("byte-identical images: \(pairs.count) pair(s), \(apart == 0 ? "all in one group each" : "\(apart) split apart")")
        }
        if let truth = try ds.groups() {
            print(String(format: "against the data set's own groups (%d): adjusted Rand index %.4f", Set(truth).count,
                         PatientGroups.adjustedRandIndex(r.groups, truth)))
        }
        try durableWrite(out, data: Data(try PatientGroups.csv(r, ds).utf8))
        print(String(format: "wrote %@ (%.1f s)", out, now() - t0))
    }
}
