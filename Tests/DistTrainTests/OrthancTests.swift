@testable import DistTrain
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import XCTest

/// `disttrain serve` against a real PACS: Debian's Orthanc on loopback (its own
/// temporary configuration and storage, free ports, stopped at the end), a
/// synthetic series sent with DCMTK's storescu, and what arrives checked
/// through Orthanc's REST API. Plus the node's refusals, in process.
final class OrthancTests: XCTestCase {
    // MARK: the node's decisions, without a network

    func testNodeRefusesWhatItCannotUse() throws {
        let dir = makeTempDir("node")
        var logged: [String] = []
        let node = try DicomNode(directory: dir, limits: .init(maxInstances: 2, maxSeriesBytes: 1000, maxInstanceBytes: 600, maxSeries: 1),
                                 log: { logged.append($0) })
        let ct = DicomNode.ctImageStorage
        func part(_ bytes: Int) -> String {
            let p = dir + "/incoming/\(UUID().uuidString).part"
            _ = FileManager.default.createFile(atPath: p, contents: Data(count: bytes))
            return p
        }
        func store(_ p: String, bytes: Int = 100, reqClass: String = ct, cls: String = ct, reqInst: String = "1.2.3.1", inst: String = "1.2.3.1",
                   series: String = "1.2.9") -> UInt16 {
            node.store(path: p, bytes: Int64(bytes), callingAET: "A", requestClass: reqClass, requestInstance: reqInst, sopClass: cls,
                       sopInstance: inst, study: "1.2.8", series: series).status
        }
        XCTAssertEqual(store(part(1), reqClass: "1.2.840.10008.5.1.4.1.1.4", cls: "1.2.840.10008.5.1.4.1.1.4"), 0x0122, "MR is not CT: SOP class not supported")
        XCTAssertEqual(store(part(1), cls: "1.2.840.10008.5.1.4.1.1.4"), 0xA900, "a data set that is not what the request says")
        XCTAssertEqual(store(part(1), inst: "1.2.3.2"), 0xA900)
        XCTAssertEqual(store(part(1), reqInst: "1.2.03", inst: "1.2.03"), 0xC000, "a UID component with a leading zero")
        XCTAssertEqual(store(part(1), series: "../../etc"), 0xC000, "a series UID that would be a path")
        XCTAssertEqual(store(part(1), bytes: 601), 0xA700, "over --max-instance-bytes")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["incoming"], "no series folder for refused instances")
        XCTAssertEqual(store(part(1)), 0)
        XCTAssertEqual(store(part(1)), 0, "the same SOP instance again replaces its file")
        XCTAssertEqual(store(part(1), reqInst: "1.2.3.2", inst: "1.2.3.2", series: "1.2.10"), 0xA700, "a second series in hand, over --max-series 1")
        XCTAssertEqual(node.store(path: part(1), bytes: 1, callingAET: "A", requestClass: ct, requestInstance: "1.2.3.2", sopClass: ct,
                                  sopInstance: "1.2.3.2", study: "1.2.77", series: "1.2.9").status, 0xA900, "another study under the series' UID")
        XCTAssertEqual(store(part(1), reqInst: "1.2.3.2", inst: "1.2.3.2"), 0)
        XCTAssertEqual(store(part(1), reqInst: "1.2.3.3", inst: "1.2.3.3"), 0xA700, "a third instance, over --max-instances 2")
        XCTAssertEqual(store(part(1), reqInst: "1.2.3.1", inst: "1.2.3.1"), 0xA700, "a series over a bound refuses everything after")
        XCTAssertTrue(logged.contains { $0.contains("series 0001 1.2.9: refused from here on, series over --max-instances 2") }, "\(logged)")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/series-0001/instances").sorted(), ["000001.dcm", "000002.dcm"])
        XCTAssertTrue(node.takeIdle(idle: 60).isEmpty, "not idle yet")
        let taken = node.takeIdle(idle: 0)
        XCTAssertEqual(taken.count, 1)
        XCTAssertEqual(taken.first?.refused, "series over --max-instances 2")
        XCTAssertEqual(node.seriesInHand, 0)
        XCTAssertEqual(store(part(1), reqInst: "1.2.3.4", inst: "1.2.3.4"), 0xA700,
                       "an instance of the refused series after it was dropped: still refused, never a series of its tail")
        XCTAssertEqual(node.seriesInHand, 0)
        // A restart numbers after the folders already there, and takes up the series left unpredicted (series-0001: no results/).
        logged = []
        let again = try DicomNode(directory: dir, limits: .init(maxInstances: 9, maxSeriesBytes: 1 << 20, maxInstanceBytes: 1 << 20, maxSeries: 9),
                                  log: { logged.append($0) })
        XCTAssertEqual(logged, ["series 0001 1.2.9: 2 instances left unpredicted by an earlier node; predicting after the idle time"])
        let recovered = again.takeIdle(idle: 0)
        XCTAssertEqual(recovered.map(\.number), [1])
        XCTAssertEqual(recovered.first?.studyUID, "1.2.8")
        XCTAssertEqual(recovered.first?.bytes, 2, "two 1-byte files")
        XCTAssertEqual(recovered.first?.refused, "series over --max-instances 2", "a series over a bound stays refused across a restart")
        XCTAssertEqual(again.store(path: part(1), bytes: 1, callingAET: "A", requestClass: ct, requestInstance: "1.2.3.9", sopClass: ct,
                                   sopInstance: "1.2.3.9", study: "1.2.8", series: "1.2.9").status, 0xA700, "and its UID stays refused")
        XCTAssertEqual(again.store(path: part(1), bytes: 1, callingAET: "A", requestClass: ct, requestInstance: "1.5", sopClass: ct,
                                   sopInstance: "1.5", study: "1.6", series: "1.7").status, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/series-0002/instances/000001.dcm"))
        XCTAssertEqual(DicomPeer(argument: "ORTHANC@127.0.0.1:4242")?.description, "ORTHANC@127.0.0.1:4242")
        for bad in ["ORTHANC127.0.0.1:4242", "@h:1", "A@:1", "A@h:0", "A@h:70000", "A@h;rm:1", "AAAAAAAAAAAAAAAAA@h:1"] {
            XCTAssertNil(DicomPeer(argument: bad), bad)
        }
    }

    // MARK: against Orthanc

    /// The series goes to disttrain serve; the SR and one Secondary Capture per
    /// slice arrive in Orthanc, in the study of the source (which Orthanc also got).
    func testSeriesResultsArriveInTheSourceStudy() throws {
        let fx = try fixture()
        let pacs = try Orthanc.start()
        defer { pacs.stop() }
        let node = try ServeProcess.start(run: fx.run, forward: "ORTHANC@127.0.0.1:\(pacs.dicomPort)", idle: 1, extra: ["--allow", "STORESCU,ECHOSCU"])
        defer { node.stop() }
        // C-ECHO from an allowed AE title; a calling AE title outside --allow is rejected at association.
        XCTAssertEqual(try runCommand(["echoscu", "-aet", "ECHOSCU", "-aec", "DISTTRAIN", "127.0.0.1", "\(node.port)"], timeout: 20).status, 0)
        let bad = try runCommand(["echoscu", "-aet", "BAD", "-aec", "DISTTRAIN", "127.0.0.1", "\(node.port)"], timeout: 20)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.output.contains("Calling AE Title Not Recognized"), bad.output)
        let series = fx.dcm + "/P0001", files = try sourceFiles(series)
        let toPACS = try runCommand(["storescu", "-aet", "STORESCU", "-aec", "ORTHANC", "127.0.0.1", "\(pacs.dicomPort)"] + files, timeout: 30)
        XCTAssertEqual(toPACS.status, 0, toPACS.output)
        let toNode = try runCommand(["storescu", "-aet", "STORESCU", "-aec", "DISTTRAIN", "127.0.0.1", "\(node.port)"] + files, timeout: 30)
        XCTAssertEqual(toNode.status, 0, toNode.output)
        try pacs.waitForSeries(3, timeout: 40, log: node.log)
        let log = node.log()
        XCTAssertTrue(log.contains("association from BAD@127.0.0.1 rejected (A-ASSOCIATE-RJ): calling AE title not in --allow"), log)
        XCTAssertTrue(log.contains("association from ECHOSCU@127.0.0.1: 0 stored, 0 refused, 1 echo"), log)
        XCTAssertTrue(log.contains("association from STORESCU@127.0.0.1: 10 stored, 0 refused"), log)
        let patient = try DicomFile.read(files[0], pixels: false).patientID
        XCTAssertFalse(patient.isEmpty || log.contains(patient), "no patient names or IDs in the log: \(log)")
        try checkResults(pacs: pacs, source: files, seriesCSV: node.out + "/series-0001/results/series.csv")
    }

    /// SIGTERM while a series waits for its idle time: predicted and forwarded at once, exit 0.
    func testSIGTERMFinishesTheSeriesInHand() throws {
        let fx = try fixture()
        let pacs = try Orthanc.start()
        defer { pacs.stop() }
        let node = try ServeProcess.start(run: fx.run, forward: "ORTHANC@127.0.0.1:\(pacs.dicomPort)", idle: 3600, extra: [])
        defer { node.stop() }
        let files = try sourceFiles(fx.dcm + "/P0002")
        let toNode = try runCommand(["storescu", "-aet", "ANY", "-aec", "DISTTRAIN", "127.0.0.1", "\(node.port)"] + files, timeout: 30)
        XCTAssertEqual(toNode.status, 0, toNode.output)
        XCTAssertEqual(try pacs.get("/series").arrayValue.count, 0, "nothing forwarded before the idle time")
        kill(node.process.processIdentifier, SIGTERM)
        let t0 = Date()
        while node.process.isRunning && Date().timeIntervalSince(t0) < 40 { usleep(100_000) }
        XCTAssertFalse(node.process.isRunning, "serve did not exit within 40 s of SIGTERM: \(node.log())")
        XCTAssertEqual(node.process.terminationStatus, 0, node.log())
        let log = node.log()
        XCTAssertTrue(log.contains("forwarded") && log.contains("serve: stopped"), log)
        XCTAssertEqual(try pacs.get("/series").arrayValue.count, 2, "the SR and the overlays, before the exit")
        try checkResults(pacs: pacs, source: files, seriesCSV: node.out + "/series-0001/results/series.csv")
    }

    /// The node's C-STORE SCU (dcmnet's DcmSCU) into Orthanc: every file stored; a PACS that rejects the association is named.
    func testForwardingStoresEveryFile() throws {
        let fx = try fixture()
        let pacs = try Orthanc.start()
        defer { pacs.stop() }
        let files = try sourceFiles(fx.dcm + "/P0004")
        try DicomNode.send(files, from: "DISTTRAIN", to: DicomPeer(argument: "ORTHANC@127.0.0.1:\(pacs.dicomPort)")!, timeout: 10)
        let stored = try pacs.get("/instances?expand").arrayValue.compactMap { ($0 as? [String: Any])?["MainDicomTags"] as? [String: Any] }
        XCTAssertEqual(Set(stored.compactMap { $0["SOPInstanceUID"] as? String }), Set(try files.map { try DicomFile.read($0, pixels: false).sopUID }))
        assertError(try DicomNode.send(files, from: "DISTTRAIN", to: DicomPeer(argument: "WRONG@127.0.0.1:\(pacs.dicomPort)")!, timeout: 10),
                    contains: "WRONG@127.0.0.1:\(pacs.dicomPort)", "association")
        assertError(try DicomNode.send([fx.dcm + "/labels.csv"], from: "DISTTRAIN", to: DicomPeer(argument: "ORTHANC@127.0.0.1:1")!, timeout: 10),
                    contains: "labels.csv", "not a DICOM file")
    }

    /// A series over --max-instances is refused from there on (A700 to storescu) and dropped, said in the log;
    /// a SOP class other than CT is not negotiated.
    func testBoundsAndSOPClasses() throws {
        let fx = try fixture()
        try requireTools()
        let node = try ServeProcess.start(run: fx.run, forward: "NOWHERE@127.0.0.1:9", idle: 1, extra: ["--max-instances", "4"])
        defer { node.stop() }
        let files = try sourceFiles(fx.dcm + "/P0003")
        let sent = try runCommand(["storescu", "-v", "--no-halt", "-aet", "ANY", "-aec", "DISTTRAIN", "127.0.0.1", "\(node.port)"] + files, timeout: 30)
        XCTAssertEqual(sent.output.components(separatedBy: "Received Store Response (Refused: OutOfResources)").count - 1, 6, sent.output)
        // An MR image, proposed alone (-R): the association is rejected, no presentation context being acceptable.
        let mr = makeTempDir("mr") + "/mr.dcm"
        try FileManager.default.copyItem(atPath: files[0], toPath: mr)
        let modify = try runCommand(["dcmodify", "-nb", "-m", "SOPClassUID=1.2.840.10008.5.1.4.1.1.4", mr], timeout: 20)
        XCTAssertEqual(modify.status, 0, modify.output)
        let mrSent = try runCommand(["storescu", "-R", "-aet", "ANY", "-aec", "DISTTRAIN", "127.0.0.1", "\(node.port)", mr], timeout: 20)
        XCTAssertNotEqual(mrSent.status, 0, mrSent.output)
        let t0 = Date()
        while !node.log().contains("dropped, not predicted") && Date().timeIntervalSince(t0) < 20 { usleep(100_000) }
        let log = node.log()
        XCTAssertTrue(log.contains("series 0001 ") && log.contains("refused from here on, series over --max-instances 4"), log)
        XCTAssertTrue(log.contains("4 stored, 6 refused (6 with status A700)"), log)
        XCTAssertTrue(log.contains(": 4 instances (") && log.contains("dropped, not predicted (series over --max-instances 4)"), log)
        XCTAssertTrue(log.contains("rejected (A-ASSOCIATE-RJ): no acceptable presentation context (CT Image Storage or Verification); "
                                   + "proposed MRImageStorage"), log)
        XCTAssertTrue(mrSent.output.contains("Association Rejected"), mrSent.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: node.out + "/series-0001"), "a dropped series leaves no files")
    }

    /// A PACS that is away: three tries, then the results stay on disk and the series' line says so;
    /// --log-patient-names names the patient there.
    func testUnreachablePACSKeepsTheResults() throws {
        let fx = try fixture()
        let closed = freeTCPPort()
        let node = try ServeProcess.start(run: fx.run, forward: "AWAY@127.0.0.1:\(closed)", idle: 0.5, extra: ["--log-patient-names"])
        defer { node.stop() }
        let files = Array(try sourceFiles(fx.dcm + "/P0005").prefix(3))
        XCTAssertEqual(try runCommand(["storescu", "-aet", "ANY", "-aec", "DISTTRAIN", "127.0.0.1", "\(node.port)"] + files, timeout: 30).status, 0)
        let t0 = Date()
        while !node.log().contains(" objects to AWAY@") && Date().timeIntervalSince(t0) < 40 { usleep(100_000) }
        let log = node.log()
        XCTAssertTrue(log.contains("series 0001 ") && log.contains(": 3 instances (") && log.contains(" patient 'P0005': 3 slices, mean p "), log)
        XCTAssertTrue(log.contains("forwarding 4 objects to AWAY@127.0.0.1:\(closed) failed (results kept in \(node.out)/series-0001/results)"), log)
        XCTAssertEqual(DicomNode.dicomFiles(under: node.out + "/series-0001/results/dicom").count, 4, "the SR and 3 overlays stay")
    }

    // MARK: helpers

    /// The SR and SC series of one source series in Orthanc: same study, the SR's probability is
    /// series.csv's mean, its evidence lists every source instance, one SC per slice naming its source.
    func checkResults(pacs: Orthanc, source files: [String], seriesCSV: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let sources = try files.map { try DicomFile.read($0, pixels: false) }
        let study = sources[0].studyUID, sopUIDs = Set(sources.map(\.sopUID))
        let csv = try String(contentsOfFile: seriesCSV, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.count, 2, "\(csv)", file: file, line: line)
        let mean = try XCTUnwrap(Double(csv[1].split(separator: ",")[2]), file: file, line: line)
        let studies = try pacs.get("/studies").arrayValue
        XCTAssertEqual(studies.count, 1, "one study: the source's", file: file, line: line)
        var modalities: [String: [[String: Any]]] = [:]  // modality -> instances' simplified tags
        for id in try pacs.get("/series").arrayValue.compactMap({ $0 as? String }) {
            let s = try pacs.get("/series/\(id)").object
            let tags = s["MainDicomTags"] as? [String: Any] ?? [:]
            let instances = try (s["Instances"] as? [String] ?? []).map { try pacs.get("/instances/\($0)/tags?simplify").object }
            modalities[tags["Modality"] as? String ?? "?", default: []] += instances
        }
        for (_, instances) in modalities { for i in instances {
            XCTAssertEqual(i["StudyInstanceUID"] as? String, study, "every object in the source study", file: file, line: line)
        } }
        let sr = try XCTUnwrap(modalities["SR"], "no SR series in \(modalities.keys)", file: file, line: line)
        XCTAssertEqual(sr.count, 1, file: file, line: line)
        XCTAssertEqual(sr[0]["SOPClassUID"] as? String, "1.2.840.10008.5.1.4.1.1.88.33", "Comprehensive SR", file: file, line: line)
        let nums = numItems(sr[0]["ContentSequence"])
        // The series' probability: the NUM that names no image (the per-slice ones each reference their slice).
        let seriesLevel = nums.filter { !$0.referencesImage }
        XCTAssertEqual(seriesLevel.count, 1, "\(nums)", file: file, line: line)
        XCTAssertEqual(try XCTUnwrap(seriesLevel.first?.value, file: file, line: line), mean, accuracy: 1e-4, file: file, line: line)
        XCTAssertEqual(nums.count - seriesLevel.count, files.count, "one probability per slice", file: file, line: line)
        var evidence = Set<String>()
        for e in sr[0]["CurrentRequestedProcedureEvidenceSequence"] as? [[String: Any]] ?? [] {
            for s in e["ReferencedSeriesSequence"] as? [[String: Any]] ?? [] {
                for r in s["ReferencedSOPSequence"] as? [[String: Any]] ?? [] { evidence.insert(r["ReferencedSOPInstanceUID"] as? String ?? "") }
            }
        }
        XCTAssertEqual(evidence, sopUIDs, "the SR references every instance sent", file: file, line: line)
        let sc = try XCTUnwrap(modalities.first { $0.value.first?["SOPClassUID"] as? String == "1.2.840.10008.5.1.4.1.1.7" }?.value,
                               "no Secondary Capture series", file: file, line: line)
        XCTAssertEqual(sc.count, files.count, "one Secondary Capture per slice", file: file, line: line)
        let named = sc.compactMap { ($0["SourceImageSequence"] as? [[String: Any]])?.first?["ReferencedSOPInstanceUID"] as? String }
        XCTAssertEqual(Set(named), sopUIDs, "each overlay names its own source slice", file: file, line: line)
        XCTAssertEqual(named.count, files.count, file: file, line: line)
        XCTAssertTrue(sc.allSatisfy { $0["PhotometricInterpretation"] as? String == "RGB" }, file: file, line: line)
    }

    struct NumItem { var value: Double; var referencesImage: Bool }

    /// Every NUM content item in an SR content tree (Orthanc's simplified JSON).
    func numItems(_ tree: Any?) -> [NumItem] {
        var out: [NumItem] = []
        for item in tree as? [[String: Any]] ?? [] {
            if item["ValueType"] as? String == "NUM", let mv = (item["MeasuredValueSequence"] as? [[String: Any]])?.first,
               let v = Double((mv["NumericValue"] as? String ?? "").trimmingCharacters(in: .whitespaces)) {
                let children = item["ContentSequence"] as? [[String: Any]] ?? []
                out.append(NumItem(value: v, referencesImage: children.contains { $0["ValueType"] as? String == "IMAGE" }))
            }
            out += numItems(item["ContentSequence"])
        }
        return out
    }

    func sourceFiles(_ dir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".dcm") }.sorted().map { dir + "/" + $0 }
    }

    func requireTools() throws {
        for tool in ["/usr/bin/storescu", "/usr/bin/echoscu", "/usr/bin/dcmodify"] where !FileManager.default.isExecutableFile(atPath: tool) {
            throw XCTSkip("\(tool) missing (Debian package dcmtk; launch/setup installs it)")
        }
    }

    /// A synthetic DICOM study (8 patients x 10 slices, 32 px) and a one-epoch run of width 4 trained on it, once.
    func fixture() throws -> (dcm: String, run: String) {
        try requireTools()
        if let f = OrthancTests.shared { return f }
        let root = makeTempDir("serve")
        let synth = try runCommand([disttrainBinary, "synth", "--format", "dicom", "--out", root + "/dcm", "--n", "80", "--size", "32",
                                    "--slices-per-patient", "10"])
        XCTAssertEqual(synth.status, 0, synth.output)
        try DatasetSource.detect(root + "/dcm").prepare(out: root + "/dcm.h5")
        var c = TrainConfig()
        c.data = root + "/dcm.h5"; c.run = root + "/run"; c.epochs = 1; c.batchSize = 8; c.imageSize = 32; c.width = 4; c.evalBatchSize = 8
        try startTraining(c, comm: SingleProcess(), debug: false)
        OrthancTests.shared = (root + "/dcm", c.run)
        return OrthancTests.shared!
    }
    nonisolated(unsafe) static var shared: (dcm: String, run: String)?
}

/// A port nobody listens on now (bound to 0 on loopback, then closed).
func freeTCPPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

struct JSONValue {
    var raw: Any
    var arrayValue: [Any] { raw as? [Any] ?? [] }
    var object: [String: Any] { raw as? [String: Any] ?? [:] }
}

/// Debian's Orthanc on loopback with its own configuration and storage in a temporary folder.
final class Orthanc {
    let process = Process()
    let dir: String
    let httpPort: Int, dicomPort: Int

    private init(dir: String, httpPort: Int, dicomPort: Int) { self.dir = dir; self.httpPort = httpPort; self.dicomPort = dicomPort }

    static func start() throws -> Orthanc {
        let binary = "/usr/sbin/Orthanc"
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw XCTSkip("Orthanc is not installed (Debian package orthanc; launch/setup installs it)")
        }
        let dir = makeTempDir("orthanc")
        let o = Orthanc(dir: dir, httpPort: freeTCPPort(), dicomPort: freeTCPPort())
        let config: [String: Any] = [
            "Name": "disttrain-test", "StorageDirectory": dir + "/db", "IndexDirectory": dir + "/db",
            "HttpPort": o.httpPort, "DicomPort": o.dicomPort, "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": false, "AuthenticationEnabled": false, "HttpServerEnabled": true,
            "DicomCheckCalledAet": true, "DicomAlwaysAllowStore": true, "DicomAlwaysAllowEcho": true,
            "Plugins": [String](), "ConcurrentJobs": 1, "HttpThreadsCount": 4,
        ]
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: dir + "/orthanc.json"))
        o.process.executableURL = URL(fileURLWithPath: binary)
        o.process.arguments = [dir + "/orthanc.json"]
        _ = FileManager.default.createFile(atPath: dir + "/orthanc.log", contents: nil)
        let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/orthanc.log"))
        o.process.standardOutput = fh; o.process.standardError = fh
        do { try o.process.run() } catch { throw XCTSkip("Orthanc cannot start here: \(error)") }
        let t0 = Date()
        while Date().timeIntervalSince(t0) < 20 {
            if !o.process.isRunning {
                let log = (try? String(contentsOfFile: dir + "/orthanc.log", encoding: .utf8)) ?? ""
                throw XCTSkip("Orthanc exited at start (\(o.process.terminationStatus)): \(log.suffix(400))")
            }
            if (try? o.get("/system"))?.object["DicomPort"] as? Int == o.dicomPort { return o }
            usleep(100_000)
        }
        o.stop()
        throw XCTSkip("Orthanc's REST API did not answer within 20 s on port \(o.httpPort)")
    }

    func get(_ path: String) throws -> JSONValue {
        let url = URL(string: "http://127.0.0.1:\(httpPort)\(path)")!
        let done = DispatchSemaphore(value: 0)
        final class Box: @unchecked Sendable { var result: Result<Data, Error> = .failure(RuntimeError("timeout")) }
        let box = Box()
        let task = URLSession.shared.dataTask(with: url) { data, response, error in
            if let error { box.result = .failure(error) } else if let http = response as? HTTPURLResponse, http.statusCode != 200 {
                box.result = .failure(RuntimeError("GET \(path): HTTP \(http.statusCode)"))
            } else { box.result = .success(data ?? Data()) }
            done.signal()
        }
        task.resume()
        if done.wait(timeout: .now() + 10) == .timedOut { task.cancel() }
        return JSONValue(raw: try JSONSerialization.jsonObject(with: try box.result.get(), options: [.fragmentsAllowed]))
    }

    /// Waits until Orthanc holds `n` series and no new instance arrived for a second.
    func waitForSeries(_ n: Int, timeout: Double, log: () -> String) throws {
        let t0 = Date()
        var last = -1, stableSince = Date()
        while Date().timeIntervalSince(t0) < timeout {
            let stats = try get("/statistics").object
            let series = stats["CountSeries"] as? Int ?? 0, instances = stats["CountInstances"] as? Int ?? 0
            if instances != last { last = instances; stableSince = Date() }
            if series >= n && Date().timeIntervalSince(stableSince) > 1 { return }
            usleep(200_000)
        }
        XCTFail("Orthanc holds \(last) instances, not \(n) series, after \(timeout) s; serve log: \(log())")
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            let t0 = Date()
            while process.isRunning && Date().timeIntervalSince(t0) < 10 { usleep(50_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// `disttrain serve` on a free port, its output in a file.
final class ServeProcess {
    let process = Process()
    let port: Int
    let out: String
    let logPath: String

    private init(port: Int, out: String) { self.port = port; self.out = out; logPath = out + ".log" }

    static func start(run: String, forward: String, idle: Double, extra: [String]) throws -> ServeProcess {
        let s = ServeProcess(port: freeTCPPort(), out: makeTempDir("serve-out"))
        s.process.executableURL = URL(fileURLWithPath: disttrainBinary)
        s.process.arguments = ["serve", "--run", run, "--port", "\(s.port)", "--forward", forward, "--idle", "\(idle)", "--out", s.out,
                               "--threads", "1"] + extra
        _ = FileManager.default.createFile(atPath: s.logPath, contents: nil)
        let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: s.logPath))
        s.process.standardOutput = fh; s.process.standardError = fh
        try s.process.run()
        let t0 = Date()
        while !s.log().contains("serve: DISTTRAIN on port") && Date().timeIntervalSince(t0) < 20 {
            if !s.process.isRunning { throw RuntimeError("serve exited: \(s.log())") }
            usleep(50_000)
        }
        usleep(300_000)  // the listener opens right after the first line
        return s
    }

    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
    }
}
