import Net
import XCTest

/// SyncBatchNorm's path with a reducer that adds nothing (one rank) computes
/// exactly what the per-rank path does: forward, backward and running statistics.
final class SyncBatchNormTests: XCTestCase {
    func testSynchronisedPathOnOneRankIsTheOrdinaryOne() {
        func run(synced: Bool) -> (y: [Float], dx: [Float], grads: [Float], stats: [Float]) {
            let store = ParameterStore()
            let bn = BatchNorm2d(store: store, name: "bn", C: 3, relu: true)
            store.seal()
            bn.resetParameters()
            for (i, v) in [Float(1.2), 0.7, 0.9].enumerated() { store.values[bn.weight.offset + i] = v }
            if synced { bn.statisticsReducer = { _, _ in } }
            var seed: UInt64 = 7
            func next() -> Float {
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                return Float(seed >> 40) / Float(1 << 24) - 0.5
            }
            let x = Tensor([4, 3, 5, 5]), dy = Tensor([4, 3, 5, 5])
            for i in 0..<x.count { x.data[i] = next() * 3; dy.data[i] = next() }
            let y = bn.forward(x)
            bn.backward(dy)
            return (Array(UnsafeBufferPointer(start: y.data, count: y.count)),
                    Array(UnsafeBufferPointer(start: bn.dinput.data, count: x.count)),
                    Array(UnsafeBufferPointer(start: store.grads, count: store.parameterCount)),
                    Array(UnsafeBufferPointer(start: store.buffers, count: store.bufferCount)))
        }
        let a = run(synced: false), b = run(synced: true)
        XCTAssertEqual(a.y, b.y)
        XCTAssertEqual(a.dx, b.dx)
        XCTAssertEqual(a.grads, b.grads)
        XCTAssertEqual(a.stats, b.stats)
    }
}
