import DistTrain
import Net
import XCTest

/// Every layer against PyTorch (Tests/Fixtures/layers.h5, make_fixtures.py).
final class LayerFixtureTests: XCTestCase {
    func testConv2dMatchesPyTorch() throws {
        let f = try fixture("layers.h5")
        // oneDNN; the engine's im2col with one image per GEMM (in place) or several
        // (staged); its Winograd (3x3 stride 1) with one image per group or all of them.
        let variants: [(ConvBackend, Int, Bool)] = [(.onednn, 2048, true), (.native, 1, false), (.native, 4096, false),
                                                    (.native, 1, true), (.native, 4096, true)]
        for (backend, target, winograd) in variants {
            let engine = Engine(backend: backend, gemmColumns: target, winograd: winograd, winogradColumns: target)
            for i in 0..<6 {
                let g = "conv\(i)/"
                let x = try tensor(f, g + "x")
                let w = try f.readFloats(g + "weight")
                let cfg = try f.readInt64s(g + "config").values.map { Int($0) }
                let store = ParameterStore()
                let conv = Conv2d(store: store, ws: Workspace(), name: "c", C: x.shape[1], OC: w.shape[0],
                                  kernel: cfg[0], stride: cfg[1], pad: cfg[2], bias: cfg[3] == 1, engine: engine)
                store.seal()
                store.write(store.entries[0], w.values)
                if cfg[3] == 1 { store.write(store.entries[1], try f.readFloats(g + "bias").values) }
                let y = conv.forward(x)
                XCTAssertEqual(y.shape, try f.shape(g + "y"))
                assertClose(g + "y", y.array, try f.readFloats(g + "y").values, rtol: 1e-5, atol: 1e-5)
                conv.backward(try tensor(f, g + "dy"), needInputGrad: true)
                assertClose(g + "dx", conv.dinput.array, try f.readFloats(g + "dx").values, rtol: 1e-5, atol: 1e-5)
                assertClose(g + "dweight", store.readGrad(store.entries[0]), try f.readFloats(g + "dweight").values,
                            rtol: 1e-5, atol: 1e-5)
                if cfg[3] == 1 {
                    assertClose(g + "dbias", store.readGrad(store.entries[1]), try f.readFloats(g + "dbias").values,
                                rtol: 1e-5, atol: 1e-5)
                }
            }
        }
    }

    func testBatchNormMatchesPyTorch() throws {
        let f = try fixture("layers.h5")
        for i in 0..<3 {
            let g = "bn\(i)/"
            let cfg = try f.readInt64s(g + "config").values
            let x = try tensor(f, g + "x")
            let store = ParameterStore()
            let bn = BatchNorm2d(store: store, name: "bn", C: x.shape[1], relu: cfg[0] == 1)
            store.seal()
            for name in ["weight", "bias"] { store.write(store.entry(named: "bn." + name)!, try f.readFloats(g + name).values) }
            store.write(store.entry(named: "bn.running_mean")!, try f.readFloats(g + "running_mean0").values)
            store.write(store.entry(named: "bn.running_var")!, try f.readFloats(g + "running_var0").values)
            bn.training = cfg[1] == 1
            let y = bn.forward(x)
            assertClose(g + "y", y.array, try f.readFloats(g + "y").values, rtol: 1e-5, atol: 1e-5)
            bn.backward(try tensor(f, g + "dy"))
            assertClose(g + "dx", bn.dinput.array, try f.readFloats(g + "dx").values, rtol: 1e-4, atol: 1e-5)
            assertClose(g + "dweight", store.readGrad(store.entry(named: "bn.weight")!), try f.readFloats(g + "dweight").values,
                        rtol: 1e-5, atol: 1e-5)
            assertClose(g + "dbias", store.readGrad(store.entry(named: "bn.bias")!), try f.readFloats(g + "dbias").values,
                        rtol: 1e-5, atol: 1e-5)
            assertClose(g + "running_mean", store.read(store.entry(named: "bn.running_mean")!),
                        try f.readFloats(g + "running_mean").values, rtol: 1e-6, atol: 1e-6)
            assertClose(g + "running_var", store.read(store.entry(named: "bn.running_var")!),
                        try f.readFloats(g + "running_var").values, rtol: 1e-6, atol: 1e-6)
            XCTAssertEqual(store.read(store.entry(named: "bn.num_batches_tracked")!), [cfg[1] == 1 ? 1 : 0])
        }
    }

    func testPoolingMatchesPyTorch() throws {
        let f = try fixture("layers.h5")
        let mp = MaxPool2d()
        assertClose("maxpool/y", mp.forward(try tensor(f, "maxpool/x")).array, try f.readFloats("maxpool/y").values, rtol: 0, atol: 0)
        mp.backward(try tensor(f, "maxpool/dy"))
        assertClose("maxpool/dx", mp.dinput.array, try f.readFloats("maxpool/dx").values, rtol: 0, atol: 0)
        let ap = GlobalAvgPool()
        assertClose("avgpool/y", ap.forward(try tensor(f, "avgpool/x")).array, try f.readFloats("avgpool/y").values, rtol: 1e-6, atol: 1e-6)
        ap.backward(try tensor(f, "avgpool/dy"))
        assertClose("avgpool/dx", ap.dinput.array, try f.readFloats("avgpool/dx").values, rtol: 1e-6, atol: 1e-6)
    }

    func testLinearMatchesPyTorch() throws {
        let f = try fixture("layers.h5")
        let store = ParameterStore()
        let fc = Linear(store: store, name: "fc", IN: 7, OUT: 3)
        store.seal()
        store.write(store.entries[0], try f.readFloats("linear/weight").values)
        store.write(store.entries[1], try f.readFloats("linear/bias").values)
        assertClose("linear/y", fc.forward(try tensor(f, "linear/x")).array, try f.readFloats("linear/y").values, rtol: 1e-6, atol: 1e-6)
        fc.backward(try tensor(f, "linear/dy"))
        assertClose("linear/dx", fc.dinput.array, try f.readFloats("linear/dx").values, rtol: 1e-6, atol: 1e-6)
        assertClose("linear/dweight", store.readGrad(store.entries[0]), try f.readFloats("linear/dweight").values, rtol: 1e-6, atol: 1e-6)
        assertClose("linear/dbias", store.readGrad(store.entries[1]), try f.readFloats("linear/dbias").values, rtol: 1e-6, atol: 1e-6)
    }

    func testCrossEntropyMatchesPyTorch() throws {
        let f = try fixture("layers.h5")
        for i in 0..<2 {
            let g = "ce\(i)/"
            let ce = CrossEntropy(labelSmoothing: try f.readFloats(g + "smoothing").values[0])
            let labels = try f.readInt64s(g + "labels").values.map { Int($0) }
            let d = Tensor()
            let loss = ce.forwardBackward(logits: try tensor(f, g + "logits"), labels: labels, dlogits: d)
            assertClose(g + "loss", [loss], try f.readFloats(g + "loss").values, rtol: 1e-6, atol: 1e-6)
            assertClose(g + "dlogits", d.array, try f.readFloats(g + "dlogits").values, rtol: 1e-5, atol: 1e-6)
        }
    }
}
