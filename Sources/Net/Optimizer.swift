import Foundation

// Optimizers with PyTorch's exact update rules (torch.optim.SGD, AdamW),
// over the contiguous parameter and gradient buffers of a ParameterStore.
// State is a list of named buffers (PyTorch's state names), each one allocation
// laid out like the parameters: checkpoints, loading and the rank broadcast walk
// the list, so an optimizer with another buffer adds a name here and nothing there.
// Frozen entries are skipped entirely (their state does not move).

public enum OptimizerKind: String, Codable, CaseIterable, Sendable {
    case sgd, adamw

    /// The per-parameter state tensors, as torch.optim names them in its state_dict
    /// (SGD keeps its momentum buffer even at momentum 0, where PyTorch keeps None: zeros).
    public var stateNames: [String] {
        switch self {
        case .sgd: ["momentum_buffer"]
        case .adamw: ["exp_avg", "exp_avg_sq"]
        }
    }
}

public struct OptimizerConfig: Codable, Sendable, Equatable {
    public var kind: OptimizerKind
    // Hyper-parameters are Double, as PyTorch's are Python floats.
    public var momentum: Double = 0.9
    public var nesterov = false
    public var dampening: Double = 0
    public var weightDecay: Double
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var eps: Double = 1e-8

    public init(kind: OptimizerKind, weightDecay: Double? = nil) {
        self.kind = kind
        self.weightDecay = weightDecay ?? (kind == .adamw ? 0.01 : 0)
    }
}

/// One named state tensor of an optimizer, laid out as the store's parameters:
/// entry `e`'s state is `values[e.offset ..< e.offset + e.count]`. Owned (and
/// freed) by its Optimizer.
public struct OptimizerState {
    public let name: String
    public let values: UnsafeMutablePointer<Float>
    /// Floats in the buffer: the store's parameterCount.
    public let count: Int

    public func read(_ e: StateEntry) -> [Float] {
        precondition(e.kind == .parameter, "\(e.name) has no optimizer state")
        return Array(UnsafeBufferPointer(start: values + e.offset, count: e.count))
    }

    public func write(_ e: StateEntry, _ v: [Float]) {
        precondition(e.kind == .parameter && v.count == e.count, "\(e.name)/\(name): \(v.count) values for shape \(e.shape)")
        v.withUnsafeBufferPointer { (values + e.offset).update(from: $0.baseAddress!, count: e.count) }
    }
}

public final class Optimizer {
    /// Fixed at init: the kind decides which state buffers exist.
    public let config: OptimizerConfig
    unowned let store: ParameterStore
    /// The per-parameter state, in `config.kind.stateNames` order.
    public let state: [OptimizerState]
    /// Steps taken per entry (PyTorch keeps `step` per parameter; frozen ones lag).
    public var steps: [Int64]
    /// Per entry: multiplier of the learning rate (e.g. 0.1 for a backbone).
    public var lrScale: [Float]

    public init(_ config: OptimizerConfig, store: ParameterStore) {
        self.config = config
        self.store = store
        let n = store.parameterCount
        state = config.kind.stateNames.map { name in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
            p.initialize(repeating: 0, count: max(n, 1))
            return OptimizerState(name: name, values: p, count: n)
        }
        steps = Array(repeating: 0, count: store.entries.count)
        lrScale = Array(repeating: 1, count: store.entries.count)
    }

    deinit { for s in state { s.values.deallocate() } }

    public func setLRScale(_ scale: Float, prefixes: [String]) {
        for (i, e) in store.entries.enumerated() where e.kind == .parameter {
            if prefixes.contains(where: { e.name.hasPrefix($0) }) { lrScale[i] = scale }
        }
    }

    /// One update with learning rate `lr`.
    public func step(lr: Double) {
        for (i, e) in store.entries.enumerated() where e.kind == .parameter && !store.frozen[i] {
            steps[i] += 1
            let p = store.values + e.offset, g = store.grads + e.offset
            let lr = lr * Double(lrScale[i])
            // Positions follow `stateNames` of the kind.
            switch config.kind {
            case .sgd: sgd(p, g, state[0].values + e.offset, e.count, lr: lr, first: steps[i] == 1)
            case .adamw: adamw(p, g, state[0].values + e.offset, state[1].values + e.offset, e.count, lr: lr, t: steps[i])
            }
        }
    }

    /// torch.optim.SGD: g += wd*p; buf = g on the first step, else
    /// buf = momentum*buf + (1 - dampening)*g; g = nesterov ? g + momentum*buf : buf;
    /// p -= lr*g.
    private func sgd(_ p: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>,
                     _ buf: UnsafeMutablePointer<Float>, _ n: Int, lr: Double, first: Bool) {
        let lr = Float(lr)
        let wd = Float(config.weightDecay), mom = Float(config.momentum), nest = config.nesterov
        let damp = Float(1 - config.dampening)
        for j in 0..<n {
            var d = g[j]
            if wd != 0 { d += wd * p[j] }
            if mom != 0 {
                buf[j] = first ? d : mom * buf[j] + damp * d
                d = nest ? d + mom * buf[j] : buf[j]
            }
            p[j] -= lr * d
        }
    }

    /// torch.optim.AdamW (decoupled decay, Loshchilov & Hutter 2019):
    /// p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    /// p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    private func adamw(_ p: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>,
                       _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ n: Int,
                       lr: Double, t: Int64) {
        // Scalars are formed in Double, as PyTorch forms them in Python floats.
        let b1 = config.beta1, b2 = config.beta2
        let bc1 = 1 - Foundation.pow(b1, Double(t))
        let bc2sqrt = Float((1 - Foundation.pow(b2, Double(t))).squareRoot())
        let stepSize = Float(lr / bc1)
        let decay = Float(1 - lr * config.weightDecay)
        let w1 = Float(1 - b1), fb2 = Float(b2), w2 = Float(1 - b2), eps = Float(config.eps)
        for j in 0..<n {
            p[j] *= decay
            m[j] += w1 * (g[j] - m[j])   // torch's exp_avg.lerp_(grad, 1 - beta1), weight < 0.5 branch
            v[j] = v[j] * fb2 + w2 * (g[j] * g[j])
            let denom = v[j].squareRoot() / bc2sqrt + eps
            p[j] -= stepSize * (m[j] / denom)
        }
    }
}

// MARK: learning-rate schedules

public enum ScheduleKind: String, Codable, CaseIterable, Sendable { case constant, step, cosine }

/// Learning rate as a function of the global step: linear warm-up from
/// `warmupStartFactor * base` over `warmupSteps`, then constant, step decay
/// (x `gamma` every `stepEvery` steps), or cosine annealing to `minLR` at `totalSteps`.
public struct LRSchedule: Codable, Sendable, Equatable {
    public var kind: ScheduleKind
    public var base: Float
    public var totalSteps: Int
    public var warmupSteps: Int = 0
    public var warmupStartFactor: Float = 0.1
    public var stepEvery: Int = 1
    public var gamma: Float = 0.1
    public var minLR: Float = 0

    public init(kind: ScheduleKind, base: Float, totalSteps: Int, warmupSteps: Int = 0) {
        self.kind = kind; self.base = base; self.totalSteps = totalSteps; self.warmupSteps = warmupSteps
    }

    public func lr(at step: Int) -> Float {
        if step < warmupSteps {
            let f = warmupStartFactor + (1 - warmupStartFactor) * Float(step) / Float(max(warmupSteps, 1))
            return base * f
        }
        switch kind {
        case .constant: return base
        case .step: return base * Float(Foundation.pow(Double(gamma), Double(step / max(stepEvery, 1))))
        case .cosine:
            let span = max(totalSteps - warmupSteps, 1)
            let t = min(Double(step - warmupSteps) / Double(span), 1)
            return minLR + (base - minLR) * Float(0.5 * (1 + Foundation.cos(Double.pi * t)))
        }
    }
}
