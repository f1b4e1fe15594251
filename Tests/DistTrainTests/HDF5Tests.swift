import DistTrain
import Foundation
import XCTest

final class HDF5Tests: XCTestCase {
    func tempPath(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("disttrain-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent(name).path
    }

    func testRoundTripWithGroupsAttributesAndChecksums() throws {
        let path = tempPath("roundtrip.h5")
        do {
            let f = try HDF5File(path, .create)
            try f.write("model/layer1.0.conv1.weight", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
            try f.write("state/step", shape: [], int64s: [42])
            try f.setAttribute("arch", "resnet18")
            try f.setAttribute("format_version", 1.0)
        }
        let f = try HDF5File(path)
        XCTAssertEqual(try f.members("model"), ["layer1.0.conv1.weight"])
        let (shape, v) = try f.readFloats("model/layer1.0.conv1.weight")
        XCTAssertEqual(shape, [2, 3])
        XCTAssertEqual(v, [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try f.readInt64s("state/step").values, [42])
        XCTAssertEqual(try f.stringAttribute("arch"), "resnet18")
        XCTAssertEqual(try f.doubleAttribute("format_version"), 1.0)
    }

    func testErrorsNameTheFileAndDataset() throws {
        let path = tempPath("missing.h5")
        XCTAssertThrowsError(try HDF5File(path + ".nope")) { XCTAssertTrue("\($0)".contains("missing.h5.nope")) }
        do { _ = try HDF5File(path, .create) }
        let f = try HDF5File(path)
        XCTAssertThrowsError(try f.readFloats("fc.weight")) { XCTAssertTrue("\($0)".contains("no dataset 'fc.weight'"), "\($0)") }
        let junk = tempPath("junk.h5")
        try Data("not hdf5".utf8).write(to: URL(fileURLWithPath: junk))
        XCTAssertThrowsError(try HDF5File(junk)) { XCTAssertTrue("\($0)".contains("junk.h5"), "\($0)") }
    }
}
