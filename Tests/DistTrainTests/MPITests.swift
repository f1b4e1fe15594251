import DistTrain
import Foundation
import Net
import XCTest

/// `mpirun -n 2` on tiny synthetic data, through the real binary.
final class MPITests: XCTestCase {
    static var data: String = preparedSyntheticSet("mpi-data", train: 16, val: 4, test: 4)

    override func setUpWithError() throws {
        guard mpirunAvailable else { throw XCTSkip("mpirun not installed (launch/setup installs openmpi-bin)") }
        guard FileManager.default.isExecutableFile(atPath: disttrainBinary) else { throw XCTSkip("build disttrain first (swift build)") }
    }

    func trainArgs(_ run: String, epochs: Int = 2) -> [String] {
        [disttrainBinary, "--data", MPITests.data, "--run", run, "--epochs", "\(epochs)", "--batch-size", "8",
         "--image-size", "32", "--width", "4", "--seed", "3", "--lr", "0.05", "--threads", "1"]
    }

    /// 2 ranks with global batch 8 and 1 process with batch 8 take the same steps.
    /// BN trains on frozen running statistics here: per-rank batch statistics
    /// differ by design (as in DDP), which would make the comparison meaningless.
    /// Compared: every parameter after 2 SGD steps (one epoch); tolerance 1e-4
    /// of each tensor's largest value. The all-reduce sums two half-batch
    /// gradients, another rounding order than one whole-batch sum: a float32
    /// sum of n terms is off by at most n*u of their magnitudes (u = 6e-8; the
    /// largest reduction, conv1's weight gradient over 8 x 16 x 16 positions,
    /// n = 2048, gives 1.2e-4 of a gradient's scale) and two steps of lr 0.05
    /// scale that down. Two steps, as in ScaleOutTests: later steps may cross a
    /// ReLU kink whose side depends on the CPU's kernels.
    func testTwoRanksMatchOneProcess() throws {
        let r1 = makeTempDir("one"), r2 = makeTempDir("two")
        let a = try runCommand(trainArgs(r1, epochs: 1) + ["--frozen-bn-stats"], timeout: 300)
        XCTAssertEqual(a.status, 0, a.output)
        let b = try runCommand(["mpirun", "-n", "2", "--oversubscribe", "--bind-to", "none"] + trainArgs(r2, epochs: 1) + ["--frozen-bn-stats"],
                               timeout: 300)
        XCTAssertEqual(b.status, 0, b.output)
        XCTAssertTrue(b.output.contains("2 rank(s)"), b.output)
        // train ends with the evaluation stage (sharded metrics, rank 0's report).
        XCTAssertTrue(FileManager.default.fileExists(atPath: r2 + "/report/index.html"), b.output)
        XCTAssertTrue(b.output.contains("test: accuracy"), b.output)
        let f1 = try HDF5File(r1 + "/ckpt/last.h5"), f2 = try HDF5File(r2 + "/ckpt/last.h5")
        var compared = 0, worstRelative: Float = 0
        for name in try f1.members("model") where !name.hasSuffix("num_batches_tracked") {
            let x = try f1.readFloats("model/" + name).values, y = try f2.readFloats("model/" + name).values
            let scale = x.map { abs($0) }.max() ?? 0
            let worst = zip(x, y).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, 1e-4 * scale + 1e-7, "\(name): max diff \(worst)")
            worstRelative = max(worstRelative, worst / max(scale, 1e-12))
            compared += 1
        }
        XCTAssertGreaterThan(compared, 60)
        print("2 ranks against 1 process: worst relative difference \(worstRelative)")
    }

    func testFailingRankAbortsTheJobWithItsRank() throws {
        let r = try runCommand(["mpirun", "-n", "2", "--oversubscribe", disttrainBinary, "--data", "/nonexistent/data.h5",
                                "--run", makeTempDir("fail")], timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertLessThan(r.seconds, 30)
        XCTAssertTrue(r.output.contains("[rank 0] error:") && r.output.contains("/nonexistent/data.h5"), r.output)
    }

    /// A 2-rank training job of many epochs, started in the background; once
    /// epoch 1 is logged, one rank gets `signal`. Returns how long the job
    /// took to end after it (nil: still running after `within` seconds, then
    /// killed), its output, and whether any rank was left behind.
    func hitOneRank(_ signal: Int32, within: Double, env extra: [String: String] = [:]) throws
        -> (ended: Double?, status: Int32, log: String, left: String) {
        let run = makeTempDir("hit-\(signal)")
        let log = run + "/log.txt"
        FileManager.default.createFile(atPath: log, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["mpirun", "-n", "2", "--oversubscribe", "--bind-to", "none"] + trainArgs(run, epochs: 500)
        var env = ProcessInfo.processInfo.environment
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        for (k, v) in extra { env[k] = v }
        p.environment = env
        let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = fh; p.standardError = fh
        try p.run()
        func ranks() throws -> [Int32] {
            let pg = try runCommand(["pgrep", "-f", "disttrain --data .* --run \(run)"], timeout: 10)
            return pg.output.split(separator: "\n").compactMap { Int32($0) }.filter { $0 != p.processIdentifier }
        }
        defer {
            for pid in (try? ranks()) ?? [] { kill(pid, SIGKILL) }
            if p.isRunning { p.terminate() }
        }
        // Wait until training runs, then hit one rank.
        let t0 = Date()
        var victim: Int32? = nil
        while victim == nil && Date().timeIntervalSince(t0) < 60 {
            usleep(200_000)
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            guard text.contains("epoch 1/") else { continue }
            victim = try ranks().last
        }
        let pid = try XCTUnwrap(victim, "no rank found")
        kill(pid, signal)
        let hitAt = Date()
        while p.isRunning && Date().timeIntervalSince(hitAt) < within { usleep(100_000) }
        let ended = p.isRunning ? nil : Date().timeIntervalSince(hitAt)
        let left = try ranks().map(String.init).joined(separator: " ")
        return (ended, p.isRunning ? -1 : p.terminationStatus, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "", left)
    }

    /// kill -9 of one rank mid-training ends the whole job, non-zero, within 30 s.
    func testKilledRankEndsTheJob() throws {
        let r = try hitOneRank(SIGKILL, within: 30)
        let ended = try XCTUnwrap(r.ended, "the job still runs 30 s after a rank was killed")
        print(String(format: "job ended %.1f s after kill -9 of one rank", ended))
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.left.isEmpty, "ranks left running: \(r.left)")
    }

    /// A rank stopped for good (SIGSTOP) leaves its peer in a collective: the
    /// watchdog ends the job past DISTTRAIN_COLLECTIVE_TIMEOUT, naming the
    /// collective, and no rank is left behind (the stopped one included).
    func testStoppedRankEndsTheJobAfterTheCollectiveTimeout() throws {
        let r = try hitOneRank(SIGSTOP, within: 40, env: ["DISTTRAIN_COLLECTIVE_TIMEOUT": "3"])
        let ended = try XCTUnwrap(r.ended, "the job still waits 40 s after a rank was stopped: \(r.log.suffix(2000))")
        print(String(format: "job ended %.1f s after SIGSTOP of one rank (timeout 3 s)", ended))
        XCTAssertGreaterThanOrEqual(ended, 3 - 0.5, "ended before the timeout: \(r.log.suffix(2000))")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.log.contains("error: MPI_") && r.log.contains("has waited") && r.log.contains("DISTTRAIN_COLLECTIVE_TIMEOUT"),
                      String(r.log.suffix(2000)))
        XCTAssertTrue(r.left.isEmpty, "ranks left behind: \(r.left)")
        let bad = try runCommand(["mpirun", "-n", "2", "--oversubscribe"] + trainArgs(makeTempDir("bad-timeout"), epochs: 1), timeout: 60,
                                 env: ["DISTTRAIN_COLLECTIVE_TIMEOUT": "soon"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.output.contains("DISTTRAIN_COLLECTIVE_TIMEOUT='soon'"), bad.output)
    }

    func testResumeOnADifferentNumberOfRanks() throws {
        let run = makeTempDir("resume-ranks")
        let a = try runCommand(trainArgs(run, epochs: 2) + ["--stop-after", "1"], timeout: 300)
        XCTAssertEqual(a.status, 0, a.output)
        let b = try runCommand(["mpirun", "-n", "2", "--oversubscribe", "--bind-to", "none", disttrainBinary, "resume", run, "--threads", "1"],
                               timeout: 300)
        XCTAssertEqual(b.status, 0, b.output)
        XCTAssertTrue(b.output.contains("resuming") && b.output.contains("epoch 2/2"), b.output)
        XCTAssertEqual(try HDF5File(run + "/ckpt/last.h5").readInt64s("state/epoch").values, [2])
    }

    func testCommandLineErrorsExit64() throws {
        let r = try runCommand([disttrainBinary, "--batch-size", "0"], timeout: 30)
        XCTAssertEqual(r.status, 64)
        XCTAssertTrue(r.output.contains("--batch-size"), r.output)
        let e = try runCommand([disttrainBinary, "resume", "/nonexistent/run"], timeout: 30)
        XCTAssertEqual(e.status, 1)
        XCTAssertTrue(e.output.contains("/nonexistent/run/config.json"), e.output)
    }
}
