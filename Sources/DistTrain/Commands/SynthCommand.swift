import ArgumentParser

struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write CT-like phantom slices (lesions in the positive class) in a layout `prepare` reads.",
        discussion: """
        png: 8-bit slices with lesion masks and CSV splits, each slice its own anatomy. series: the CT set's layout and leak, \
        8-bit PNGs numbered per class in patient order (--slices-per-patient each, one anatomy per patient), CSV splits drawn \
        per slice with the true patient as a group column. dicom: one CT series per patient in Hounsfield units \
        (DIR/<PatientID>/*.dcm, signed 16 bit, RescaleIntercept -1024) and labels.csv keyed by PatientID. nifti: one \
        .nii.gz volume per patient in HU and labels.csv keyed by volume. --n slices in all, --slices-per-patient each.
        """)

    enum Format: String, ExpressibleByArgument { case png, series, dicom, nifti }

    @Option(help: "Output folder.") var out: String
    @Option(help: "Number of slices.") var n: Int = 400
    @Option(help: "Size (square).") var size: Int = 112
    @Option(help: "Seed.") var seed: UInt64 = 0
    @Option(help: "png, series, dicom or nifti.") var format: Format = .png
    @Option(help: "series/dicom/nifti: slices per patient (series or volume).") var slicesPerPatient: Int = 10

    func validate() throws {
        guard n >= 10, size >= 32 else { throw ValidationError("--n must be >= 10 and --size >= 32") }
        guard (1...1000).contains(slicesPerPatient), n / slicesPerPatient >= 4 else {
            throw ValidationError("--slices-per-patient must be in 1...1000 and leave at least 4 patients (--n / it)")
        }
    }

    func run() throws {
        if format == .png {
            try Phantom.write(to: out, n: n, size: size, seed: seed)
            print("wrote \(n) phantom slices (\(size)x\(size)) with masks to \(out)")
            return
        }
        let patients = n / slicesPerPatient
        if format == .series {
            try Phantom.writeSeries(to: out, patients: patients, slices: slicesPerPatient, size: size, seed: seed)
            print("wrote \(patients) patients x \(slicesPerPatient) slices (\(size)x\(size)) as numbered PNGs, split per slice, to \(out)")
            return
        }
        try Phantom.writeStudy(to: out, nifti: format == .nifti, patients: patients, slices: slicesPerPatient, size: size, seed: seed)
        print("wrote \(patients) patients x \(slicesPerPatient) slices (\(size)x\(size), HU) as \(format.rawValue) with labels.csv to \(out)")
    }
}
