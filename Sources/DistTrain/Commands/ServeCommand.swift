import ArgumentParser
import Foundation

/// `disttrain serve --run RUN --aet DISTTRAIN --port PORT --forward AET@HOST:PORT`: a DICOM storage node.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A DICOM storage node: receives CT series, predicts each, and sends the results on by C-STORE.",
        discussion: """
        Accepts associations called --aet from the AE titles in --allow (any when not given; others get A-ASSOCIATE-RJ, \
        calling AE title not recognised), C-ECHO and C-STORE of CT Image Storage (no other SOP class is negotiated; a \
        data set that is not the one the request announces gets status A900, one without valid UIDs C000, one over a bound \
        A700). Instances are stored as DIR/series-NNNN/instances/NNNNNN.dcm, grouped by SeriesInstanceUID (numbers, never UIDs, \
        name the files). A series that received nothing for --idle seconds is predicted as `predict SERIES --run RUN \
        --dicom-out` does (Comprehensive SR and Secondary Capture overlays in the source study, in \
        DIR/series-NNNN/results/), and every DICOM object made is sent to --forward. A series over --max-instances or \
        --max-series-bytes is refused from there on and dropped. One log line per association and per series, without \
        patient names unless --log-patient-names. SIGTERM or SIGINT: stops listening after the association in hand, \
        predicts and forwards every series in hand at once, and exits 0.
        """)

    @Option(name: .customLong("run"), help: "Run folder (its best checkpoint predicts).") var runDir: String
    @Option(help: "Our AE title (the called AE title associations must use).") var aet: String = "DISTTRAIN"
    @Option(help: "TCP port to listen on.") var port: Int
    @Option(help: "Where results go: AET@HOST:PORT of a storage SCP (the PACS).") var forward: String
    @Option(help: "Calling AE titles accepted, comma-separated (default: any).") var allow: String?
    @Option(help: "Seconds without a new instance after which a series is complete and predicted.") var idle: Double = 10
    @Option(help: "Folder for received series and their results (default: RUN/serve).") var out: String?
    @Option(help: "Most instances in one series; beyond it the series is refused (A700) and dropped.") var maxInstances: Int = 2000
    @Option(help: "Most bytes of one series; beyond it the series is refused (A700) and dropped.") var maxSeriesBytes: Int64 = 4 << 30
    @Option(help: "Largest instance accepted, in bytes (checked once received).") var maxInstanceBytes: Int64 = 512 << 20
    @Option(help: "Most series in hand (received, not yet predicted) at once; an instance of one more gets A700.") var maxSeries: Int = 32
    @Option(help: "ACSE/DIMSE network timeout, seconds (a silent peer is dropped after it).") var timeout: Int = 30
    @Option(help: "HU window for the series (default: the run's).") var window: String?
    @Option(help: "CAM method of the overlays.") var cams: String = "gradcam"
    @Option(help: "Checkpoint file inside the run's ckpt/ folder.") var checkpoint: String = "best.h5"
    @Option(help: "Root of the UIDs of the results (as predict --uid-root; default: DCMTK's).") var uidRoot: String?
    @Flag(help: "Name the patient (PatientName) in the series log lines.") var logPatientNames = false
    @OptionGroup var threading: ThreadOptions

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port must be in 1...65535") }
        guard DicomPeer.isAETitle(aet) else { throw ValidationError("--aet '\(aet)' is not an AE title (1 to 16 printable ASCII characters, no backslash)") }
        guard DicomPeer(argument: forward) != nil else { throw ValidationError("--forward '\(forward)' is not AET@HOST:PORT") }
        for a in allowList where !DicomPeer.isAETitle(a) { throw ValidationError("--allow '\(a)' is not an AE title") }
        if allow != nil && allowList.isEmpty { throw ValidationError("--allow names no AE title") }
        guard idle >= 0 && idle <= 86_400 && idle.isFinite else { throw ValidationError("--idle must be in 0...86400 seconds") }
        guard maxInstances >= 1 else { throw ValidationError("--max-instances must be at least 1") }
        guard maxSeriesBytes >= 1 else { throw ValidationError("--max-series-bytes must be at least 1") }
        guard maxInstanceBytes >= 1 else { throw ValidationError("--max-instance-bytes must be at least 1") }
        guard maxSeries >= 1 else { throw ValidationError("--max-series must be at least 1") }
        guard (1...3600).contains(timeout) else { throw ValidationError("--timeout must be in 1...3600 seconds") }
        guard !cams.contains(","), cams != "all" else { throw ValidationError("--cams names one method (the overlay series)") }
        // What predict would refuse, refused before the port opens.
        var check = ["x", "--run", runDir, "--cams", cams, "--dicom-out", "x"]
        if let w = window { check += ["--window", w] }
        if let r = uidRoot { check += ["--uid-root", r] }
        do { _ = try Predict.parse(check) } catch { throw ValidationError(Predict.message(for: error)) }
    }

    var allowList: [String] {
        (allow ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func run() throws {
        let peer = DicomPeer(argument: forward)!
        let dir = out ?? runDir + "/serve"
        // The run is checked before the port opens: a node that cannot predict accepts nothing.
        let cfg = try TrainConfig.load(runDir + "/config.json")
        let ckpt = "\(runDir)/ckpt/\(checkpoint)"
        guard FileManager.default.fileExists(atPath: ckpt) else { throw RuntimeError("'\(ckpt)' does not exist") }
        guard window != nil || cfg.window != nil else {
            throw RuntimeError("'\(runDir)/config.json': the run was trained on PNG/JPEG: pass --window (lung, mediastinum, W,L, file)")
        }
        let log = ServeLog()
        let node = try DicomNode(directory: dir, limits: .init(maxInstances: maxInstances, maxSeriesBytes: maxSeriesBytes,
                                                                maxInstanceBytes: maxInstanceBytes, maxSeries: maxSeries),
                                 log: log.line)
        var predictArgs = ["--run", runDir, "--cams", cams, "--checkpoint", checkpoint]
        if let window { predictArgs += ["--window", window] }
        if let uidRoot { predictArgs += ["--uid-root", uidRoot] }
        if let t = threading.threads { predictArgs += ["--threads", "\(t)"] }
        let results = Serve.predictResults(predictArgs, log: log)

        // SIGTERM/SIGINT: a flag; the loop below finishes what is in hand.
        for sig in [SIGTERM, SIGINT] { signal(sig, SIG_IGN) }
        let sources = [SIGTERM, SIGINT].map { sig -> DispatchSourceSignal in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler {
                if !node.isStopping { log.line("signal \(sig == SIGTERM ? "SIGTERM" : "SIGINT"): finishing the series in hand, then exiting") }
                node.requestStop()
            }
            s.resume()
            return s
        }
        defer { sources.forEach { $0.cancel() } }

        let listening = DispatchSemaphore(value: 0)
        final class Outcome: @unchecked Sendable { var error: Error? }  // written before the semaphore, read after it
        let outcome = Outcome()
        let aet = self.aet, port = UInt16(port), allowList = self.allowList, timeout = self.timeout
        let listener = Thread {
            do { try node.listen(aet: aet, port: port, allow: allowList, timeout: timeout) } catch { outcome.error = error }
            listening.signal()
        }
        listener.stackSize = 8 << 20
        listener.start()
        log.line("serve: \(aet) on port \(port), \(allowList.isEmpty ? "any calling AE title" : "calling AE titles " + allowList.joined(separator: ","))"
                 + ", CT Image Storage into \(dir), predicting after \(idle) s idle, forwarding to \(peer); bounds: \(maxInstances) instances and "
                 + "\(maxSeriesBytes) bytes a series, \(maxInstanceBytes) bytes an instance, \(maxSeries) series in hand")
        var listenerDone = false
        while true {
            if !listenerDone && listening.wait(timeout: .now() + 0.2) == .success {
                listenerDone = true
                if let e = outcome.error { node.requestStop(); throw e }
            }
            // Stopping: the association in hand is over once the listener returned; then everything in hand goes at once.
            let stopping = node.isStopping
            if stopping && !listenerDone { continue }
            for s in node.takeIdle(idle: stopping ? 0 : idle) {
                finish(s, results: results, peer: peer, log: log)
            }
            if stopping && listenerDone && node.seriesInHand == 0 { break }
            if listenerDone && !stopping { throw RuntimeError("serve: the listener on port \(port) stopped") }
        }
        log.line("serve: stopped")
    }

    /// Predicts one series and forwards its results: one log line, whatever happens.
    func finish(_ s: DicomNode.Series, results: SeriesResults, peer: DicomPeer, log: ServeLog) {
        let t0 = Date()
        let what = "\(s.name) \(s.uid): \(s.files.count) instances (\(s.bytes) bytes) from \(s.callingAET)" + patientName(s)
        if let why = s.refused {
            try? FileManager.default.removeItem(atPath: s.directory)
            log.line("\(what): dropped, not predicted (\(why))")
            return
        }
        let out = s.directory + "/results"
        let files: [String]
        do { files = try results(s.instances, out) } catch {
            log.line("\(what): prediction failed: \(error)")
            return
        }
        let summary = Serve.seriesSummary(out + "/series.csv")
        // A PACS that is briefly away gets two more tries.
        var lastError: Error?
        for attempt in 0..<3 {
            if attempt > 0 { Thread.sleep(forTimeInterval: Double(attempt)) }
            do {
                try DicomNode.send(files, from: aet, to: peer, timeout: timeout)
                lastError = nil
                break
            } catch { lastError = error }
        }
        let secs = String(format: "%.1f", Date().timeIntervalSince(t0))
        if let e = lastError {
            log.line("\(what): \(summary); forwarding \(files.count) objects to \(peer) failed (results kept in \(out)): \(e)")
        } else {
            log.line("\(what): \(summary); forwarded \(files.count) objects to \(peer) in \(secs) s")
        }
    }

    /// " patient NAME" with --log-patient-names (from the first instance).
    func patientName(_ s: DicomNode.Series) -> String {
        logPatientNames ? " patient '\(s.patientName.map { $0.isASCII && !$0.isNewline ? $0 : "?" }.map(String.init).joined())'" : ""
    }

    /// "mean p 0.4312, predicted COVID" from predict's series.csv (one series).
    static func seriesSummary(_ path: String) -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "no series.csv" }
        let rows = text.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        guard rows.count >= 2, rows[1].count >= 5 else { return "no series row" }
        return "\(rows[1][1]) slices, mean p \(rows[1][2]), predicted \(rows[1][4])"
    }

    /// The predict path on one series folder: `predict SERIES --out OUT --dicom-out OUT/dicom ...`, its output in OUT/predict.log;
    /// the DICOM objects it wrote, in name order.
    static func predictResults(_ args: [String], log: ServeLog) -> SeriesResults {
        { series, out in
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            let dicomOut = out + "/dicom"
            let predict: Predict
            do { predict = try Predict.parse([series, "--out", out, "--dicom-out", dicomOut] + args) } catch {
                throw RuntimeError("predict: \(Predict.message(for: error))")
            }
            try log.capturingStdout(into: out + "/predict.log") { try predict.run() }
            return DicomNode.dicomFiles(under: dicomOut)
        }
    }
}

extension DicomNode {
    /// The DICOM files (by their preamble) under `dir`, sorted by path.
    static func dicomFiles(under dir: String) -> [String] {
        guard let walk = FileManager.default.enumerator(atPath: dir) else { return [] }
        var out: [String] = []
        while let rel = walk.nextObject() as? String {
            let p = dir + "/" + rel
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: p, isDirectory: &isDir), !isDir.boolValue, DicomFile.looksLikeDICOM(p) { out.append(p) }
        }
        return out.sorted()
    }
}

/// The node's log: whole lines, UTC time first, on the standard output as it was at start (predict's own
/// output goes to each series' predict.log meanwhile).
final class ServeLog {
    private let fd: Int32
    private let lock = NSLock()
    private let stdoutLock = NSLock()
    private let stamp: DateFormatter

    init() {
        fflush(stdout)
        fd = dup(STDOUT_FILENO)
        stamp = DateFormatter()
        stamp.locale = Locale(identifier: "en_US_POSIX")
        stamp.timeZone = TimeZone(identifier: "UTC")
        stamp.dateFormat = "yyyy-MM-dd'T'HH:mm:ss'Z'"
    }

    func line(_ s: String) {
        lock.withLock {
            let text = stamp.string(from: Date()) + " " + s.replacingOccurrences(of: "\n", with: " ") + "\n"
            _ = text.withCString { write(fd, $0, strlen($0)) }
        }
    }

    /// `body` with the process's standard output (and error) going to `path`.
    func capturingStdout<R>(into path: String, _ body: () throws -> R) throws -> R {
        try stdoutLock.withLock {
            let file = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard file >= 0 else { throw RuntimeError("'\(path)': cannot write (\(String(cString: strerror(errno))))") }
            fflush(stdout)
            let saved = dup(STDOUT_FILENO)
            dup2(file, STDOUT_FILENO)
            close(file)
            defer {
                fflush(stdout)
                dup2(saved, STDOUT_FILENO)
                close(saved)
            }
            return try body()
        }
    }
}
