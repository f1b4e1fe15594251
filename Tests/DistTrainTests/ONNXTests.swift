import DistTrain
import Foundation
import Net
import XCTest

/// ONNX export: a tiny seeded model exports to the committed bytes of
/// Tests/Fixtures/tiny.onnx (checked with onnx.checker and onnxruntime by
/// Tests/Fixtures/check_onnx.py when it was made), and `export` writes a run's model.
final class ONNXTests: XCTestCase {
    func tiny() throws -> [UInt8] {
        let net = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 2))
        net.initialize(seed: 1)
        let meta = ONNXExport.Metadata(mean: [0.5], std: [0.25], classNames: ["NORMAL", "COVID"], imageSize: 32, arch: "resnet18")
        return try ONNXExport.model(net, metadata: meta)
    }

    func testTinyModelExportsToTheCommittedBytes() throws {
        let path = packageRoot + "/Tests/Fixtures/tiny.onnx"
        if ProcessInfo.processInfo.environment["DISTTRAIN_WRITE_FIXTURES"] == "1" { try Data(tiny()).write(to: URL(fileURLWithPath: path)) }
        let committed = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual([UInt8](committed), try tiny(), "the export changed: re-check it with check_onnx.py before replacing the fixture")
        // onnxruntime 1.x on the fixture, input of zeros (check_onnx.py): p = [0.521377682685852, 0.47862234711647034].
        let net = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 2), engine: Engine(backend: .fromEnvironment()))
        net.initialize(seed: 1)
        net.setTraining(false)
        let p = softmax(net.forward(Tensor([2, 1, 32, 32])))
        XCTAssertEqual(Double(p[1][0]), 0.521377682685852, accuracy: 1e-5)
        XCTAssertEqual(Double(p[1][1]), 0.47862234711647034, accuracy: 1e-5)
    }

    func testExportCommandWritesTheRunsModel() throws {
        let run = makeTempDir("onnx-run")
        let data = preparedSyntheticSet("onnx-data", train: 8, val: 2, test: 2)
        let t = try runCommand([disttrainBinary, "--data", data, "--run", run, "--epochs", "1", "--batch-size", "4", "--image-size", "32",
                                "--width", "4", "--threads", "1", "--no-eval"], timeout: 120)
        XCTAssertEqual(t.status, 0, t.output)
        let e = try runCommand([disttrainBinary, "export", run, "--onnx", run + "/model.onnx"])
        XCTAssertEqual(e.status, 0, e.output)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: run + "/model.onnx")))
        XCTAssertEqual(Array(bytes.prefix(2)), [0x08, 0x08], "ModelProto starts with ir_version 8")
        let text = String(decoding: bytes, as: UTF8.self)
        for op in ["Conv", "Relu", "MaxPool", "Add", "GlobalAveragePool", "Flatten", "Gemm", "Softmax", "layer4.1.conv2.weight", "mean"] {
            XCTAssertTrue(text.contains(op), op)
        }
        XCTAssertFalse(text.contains("BatchNormalization"), "BatchNorm is folded into the convolutions")
        let bad = try runCommand([disttrainBinary, "export", run, "--onnx", run + "/x.onnx", "--checkpoint", "/nonexistent.h5"])
        XCTAssertEqual(bad.status, 1, bad.output)
        XCTAssertTrue(bad.output.contains("/nonexistent.h5"), bad.output)
    }
}
