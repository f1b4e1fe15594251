import DistTrain
import Foundation
import XCTest

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// The debug disttrain binary that `swift build --build-tests` made.
var disttrainBinary: String { packageRoot + "/.build/debug/disttrain" }

func makeTempDir(_ name: String) -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("disttrain-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// A tiny two-class image set with CSV splits: class 1 has a bright square
/// in a seeded random place, class 0 does not; noise in both.
@discardableResult
func writeSyntheticCSVSet(_ dir: String, train: Int = 16, val: Int = 4, test: Int = 4, size: Int = 32, seed: UInt64 = 1) throws -> String {
    var rng = SplitMix(seed)
    for cls in ["NORMAL", "COVID"] { try FileManager.default.createDirectory(atPath: dir + "/" + cls, withIntermediateDirectories: true) }
    var k = 0
    for (split, n) in [("train", train), ("val", val), ("test", test)] {
        var csv = "filename,label\n"
        for i in 0..<n {
            let label = i % 2
            var px = [UInt8](repeating: 0, count: size * size)
            for j in 0..<px.count { px[j] = UInt8(60 + Int(rng.next() % 40)) }
            if label == 1 {
                let x0 = Int(rng.next() % UInt64(size / 2)), y0 = Int(rng.next() % UInt64(size / 2))
                for y in y0..<(y0 + size / 3) { for x in x0..<(x0 + size / 3) { px[y * size + x] = 220 } }
            }
            let name = "\(label == 1 ? "COVID" : "NORMAL")/img (\(k)).png"
            try RasterImage(width: size, height: size, channels: 1, pixels: px).writePNG(dir + "/" + name)
            csv += "\(name),\(Double(label))\n"
            k += 1
        }
        try csv.write(toFile: "\(dir)/\(split).csv", atomically: true, encoding: .utf8)
    }
    return dir
}

struct SplitMix {
    var x: UInt64
    init(_ s: UInt64) { x = s }
    mutating func next() -> UInt64 {
        x &+= 0x9E37_79B9_7F4A_7C15
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

struct CommandResult { var status: Int32; var output: String; var seconds: Double }

/// Runs a command with a hard timeout (kills the process group), output captured.
@discardableResult
func runCommand(_ args: [String], timeout: Double = 120, env extra: [String: String] = [:]) throws -> CommandResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    env["OPENBLAS_NUM_THREADS"] = "1"
    for (k, v) in extra { env[k] = v }
    p.environment = env
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("disttrain-cmd-\(UUID().uuidString).log")
    FileManager.default.createFile(atPath: out.path, contents: nil)
    let fh = try FileHandle(forWritingTo: out)
    p.standardOutput = fh; p.standardError = fh
    let t0 = Date()
    try p.run()
    while p.isRunning && Date().timeIntervalSince(t0) < timeout { usleep(50_000) }
    if p.isRunning {
        kill(-p.processIdentifier, SIGKILL); p.terminate()
        usleep(200_000)
    }
    p.waitUntilExit()
    try? fh.close()
    let text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
    return CommandResult(status: p.isRunning ? -1 : p.terminationStatus, output: text, seconds: Date().timeIntervalSince(t0))
}

var mpirunAvailable: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/mpirun") }

/// A tiny synthetic CSV set prepared into HDF5 (once per name): its .h5 path.
func preparedSyntheticSet(_ name: String, train: Int = 16, val: Int = 4, test: Int = 4) -> String {
    let dir = makeTempDir(name)
    try! writeSyntheticCSVSet(dir, train: train, val: val, test: test, size: 32)
    try! DatasetSource.detect(dir).prepare(out: dir + "/data.h5")
    return dir + "/data.h5"
}

/// A small run on a prepared synthetic set: ResNet-18 of width 4 at 32 px, batch 8, 3 epochs by default.
func smallRunConfig(data: String, run: String, epochs: Int, seed: UInt64) -> TrainConfig {
    var c = TrainConfig()
    c.data = data; c.dataset = data
    c.run = run; c.epochs = epochs; c.batchSize = 8; c.lr = 0.05; c.imageSize = 32; c.width = 4
    c.warmupEpochs = 0.5; c.seed = seed; c.evalBatchSize = 4
    let ds = try! Dataset(path: data)
    c.inChannels = ds.channels; c.numClasses = 2; c.classNames = ds.classNames; c.mean = ds.mean; c.std = ds.std
    return c
}

/// Every tensor of a checkpoint as floats by path: model/<key>, training/<key> (--ema),
/// optimizer/<key>/<state> and optimizer/steps; counters included.
func checkpointTensors(_ path: String) throws -> [String: [Float]] {
    let f = try HDF5File(path)
    var out: [String: [Float]] = [:]
    for g in ["model", "training", "optimizer"] where f.exists(g) {
        for name in try f.members(g) {
            if let v = try? f.readFloats("\(g)/\(name)").values { out["\(g)/\(name)"] = v }
            for sub in (try? f.members("\(g)/\(name)")) ?? [] {
                out["\(g)/\(name)/\(sub)"] = try f.readFloats("\(g)/\(name)/\(sub)").values
            }
        }
    }
    return out
}

/// `body` throws, and its message holds every one of `words` (the file it names, what is wrong).
func assertError(_ body: @autoclosure () throws -> Any, contains words: String..., file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try body(), file: file, line: line) { e in
        for w in words { XCTAssertTrue("\(e)".contains(w), "'\(w)' not in: \(e)", file: file, line: line) }
    }
}
