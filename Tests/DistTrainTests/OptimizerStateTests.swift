@testable import DistTrain
import Foundation
import Net
import XCTest

/// The optimizer's state is a list of named buffers that the checkpoint writes
/// and reads by name (`optimizer/<key>/<PyTorch's state name>`, the layout of
/// every checkpoint so far), so each buffer lands where its name says.
final class OptimizerStateTests: XCTestCase {
    func net() -> ResNet {
        let n = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 4))
        n.initialize(seed: 7)
        return n
    }

    /// Three steps on made-up gradients, so every buffer holds distinct values.
    func stepped(_ kind: OptimizerKind, _ n: ResNet) -> Optimizer {
        let opt = Optimizer(OptimizerConfig(kind: kind), store: n.store)
        for t in 0..<3 {
            for j in 0..<n.store.parameterCount { n.store.grads[j] = Float((j * 7 + t * 13) % 23) / 23 - 0.5 }
            opt.step(lr: 0.01)
        }
        return opt
    }

    func testEachKindKeepsPyTorchsStateNames() {
        XCTAssertEqual(OptimizerKind.sgd.stateNames, ["momentum_buffer"])
        XCTAssertEqual(OptimizerKind.adamw.stateNames, ["exp_avg", "exp_avg_sq"])
        for kind in OptimizerKind.allCases {
            let n = net()
            XCTAssertEqual(Optimizer(OptimizerConfig(kind: kind), store: n.store).state.map(\.name), kind.stateNames)
        }
    }

    func testEveryStateBufferRoundTripsBitExactlyByName() throws {
        for kind in OptimizerKind.allCases {
            let path = makeTempDir("optstate-\(kind)") + "/c.h5"
            let n = net()
            let opt = stepped(kind, n)
            try Checkpoint.save(path, net: n, optimizer: opt, state: TrainState(), config: TrainConfig())
            let f = try HDF5File(path)
            for e in n.store.namedParameters() {
                XCTAssertEqual(try f.members("optimizer/" + e.name).sorted(), kind.stateNames.sorted(), "\(kind) \(e.name)")
            }
            let target = net()
            let loaded = Optimizer(OptimizerConfig(kind: kind), store: target.store)
            try Checkpoint.load(path, into: target, optimizer: loaded)
            XCTAssertEqual(loaded.steps, opt.steps)
            for (a, b) in zip(opt.state, loaded.state) {
                XCTAssertEqual(a.name, b.name)
                for e in n.store.namedParameters() {
                    XCTAssertEqual(a.read(e).map(\.bitPattern), b.read(e).map(\.bitPattern), "\(kind) \(e.name)/\(a.name)")
                }
            }
        }
    }

    /// Datasets written by hand, as h5py or an older disttrain would: exp_avg and
    /// exp_avg_sq must not trade places.
    func testHandWrittenAdamWStateLandsInTheBufferItNames() throws {
        let path = makeTempDir("optstate-hand") + "/c.h5"
        let n = net()
        try Checkpoint.save(path, net: n, optimizer: Optimizer(OptimizerConfig(kind: .adamw), store: n.store),
                            state: TrainState(), config: TrainConfig())
        let e = try XCTUnwrap(n.store.entry(named: "layer1.0.conv1.weight"))
        let m = (0..<e.count).map { Float($0) }, v = (0..<e.count).map { Float($0) * 2 + 1 }
        var steps = [Int64](repeating: 0, count: n.store.entries.count)
        steps[try XCTUnwrap(n.store.entryIndex(named: e.name))] = 5
        do {
            let f = try HDF5File(path, .readWrite)
            try f.write("optimizer/\(e.name)/exp_avg", shape: e.shape, floats: m)
            try f.write("optimizer/\(e.name)/exp_avg_sq", shape: e.shape, floats: v)
            try f.write("optimizer/steps", shape: [steps.count], int64s: steps)
        }
        let target = net()
        let opt = Optimizer(OptimizerConfig(kind: .adamw), store: target.store)
        try Checkpoint.load(path, into: target, optimizer: opt)
        XCTAssertEqual(opt.state.map { $0.read(e) }, [m, v])
        XCTAssertEqual(opt.steps, steps)
    }
}
