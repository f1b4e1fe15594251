@testable import DistTrain
import Foundation
import Net
import XCTest

/// Checkpoint.formatVersion: 2 since the state and --ema layout changes (an older
/// disttrain, which reads 1, refuses such a file instead of resuming from the
/// average); every file that says 1 still loads, and a newer one is named.
final class CheckpointVersionTests: XCTestCase {
    func net(seed: UInt64) -> ResNet {
        let n = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 4))
        n.initialize(seed: seed)
        return n
    }

    func weights(_ n: ResNet) -> [[Float]] { n.store.entries.filter { $0.kind != .counter }.map { n.store.read($0) } }

    func testCheckpointsSayVersion2AndThoseSaying1StillResume() throws {
        let dir = makeTempDir("version")
        let n = net(seed: 7)
        let ema = WeightEMA(decay: 0.5, store: n.store)
        // The average and the training weights differ, so loading the wrong one shows.
        n.store.values.update(repeating: 0.25, count: 10)
        var state = TrainState()
        state.epoch = 3; state.step = 30; state.bestEpoch = 2; state.bestValLoss = 0.5; state.bestValAccuracy = 0.75
        let opt = Optimizer(OptimizerConfig(kind: .sgd), store: n.store)
        opt.state[0].values.update(repeating: 0.125, count: 5)
        for (name, withEMA) in [("plain.h5", false), ("ema.h5", true)] {
            let path = dir + "/" + name
            try Checkpoint.save(path, net: n, optimizer: opt, state: state, config: TrainConfig(), ema: withEMA ? ema : nil)
            XCTAssertEqual(try HDF5File(path).doubleAttribute("format_version"), 2.0, name)
            XCTAssertEqual(Checkpoint.formatVersion, 2.0)
            // What the files written between the layout changes and the bump say.
            try HDF5File(path, .readWrite).setAttribute("format_version", 1.0)
            for version in ["1", "2"] {
                if version == "2" { try HDF5File(path, .readWrite).setAttribute("format_version", 2.0) }
                let target = net(seed: 1), targetEMA = withEMA ? WeightEMA(decay: 0.5, store: net(seed: 1).store) : nil
                let targetOpt = Optimizer(OptimizerConfig(kind: .sgd), store: target.store)
                XCTAssertEqual(try Checkpoint.load(path, into: target, optimizer: targetOpt, ema: targetEMA), state, "\(name) \(version)")
                XCTAssertEqual(weights(target), weights(n), "\(name) \(version): the training weights resume")
                XCTAssertEqual(Array(UnsafeBufferPointer(start: targetOpt.state[0].values, count: 5)), [Float](repeating: 0.125, count: 5))
                if let targetEMA {
                    let e = n.store.entries[0]
                    XCTAssertEqual(targetEMA.values(of: e), ema.values(of: e), "\(name) \(version): the average resumes")
                }
            }
        }
        // A file from a newer disttrain.
        let newer = dir + "/plain.h5"
        try HDF5File(newer, .readWrite).setAttribute("format_version", 3.0)
        XCTAssertThrowsError(try Checkpoint.load(newer, into: net(seed: 1))) {
            XCTAssertEqual("\($0)", "'\(newer)' has format version 3.0; this disttrain reads 2.0")
        }
    }
}
