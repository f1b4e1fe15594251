import CBLAS

/// Row-major single-precision GEMM: C = alpha * op(A) * op(B) + beta * C,
/// op(A) is (M, K), op(B) is (K, N), C is (M, N). Leading dimensions are the
/// row lengths of the matrices as stored.
@inline(__always)
func sgemm(transA: Bool = false, transB: Bool = false, M: Int, N: Int, K: Int,
           alpha: Float = 1, A: UnsafePointer<Float>, lda: Int,
           B: UnsafePointer<Float>, ldb: Int,
           beta: Float, C: UnsafeMutablePointer<Float>, ldc: Int) {
    if M == 0 || N == 0 { return }
    cblas_sgemm(disttrain_cblas_row_major(),
                transA ? disttrain_cblas_trans() : disttrain_cblas_no_trans(),
                transB ? disttrain_cblas_trans() : disttrain_cblas_no_trans(),
                Int32(M), Int32(N), Int32(K), alpha, A, Int32(lda), B, Int32(ldb), beta, C, Int32(ldc))
}

public enum BLAS {
    /// Threads OpenBLAS uses for each call.
    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
    public static var threads: Int { Int(openblas_get_num_threads()) }
}
