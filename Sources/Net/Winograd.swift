// Winograd convolution F(2x2, 3x3) (Lavin & Gray 2016, "Fast Algorithms for
// Convolutional Neural Networks", section 4.1) for 3x3, stride 1, pad 1: the
// convolutions holding ~86 % of ResNet-18's multiply-adds.
//
// Each 2x2 output tile Y is A^T [ (G g G^T) .* (B^T d B) ] A, where d is the
// 4x4 input window (rows 2th-1..2th+2, cols 2tw-1..2tw+2, zero outside) and
// g the 3x3 kernel. Summed over channels, the elementwise product becomes one
// GEMM for each of the 16 positions xi of the 4x4 transform domain:
//   M[xi] (OC, T) = U[xi] (OC, C) * V[xi] (C, T),   T = tiles of a group of images,
// 4*OC*C*N*H*W multiplies instead of direct convolution's 9*OC*C*N*H*W: 2.25x fewer.
//
// Backward is the exact adjoint of that linear map (in exact arithmetic it
// is the gradient of the direct convolution):
//   dM = A dY A^T (per tile),  dU[xi] += dM[xi] V[xi]^T,  dV[xi] = U[xi]^T dM[xi],
//   dW += G^T dU G,  dX += B dV B^T added back over the overlapping windows.
//
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
//   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
//   A^T = [1 1 1 0; 0 1 -1 -1]
// Layouts: U[xi][oc][c], V[xi][c][t], M[xi][oc][t], xi = 4*row + col,
// t = (i*TH + th)*TW + tw over the images i of a group, TH = ceil(H/2), TW = ceil(W/2).
//
// The transforms run over a whole row of tiles at a time on padded row
// buffers, so the inner loops are unit- or 2-strided and vectorise.

/// G (4x3) times (a, b, c).
@inline(__always)
func applyG(_ a: Float, _ b: Float, _ c: Float) -> SIMD4<Float> { SIMD4(a, 0.5 * (a + b + c), 0.5 * (a - b + c), c) }

/// G^T (3x4) times (u0, u1, u2, u3).
@inline(__always)
func applyGT(_ u0: Float, _ u1: Float, _ u2: Float, _ u3: Float) -> SIMD3<Float> {
    SIMD3(u0 + 0.5 * (u1 + u2), 0.5 * (u1 - u2), 0.5 * (u1 + u2) + u3)
}

extension Conv2d {
    /// Whether this convolution runs as Winograd F(2x2, 3x3) on an H x W input:
    /// 3x3 stride 1 pad 1, and at least 8x8 (on smaller maps the padded 4x4
    /// tiles waste most of their work: a 1x1 map uses 1 of 4 outputs per tile).
    /// Not in bf16: autocast rounds the input and weights, not their transforms.
    func usesWinograd(H: Int, W: Int) -> Bool {
        engine.winograd && engine.precision == .fp32 && KH == 3 && KW == 3 && stride == 1 && pad == 1 && H >= 8 && W >= 8
    }

    /// Images per group: enough tiles for efficient GEMMs, bounded scratch.
    func winogradGroup(N: Int, tiles: Int) -> Int {
        max(1, min(N, (engine.winogradColumns + tiles - 1) / tiles))
    }

    // MARK: weights

    /// U[xi][oc][c] = (G g G^T)[xi] for every kernel g = w[oc, c] (S = OC*C kernels).
    func winogradWeights(_ w: UnsafePointer<Float>, _ u: UnsafeMutablePointer<Float>) {
        let S = OC * C
        engine.parallel.chunks(S, grain: 1024) { lo, hi in
            for k in lo..<hi {
                let g = w + k * 9
                // G applied to the kernel's columns gives Gg (4x3); then to Gg's rows.
                let c0 = applyG(g[0], g[3], g[6]), c1 = applyG(g[1], g[4], g[7]), c2 = applyG(g[2], g[5], g[8])
                for i in 0..<4 {
                    let row = applyG(c0[i], c1[i], c2[i])
                    for j in 0..<4 { u[(4 * i + j) * S + k] = row[j] }
                }
            }
        }
    }

    /// dw[oc, c] += G^T dU G, the adjoint of `winogradWeights`.
    func winogradWeightsAdjoint(_ du: UnsafePointer<Float>, _ dw: UnsafeMutablePointer<Float>) {
        let S = OC * C
        engine.parallel.chunks(S, grain: 1024) { lo, hi in
            for k in lo..<hi {
                // G^T applied to each column s of dU gives R (3x4), by columns.
                var r = (SIMD3<Float>(), SIMD3<Float>(), SIMD3<Float>(), SIMD3<Float>())
                r.0 = applyGT(du[k], du[4 * S + k], du[8 * S + k], du[12 * S + k])
                r.1 = applyGT(du[S + k], du[5 * S + k], du[9 * S + k], du[13 * S + k])
                r.2 = applyGT(du[2 * S + k], du[6 * S + k], du[10 * S + k], du[14 * S + k])
                r.3 = applyGT(du[3 * S + k], du[7 * S + k], du[11 * S + k], du[15 * S + k])
                // Then to R's rows: dg = R G.
                let g = dw + k * 9
                for i in 0..<3 {
                    let row = applyGT(r.0[i], r.1[i], r.2[i], r.3[i])
                    for j in 0..<3 { g[3 * i + j] += row[j] }
                }
            }
        }
    }

    // MARK: input

    /// V[xi][c][t] = (B^T d B)[xi] for the windows of g images of x (N, C, H, W).
    func winogradInput(_ x: UnsafePointer<Float>, g: Int, H: Int, W: Int, TH: Int, TW: Int,
                       _ v: UnsafeMutablePointer<Float>) {
        let C = self.C, T = g * TH * TW, S = C * T
        let L = 2 * TW + 2  // padded row length: column -1 ... 2*TW
        engine.parallel.chunks(C, grain: 1) { lo, hi in
            // rows: 4 padded input rows; m: the row transform B^T d, 4 rows.
            let rows = UnsafeMutablePointer<Float>.allocate(capacity: 8 * L)
            defer { rows.deallocate() }
            let m = rows + 4 * L
            for c in lo..<hi {
                for i in 0..<g {
                    let xc = x + (i * C + c) * H * W
                    for th in 0..<TH {
                        for r in 0..<4 {
                            let dst = rows + r * L
                            let ih = 2 * th - 1 + r
                            dst.update(repeating: 0, count: L)
                            if ih >= 0 && ih < H { (dst + 1).update(from: xc + ih * W, count: W) }
                        }
                        let d0 = rows, d1 = rows + L, d2 = rows + 2 * L, d3 = rows + 3 * L
                        let m0 = m, m1 = m + L, m2 = m + 2 * L, m3 = m + 3 * L
                        for p in 0..<L {
                            m0[p] = d0[p] - d2[p]; m1[p] = d1[p] + d2[p]
                            m2[p] = d2[p] - d1[p]; m3[p] = d1[p] - d3[p]
                        }
                        let t0 = (i * TH + th) * TW
                        for r in 0..<4 {
                            let mr = m + r * L
                            let o0 = v + (4 * r) * S + c * T + t0, o1 = o0 + S, o2 = o1 + S, o3 = o2 + S
                            for tw in 0..<TW {
                                let a0 = mr[2 * tw], a1 = mr[2 * tw + 1], a2 = mr[2 * tw + 2], a3 = mr[2 * tw + 3]
                                o0[tw] = a0 - a2; o1[tw] = a1 + a2; o2[tw] = a2 - a1; o3[tw] = a1 - a3
                            }
                        }
                    }
                }
            }
        }
    }

    /// dx[i, c] += B dV B^T over every window, the adjoint of `winogradInput`.
    func winogradInputAdjoint(_ dv: UnsafePointer<Float>, g: Int, H: Int, W: Int, TH: Int, TW: Int,
                              _ dx: UnsafeMutablePointer<Float>) {
        let C = self.C, T = g * TH * TW, S = C * T
        let L = 2 * TW + 2
        engine.parallel.chunks(C, grain: 1) { lo, hi in
            // q: per transform row r and column s, B applied over rows (P = B dV), length TW each;
            // acc: the 4 padded output rows of one tile row.
            let q = UnsafeMutablePointer<Float>.allocate(capacity: 16 * TW + 4 * L)
            defer { q.deallocate() }
            let acc = q + 16 * TW
            for c in lo..<hi {
                for i in 0..<g {
                    let dxc = dx + (i * C + c) * H * W
                    let t0 = (i * TH) * TW
                    for th in 0..<TH {
                        let base = dv + c * T + t0 + th * TW
                        // P = B dV: P0 = V0, P1 = V1 - V2 + V3, P2 = -V0 + V1 + V2, P3 = -V3 (rows of 4).
                        for s in 0..<4 {
                            let v0 = base + s * S, v1 = base + (4 + s) * S, v2 = base + (8 + s) * S, v3 = base + (12 + s) * S
                            let p0 = q + (0 * 4 + s) * TW, p1 = q + (1 * 4 + s) * TW
                            let p2 = q + (2 * 4 + s) * TW, p3 = q + (3 * 4 + s) * TW
                            for tw in 0..<TW {
                                p0[tw] = v0[tw]; p1[tw] = v1[tw] - v2[tw] + v3[tw]
                                p2[tw] = v1[tw] + v2[tw] - v0[tw]; p3[tw] = -v3[tw]
                            }
                        }
                        acc.update(repeating: 0, count: 4 * L)
                        // dd = P B^T per row r: [p0, p1 - p2 + p3, -p0 + p1 + p2, -p3] at columns 2tw + 0..3.
                        for r in 0..<4 {
                            let p0 = q + (r * 4) * TW, p1 = p0 + TW, p2 = p1 + TW, p3 = p2 + TW
                            let a = acc + r * L
                            for tw in 0..<TW { a[2 * tw] += p0[tw] }
                            for tw in 0..<TW { a[2 * tw + 1] += p1[tw] - p2[tw] + p3[tw] }
                            for tw in 0..<TW { a[2 * tw + 2] += p1[tw] + p2[tw] - p0[tw] }
                            for tw in 0..<TW { a[2 * tw + 3] -= p3[tw] }
                        }
                        for r in 0..<4 {
                            let ih = 2 * th - 1 + r
                            if ih < 0 || ih >= H { continue }
                            let dst = dxc + ih * W, src = acc + r * L + 1
                            for w in 0..<W { dst[w] += src[w] }
                        }
                    }
                }
            }
        }
    }

    // MARK: output

    /// y[i, oc] = A^T M A per tile, the output transform.
    func winogradOutput(_ mm: UnsafePointer<Float>, g: Int, H: Int, W: Int, TH: Int, TW: Int,
                        _ y: UnsafeMutablePointer<Float>) {
        let OC = self.OC, T = g * TH * TW, S = OC * T
        engine.parallel.chunks(OC, grain: 1) { lo, hi in
            // q[a][s]: rows of A^T M (2 x 4), TW tiles each; out: 2 output rows (2*TW wide).
            let q = UnsafeMutablePointer<Float>.allocate(capacity: 8 * TW + 4 * TW)
            defer { q.deallocate() }
            let out = q + 8 * TW
            for oc in lo..<hi {
                for i in 0..<g {
                    let yo = y + (i * OC + oc) * H * W
                    for th in 0..<TH {
                        let base = mm + oc * T + (i * TH + th) * TW
                        for s in 0..<4 {
                            let m0 = base + s * S, m1 = base + (4 + s) * S, m2 = base + (8 + s) * S, m3 = base + (12 + s) * S
                            let q0 = q + s * TW, q1 = q + (4 + s) * TW
                            for tw in 0..<TW {
                                q0[tw] = m0[tw] + m1[tw] + m2[tw]
                                q1[tw] = m1[tw] - m2[tw] - m3[tw]
                            }
                        }
                        for a in 0..<2 {
                            let q0 = q + (4 * a) * TW, q1 = q0 + TW, q2 = q1 + TW, q3 = q2 + TW
                            let o = out + a * 2 * TW
                            for tw in 0..<TW {
                                o[2 * tw] = q0[tw] + q1[tw] + q2[tw]
                                o[2 * tw + 1] = q1[tw] - q2[tw] - q3[tw]
                            }
                            let oh = 2 * th + a
                            if oh < H { (yo + oh * W).update(from: o, count: W) }
                        }
                    }
                }
            }
        }
    }

    /// dM = A dY A^T per tile (dY zero outside the image), the adjoint of `winogradOutput`.
    func winogradOutputAdjoint(_ dy: UnsafePointer<Float>, g: Int, H: Int, W: Int, TH: Int, TW: Int,
                               _ dm: UnsafeMutablePointer<Float>) {
        let OC = self.OC, T = g * TH * TW, S = OC * T
        engine.parallel.chunks(OC, grain: 1) { lo, hi in
            // rows: 2 padded dY rows (2*TW wide); p[r][col]: A dY (4 rows x 2 cols), TW each.
            let rows = UnsafeMutablePointer<Float>.allocate(capacity: 4 * TW + 8 * TW)
            defer { rows.deallocate() }
            let p = rows + 4 * TW
            for oc in lo..<hi {
                for i in 0..<g {
                    let dyo = dy + (i * OC + oc) * H * W
                    for th in 0..<TH {
                        for a in 0..<2 {
                            let dst = rows + a * 2 * TW
                            let oh = 2 * th + a
                            dst.update(repeating: 0, count: 2 * TW)
                            if oh < H { dst.update(from: dyo + oh * W, count: W) }
                        }
                        // A dY: rows [y0, y0 + y1, y0 - y1, -y1] for each of the tile's 2 columns.
                        let y0 = rows, y1 = rows + 2 * TW
                        for col in 0..<2 {
                            let p0 = p + (0 * 2 + col) * TW, p1 = p + (1 * 2 + col) * TW
                            let p2 = p + (2 * 2 + col) * TW, p3 = p + (3 * 2 + col) * TW
                            for tw in 0..<TW {
                                let a = y0[2 * tw + col], b = y1[2 * tw + col]
                                p0[tw] = a; p1[tw] = a + b; p2[tw] = a - b; p3[tw] = -b
                            }
                        }
                        // (A dY) A^T: each row (u0, u1) -> [u0, u0 + u1, u0 - u1, -u1].
                        let base = dm + oc * T + (i * TH + th) * TW
                        for r in 0..<4 {
                            let u0 = p + (r * 2) * TW, u1 = u0 + TW
                            let o0 = base + (4 * r) * S, o1 = o0 + S, o2 = o1 + S, o3 = o2 + S
                            for tw in 0..<TW {
                                o0[tw] = u0[tw]; o1[tw] = u0[tw] + u1[tw]
                                o2[tw] = u0[tw] - u1[tw]; o3[tw] = -u1[tw]
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: the convolution

    func winogradForward(_ x: Tensor) {
        let N = x.shape[0], H = x.shape[2], W = x.shape[3]
        let TH = (H + 1) / 2, TW = (W + 1) / 2
        let u = ws.slot(2, 16 * OC * C)
        profiler.measure(.winograd) { winogradWeights(store.values + weight.offset, u) }
        let G = winogradGroup(N: N, tiles: TH * TW)
        var n0 = 0
        while n0 < N {
            let g = min(G, N - n0), T = g * TH * TW
            let v = ws.slot(0, 16 * C * T), m = ws.slot(1, 16 * OC * T)
            profiler.measure(.winograd) { winogradInput(x.data + n0 * C * H * W, g: g, H: H, W: W, TH: TH, TW: TW, v) }
            profiler.measure(.convGemm) { batchedGemm(M: OC, N: T, K: C, A: u, B: v, C: m, transA: false, transB: false, beta: 0) }
            profiler.measure(.winograd) { winogradOutput(m, g: g, H: H, W: W, TH: TH, TW: TW, output.data + n0 * OC * H * W) }
            n0 += g
        }
    }

    func winogradBackward(_ x: Tensor, _ dy: Tensor, needInputGrad: Bool, frozen: Bool) {
        let N = x.shape[0], H = x.shape[2], W = x.shape[3]
        let TH = (H + 1) / 2, TW = (W + 1) / 2
        // The workspace is shared by all layers: U is rebuilt (cheap: OC*C kernels).
        let u = ws.slot(2, 16 * OC * C)
        if needInputGrad { profiler.measure(.winograd) { winogradWeights(store.values + weight.offset, u) } }
        let du = ws.slot(3, 16 * OC * C)
        let G = winogradGroup(N: N, tiles: TH * TW)
        var n0 = 0, first = true
        while n0 < N {
            let g = min(G, N - n0), T = g * TH * TW
            let v = ws.slot(0, 16 * C * T), m = ws.slot(1, 16 * OC * T)
            profiler.measure(.winograd) { winogradOutputAdjoint(dy.data + n0 * OC * H * W, g: g, H: H, W: W, TH: TH, TW: TW, m) }
            if !frozen {
                profiler.measure(.winograd) { winogradInput(x.data + n0 * C * H * W, g: g, H: H, W: W, TH: TH, TW: TW, v) }
                // dU[xi] (OC, C) += dM[xi] (OC, T) V[xi]^T (T, C)
                profiler.measure(.convGemm) {
                    batchedGemm(M: OC, N: C, K: T, A: m, B: v, C: du, transA: false, transB: true, beta: first ? 0 : 1)
                }
            }
            if needInputGrad {
                // dV[xi] (C, T) = U[xi]^T (C, OC) dM[xi] (OC, T), into v's space.
                profiler.measure(.convGemm) { batchedGemm(M: C, N: T, K: OC, A: u, B: m, C: v, transA: true, transB: false, beta: 0) }
                profiler.measure(.winograd) {
                    winogradInputAdjoint(v, g: g, H: H, W: W, TH: TH, TW: TW, dinput.data + n0 * C * H * W)
                }
            }
            first = false
            n0 += g
        }
        if !frozen { profiler.measure(.winograd) { winogradWeightsAdjoint(du, store.grads + weight.offset) } }
    }

    /// 16 independent GEMMs C[xi] = op(A[xi]) op(B[xi]) (+ beta C[xi]), spread
    /// over the engine's threads (each GEMM single-threaded: no splitting cost).
    /// Matrices are contiguous: A[xi] is (M, K) or, transposed, stored (K, M).
    func batchedGemm(M: Int, N: Int, K: Int, A: UnsafePointer<Float>, B: UnsafePointer<Float>,
                     C: UnsafeMutablePointer<Float>, transA: Bool, transB: Bool, beta: Float) {
        let bf16 = engine.precision == .bf16  // false: Winograd runs in fp32 only (usesWinograd)
        engine.parallel.chunks(16, grain: 1) { lo, hi in
            for xi in lo..<hi {
                sgemm1(transA: transA, transB: transB, M: M, N: N, K: K, alpha: 1,
                       A: A + xi * M * K, lda: transA ? M : K, B: B + xi * K * N, ldb: transB ? K : N,
                       beta: beta, C: C + xi * M * N, ldc: N, bf16: bf16)
            }
        }
    }
}
