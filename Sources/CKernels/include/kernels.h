// Kernels the engine dispatches to at run time by CPUID (the package itself
// builds for haswell: AVX2 + FMA is the floor).
#ifndef DISTTRAIN_KERNELS_H
#define DISTTRAIN_KERNELS_H
#ifdef __cplusplus
extern "C" {
#endif

/// 1 when the CPU and the OS support AVX512F + AVX512BW + AVX512-BF16 (vdpbf16ps).
int dt_cpu_has_avx512_bf16(void);

/// Row-major C = alpha * op(A) * op(B) + beta * C as CPU autocast does it:
/// op(A) (M x K) and op(B) (K x N) rounded to bfloat16 (nearest even),
/// products accumulated in fp32 (vdpbf16ps; denormal inputs flush to zero).
/// Only to be called when dt_cpu_has_avx512_bf16() is 1.
void dt_gemm_bf16(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                  float beta, float *C, int ldc);

/// fp32 -> bfloat16 -> fp32 (nearest even; NaN kept NaN): what the kernel multiplies.
float dt_round_bf16(float x);

#ifdef __cplusplus
}
#endif
#endif
