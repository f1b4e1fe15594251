@testable import DistTrain
import Foundation
import Net
import XCTest

/// The event files and the ONNX model read back with the messages generated from the official
/// .proto files (Sources/DistTrain/Proto): each field lands where TensorBoard's and ONNX's own
/// readers look for it.
final class GeneratedProtoTests: XCTestCase {
    func testEventsDecodeAsTensorBoardsMessages() throws {
        let dir = makeTempDir("events-proto")
        // Only the IHDR's width and height are read from a PNG here.
        var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13] + Array("IHDR".utf8)
        png += [0, 0, 0, 7, 0, 0, 0, 5, 8, 2, 0, 0, 0]
        try Data(png).write(to: URL(fileURLWithPath: dir + "/x.png"))
        let w = try EventWriter(dir: dir, resumeStep: 5)
        try w.scalars([("loss/train", 0.25), ("lr", 0), ("skipped", .nan)], step: 6)
        try w.image("report/x", png: dir + "/x.png", step: 2)
        let events = try EventReader.records(w.path).map { try Tensorboard_Event(serializedBytes: $0) }
        XCTAssertEqual(events.count, 4)
        XCTAssertEqual(events[0].fileVersion, "brain.Event:2")
        // SessionLog (event.proto field 7) START, one past the checkpointed step: a reader keeps steps 1...5.
        XCTAssertEqual(events[1].sessionLog.status, .start)
        XCTAssertEqual(events[1].step, 6)
        XCTAssertEqual(events[2].step, 6)
        XCTAssertEqual(events[2].summary.value.map(\.tag), ["loss/train", "lr"], "non-finite values are left out")
        XCTAssertEqual(events[2].summary.value.map(\.simpleValue), [0.25, 0])
        XCTAssertEqual(events[2].summary.value[1].value, .simpleValue(0), "a zero is written, not dropped as a default")
        let image = events[3].summary.value[0].image
        XCTAssertEqual([image.width, image.height, image.colorspace], [7, 5, 3])
        XCTAssertEqual([UInt8](image.encodedImageString), png)
        XCTAssertGreaterThan(events[3].wallTime, 1.6e9)
    }

    func testTinyModelDecodesAsAnONNXModelProto() throws {
        let net = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 2))
        net.initialize(seed: 1)
        var meta = ONNXExport.Metadata(mean: [0.5], std: [0.25], classNames: ["NORMAL", "COVID"], imageSize: 32, arch: "resnet18")
        meta.window = "lung"
        let m = try Onnx_ModelProto(serializedBytes: try ONNXExport.model(net, metadata: meta))
        XCTAssertEqual(m.irVersion, 8)
        XCTAssertEqual(m.opsetImport.map(\.version), [17])
        XCTAssertTrue(m.opsetImport[0].hasDomain, "the default domain is written out, as onnx's tools do")
        XCTAssertEqual(m.graph.node.count, 50)
        XCTAssertEqual(m.graph.node.first?.attribute.map(\.name), ["kernel_shape", "strides", "pads"])
        XCTAssertEqual(m.graph.node.first?.attribute.map(\.type), [.ints, .ints, .ints])
        XCTAssertEqual(m.graph.input.first?.type.tensorType.shape.dim.map(\.dimParam), ["batch", "", "", ""])
        XCTAssertEqual(m.graph.output.first?.type.tensorType.shape.dim.map(\.dimValue), [0, 2])
        let props = Dictionary(uniqueKeysWithValues: m.metadataProps.map { ($0.key, $0.value) })
        XCTAssertEqual(props["window"], "lung")
        XCTAssertEqual(props["class_names"], "NORMAL,COVID")
        let fc = try XCTUnwrap(m.graph.initializer.first { $0.name == "fc.weight" })
        XCTAssertEqual(fc.dims, [2, 16])
        XCTAssertEqual(fc.rawData.count, 2 * 16 * 4)
    }
}
