import Cams
import DistTrain
import Foundation
import Net
import XCTest

/// CAM methods against pytorch-grad-cam (cams.h5 from make_cam_fixtures.py)
/// and against hand-built cases with known answers.
final class CAMTests: XCTestCase {
    /// The fixture's network: ResNet-18 structure at width 8, formula weights.
    func fixtureNet() -> ResNet {
        let net = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 8), engine: testEngine())
        fillFormula(net)
        return net
    }

    /// Every method's maps, at layer4 (3x3) and layer3 (6x6), within 2e-3 of
    /// pytorch-grad-cam's on a [0, 1] scale (float32 rounding through the
    /// network and the min-max scaling). Eigen methods: the SVD sign is
    /// arbitrary in numpy and fixed here, so either sign of ours may match.
    func testAllMethodsMatchPytorchGradCam() throws {
        let f = try fixture("cams.h5")
        let x = try tensor(f, "input")
        let net = fixtureNet()
        net.setTraining(false)
        let logits = net.forward(x)
        assertClose("logits", logits.array, try f.readFloats("logits").values, rtol: 1e-4, atol: 1e-4)
        for layer in ["layer4", "layer3"] {
            let explainer = try CAMExplainer(net: net, layer: layer)
            for kind in CAMKind.allCases {
                let ref = try f.readFloats("\(layer)/\(kind.rawValue)").values
                let (maps, targets) = explainer.explain(x, method: kind)
                XCTAssertEqual(targets, try f.readInt64s("predicted").values.map { Int($0) })
                var worst = zip(maps, ref).map { abs($0 - $1) }.max()!
                if kind == .eigencam || kind == .eigengradcam {
                    // Same pipeline on the negated projection, per image.
                    let raw = explainer.rawMaps(x, method: kind.method, target: .predicted)
                    let H = x.shape[2], W = x.shape[3], hw = raw.h * raw.w
                    for n in 0..<x.shape[0] {
                        let r = Array(ref[(n * H * W)..<((n + 1) * H * W)])
                        var best = Float.infinity
                        for sign: Float in [1, -1] {
                            var m = raw.maps[(n * hw)..<((n + 1) * hw)].map { max(sign * $0, 0) }
                            m = scaled(m); var up = resizeBilinear(m, h: raw.h, w: raw.w, H: H, W: W); up = scaled(up)
                            best = min(best, zip(up, r).map { abs($0 - $1) }.max()!)
                        }
                        worst = n == 0 ? best : max(worst, best)
                    }
                }
                XCTAssertLessThan(worst, 2e-3, "\(layer) \(kind.rawValue): max |ours - pytorch-grad-cam| = \(worst)")
            }
        }
    }

    func scaled(_ v: [Float]) -> [Float] {
        let lo = v.min()!, hi = v.max()!
        return v.map { ($0 - lo) / (hi - lo + 1e-7) }
    }

    /// A: 2 channels on a 2x2 grid; G spatially constant: HiResCAM = Grad-CAM.
    func testHiResCAMEqualsGradCAMForConstantGradients() {
        let A = Tensor([1, 2, 2, 2], values: [1, 2, 3, 4, 0.5, 0, 2, 1])
        let G = Tensor([1, 2, 2, 2], values: [0.3, 0.3, 0.3, 0.3, -0.2, -0.2, -0.2, -0.2])
        let input = CAMInput(A: A, G: G, targets: [0])
        XCTAssertEqual(GradCAM().channelWeights(input), [0.3, -0.2])
        let grad = GradCAM().saliency(input), hires = HiResCAM().saliency(input)
        for (a, b) in zip(grad, hires) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        // Known values: 0.3*A0 - 0.2*A1.
        let expected: [Float] = [0.3 * 1 - 0.2 * 0.5, 0.3 * 2, 0.3 * 3 - 0.2 * 2, 0.3 * 4 - 0.2 * 1]
        XCTAssertEqual(grad, expected, accuracy: 1e-6)
        // A varying gradient separates them.
        let G2 = Tensor([1, 2, 2, 2], values: [1, 0, 0, 0, 0, 0, 0, 1])
        let in2 = CAMInput(A: A, G: G2, targets: [0])
        XCTAssertEqual(HiResCAM().saliency(in2), [1, 0, 0, 1])
        XCTAssertEqual(LayerCAM().saliency(in2), [1, 0, 0, 1])
        XCTAssertEqual(GradCAM().saliency(in2), [0.375, 0.5, 1.25, 1.25])
    }

    /// XGrad-CAM and Grad-CAM++ on one channel, written out by hand.
    func testXGradCAMAndGradCAMPlusPlusByHand() {
        let A = Tensor([1, 1, 1, 2], values: [1, 3])
        let G = Tensor([1, 1, 1, 2], values: [2, -1])
        let input = CAMInput(A: A, G: G, targets: [0])
        let xExpected: Float = -1 / (4 + 1e-7)  // (2*1 + (-1)*3) / (1 + 3 + eps)
        XCTAssertEqual(XGradCAM().channelWeights(input)[0], xExpected, accuracy: 1e-6)
        // alpha = g^2 / (2 g^2 + sumA g^3 + 1e-6) at g = 2 (sumA = 4): 4 / (8 + 32); g = -1 contributes 0 (ReLU).
        let ppExpected: Float = 8 / (40 + 1e-6)
        XCTAssertEqual(GradCAMPlusPlus().channelWeights(input)[0], ppExpected, accuracy: 1e-6)
    }

    /// Eigen-CAM picks the dominant spatial pattern and its sign does not depend on where the SVD (here a
    /// power iteration from a fixed start) happens to land: the map peaks on the blob and correlates
    /// positively with the channel-summed activation wherever the blob is. The centred data is orthogonal to
    /// a constant start vector, so the start's small ramp decides the iteration's sign: for a blob at
    /// positions 0, 1, 2, 7 or 8 it converges to the negated map, which only the sign fix turns back.
    /// (Reordering the channels would not test this: it leaves the Gram matrix, and so the map, unchanged.)
    func testEigenCAMFindsTheBlobWithAStableSign() {
        for blob in 0..<9 {
            // 3 channels on 3x3: the blob in channels 0 and 1, a faint pixel elsewhere in channel 2.
            var v = [Float](repeating: 0, count: 27)
            for c in 0..<2 { v[c * 9 + blob] = Float(5 + c) }
            v[18 + (blob + 4) % 9] = 0.1
            let m = EigenCAM().saliency(CAMInput(A: Tensor([1, 3, 3, 3], values: v), G: nil, targets: [0]))
            XCTAssertEqual(m.indices.max { m[$0] < m[$1] }, blob, "blob at \(blob): the peak is the blob")
            XCTAssertGreaterThan(m[blob], 0, "blob at \(blob)")
            let summed = (0..<9).map { p in (0..<3).map { v[$0 * 9 + p] }.reduce(0, +) }
            XCTAssertGreaterThan(zip(m, summed).map { $0 * $1 }.reduce(0, +), 0, "blob at \(blob): positive correlation")
        }
    }

    func testInputGradientAndKernelGrid() throws {
        let net = fixtureNet()
        let x = Tensor([1, 1, 64, 64])
        var rng = Xoshiro256(seed: 4)
        for i in 0..<x.count { x[i] = Float(rng.normal()) }  // no ties for max-pooling to switch between
        let g = inputGradient(net: net, x: x, labels: [1])
        XCTAssertEqual(g.shape, x.shape)
        XCTAssertGreaterThan(g.array.map { abs($0) }.max()!, 0)
        // Finite difference on one pixel (eval mode: the network is piecewise linear).
        net.setTraining(false)
        let ce = CrossEntropy()
        let i = 64 * 30 + 31, h: Float = 1e-3
        let v = x[i]
        x[i] = v + h; let lp = ce.forwardBackward(logits: net.forward(x), labels: [1], dlogits: nil)
        x[i] = v - h; let lm = ce.forwardBackward(logits: net.forward(x), labels: [1], dlogits: nil)
        x[i] = v
        XCTAssertEqual(Double(g[i]), Double(lp - lm) / Double(2 * h), accuracy: 0.05 * Double(abs(g[i])) + 1e-4)
        let k = firstLayerKernels(net: net)
        XCTAssertEqual([k.height, k.width, k.channels], [1 * 8 + 1, 8 * 8 + 1, 1])  // 8 kernels of 7x7 in one row
        XCTAssertEqual(k.pixels.min()!, 0, accuracy: 0.51)
        XCTAssertTrue(k.pixels.allSatisfy { $0 >= 0 && $0 <= 1 })
    }
}

func XCTAssertEqual(_ a: [Float], _ b: [Float], accuracy: Float, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, file: file, line: line)
    for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: accuracy, file: file, line: line) }
}
