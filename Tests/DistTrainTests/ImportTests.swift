import DistTrain
import Foundation
import Net
import XCTest

/// import-weights against files torch wrote (make_import_fixtures.py).
final class ImportTests: XCTestCase {
    let dir = packageRoot + "/Tests/Fixtures/"

    func expect(_ group: String, equal tensors: [String: ImportedTensor], file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try HDF5File(dir + "import_expected.h5")
        let names = try ref.members(group)
        XCTAssertEqual(names.count, 122 - 0, file: file, line: line)  // resnet18 state_dict entries
        let t = WeightImporter.normalise(tensors)
        for name in names {
            let (shape, v) = try ref.readFloats("\(group)/\(name)")
            let got = try XCTUnwrap(t[name], "\(name) missing", file: file, line: line)
            XCTAssertEqual(got.shape, shape, name, file: file, line: line)
            XCTAssertEqual(got.values, v, "\(name) not bit-exact", file: file, line: line)
        }
    }

    func testTorchZipWithWrapperAndPrefixImportsBitExact() throws {
        try expect("full", equal: try PyTorchImport.read(dir + "import_r18w4.pth"))
    }

    func testFloat16AndBFloat16Convert() throws {
        let t = try PyTorchImport.read(dir + "import_r18w4_half.pth")
        XCTAssertEqual(Set(t.values.map(\.dtype)), ["F16", "BF16", "I64"])
        try expect("half", equal: t)
    }

    func testSafetensorsImportsBitExact() throws {
        try expect("full", equal: try PyTorchImport.read(dir + "import_r18w4.safetensors"))
    }

    func testMaliciousPickleIsRefusedWithoutRunningIt() throws {
        let marker = makeTempDir("pwned") + "/ran"
        XCTAssertThrowsError(try PyTorchImport.read(dir + "malicious.pth")) {
            XCTAssertTrue("\($0)".contains("refusing to load 'os.system'"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: marker))
    }

    func testBuildsASourceAndRefusesTheWrongArchitecture() throws {
        let t = try PyTorchImport.read(dir + "import_r18w4.pth")
        let (net, loaded, skipped) = try WeightImporter.build(t, arch: .resnet18, path: "x.pth")
        XCTAssertEqual(net.config, ResNetConfig(arch: .resnet18, inChannels: 3, numClasses: 10, width: 4))
        XCTAssertEqual(loaded.count, 122)
        XCTAssertEqual(skipped, [])
        XCTAssertThrowsError(try WeightImporter.build(t, arch: .resnet50, path: "x.pth")) {
            XCTAssertTrue("\($0)".contains("holds a resnet18"), "\($0)")
        }
        let r = try runCommand([disttrainBinary, "import-weights", dir + "import_r18w4.safetensors", "--out", makeTempDir("imp") + "/src.h5"])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("loaded 122 tensors"), r.output)
    }
}
