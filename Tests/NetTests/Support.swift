import DistTrain
import Foundation
import Net
import XCTest

/// The engine a test runs on unless it names its own: the defaults, on the convolutions
/// DISTTRAIN_CONV selects as disttrain does (launch/test-kernel-variants runs the suite on the native ones).
func testEngine(_ precision: Precision = .fp32) -> Engine {
    Engine(backend: .fromEnvironment(), precision: precision)
}

/// Tests/Fixtures, found from this file's path (no resources to copy).
let fixturesDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures").path

func fixture(_ name: String) throws -> HDF5File { try HDF5File(fixturesDir + "/" + name) }

/// The hash formula of make_fixtures.py: h = (i*2654435761 + salt*40503) mod 2^32
/// through murmur3's finaliser, u = h / 2^32, value = Float(offset + (2u - 1) * scale).
/// Exact in Double on both sides.
func formulaValues(_ count: Int, salt: Int, scale: Double, offset: Double = 0) -> [Float] {
    (0..<count).map { i in
        let m: UInt64 = 0xFFFF_FFFF
        var h = (UInt64(i) &* 2_654_435_761 &+ UInt64(salt) &* 40503) & m
        h ^= h >> 16
        h = (h &* 0x85EB_CA6B) & m
        h ^= h >> 13
        h = (h &* 0xC2B2_AE35) & m
        h ^= h >> 16
        let u = Double(h) / 4_294_967_296.0
        return Float(offset + (2.0 * u - 1.0) * scale)
    }
}

/// make_fixtures.py's fill_formula: every float entry by formula, salt = entry index + 1
/// (the last BN gamma of each residual branch near 0.1; see the script for why).
func fillFormula(_ net: ResNet) {
    let store = net.store
    for (k, e) in store.entries.enumerated() {
        switch e.kind {
        case .counter: store.write(e, [0])
        case .buffer:
            store.write(e, Array(repeating: e.name.hasSuffix("running_var") ? 1 : 0, count: e.count))
        case .parameter:
            let v: [Float]
            if e.shape.count == 4 {
                let fanOut = e.shape[0] * e.shape[2] * e.shape[3]
                v = formulaValues(e.count, salt: k + 1, scale: 3.0.squareRoot() * (2.0 / Double(fanOut)).squareRoot())
            } else if e.name.hasPrefix("fc.") {
                v = formulaValues(e.count, salt: k + 1, scale: 1 / Double(net.featureCount).squareRoot())
            } else if e.name.hasPrefix("layer") && e.name.hasSuffix((net.config.arch.usesBasicBlocks ? "bn2" : "bn3") + ".weight") {
                v = formulaValues(e.count, salt: k + 1, scale: 0.05, offset: 0.1)
            } else if e.name.hasSuffix("weight") {
                v = formulaValues(e.count, salt: k + 1, scale: 0.1, offset: 1)
            } else {
                v = formulaValues(e.count, salt: k + 1, scale: 0.1)
            }
            store.write(e, v)
        }
    }
}

/// Absolute + relative tolerance: |a - b| <= atol + rtol * |b| elementwise,
/// with atol taken relative to the reference's largest magnitude (so one
/// tolerance serves tensors of any scale). On failure names the tensor, the
/// max difference and the first bad index.
func assertClose(_ name: String, _ ours: [Float], _ ref: [Float], rtol: Float = 1e-3, atol: Float = 1e-4,
                 file: StaticString = #filePath, line: UInt = #line) {
    guard ours.count == ref.count else {
        XCTFail("\(name): \(ours.count) values, reference has \(ref.count)", file: file, line: line)
        return
    }
    let scale = max(ref.map { abs($0) }.max() ?? 0, 1e-6)
    var maxDiff: Float = 0, firstBad = -1
    for i in 0..<ours.count {
        let d = abs(ours[i] - ref[i])
        if !(d <= atol * scale + rtol * abs(ref[i])) && firstBad < 0 { firstBad = i }
        if !(d <= maxDiff) { maxDiff = d }
    }
    if firstBad >= 0 {
        XCTFail("\(name): max |diff| \(maxDiff) (reference max |x| \(scale)); first bad index \(firstBad): ours \(ours[firstBad]) vs \(ref[firstBad])",
                file: file, line: line)
    }
}

/// Compares a tensor to a fixture entry written whole or summarised
/// (`name.sample` at stride `stats[2]`, `name.stats` = [sum, sum |x|, stride]).
func assertMatchesFixture(_ f: HDF5File, _ path: String, _ ours: [Float], rtol: Float = 1e-3, atol: Float = 1e-4,
                          file: StaticString = #filePath, line: UInt = #line) throws {
    if f.exists(path) {
        assertClose(path, ours, try f.readFloats(path).values, rtol: rtol, atol: atol, file: file, line: line)
        return
    }
    let sample = try f.readFloats(path + ".sample").values
    let stats = try f.readInt64sOrDoubles(path + ".stats")
    let step = Int(stats[2])
    let picked = (0..<sample.count).map { ours[$0 * step] }
    assertClose(path + " (sample)", picked, sample, rtol: rtol, atol: atol, file: file, line: line)
    let sum = ours.reduce(0.0) { $0 + Double($1) }, sumAbs = ours.reduce(0.0) { $0 + abs(Double($1)) }
    // The sum can cancel, so it is judged against the sum of magnitudes.
    XCTAssertLessThanOrEqual(abs(sum - stats[0]), Double(atol) * stats[1] + 1e-6, "\(path): sum \(sum) vs \(stats[0])",
                             file: file, line: line)
    XCTAssertLessThanOrEqual(abs(sumAbs - stats[1]), Double(rtol) * stats[1] + 1e-6, "\(path): sum|x| \(sumAbs) vs \(stats[1])",
                             file: file, line: line)
}

extension HDF5File {
    func readInt64sOrDoubles(_ name: String) throws -> [Double] {
        // .stats are float64; read through Float would lose digits of the sums.
        try readDoubles(name).values
    }
}

func tensor(_ f: HDF5File, _ name: String) throws -> Tensor {
    let (shape, v) = try f.readFloats(name)
    return Tensor(shape, values: v)
}

/// The reference values of a fixture entry and ours at the same positions:
/// whole, or at the summary's sample positions (stride `stats[2]`).
func fixturePair(_ f: HDF5File, _ path: String, _ ours: [Float]) throws -> (ours: [Double], ref: [Double]) {
    if f.exists(path) { return (ours.map(Double.init), try f.readDoubles(path).values) }
    let sample = try f.readDoubles(path + ".sample").values
    let step = Int(try f.readDoubles(path + ".stats").values[2])
    return ((0..<sample.count).map { Double(ours[$0 * step]) }, sample)
}

/// ||a - b|| / ||b||.
func relativeL2(_ a: [Double], _ b: [Double]) -> Double {
    var d = 0.0, n = 0.0
    for (x, y) in zip(a, b) { d += (x - y) * (x - y); n += y * y }
    return n == 0 ? d.squareRoot() : (d / n).squareRoot()
}
