import CMedical
import Foundation

/// What the node makes of a finished series: the DICOM files to forward, given
/// the folder of its received instances and a folder for the results.
typealias SeriesResults = (_ seriesDirectory: String, _ outDirectory: String) throws -> [String]

/// A DICOM application entity: AE title, host and port ("AET@HOST:PORT").
struct DicomPeer: CustomStringConvertible {
    var aet: String
    var host: String
    var port: UInt16

    var description: String { "\(aet)@\(host):\(port)" }

    init?(argument: String) {
        guard let at = argument.firstIndex(of: "@"), let colon = argument.lastIndex(of: ":"), at < colon else { return nil }
        let aet = String(argument[..<at]), host = String(argument[argument.index(after: at)..<colon])
        guard DicomPeer.isAETitle(aet), !host.isEmpty, host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || ".-:".contains($0)) }),
              let port = UInt16(argument[argument.index(after: colon)...]), port > 0 else { return nil }
        self.aet = aet; self.host = host; self.port = port
    }

    /// 1 to 16 characters of printable ASCII without backslash, not all spaces (PS3.5 AE VR).
    static func isAETitle(_ s: String) -> Bool {
        (1...16).contains(s.utf8.count) && s.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F && $0 != 0x5C }
            && !s.trimmingCharacters(in: .whitespaces).isEmpty
    }
}

/// The storage node: instances received by dcmnet (dicom_net.cpp) are grouped
/// by SeriesInstanceUID into numbered folders (series-0001/instances/000001.dcm:
/// no file name comes from a UID), within bounds; the serve loop takes the series that
/// have been idle long enough.
final class DicomNode {
    struct Limits {
        var maxInstances: Int          // per series
        var maxSeriesBytes: Int64      // per series
        var maxInstanceBytes: Int64
        var maxSeries: Int             // series in hand at once
    }

    /// A series in hand.
    struct Series {
        var number: Int
        var uid: String
        var studyUID: String
        var directory: String               // series-NNNN: instances/ (as received) and results/
        var callingAET: String
        var patientName: String
        var files: [String: String] = [:]  // SOPInstanceUID -> file in instances/

        var instances: String { directory + "/instances" }
        var bytes: Int64 = 0
        var last = Date()
        var refused: String?                // why it went over a bound: then it is dropped, not predicted

        var name: String { String(format: "series %04d", number) }
    }

    static let ctImageStorage = "1.2.840.10008.5.1.4.1.1.2"
    /// What the reader decodes (Medical.swift), preferred first: the uncompressed ones, then the lossless and lossy codecs.
    static let transferSyntaxes = [
        "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
        // JPEG 2000 (lossless only, lossy), decoded through OpenJPEG (Sources/CMedical/j2k.cpp).
        "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    ]

    let directory: String
    let incoming: String
    let limits: Limits
    let log: (String) -> Void
    private let lock = NSLock()
    private var inHand: [String: Series] = [:]
    /// Series refused over a bound (UID -> why), kept in `refusedList` across restarts: an instance
    /// of one arriving later (a sender retrying what got A700) is refused too, so that no series
    /// is ever predicted from its tail.
    private var refusedSeries: [String: String] = [:]
    private var refusedList: String { directory + "/refused-series.txt" }
    private var nextNumber: Int
    private var stopping = false

    init(directory: String, limits: Limits, log: @escaping (String) -> Void) throws {
        self.directory = directory
        self.incoming = directory + "/incoming"
        self.limits = limits
        self.log = log
        let fm = FileManager.default
        try fm.createDirectory(atPath: incoming, withIntermediateDirectories: true)
        // Parts of an earlier run's transfers are not instances anyone acknowledged.
        for f in (try? fm.contentsOfDirectory(atPath: incoming)) ?? [] where f.hasSuffix(".part") { try? fm.removeItem(atPath: incoming + "/" + f) }
        // Numbers continue after the series folders already there: a restart never writes into an old one.
        let taken = ((try? fm.contentsOfDirectory(atPath: directory)) ?? []).compactMap { n -> Int? in
            n.hasPrefix("series-") ? Int(n.dropFirst(7)) : nil
        }
        nextNumber = (taken.max() ?? 0) + 1
        for line in (fm.contents(atPath: directory + "/refused-series.txt").map { String(decoding: $0, as: UTF8.self) } ?? "")
            .split(separator: "\n") {
            let parts = line.split(separator: "\t", maxSplits: 1).map(String.init)
            if parts.count == 2, DicomNode.isUID(parts[0]) { refusedSeries[parts[0]] = parts[1] }
        }
        // A series an earlier node received and never finished (it was killed): in hand again, predicted after the idle time.
        for number in taken.sorted() {
            let dir = directory + String(format: "/series-%04d", number)
            guard !fm.fileExists(atPath: dir + "/results"),
                  let data = fm.contents(atPath: dir + "/series.json"),
                  let info = try? JSONDecoder().decode(SeriesInfo.self, from: data), DicomNode.isUID(info.uid), inHand[info.uid] == nil else { continue }
            var s = Series(number: number, uid: info.uid, studyUID: info.study, directory: dir, callingAET: info.callingAET, patientName: "")
            for f in (try? fm.contentsOfDirectory(atPath: s.instances)) ?? [] where f.hasSuffix(".dcm") {
                // Keyed by its SOPInstanceUID again, so that a resent instance still replaces its file.
                let sop = (try? DicomFile.read(s.instances + "/" + f, pixels: false))?.sopUID
                s.files[sop.flatMap { DicomNode.isUID($0) ? $0 : nil } ?? "file:" + f] = f
                s.bytes += (try? fm.attributesOfItem(atPath: s.instances + "/" + f)[.size] as? Int64) ?? 0
            }
            guard !s.files.isEmpty else { continue }
            if let why = fm.contents(atPath: dir + "/refused.txt") { s.refused = String(decoding: why, as: UTF8.self) }  // dropped, as it would have been
            inHand[info.uid] = s
            log("\(s.name) \(info.uid): \(s.files.count) instances left unpredicted by an earlier node; predicting after the idle time")
        }
    }

    /// series-NNNN/series.json: what a restarted node needs to finish the series.
    struct SeriesInfo: Codable { var uid: String; var study: String; var callingAET: String }

    /// A DICOM UID: 1 to 64 characters, digits in dot-separated components, no leading zero (PS3.5 9.1).
    static func isUID(_ s: String) -> Bool {
        guard (1...64).contains(s.utf8.count) else { return false }
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { c in
            !c.isEmpty && c.allSatisfy { $0.isASCII && $0.isNumber } && (c == "0" || c.first != "0")
        }
    }

    var isStopping: Bool { lock.withLock { stopping } }
    func requestStop() { lock.withLock { stopping = true } }
    var seriesInHand: Int { lock.withLock { inHand.count } }

    /// The DIMSE status for one received instance, its file moved into its series' folder on success.
    func store(path: String, bytes: Int64, callingAET: String, requestClass: String, requestInstance: String,
               sopClass: String, sopInstance: String, study: String, series: String, patientName: String = "") -> (status: UInt16, comment: String) {
        guard sopClass == requestClass else { return (0xA900, "SOPClassUID differs from the C-STORE request's") }
        guard sopClass == DicomNode.ctImageStorage else { return (0x0122, "not CT Image Storage") }  // SOP class not supported
        guard sopInstance == requestInstance else { return (0xA900, "SOPInstanceUID differs from the C-STORE request's") }
        for (name, uid) in [("SOPInstanceUID", sopInstance), ("StudyInstanceUID", study), ("SeriesInstanceUID", series)] where !DicomNode.isUID(uid) {
            return (0xC000, "\(name) missing or not a valid UID")
        }
        guard bytes <= limits.maxInstanceBytes else { return (0xA700, "instance over --max-instance-bytes \(limits.maxInstanceBytes)") }
        return lock.withLock { () -> (UInt16, String) in
            if let why = refusedSeries[series] { return (0xA700, "the series was refused earlier (\(why))") }
            if inHand[series] == nil {
                guard inHand.count < limits.maxSeries else {
                    log("refused an instance of a new series: \(inHand.count) series in hand, --max-series \(limits.maxSeries)")
                    return (0xA700, "over --max-series \(limits.maxSeries) in hand")
                }
                let number = nextNumber
                nextNumber += 1
                let dir = directory + String(format: "/series-%04d", number)
                do { try FileManager.default.createDirectory(atPath: dir + "/instances", withIntermediateDirectories: true) } catch {
                    return (0xA700, "cannot create a series folder")
                }
                if let info = try? JSONEncoder().encode(SeriesInfo(uid: series, study: study, callingAET: callingAET)) {
                    try? durableWrite(dir + "/series.json", data: info)
                }
                inHand[series] = Series(number: number, uid: series, studyUID: study, directory: dir, callingAET: callingAET, patientName: patientName)
            }
            var s = inHand[series]!
            defer { inHand[series] = s }
            s.last = Date()
            if let why = s.refused { return (0xA700, why) }
            // One series is one study (and the SR names one patient): a stray instance under a colliding series UID is refused.
            guard s.studyUID == study else { return (0xA900, "StudyInstanceUID differs from that of the series' first instance") }
            let replacing = s.files[sopInstance] != nil
            if !replacing && s.files.count >= limits.maxInstances {
                s.refused = "series over --max-instances \(limits.maxInstances)"
            } else if s.bytes + bytes > limits.maxSeriesBytes {
                s.refused = "series over --max-series-bytes \(limits.maxSeriesBytes)"
            }
            if let why = s.refused {
                try? durableWrite(s.directory + "/refused.txt", data: Data(why.utf8))
                refusedSeries[series] = why
                let list = refusedSeries.sorted { $0.key < $1.key }.map { "\($0.key)\t\($0.value)\n" }.joined()
                try? durableWrite(refusedList, data: Data(list.utf8))
                log("\(s.name) \(series): refused from here on, \(why); the series will not be predicted")
                return (0xA700, why)
            }
            // The same SOP instance again replaces its file: a resent slice is not a second slice.
            let file = s.files[sopInstance] ?? String(format: "%06d.dcm", s.files.count + 1)
            let target = s.instances + "/" + file
            if replacing { s.bytes -= (try? FileManager.default.attributesOfItem(atPath: target)[.size] as? Int64) ?? 0 }
            try? FileManager.default.removeItem(atPath: target)
            guard rename(path, target) == 0 else { return (0xA700, "cannot store the instance") }
            s.files[sopInstance] = file
            s.bytes += bytes
            return (0x0000, "")
        }
    }

    /// The series idle for `idle` seconds or more (all of them with 0), out of the node's hands.
    func takeIdle(idle: TimeInterval) -> [Series] {
        lock.withLock {
            let now = Date()
            let ready = inHand.values.filter { now.timeIntervalSince($0.last) >= idle }.sorted { $0.number < $1.number }
            for s in ready { inHand[s.uid] = nil }
            return ready
        }
    }

    /// Listens on `port` until requestStop() (then after the association in hand); throws when it cannot listen.
    func listen(aet: String, port: UInt16, allow: [String], timeout: Int) throws {
        let box = Unmanaged.passRetained(self)
        defer { box.release() }
        var err = [CChar](repeating: 0, count: 512)
        let rc = try withCStrings([aet, incoming] + allow + [DicomNode.ctImageStorage] + DicomNode.transferSyntaxes) { p -> Int32 in
            var cfg = dn_scp_config()
            cfg.aet = p[0]; cfg.port = port; cfg.incoming_dir = p[1]
            let allowPtr = Array(p[2..<(2 + allow.count)]), classes = [p[2 + allow.count]], xfers = Array(p[(3 + allow.count)...])
            cfg.timeout = Int32(timeout); cfg.max_pdu = 65_536
            cfg.ctx = box.toOpaque()
            cfg.store = { ctx, inst, comment, size in
                let node = Unmanaged<DicomNode>.fromOpaque(ctx!).takeUnretainedValue()
                let i = inst!.pointee
                func s(_ p: UnsafePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "" }
                let (status, text) = node.store(path: s(i.path), bytes: Int64(i.bytes), callingAET: s(i.calling_aet),
                                                requestClass: s(i.request_sop_class), requestInstance: s(i.request_sop_instance),
                                                sopClass: s(i.sop_class), sopInstance: s(i.sop_instance), study: s(i.study_uid), series: s(i.series_uid),
                                                patientName: s(i.patient_name))
                if let comment, size > 0 { _ = text.withCString { strncpy(comment, $0, size - 1) }; comment[size - 1] = 0 }
                return status
            }
            cfg.log = { ctx, line in Unmanaged<DicomNode>.fromOpaque(ctx!).takeUnretainedValue().log(String(cString: line!)) }
            cfg.stop = { ctx in Unmanaged<DicomNode>.fromOpaque(ctx!).takeUnretainedValue().isStopping ? 1 : 0 }
            return allowPtr.withUnsafeBufferPointer { a in classes.withUnsafeBufferPointer { c in xfers.withUnsafeBufferPointer { x in
                cfg.allow = a.baseAddress; cfg.n_allow = Int32(a.count)
                cfg.sop_classes = c.baseAddress; cfg.n_sop_classes = Int32(c.count)
                cfg.transfer_syntaxes = x.baseAddress; cfg.n_transfer_syntaxes = Int32(x.count)
                return dn_scp_run(&cfg, &err, err.count)
            } } }
        }
        if rc != 0 { throw RuntimeError("serve: cannot listen: \(String(cString: err))") }
    }

    /// Sends `files` by C-STORE in one association; throws naming the first that failed.
    static func send(_ files: [String], from aet: String, to peer: DicomPeer, timeout: Int) throws {
        guard !files.isEmpty else { return }
        var statuses = [UInt16](repeating: 0xFFFF, count: files.count)
        var err = [CChar](repeating: 0, count: 1024)
        let rc = withCStrings([aet, peer.aet, peer.host] + files) { p in
            let list = Array(p[3...])
            return list.withUnsafeBufferPointer { f in
                dn_store_scu(p[0], p[1], p[2], peer.port, Int32(timeout), f.baseAddress, Int32(files.count), &statuses, &err, err.count)
            }
        }
        if rc != 0 { throw RuntimeError(String(cString: err)) }
    }
}

/// `body` with C strings of `strings`, alive for its duration.
func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) throws -> R) rethrows -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    return try body(copies.map { UnsafePointer($0) })
}
