import CBLAS
import CKernels

// GEMM for the engine. OpenBLAS runs single-threaded and the engine splits
// each large GEMM over its own threads (`Engine.threads`): one pool does
// both the GEMMs and the elementwise kernels between them, so no BLAS worker
// threads spin in sched_yield while BN or im2col run (that cost ~11 % of a
// ResNet-18 step with OpenBLAS's own threads on 2 cores).

/// The precision of the layers' GEMMs (convolutions, linear), as CPU
/// autocast: `bf16` rounds both operands to bfloat16 and accumulates in fp32
/// (BatchNorm, the loss, the optimizer and the weights stay fp32). A model's
/// is its `Engine.precision`; `bf16` requires `BF16.supported`.
public enum Precision: String, CaseIterable, Codable, Sendable {
    case fp32, bf16
}

public struct PrecisionError: Error, CustomStringConvertible {
    public var description: String {
        "--precision bf16 needs a CPU with AVX512-BF16 (vdpbf16ps: Zen 4, Cooper Lake, Sapphire Rapids or later); this one has none, use fp32"
    }
}

/// Row-major single-precision GEMM: C = alpha * op(A) * op(B) + beta * C,
/// op(A) is (M, K), op(B) is (K, N), C is (M, N). Leading dimensions are the
/// row lengths of the matrices as stored. `bf16`: the operands are rounded to
/// bfloat16 (the layers' GEMMs in bf16 precision).
@inline(__always)
func sgemm1(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
            A: UnsafePointer<Float>, lda: Int, B: UnsafePointer<Float>, ldb: Int,
            beta: Float, C: UnsafeMutablePointer<Float>, ldc: Int, bf16: Bool) {
    if M == 0 || N == 0 { return }
    if bf16 {
        dt_gemm_bf16(transA ? 1 : 0, transB ? 1 : 0, Int32(M), Int32(N), Int32(K), alpha, A, Int32(lda), B, Int32(ldb), beta, C, Int32(ldc))
        return
    }
    cblas_sgemm(disttrain_cblas_row_major(),
                transA ? disttrain_cblas_trans() : disttrain_cblas_no_trans(),
                transB ? disttrain_cblas_trans() : disttrain_cblas_no_trans(),
                Int32(M), Int32(N), Int32(K), alpha, A, Int32(lda), B, Int32(ldb), beta, C, Int32(ldc))
}

extension Engine {
    /// The same in this engine's precision (fp32 whatever it is when `exact`: statistics
    /// that are not a layer's GEMM), split over its threads along the larger of M and N
    /// (blocks of C are independent, so the result is bitwise identical to a
    /// single call whatever the thread count).
    func sgemm(transA: Bool = false, transB: Bool = false, M: Int, N: Int, K: Int,
               alpha: Float = 1, A: UnsafePointer<Float>, lda: Int,
               B: UnsafePointer<Float>, ldb: Int,
               beta: Float, C: UnsafeMutablePointer<Float>, ldc: Int, exact: Bool = false) {
        let T = threads, bf16 = precision == .bf16 && !exact
        if T <= 1 || M * N * K < 1 << 21 {
            sgemm1(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha, A: A, lda: lda, B: B, ldb: ldb,
                   beta: beta, C: C, ldc: ldc, bf16: bf16)
            return
        }
        if N >= M {
            // Column blocks of C: columns of op(B).
            parallel.chunks(N, grain: 16, align: 16) { lo, hi in
                let b = transB ? B + lo * ldb : B + lo
                sgemm1(transA: transA, transB: transB, M: M, N: hi - lo, K: K, alpha: alpha, A: A, lda: lda, B: b, ldb: ldb,
                       beta: beta, C: C + lo, ldc: ldc, bf16: bf16)
            }
        } else {
            // Row blocks of C: rows of op(A).
            parallel.chunks(M, grain: 16, align: 16) { lo, hi in
                let a = transA ? A + lo : A + lo * lda
                sgemm1(transA: transA, transB: transB, M: hi - lo, N: N, K: K, alpha: alpha, A: a, lda: lda, B: B, ldb: ldb,
                       beta: beta, C: C + lo * ldc, ldc: ldc, bf16: bf16)
            }
        }
    }
}

public enum BLAS {
    /// Sets the threads OpenBLAS uses inside each call (the engine keeps it at 1:
    /// `Engine.configureLibraries`); returns the count it had, to put back.
    @discardableResult
    public static func setThreads(_ n: Int) -> Int {
        let before = Int(openblas_get_num_threads())
        openblas_set_num_threads(Int32(max(1, n)))
        return before
    }

    /// One OpenBLAS call on the calling thread, fp32 (benchmarks: one core's fp32 GEMM).
    public static func gemm1(transA: Bool = false, transB: Bool = false, M: Int, N: Int, K: Int, A: UnsafePointer<Float>, lda: Int,
                             B: UnsafePointer<Float>, ldb: Int, beta: Float = 0, C: UnsafeMutablePointer<Float>, ldc: Int) {
        sgemm1(transA: transA, transB: transB, M: M, N: N, K: K, alpha: 1, A: A, lda: lda, B: B, ldb: ldb, beta: beta, C: C, ldc: ldc,
               bf16: false)
    }

    /// C (M, N) = A (M, K) B (N, K)^T, row-major, fp32, over `threads`
    /// (similarity matrices: rows of A against rows of B).
    public static func multiplyTransposed(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, M: Int, N: Int, K: Int,
                                          into c: UnsafeMutablePointer<Float>, threads: Int) {
        Engine(threads: threads).sgemm(transB: true, M: M, N: N, K: K, A: a, lda: K, B: b, ldb: K, beta: 0, C: c, ldc: N, exact: true)
    }
}

/// bfloat16 GEMM with fp32 accumulation (CKernels/bf16_gemm.c), present when
/// the CPU has AVX512-BF16.
public enum BF16 {
    public static let supported = dt_cpu_has_avx512_bf16() != 0

    /// Row-major C = alpha * op(A) op(B) + beta * C with A and B rounded to bf16. Requires `supported`.
    public static func gemm(transA: Bool = false, transB: Bool = false, M: Int, N: Int, K: Int, alpha: Float = 1,
                            A: UnsafePointer<Float>, lda: Int, B: UnsafePointer<Float>, ldb: Int, beta: Float,
                            C: UnsafeMutablePointer<Float>, ldc: Int) {
        precondition(supported, "bf16 GEMM called on a CPU without AVX512-BF16")
        dt_gemm_bf16(transA ? 1 : 0, transB ? 1 : 0, Int32(M), Int32(N), Int32(K), alpha, A, Int32(lda), B, Int32(ldb), beta, C, Int32(ldc))
    }

    /// x rounded to bfloat16 (nearest even) and back.
    public static func round(_ x: Float) -> Float { dt_round_bf16(x) }

    /// x rounded to bfloat16 (nearest even), as its 16 bits.
    public static func bits(_ x: Float) -> UInt16 { UInt16(truncatingIfNeeded: dt_round_bf16(x).bitPattern >> 16) }
}
