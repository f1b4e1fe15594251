import Foundation
import Net

/// CT-like phantoms with known lesions: the embedded default data set and
/// the test bed of the CAM methods' localisation.
public enum Phantom {
    /// One 8-bit slice (size x size) and its lesion mask (255 inside).
    /// Body ellipse (soft tissue), two dark lungs, bright vessels in the lungs,
    /// a spine; positives add 1-3 ground-glass lesions (hazy, brighter blobs)
    /// inside the lungs. Gaussian-ish noise on everything.
    public static func slice(size: Int, positive: Bool, seed: UInt64, anatomy: Anatomy? = nil, z: Double = 0.5)
        -> (image: [UInt8], mask: [UInt8]) {
        var rng = Xoshiro256(seed: seed)
        let (v, mask) = levels(size: size, positive: positive, rng: &rng, anatomy: anatomy, z: z)
        var img = [UInt8](repeating: 0, count: v.count)
        for i in 0..<v.count {
            let noise = (rng.unit() + rng.unit() + rng.unit() - 1.5) * 0.05
            img[i] = UInt8(max(0, min(255, (v[i] + noise) * 255)))
        }
        return (img, mask)
    }

    /// The same anatomy in Hounsfield units: air -1000, lung -850, ground
    /// glass about -650 to -500, vessels and soft tissue about 0 to 40, the body's
    /// rim 300, bone 700 (piecewise linear in the phantom's levels), with
    /// +-20 HU noise.
    /// `anatomy`: one patient's body, lungs and lesions, seen at height `z` in 0...1 (a study's slices
    /// share it); nil draws a new anatomy for this slice alone.
    public static func huSlice(size: Int, positive: Bool, seed: UInt64, anatomy: Anatomy? = nil, z: Double = 0.5)
        -> (hu: [Float], mask: [UInt8]) {
        var rng = Xoshiro256(seed: seed)
        let (v, mask) = levels(size: size, positive: positive, rng: &rng, anatomy: anatomy, z: z)
        let knots: [(Double, Double)] = [(0.02, -1000), (0.12, -850), (0.40, -500), (0.55, 0), (0.62, 40), (0.85, 300), (0.95, 700)]
        func hu(_ x: Double) -> Double {
            if x <= knots[0].0 { return knots[0].1 }
            for (a, b) in zip(knots, knots.dropFirst()) where x <= b.0 { return a.1 + (x - a.0) / (b.0 - a.0) * (b.1 - a.1) }
            return knots.last!.1
        }
        let out = v.map { Float(hu($0) + (rng.unit() + rng.unit() + rng.unit() - 1.5) * 40) }
        return (out, mask)
    }

    /// One patient's geometry, in units of the half size: the body and lung ellipses, the lungs' spacing, where the
    /// body sits, and (positives) lesion centres as fractions of the lung pixels plus radii. Drawn once per patient
    /// for a study, so that neighbouring slices of one patient look alike and two patients do not.
    public struct Anatomy: Sendable {
        public var bodyA: Double, bodyB: Double, lungA: Double, lungB: Double, lungDX: Double
        public var dx = 0.0, dy = 0.0
        public var lesions: [(at: Double, radius: Double)] = []

        /// The draws a lone slice makes (their order is what `slice` has always drawn).
        static func lone(_ rng: inout Xoshiro256) -> Anatomy {
            Anatomy(bodyA: rng.uniform(0.78, 0.9), bodyB: rng.uniform(0.6, 0.72), lungA: rng.uniform(0.26, 0.32),
                    lungB: rng.uniform(0.38, 0.46), lungDX: rng.uniform(0.36, 0.42))
        }

        /// A patient: wider ranges than a lone slice (patients differ in build and in where they lie), 1-3 lesions.
        public static func patient(_ rng: inout Xoshiro256) -> Anatomy {
            var a = Anatomy(bodyA: rng.uniform(0.7, 0.92), bodyB: rng.uniform(0.52, 0.76), lungA: rng.uniform(0.22, 0.34),
                            lungB: rng.uniform(0.32, 0.48), lungDX: rng.uniform(0.33, 0.44))
            a.dx = rng.uniform(-0.08, 0.08); a.dy = rng.uniform(-0.08, 0.08)
            a.lesions = (0..<Int(rng.uniform(1, 3.99))).map { _ in (rng.unit(), rng.uniform(0.07, 0.14)) }
            return a
        }
    }

    /// The phantom's levels in [0, 1] before noise, and the lesion mask. With a patient's anatomy the lungs
    /// grow from the top of the study to the middle and shrink again (0.75...1 of their size, by z).
    static func levels(size: Int, positive: Bool, rng: inout Xoshiro256, anatomy: Anatomy? = nil, z: Double = 0.5)
        -> (v: [Double], mask: [UInt8]) {
        let n = size * size
        var v = [Double](repeating: 0.02, count: n)
        var mask = [UInt8](repeating: 0, count: n)
        let h = Double(size) / 2
        let a = anatomy ?? Anatomy.lone(&rng), lungScale = anatomy == nil ? 1 : 0.75 + 0.25 * sin(Double.pi * z)
        let c = h + a.dx * h, cy0 = h + a.dy * h
        let bodyA = h * a.bodyA, bodyB = h * a.bodyB
        let lungA = h * a.lungA * lungScale, lungB = h * a.lungB * lungScale, lungDX = h * a.lungDX
        func inEllipse(_ x: Double, _ y: Double, _ cx: Double, _ cy: Double, _ a: Double, _ b: Double) -> Double {
            ((x - cx) * (x - cx)) / (a * a) + ((y - cy) * (y - cy)) / (b * b)
        }
        var lung = [Bool](repeating: false, count: n)
        for y in 0..<size { for x in 0..<size {
            let fx = Double(x) + 0.5, fy = Double(y) + 0.5, i = y * size + x
            if inEllipse(fx, fy, c, cy0, bodyA, bodyB) <= 1 { v[i] = 0.62 }
            if inEllipse(fx, fy, c, cy0, bodyA, bodyB) <= 1 && inEllipse(fx, fy, c, cy0, bodyA - 3, bodyB - 3) > 1 { v[i] = 0.85 }
            for side in [-1.0, 1.0] where inEllipse(fx, fy, c + side * lungDX, cy0 - h * 0.05, lungA, lungB) <= 1 {
                v[i] = 0.12; lung[i] = true
            }
            if inEllipse(fx, fy, c, cy0 + bodyB * 0.72, h * 0.09, h * 0.09) <= 1 { v[i] = 0.95 }  // spine
        } }
        // Vessels: small bright discs inside the lungs.
        let lungPixels = lung.indices.filter { lung[$0] }
        for _ in 0..<Int(rng.uniform(25, 45)) {
            guard let p = lungPixels.randomElement(using: &rng) else { break }
            let px = Double(p % size), py = Double(p / size), r = rng.uniform(0.6, 1.6) * Double(size) / 112
            for y in max(0, Int(py - r - 1))..<min(size, Int(py + r + 2)) { for x in max(0, Int(px - r - 1))..<min(size, Int(px + r + 2)) {
                let d2 = (Double(x) - px) * (Double(x) - px) + (Double(y) - py) * (Double(y) - py)
                if d2 <= r * r && lung[y * size + x] { v[y * size + x] = 0.55 }
            } }
        }
        if positive {
            var lesions: [(Int, Double)] = []
            if let a = anatomy, !lungPixels.isEmpty {  // the patient's lesions, where its lungs are on this slice
                lesions = a.lesions.map { (lungPixels[min(Int($0.at * Double(lungPixels.count)), lungPixels.count - 1)], $0.radius) }
            } else if anatomy == nil {
                for _ in 0..<Int(rng.uniform(1, 3.99)) {
                    guard let p = lungPixels.randomElement(using: &rng) else { break }
                    lesions.append((p, rng.uniform(0.07, 0.14)))
                }
            }
            for (p, radius) in lesions {
                let px = Double(p % size), py = Double(p / size), r = radius * Double(size)
                for y in 0..<size { for x in 0..<size {
                    let i = y * size + x
                    let d2 = ((Double(x) - px) * (Double(x) - px) + (Double(y) - py) * (Double(y) - py)) / (r * r)
                    if d2 <= 1 && lung[i] {
                        v[i] = max(v[i], 0.12 + 0.28 * (1 - 0.5 * d2))  // ground glass: hazy, brighter than lung
                        mask[i] = 255
                    }
                } }
            }
        }
        return (v, mask)
    }

    /// Writes n slices in prepare's CSV layout (70/10/20 % train/val/test,
    /// classes alternating) with masks under masks/.
    public static func write(to dir: String, n: Int, size: Int, seed: UInt64) throws {
        let fm = FileManager.default
        for sub in ["COVID", "NORMAL", "masks/COVID", "masks/NORMAL"] {
            try fm.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true)
        }
        var rows: [String: String] = ["train": "filename,label\n", "val": "filename,label\n", "test": "filename,label\n"]
        for i in 0..<n {
            let positive = i % 2 == 1
            let (img, mask) = slice(size: size, positive: positive, seed: seed &* 1_000_003 &+ UInt64(i))
            let name = "\(positive ? "COVID" : "NORMAL")/phantom-\(i).png"
            try RasterImage(width: size, height: size, channels: 1, pixels: img).writePNG(dir + "/" + name)
            try RasterImage(width: size, height: size, channels: 1, pixels: mask).writePNG(dir + "/masks/" + name)
            let f = Double(i) / Double(n)
            let split = f < 0.7 ? "train" : f < 0.8 ? "val" : "test"
            rows[split]! += "\(name),\(positive ? 1 : 0)\n"
        }
        for (split, text) in rows { try text.write(toFile: "\(dir)/\(split).csv", atomically: true, encoding: .utf8) }
    }

    /// A replica of the CT set's layout and its leak: `patients` patients (every second one COVID) of `slices`
    /// slices each, one anatomy per patient, as 8-bit PNGs numbered per class in patient order
    /// (COVID/slice (k).png, as the CT set's `Covid (k).png`), with masks under masks/, and CSV splits drawn per
    /// slice (70/10/20 %), so one patient's slices sit on both sides. The CSVs carry the true patient as a
    /// `group` column: `disttrain groups` ignores it and reports its agreement with it.
    public static func writeSeries(to dir: String, patients: Int, slices: Int, size: Int, seed: UInt64) throws {
        let fm = FileManager.default
        for sub in ["COVID", "NORMAL", "masks/COVID", "masks/NORMAL"] {
            try fm.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true)
        }
        var rows: [String: String] = ["train": "filename,label,group\n", "val": "filename,label,group\n", "test": "filename,label,group\n"]
        var number = ["COVID": 0, "NORMAL": 0], splitRNG = Xoshiro256(seed: seed ^ 0x5917)
        for p in 0..<patients {
            let positive = p % 2 == 1, cls = positive ? "COVID" : "NORMAL"
            var patientRNG = Xoshiro256(seed: seed &* 7_919 &+ UInt64(p))
            let anatomy = Anatomy.patient(&patientRNG)
            for z in 0..<slices {
                let (img, mask) = slice(size: size, positive: positive, seed: seed &* 1_000_003 &+ UInt64(p * slices + z), anatomy: anatomy,
                                        z: slices > 1 ? Double(z) / Double(slices - 1) : 0.5)
                number[cls]! += 1
                let name = "\(cls)/slice (\(number[cls]!)).png"
                try RasterImage(width: size, height: size, channels: 1, pixels: img).writePNG(dir + "/" + name)
                try RasterImage(width: size, height: size, channels: 1, pixels: mask).writePNG(dir + "/masks/" + name)
                let u = splitRNG.unit()
                rows[u < 0.7 ? "train" : u < 0.8 ? "val" : "test"]! += "\(name),\(positive ? 1 : 0),P\(p)\n"
            }
        }
        for (split, text) in rows { try durableWrite("\(dir)/\(split).csv", data: Data(text.utf8)) }
    }

    /// A synthetic study in HU: `patients` patients (every second one COVID,
    /// lesions on each slice), `slices` slices each of one anatomy per patient, as one DICOM series per
    /// patient (dir/<PatientID>/<random name>.dcm, so file order says nothing
    /// of slice order) or one NIfTI volume per patient (dir/<PatientID>.nii.gz);
    /// labels.csv keyed by PatientID (DICOM) or volume file (NIfTI).
    public static func writeStudy(to dir: String, nifti: Bool, patients: Int, slices: Int, size: Int, seed: UInt64) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var rng = Xoshiro256(seed: seed ^ 0x5EED)
        func uid(_ parts: Int...) -> String { "2.25.\(seed).\(parts.map(String.init).joined(separator: "."))" }
        var labels = nifti ? "volume,label,class\n" : "PatientID,label,class\n"
        for p in 0..<patients {
            let positive = p % 2 == 1, id = String(format: "P%04d", p)
            var volume: [Float] = []
            var patientRNG = Xoshiro256(seed: seed &* 7_919 &+ UInt64(p))
            let anatomy = Anatomy.patient(&patientRNG)
            for z in 0..<slices {
                let (hu, _) = huSlice(size: size, positive: positive, seed: seed &* 1_000_003 &+ UInt64(p * slices + z), anatomy: anatomy,
                                      z: slices > 1 ? Double(z) / Double(slices - 1) : 0.5)
                if nifti { volume += hu; continue }
                try FileManager.default.createDirectory(atPath: "\(dir)/\(id)", withIntermediateDirectories: true)
                let name = String(format: "IM%08llX.dcm", rng.next() & 0xFFFF_FFFF)
                try DicomFile.writeCT("\(dir)/\(id)/\(name)", hu: hu, size: size, patientID: id, studyUID: uid(1, p), seriesUID: uid(2, p),
                                      sopUID: uid(3, p, z), instance: z + 1, z: Double(z) * 5, spacing: 0.7, window: WindowLevel(width: 1500, level: -600))
            }
            if nifti { try NiftiVolume.write("\(dir)/\(id).nii.gz", hu: volume, nx: size, ny: size, nz: slices, spacing: 0.7) }
            labels += "\(nifti ? id + ".nii.gz" : id),\(positive ? 1 : 0),\(positive ? "COVID" : "NORMAL")\n"
        }
        try durableWrite(dir + "/labels.csv", data: Data(labels.utf8))
    }
}
