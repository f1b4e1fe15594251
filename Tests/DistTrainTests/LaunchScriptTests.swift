import Foundation
import XCTest

/// The shell entry points under launch/ that no other test runs.
final class LaunchScriptTests: XCTestCase {
    /// publish-results copies every run folder of launch/demo's layout
    /// (ROOT/<method>-s<seed>, sources, the comparison, the phases) and says
    /// which run is not evaluated yet; a ROOT without runs is an error.
    func testPublishResultsCopiesEveryRunFolderOfTheDemoLayout() throws {
        let root = makeTempDir("publish-root"), out = makeTempDir("publish-out") + "/results"
        let fm = FileManager.default
        for run in ["scratch-s0", "transfer-s0", "source-cifar10-64"] {
            try fm.createDirectory(atPath: "\(root)/\(run)", withIntermediateDirectories: true)
            try "{}".write(toFile: "\(root)/\(run)/config.json", atomically: true, encoding: .utf8)
            try "epoch\n1\n".write(toFile: "\(root)/\(run)/metrics.csv", atomically: true, encoding: .utf8)
        }
        try fm.createDirectory(atPath: "\(root)/scratch-s0/report", withIntermediateDirectories: true)
        try "{\"a\":1}".write(toFile: "\(root)/scratch-s0/report/summary.json", atomically: true, encoding: .utf8)
        try "split,index,file,label,p\n".write(toFile: "\(root)/scratch-s0/report/predictions.csv", atomically: true, encoding: .utf8)
        try fm.createDirectory(atPath: "\(root)/comparison", withIntermediateDirectories: true)
        try "| a |\n".write(toFile: "\(root)/comparison/comparison.md", atomically: true, encoding: .utf8)
        try "started,phase,seconds\n".write(toFile: "\(root)/demo-phases.csv", atomically: true, encoding: .utf8)
        let r = try runCommand([packageRoot + "/launch/publish-results", root, out], timeout: 60)
        XCTAssertEqual(r.status, 0, r.output)
        for f in ["scratch-s0/config.json", "scratch-s0/metrics.csv", "scratch-s0/summary.json", "scratch-s0/predictions.csv",
                  "transfer-s0/config.json", "source-cifar10-64/metrics.csv", "comparison/comparison.md", "demo-phases.csv"] {
            XCTAssertTrue(fm.fileExists(atPath: "\(out)/\(f)"), "\(f) not published: \(r.output)")
        }
        XCTAssertTrue(r.output.contains("transfer-s0 has no report/"), r.output)
        XCTAssertFalse(r.output.contains("source-cifar10-64 has no report/"), r.output)
        XCTAssertTrue(r.output.contains("3 run folder(s)"), r.output)
        let empty = try runCommand([packageRoot + "/launch/publish-results", makeTempDir("publish-empty"), out], timeout: 60)
        XCTAssertEqual(empty.status, 1, empty.output)
        XCTAssertTrue(empty.output.contains("no run folder"), empty.output)
    }

    /// slurm.sbatch passes --threads from the allocation only when the
    /// command line does not give it (given twice, ArgumentParser refuses the job).
    func testSlurmScriptAddsThreadsOnlyWhenNotGiven() throws {
        let bin = makeTempDir("fake-slurm")
        let srun = bin + "/srun"
        try "#!/bin/sh\nfor a in \"$@\"; do echo \"arg:$a\"; done\n".write(toFile: srun, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: srun)
        let env = ["PATH": bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"), "SLURM_CPUS_PER_TASK": "6",
                   "DISTTRAIN_BIN": "/bin/true"]
        func threads(_ args: [String]) throws -> [String] {
            let r = try runCommand(["bash", packageRoot + "/launch/slurm.sbatch"] + args, timeout: 30, env: env)
            XCTAssertEqual(r.status, 0, r.output)
            let lines = r.output.split(separator: "\n").map(String.init).filter { $0.hasPrefix("arg:") }.map { String($0.dropFirst(4)) }
            return lines.enumerated().filter { $0.element.hasPrefix("--threads") }.map { i, a in a.contains("=") ? a : a + " " + lines[i + 1] }
        }
        XCTAssertEqual(try threads(["--method", "scratch"]), ["--threads 6"])
        XCTAssertEqual(try threads(["--method", "scratch", "--threads", "2"]), ["--threads 2"])
        XCTAssertEqual(try threads(["--threads=3"]), ["--threads=3"])
    }
}
