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

    /// Two "ranks" on two threads, each a BatchNorm over half of the batch,
    /// their statistics summed by an in-process all-reduce, compute what one
    /// layer computes over the whole batch: each half of y and dx, the running
    /// statistics on both, and dgamma/dbeta summed over the two (what the
    /// gradient all-reduce adds). Only the order of float sums differs (each
    /// rank sums its half, then the halves are added in Double), so y and dx
    /// agree to a few float32 ulps of their values: 1e-5 of each tensor's
    /// largest value is ~170 ulps, while a wrong statistic (a rank normalising
    /// by its own half, which the test checks as the control) is off by O(1).
    func testSynchronisedOnTwoThreadsIsOneLayerOverTheWholeBatch() throws {
        for layout in [false, true] {
            for relu in [false, true] {
                let N = 6, C = 5, H = 4, W = 3
                var seed: UInt64 = 11
                func next() -> Float {
                    seed = seed &* 6364136223846793005 &+ 1442695040888963407
                    return Float(seed >> 40) / Float(1 << 24) - 0.5
                }
                // Channel-dependent offsets and scales, so that each half's statistics differ from the whole's.
                let xs = (0..<(N * C * H * W)).map { i in next() * Float(1 + (i / (H * W)) % C) + Float(i / (C * H * W)) * 0.4 }
                let dys = (0..<(N * C * H * W)).map { _ in next() }
                let full = Layer(C: C, relu: relu, reducer: nil)
                let whole = full.run(x: xs, dy: dys, N: N, C: C, H: H, W: W, channelsLast: layout)
                let reducer = TwoPartyReducer()
                let half = N / 2, per = half * C * H * W
                let parts = Results()
                let group = DispatchGroup()
                for r in 0..<2 {
                    let layer = Layer(C: C, relu: relu, reducer: { p, n in reducer.allReduce(rank: r, p, n) })
                    let lo = r * per
                    group.enter()
                    Thread.detachNewThread {
                        parts.set(r, layer.run(x: Array(xs[lo..<(lo + per)]), dy: Array(dys[lo..<(lo + per)]), N: half, C: C, H: H, W: W,
                                               channelsLast: layout))
                        group.leave()
                    }
                }
                XCTAssertEqual(group.wait(timeout: .now() + 60), .success, "the two ranks' all-reduce deadlocked")
                let plain = Layer(C: C, relu: relu, reducer: nil).run(x: Array(xs[0..<per]), dy: Array(dys[0..<per]), N: half, C: C, H: H, W: W,
                                                                  channelsLast: layout)
                let a = try XCTUnwrap(parts.get(0)), b = try XCTUnwrap(parts.get(1))
                let what = "channelsLast \(layout), relu \(relu)"
                assertClose(a.y + b.y, whole.y, 1e-5, "y, " + what)
                assertClose(a.dx + b.dx, whole.dx, 1e-5, "dx, " + what)
                assertClose(zip(a.grads, b.grads).map { $0 + $1 }, whole.grads, 1e-5, "dgamma, dbeta, " + what)
                assertClose(a.stats, whole.stats, 1e-5, "running statistics of rank 0, " + what)
                assertClose(b.stats, whole.stats, 1e-5, "running statistics of rank 1, " + what)
                // The control: without the reducer a half is normalised by its own statistics.
                XCTAssertGreaterThan(worst(plain.y, Array(whole.y[0..<per])), 1e-2, "halves' statistics must differ, or the test shows nothing")
            }
        }
    }

    /// The two threads' results, behind a lock.
    final class Results: @unchecked Sendable {
        private let lock = NSLock()
        private var r: [Layer.Result?] = [nil, nil]
        func set(_ k: Int, _ v: Layer.Result) { lock.lock(); r[k] = v; lock.unlock() }
        func get(_ k: Int) -> Layer.Result? { lock.lock(); defer { lock.unlock() }; return r[k] }
    }

    /// One BatchNorm2d with its own parameters (weight 1.2, 0.7, ...; bias 0.1 c).
    final class Layer: @unchecked Sendable {
        struct Result { var y: [Float], dx: [Float], grads: [Float], stats: [Float] }
        let store = ParameterStore()
        let bn: BatchNorm2d

        init(C: Int, relu: Bool, reducer: ((UnsafeMutablePointer<Double>, Int) -> Void)?) {
            bn = BatchNorm2d(store: store, name: "bn", C: C, relu: relu)
            store.seal()
            bn.resetParameters()
            for c in 0..<C {
                store.values[bn.weight.offset + c] = 0.6 + 0.15 * Float(c)
                store.values[bn.bias.offset + c] = 0.1 * Float(c)
            }
            bn.statisticsReducer = reducer
        }

        /// x and dy in NCHW; the layer runs in NCHW or channels-last; results back in NCHW.
        func run(x xs: [Float], dy dys: [Float], N: Int, C: Int, H: Int, W: Int, channelsLast: Bool) -> Result {
            let x = Tensor([N, C, H, W]), dy = Tensor([N, C, H, W])
            for i in 0..<x.count { x.data[i] = xs[i]; dy.data[i] = dys[i] }
            func laid(_ t: Tensor) -> Tensor { let r = Tensor(); r.assign(t, channelsLast: channelsLast); return r }
            func nchw(_ t: Tensor) -> [Float] {
                let r = Tensor(); r.assign(t, channelsLast: false)
                return Array(UnsafeBufferPointer(start: r.data, count: r.count))
            }
            let y = bn.forward(laid(x))
            bn.backward(laid(dy))
            return Result(y: nchw(y), dx: nchw(bn.dinput), grads: Array(UnsafeBufferPointer(start: store.grads, count: store.parameterCount)),
                          stats: Array(UnsafeBufferPointer(start: store.buffers, count: store.bufferCount)))
        }
    }

    func worst(_ a: [Float], _ b: [Float]) -> Float {
        let scale = max(b.map { abs($0) }.max() ?? 0, 1e-12)
        return zip(a, b).map { abs($0 - $1) }.max()! / scale
    }

    func assertClose(_ a: [Float], _ b: [Float], _ tol: Float, _ what: String, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, line: line)
        guard a.count == b.count, !a.isEmpty else { return }
        XCTAssertLessThanOrEqual(worst(a, b), tol, what, line: line)
    }
}

/// MPI_Allreduce(SUM) between two threads: each call deposits its buffer,
/// waits for the other's, and both leave with the sum (added in rank order,
/// so both ranks hold the same bits, as MPI guarantees).
final class TwoPartyReducer: @unchecked Sendable {
    private let cond = NSCondition()
    private var buffers: [[Double]?] = [nil, nil]
    private var taken = 0

    func allReduce(rank: Int, _ p: UnsafeMutablePointer<Double>, _ n: Int) {
        cond.lock(); defer { cond.unlock() }
        while buffers[rank] != nil { cond.wait() }  // the previous round is still being read
        buffers[rank] = Array(UnsafeBufferPointer(start: p, count: n))
        cond.broadcast()
        while buffers[1 - rank] == nil { cond.wait() }
        guard let a = buffers[0], let b = buffers[1], a.count == n, b.count == n else { preconditionFailure("mismatched all-reduce") }
        for i in 0..<n { p[i] = a[i] + b[i] }
        taken += 1
        if taken == 2 { buffers = [nil, nil]; taken = 0; cond.broadcast() }
    }
}

