import Foundation
import Net
import XCTest

/// Behaviour of the engine beyond numerics: initialisation, optimizers'
/// exact rules on hand-computed cases, schedules, freezing, capture, memory.
final class EngineTests: XCTestCase {
    func testSameSeedSameBitsDifferentSeedDifferentBits() {
        let a = ResNet(ResNetConfig(arch: .resnet18, width: 8)), b = ResNet(ResNetConfig(arch: .resnet18, width: 8))
        a.initialize(seed: 3); b.initialize(seed: 3)
        XCTAssertTrue(memcmp(a.store.values, b.store.values, a.store.parameterCount * 4) == 0)
        b.initialize(seed: 4)
        XCTAssertFalse(memcmp(a.store.values, b.store.values, a.store.parameterCount * 4) == 0)
    }

    /// torchvision's init: conv std sqrt(2 / fan_out), BN 1/0, running stats 0/1,
    /// fc uniform within 1/sqrt(fan_in).
    func testInitialisationStatistics() {
        let net = ResNet(ResNetConfig(arch: .resnet18))
        net.initialize(seed: 1)
        let s = net.store
        let w = s.read(s.entry(named: "layer3.0.conv1.weight")!)  // 256 x 128 x 3 x 3, fan_out 2304
        let mean = w.reduce(0) { $0 + Double($1) } / Double(w.count)
        let std = (w.reduce(0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(w.count)).squareRoot()
        XCTAssertEqual(std, (2.0 / 2304).squareRoot(), accuracy: 0.01 * (2.0 / 2304).squareRoot())
        XCTAssertEqual(mean, 0, accuracy: 1e-3)
        XCTAssertEqual(s.read(s.entry(named: "bn1.weight")!), Array(repeating: 1, count: 64))
        XCTAssertEqual(s.read(s.entry(named: "bn1.bias")!), Array(repeating: 0, count: 64))
        XCTAssertEqual(s.read(s.entry(named: "layer1.0.bn1.running_var")!), Array(repeating: 1, count: 64))
        let fc = s.read(s.entry(named: "fc.weight")!)
        XCTAssertLessThanOrEqual(fc.map { abs($0) }.max()!, Float(1 / 512.0.squareRoot()))
        XCTAssertGreaterThan(fc.map { abs($0) }.max()!, Float(0.9 / 512.0.squareRoot()))
    }

    /// One parameter through 3 steps, against the update rules written out by hand.
    func testOptimizerRulesByHand() {
        func run(_ cfg: OptimizerConfig, lr: Double, grads: [Float], p0: Float) -> [Float] {
            let store = ParameterStore()
            store.declare("p", [1], .parameter)
            store.seal()
            store.values[0] = p0
            let opt = Optimizer(cfg, store: store)
            return grads.map { g in store.grads[0] = g; opt.step(lr: lr); return store.values[0] }
        }
        let g: [Float] = [0.5, -0.25, 1.0]
        // SGD, momentum 0.9, dampening 0, weight decay 0.1, nesterov.
        var sgd = OptimizerConfig(kind: .sgd, weightDecay: 0.1)
        sgd.nesterov = true
        var p = 1.0, buf = 0.0
        var expected: [Float] = []
        for (t, gi) in g.enumerated() {
            let d = Double(gi) + 0.1 * p
            buf = t == 0 ? d : 0.9 * buf + d
            p -= 0.1 * (d + 0.9 * buf)
            expected.append(Float(p))
        }
        let got = run(sgd, lr: 0.1, grads: g, p0: 1)
        for (a, b) in zip(got, expected) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        // AdamW, default betas, weight decay 0.01.
        var m = 0.0, v = 0.0
        p = 1.0
        expected = []
        for (t, gi) in g.enumerated() {
            let gd = Double(gi)
            p *= 1 - 0.01 * 0.01
            m = 0.9 * m + 0.1 * gd
            v = 0.999 * v + 0.001 * gd * gd
            let mh = m / (1 - pow(0.9, Double(t + 1))), vh = v / (1 - pow(0.999, Double(t + 1)))
            p -= 0.01 * mh / (vh.squareRoot() + 1e-8)
            expected.append(Float(p))
        }
        let gotA = run(OptimizerConfig(kind: .adamw), lr: 0.01, grads: g, p0: 1)
        for (a, b) in zip(gotA, expected) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }

    /// The stem's 3x3 stride-2 max pooling (8 outputs per SIMD step inside each
    /// row) against a plain scan in PyTorch's order: values and argmax, with ties
    /// (values on a coarse grid), -inf, and NaN, on widths around the 8-lane
    /// boundaries; then backward routes dy to those argmax positions.
    func testStemMaxPoolMatchesAPlainScan() {
        var rng = Xoshiro256(seed: 4)
        for (H, W) in [(5, 17), (9, 33), (8, 34), (7, 40), (12, 56), (3, 19), (6, 18)] {
            let x = Tensor([2, 3, H, W])
            for i in 0..<x.count { x[i] = Float(Int(rng.uniform(0, 5))) }
            x[7] = .nan
            x[W + 3] = -.infinity
            let mp = MaxPool2d()
            let y = mp.forward(x)
            let OH = (H - 1) / 2 + 1, OW = (W - 1) / 2 + 1
            XCTAssertEqual(y.shape, [2, 3, OH, OW])
            var arg = [Int](repeating: -1, count: y.count)
            for nc in 0..<6 {
                for oh in 0..<OH {
                    for ow in 0..<OW {
                        var best = -Float.infinity, bi = -1
                        for kh in 0..<3 {
                            for kw in 0..<3 {
                                let ih = 2 * oh - 1 + kh, iw = 2 * ow - 1 + kw
                                guard ih >= 0, ih < H, iw >= 0, iw < W else { continue }
                                let v = x[nc * H * W + ih * W + iw]
                                if v > best || v.isNaN { best = v; bi = ih * W + iw }
                            }
                        }
                        let o = (nc * OH + oh) * OW + ow
                        arg[o] = bi
                        let got = y[o]
                        XCTAssertTrue(got == best || (got.isNaN && best.isNaN), "\(H)x\(W) output \(o): \(got) vs \(best)")
                    }
                }
            }
            let dy = Tensor(y.shape)
            for i in 0..<dy.count { dy[i] = Float(i % 7) + 1 }
            mp.backward(dy)
            var dx = [Float](repeating: 0, count: x.count)
            for (o, a) in arg.enumerated() where a >= 0 { dx[o / (OH * OW) * H * W + a] += dy[o] }
            XCTAssertEqual(mp.dinput.array, dx, "\(H)x\(W): gradient routed to other positions")
        }
    }

    func testSchedules() {
        var s = LRSchedule(kind: .cosine, base: 0.1, totalSteps: 110, warmupSteps: 10)
        XCTAssertEqual(s.lr(at: 0), 0.01, accuracy: 1e-7)           // warm-up starts at 10 %
        XCTAssertEqual(s.lr(at: 5), 0.055, accuracy: 1e-7)
        XCTAssertEqual(s.lr(at: 10), 0.1, accuracy: 1e-7)
        XCTAssertEqual(s.lr(at: 60), 0.05, accuracy: 1e-6)           // half-way down the cosine
        XCTAssertEqual(s.lr(at: 110), 0, accuracy: 1e-7)
        s = LRSchedule(kind: .step, base: 0.1, totalSteps: 100)
        s.stepEvery = 30; s.gamma = 0.1
        XCTAssertEqual(s.lr(at: 29), 0.1, accuracy: 1e-7)
        XCTAssertEqual(s.lr(at: 30), 0.01, accuracy: 1e-8)
        XCTAssertEqual(s.lr(at: 95), 0.0001, accuracy: 1e-9)
    }

    /// Frozen parameters get no gradient and do not move; BN of frozen blocks
    /// can be put in eval mode so their running statistics stay too.
    func testFreezingByPrefix() {
        let net = ResNet(ResNetConfig(arch: .resnet18, width: 8), engine: testEngine())
        net.initialize(seed: 2)
        let s = net.store
        let frozenCount = s.setFrozen(true, prefixes: ["conv1", "bn1", "layer"])
        XCTAssertEqual(frozenCount, s.namedParameters().count - 2)  // all but fc.weight, fc.bias
        net.freezeBatchNorm(prefixes: ["bn1", "layer"])
        let before = s.entries.map { s.read($0) }
        let opt = Optimizer(OptimizerConfig(kind: .sgd, weightDecay: 1e-4), store: s)
        var rng = Xoshiro256(seed: 1)
        let x = Tensor([4, 1, 32, 32])
        for i in 0..<x.count { x[i] = Float(rng.normal()) }
        let d = Tensor()
        s.zeroGrads()
        CrossEntropy().forwardBackward(logits: net.forward(x), labels: [0, 1, 0, 1], dlogits: d)
        net.backward(d)
        opt.step(lr: 0.1)
        for (e, b) in zip(s.entries, before) {
            if e.name.hasPrefix("fc.") {
                XCTAssertNotEqual(s.read(e), b, "\(e.name) should train")
            } else {
                XCTAssertEqual(s.read(e), b, "\(e.name) should be frozen")
            }
        }
    }

    /// The activation of a named layer and dL/d(that activation) are captured:
    /// for layer4, dL/dA[n,c,h,w] = sum_k dlogits[n,k] * fc.weight[k,c] / (h*w).
    func testCaptureOfLayerActivationAndGradient() throws {
        let net = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 3, width: 8), engine: testEngine())
        net.initialize(seed: 5)
        net.setTraining(false)
        var rng = Xoshiro256(seed: 9)
        let x = Tensor([2, 1, 64, 64])
        for i in 0..<x.count { x[i] = Float(rng.normal()) }
        let d = Tensor()
        CrossEntropy().forwardBackward(logits: net.forward(x), labels: [0, 2], dlogits: d)
        net.backward(d, needInputGrad: true)
        let a = try XCTUnwrap(net.activation(named: "layer4"))
        let g = try XCTUnwrap(net.gradient(named: "layer4"))
        XCTAssertEqual(a.shape, [2, 64, 2, 2])
        XCTAssertEqual(g.shape, a.shape)
        let w = net.store.read(net.store.entry(named: "fc.weight")!)
        for n in 0..<2 { for c in [0, 17, 63] {
            var expected: Float = 0
            for k in 0..<3 { expected += d[n * 3 + k] * w[k * 64 + c] / 4 }
            XCTAssertEqual(g[((n * 64 + c) * 2 + 1) * 2 + 0], expected, accuracy: 1e-7)
        } }
        XCTAssertTrue(net.capturableLayers.contains("layer3.1"))
        XCTAssertNotNil(net.activation(named: "layer2.0"))
        XCTAssertNil(net.activation(named: "layer9"))
        XCTAssertEqual(net.inputGradient.shape, x.shape)
    }

    /// After the first step a step allocates nothing: no tensor or workspace grows and no output moves.
    /// Checked on every tensor a caller can hold (logits, each block's output and output gradient, dL/dx),
    /// held here so that a replacement could not reuse its address: the same object, buffer and capacity
    /// after further steps; the C heap's bytes in use within 32 KiB over 8 steps; and a smaller last batch
    /// keeps each buffer (the rows it does not reach still hold the previous step's values).
    func testNoAllocationAfterFirstStep() throws {
        let net = ResNet(ResNetConfig(arch: .resnet18, width: 8), engine: testEngine())
        net.initialize(seed: 0)
        let opt = Optimizer(OptimizerConfig(kind: .sgd), store: net.store)
        var rng = Xoshiro256(seed: 2)
        let x4 = Tensor([4, 1, 64, 64]), x2 = Tensor([2, 1, 64, 64])
        for i in 0..<x4.count { x4[i] = Float(rng.normal()) }
        for i in 0..<x2.count { x2[i] = x4[i] }
        let d = Tensor()
        func step(_ x: Tensor) {
            net.store.zeroGrads()
            CrossEntropy().forwardBackward(logits: net.forward(x), labels: Array([0, 1, 1, 0].prefix(x.shape[0])), dlogits: d)
            net.backward(d, needInputGrad: true)
            opt.step(lr: 0.01)
        }
        func held() throws -> [Tensor] {
            try [net.logits, net.inputGradient] + net.capturableLayers.flatMap { name in
                [try XCTUnwrap(net.activation(named: name), name), try XCTUnwrap(net.gradient(named: name), "d" + name)]
            }
        }
        // The first steps make what is made once (buffers, optimizer state, the kernels' lazily made parts).
        for _ in 0..<3 { step(x4) }
        let tensors = try held()
        let buffers = tensors.map { ($0.data, $0.capacity) }, bytes = net.workspace.bytes
        func unchanged(_ when: String) throws {
            let now = try held()
            XCTAssertEqual(now.count, tensors.count)
            for (k, t) in zip(now, tensors).enumerated() {
                XCTAssertTrue(t.0 === t.1, "\(when): tensor \(k) was replaced")
                XCTAssertEqual(t.0.data, buffers[k].0, "\(when): tensor \(k) moved")
                XCTAssertEqual(t.0.capacity, buffers[k].1, "\(when): tensor \(k) grew")
            }
            XCTAssertEqual(net.workspace.bytes, bytes, "\(when): the workspace grew")
        }
        // The heap over 8 more steps, measured outside XCTest's assertions (they allocate while they
        // evaluate their arguments). Threads that touch malloc for the first time (OpenMP's and GCD's
        // workers, each with its own small cache) add a few hundred bytes now and then, measured up to
        // ~500 over the first steps; 32 KiB allows for them and still catches any buffer of 4 KiB kept
        // per step (every block output here is at least that).
        step(x4)
        _ = heapBytesInUse()  // its own first call may set something up
        let heap = heapBytesInUse()
        for _ in 0..<8 { step(x4) }
        let heapAfter = heapBytesInUse()
        let grown = try XCTUnwrap(heapAfter, "glibc's malloc_stats") - (try XCTUnwrap(heap))
        XCTAssertLessThan(grown, 32 << 10, "the heap grew by \(grown) bytes over 8 steps")
        try unchanged("after 9 more steps")
        // A batch of 2: every buffer stays, so the logits of images 2 and 3 of the last batch of 4 are still there.
        let rowsOf23 = Array(UnsafeBufferPointer(start: net.logits.data + 4, count: 4))
        step(x2)
        XCTAssertEqual(net.logits.shape, [2, 2])
        XCTAssertEqual(Array(UnsafeBufferPointer(start: net.logits.data + 4, count: 4)), rowsOf23)
        try unchanged("after a batch of 2")
        step(x4)
        try unchanged("back at a batch of 4")
    }
}

/// Bytes the C heap has handed out and not taken back: the "in use bytes" over all arenas and mmapped
/// blocks that glibc's malloc_stats prints (its exact count; malloc_info's totals leave out each arena's
/// top chunk). It prints to stderr, so stderr goes to a temporary file for the call. nil off glibc.
func heapBytesInUse() -> Int? {
    guard let libc = dlopen(nil, RTLD_NOW), let symbol = dlsym(libc, "malloc_stats") else { return nil }
    let stats = unsafeBitCast(symbol, to: (@convention(c) () -> Void).self)
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("malloc-stats-\(getpid()).txt").path
    let fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0o600), saved = dup(2)
    guard fd >= 0, saved >= 0 else { return nil }
    fflush(stderr)
    dup2(fd, 2)
    stats()
    fflush(stderr)
    dup2(saved, 2)
    close(saved); close(fd)
    defer { unlink(path) }
    // "Total (incl. mmap):\nsystem bytes = ...\nin use bytes = N\n" comes last.
    guard let text = try? String(contentsOfFile: path, encoding: .utf8), let total = text.range(of: "Total (incl. mmap):"),
          let line = text[total.upperBound...].split(separator: "\n").first(where: { $0.contains("in use bytes") }) else { return nil }
    return Int(line.split(separator: "=").last?.trimmingCharacters(in: .whitespaces) ?? "")
}
