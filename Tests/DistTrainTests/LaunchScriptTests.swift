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

    /// launch/cv with a stand-in disttrain (records its calls, makes the files a step leaves): every fold of both
    /// methods is trained and evaluated once; a run that crashed resumes, finished ones are skipped, the report
    /// covers every evaluated run; a ROOT made with another recipe is refused.
    func testCrossValidationLauncherResumesAndSkipsFinishedRuns() throws {
        let dir = makeTempDir("launch-cv"), fm = FileManager.default
        let fake = dir + "/disttrain", log = dir + "/calls.log"
        try """
            #!/bin/sh
            echo "$*" >> "$LOG"
            cmd=$1; out=; run=
            case "$cmd" in resume|eval) run=$2;; esac
            while [ $# -gt 0 ]; do case "$1" in --out) out=$2;; --run) run=$2;; esac; shift; done
            finish() { mkdir -p "$1/ckpt" "$1/report"; touch "$1/ckpt/last.h5" "$1/ckpt/best.h5"; sleep 1; touch "$1/report/summary.json" "$1/report/predictions.csv"; }
            case "$cmd" in
              groups|prepare) touch "$out";;
              eval) mkdir -p "$run/report"; touch "$run/report/summary.json" "$run/report/predictions.csv";;
              resume) finish "$run";;
              report) ;;
              *) if [ -n "$FAIL" ] && [ "${run%$FAIL}" != "$run" ]; then mkdir -p "$run/ckpt"; touch "$run/ckpt/last.h5"; exit 1; fi
                 finish "$run";;
            esac
            """.write(toFile: fake, atomically: true, encoding: .utf8)
        try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: fake)
        try fm.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: dir + "/source/ckpt", withIntermediateDirectories: true)
        fm.createFile(atPath: dir + "/source/ckpt/last.h5", contents: Data())
        var env = ["DISTTRAIN_BIN": fake, "LOG": log, "DISTTRAIN_DATA": dir + "/data", "ROOT": dir + "/cv", "SOURCE": dir + "/source",
                   "FOLDS": "2", "RANKS": "1", "SKIP_SETUP": "1", "PRECISION": "fp32"]
        func calls() throws -> [String] { try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map(String.init) }
        env["FAIL"] = "fold-1/transfer"
        let first = try runCommand(["bash", packageRoot + "/launch/cv"], timeout: 120, env: env)
        XCTAssertNotEqual(first.status, 0, first.output)
        let trained = try calls()
        XCTAssertEqual(trained.filter { $0.hasPrefix("--method") }.count, 4, trained.joined(separator: "\n"))
        try fm.removeItem(atPath: log)
        env["FAIL"] = nil
        let second = try runCommand(["bash", packageRoot + "/launch/cv"], timeout: 120, env: env)
        XCTAssertEqual(second.status, 0, second.output)
        let again = try calls()
        XCTAssertEqual(again.filter { $0.hasPrefix("--method") }, [], "a finished run was trained again")
        XCTAssertEqual(again.filter { $0.hasPrefix("resume") }, ["resume \(dir)/cv/fold-1/transfer"])
        XCTAssertFalse(again.contains { $0.hasPrefix("groups") || $0.hasPrefix("prepare") }, again.joined(separator: "\n"))
        let report = try XCTUnwrap(again.first { $0.hasPrefix("report --folds") })
        for f in 0..<2 { for m in ["scratch", "transfer"] { XCTAssertTrue(report.contains("\(dir)/cv/fold-\(f)/\(m)"), report) } }
        env["EPOCHS"] = "3"
        let other = try runCommand(["bash", packageRoot + "/launch/cv"], timeout: 60, env: env)
        XCTAssertEqual(other.status, 1, other.output)
        XCTAssertTrue(other.output.contains("use another ROOT"), other.output)
    }
}
