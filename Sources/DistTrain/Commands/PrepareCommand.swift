import ArgumentParser
import Foundation

struct Prepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Turn an image folder (PNG/JPEG with CSV splits or class folders; DICOM series; NIfTI volumes) into a disttrain HDF5 data set.",
        discussion: """
        DICOM (any nesting, any file names): slices are grouped into series by SeriesInstanceUID, ordered by \
        ImagePositionPatient, converted to Hounsfield units (RescaleSlope/Intercept) and windowed (--window). NIfTI \
        (.nii, .nii.gz): axial slices, scl_slope/scl_inter applied. Labels from --labels (key,label[,class] rows, keyed by \
        --label-key; a labels.csv in the folder is used by default) or from class folders (DIR/<class>/...). Such folders \
        are always split by patient (PatientID, or the volume): --val, --test and --seed apply, and the splits are written \
        as CSV beside the data set.
        """)

    @Option(help: """
        Source folder: train.csv/val.csv/test.csv with filename,label rows, train/<class>/ (val/, test/) folders, \
        or DICOM files / NIfTI volumes.
        """)
    var images: String
    @Option(help: "Output .h5 file.") var out: String
    @Option(help: "Resize every image to this square size (default: keep; all must then match).") var imageSize: Int?
    @Option(help: "Channels to store: 1 (gray) or 3 (RGB); default: as the first image.") var channels: Int?
    @Option(help: """
        Number of classes, when not every class 0...K-1 has train images (or there is only one); \
        without it such labels are refused as likely typos.
        """)
    var classes: Int?
    @OptionGroup var limits: ImageLimitOptions
    @Option(help: """
        Make new splits: 'group' pools every listed image and splits by the CSVs' group column (patient-level, \
        class-stratified).
        """)
    var splitBy: SplitKey?
    @Option(help: "With --split-by: share of each class's images for validation.") var val: Double = GroupSplit.standard.val
    @Option(help: "With --split-by: share of each class's images for test.") var test: Double = GroupSplit.standard.test
    @Option(help: "With --split-by: seed of the group order.") var seed: UInt64 = GroupSplit.standard.seed
    @Option(help: """
        A groups CSV (filename,...,group; `disttrain groups` writes one) giving every image's group, in place of the CSVs' \
        group column.
        """)
    var groups: String?
    @Option(help: "With --split-by: k-fold cross-validation, K folds of whole groups (class-stratified); needs --fold.")
    var folds: Int?
    @Option(help: "With --folds: the fold (0...K-1) that is the test split; val is carved out of the other folds by group (--val).")
    var fold: Int?

    @Option(help: "DICOM/NIfTI: CSV of labels, 'key,label[,class]' rows (default: DIR/labels.csv, else class folders).")
    var labels: String?
    @Option(help: """
        DICOM: what the labels CSV is keyed by, exactly: patient (PatientID), study (StudyInstanceUID) or series \
        (SeriesInstanceUID). NIfTI volumes are keyed by their path in the folder, or by their file name when no other volume has it.
        """)
    var labelKey: MedicalSource.LabelKey = .patient
    @Option(help: "DICOM/NIfTI: HU window onto 8 bits: lung (W 1500 / L -600), mediastinum (350 / 50), W,L, or file (the file's own).")
    var window: Window = .lung
    @Option(help: "DICOM/NIfTI: slices of each series or volume: all, every:K or central:N.")
    var slices: MedicalSource.Slices = .all

    enum SplitKey: String, ExpressibleByArgument { case group }

    func validate() throws {
        if let c = channels, c != 1 && c != 3 { throw ValidationError("--channels must be 1 or 3") }
        if let s = imageSize, !(8...4096).contains(s) { throw ValidationError("--image-size must be in 8...4096") }
        guard val.isFinite, test.isFinite, val >= 0, test >= 0, val + test < 1 else {
            throw ValidationError("--val and --test must be >= 0 with val + test < 1")
        }
        if (folds == nil) != (fold == nil) { throw ValidationError("--folds and --fold go together") }
        if let k = folds {
            guard splitBy != nil else { throw ValidationError("--folds needs --split-by group") }
            guard (2...100).contains(k) else { throw ValidationError("--folds must be in 2...100") }
            guard let f = fold, (0..<k).contains(f) else { throw ValidationError("--fold must be in 0...\(k - 1)") }
        }
        if let k = classes, !(1...DatasetSource.maxClasses).contains(k) {
            throw ValidationError("--classes must be in 1...\(DatasetSource.maxClasses)")
        }
    }

    func run() throws {
        var source = try DatasetSource.detect(images)
        if case .medical(var m) = source {
            m.labels = labels ?? m.labels; m.labelKey = labelKey; m.window = window; m.slices = slices
            source = .medical(m)
        } else if labels != nil {
            throw ValidationError("--labels is for DICOM/NIfTI folders; '\(images)' holds PNG/JPEG splits")
        }
        let t0 = now()
        let split = GroupSplit(val: val, test: test, seed: seed, folds: folds.map { ($0, fold ?? 0) })
        var regroup = splitBy.map { _ in split }
        if case .medical = source { regroup = split }
        let assigned = try groups.map { (path: $0, of: try PatientGroups.read($0)) }
        try source.prepare(out: out, size: imageSize, channels: channels, classes: classes, maxPixels: limits.maxPixels,
                           regroup: regroup, groups: assigned) { done, total in
            if done % 1000 == 0 || done == total { print("  \(done)/\(total) images"); fflush(stdout) }
        }
        let ds = try Dataset(path: out)
        let splits = Split.allCases.filter { ds.splits[$0.rawValue] != nil }.map { "\($0.rawValue) \(ds[split: $0].count)" }
        print(String(format: "wrote %@: %d images %dx%dx%d, classes %@, splits %@ (%.1f s)", out, ds.count, ds.channels, ds.height,
                     ds.width, ds.classNames.joined(separator: "/"), splits.joined(separator: ", "), now() - t0))
        if let w = try ds.file.stringAttribute("window"), let win = Window(argument: w) { print("window: \(win)") }
        if let groups = try ds.groups() {
            let counts = Split.allCases.map { s in "\(s.rawValue) \(Set(ds[split: s].map { groups[$0] }).count)" }
            print("groups per split: \(counts.joined(separator: ", "))"
                  + (regroup != nil ? "; the splits are in \((out as NSString).deletingPathExtension)-splits/" : ""))
        }
    }
}

extension Window: ExpressibleByArgument {}
extension MedicalSource.LabelKey: ExpressibleByArgument {}
extension MedicalSource.Slices: ExpressibleByArgument {}
