import ArgumentParser
import Foundation

struct AuditData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Near-duplicates between splits: each val/test image's most similar train image (NCC of 32x32 thumbnails, +-2 px, "
            + "the best candidates re-scored at full resolution).",
        discussion: """
        Writes OUT/audit.csv (split, file, nearest train file, thumbnail score and offset, full-resolution score and shift, \
        labels) and OUT/index.html with the closest pairs side by side. The threshold applies to the thumbnail score; the \
        nearest train image is the best of the \(Audit.candidates) closest thumbnails at full resolution (+-\(Audit.fineShift) px). \
        `eval` and `report` add the figures on the clean test subset (no train neighbour at the threshold).
        """)

    @Argument(help: "A prepared data set (.h5) or an image folder (prepared once into a cache, as train does).") var data: String
    @Option(help: "Output folder.") var out: String = "audit"
    @Option(help: "Score at or above which a pair is a near-duplicate.") var threshold: Double = Audit.defaultThreshold
    @Option(help: "Pairs shown side by side on the page.") var show: Int = 24
    @OptionGroup var threading: ThreadOptions

    func validate() throws {
        guard threshold.isFinite, threshold > 0, threshold <= 1 else { throw ValidationError("--threshold must be in (0, 1]") }
        guard (0...1000).contains(show) else { throw ValidationError("--show must be in 0...1000") }
    }

    func run() throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: data, isDirectory: &isDir) else { throw RuntimeError("'\(data)' does not exist") }
        let path = isDir.boolValue ? try RunSetup.preparedCache(of: data, next: out) : data
        let ds = try Dataset(path: path)
        _ = threading.apply()
        let t0 = now()
        let result = try Audit.run(ds, threshold: threshold, threads: threading.count)
        try AuditPage.write(result, dataset: ds, to: out, show: show)
        for split in [Split.val, .test] {
            let all = result.matches.filter { $0.split == split }.count
            guard all > 0 else { continue }
            let dup = result.duplicated(split).count
            print(String(format: "%@: %d of %d images have a train image at NCC >= %.2f (%.1f %%)", split.rawValue, dup, all, threshold,
                         100 * Double(dup) / Double(all)))
        }
        if let crossing = result.crossingGroups {
            print(crossing.isEmpty ? "groups: none crosses splits"
                  : "groups: \(crossing.count) cross splits (\(crossing.prefix(5).joined(separator: ", "))"
                    + (crossing.count > 5 ? ", ...)" : ")"))
        }
        print(String(format: "1-nearest-neighbour baseline (the nearest train image's label): test accuracy %.4f",
                     result.nearestNeighbourAccuracy))
        print(String(format: "wrote %@/audit.csv and %@/index.html (%.1f s)", out, out, now() - t0))
    }
}
