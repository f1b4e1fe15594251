// Vectorised reductions. Swift keeps float addition in program order, so a
// scalar `s += x[i]` loop cannot use SIMD lanes; these keep 16 independent
// partial sums (the order differs from a scalar loop, within float rounding).

typealias V16 = SIMD16<Float>

@inline(__always)
func load16(_ p: UnsafePointer<Float>) -> V16 { UnsafeRawPointer(p).loadUnaligned(as: V16.self) }

@inline(__always)
func store16(_ v: V16, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V16.self) }

/// sum x[i]
@inline(__always)
func vsum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = V16(), i = 0
    while i + 16 <= n { acc += load16(x + i); i += 16 }
    var s = acc.sum()
    while i < n { s += x[i]; i += 1 }
    return s
}

/// sum (x[i] - mu)^2
@inline(__always)
func vsumSquaredDeviations(_ x: UnsafePointer<Float>, _ n: Int, _ mu: Float) -> Float {
    var acc = V16(), i = 0
    let m = V16(repeating: mu)
    while i + 16 <= n { let d = load16(x + i) - m; acc.addProduct(d, d); i += 16 }
    var s = acc.sum()
    while i < n { let d = x[i] - mu; s += d * d; i += 1 }
    return s
}

/// (sum d[i], sum d[i] * (x[i] - mu)) with d = dy, or dy masked by y > 0 when `relu`.
@inline(__always)
func vsumGradients(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafePointer<Float>, _ n: Int,
                   mu: Float, relu: Bool) -> (Float, Float) {
    var a = V16(), b = V16(), i = 0
    let m = V16(repeating: mu), zero = V16()
    if relu {
        while i + 16 <= n {
            let d = load16(dy + i).replacing(with: zero, where: load16(y + i) .<= zero)
            a += d; b.addProduct(d, load16(x + i) - m); i += 16
        }
    } else {
        while i + 16 <= n {
            let d = load16(dy + i)
            a += d; b.addProduct(d, load16(x + i) - m); i += 16
        }
    }
    var sa = a.sum(), sb = b.sum()
    while i < n {
        let d = (!relu || y[i] > 0) ? dy[i] : 0
        sa += d; sb += d * (x[i] - mu); i += 1
    }
    return (sa, sb)
}
