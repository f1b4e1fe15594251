// bfloat16 GEMM with fp32 accumulation on AVX512-BF16 (Zen 4, Cooper Lake,
// Sapphire Rapids). GotoBLAS structure: op(A) packed for a K block as 6-row
// panels of bf16 pairs (k, k+1), op(B) as 32-column panels of pairs; a 6 x 32
// microkernel keeps 12 zmm accumulators and issues one vdpbf16ps (32
// multiply-adds) per accumulator per k pair.
#include "kernels.h"

#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { MR = 6, NR = 32, KC = 384 };  // KC even: whole k pairs per block

static int os_saves_zmm(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;  // OSXSAVE
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xe6) == 0xe6;  // SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM state
}

int dt_cpu_has_avx512_bf16(void) {
    unsigned a, b, c, d;
    if (!os_saves_zmm() || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(b & (1u << 16)) || !(b & (1u << 30))) return 0;  // AVX512F, AVX512BW
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 5) & 1;  // AVX512_BF16
}

static inline uint16_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float dt_round_bf16(float x) {
    uint32_t u = (uint32_t)bf16_bits(x) << 16;
    float y;
    memcpy(&y, &u, 4);
    return y;
}

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))


// (row k col j, row k+1 col j) pairs from cvtne2ps's halves: lane 2j of the result from lane j, lane 2j+1 from lane 16 + j.
static const short interleave[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                     8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};

// n contiguous floats to (n + 1) / 2 bf16 pairs in order (an odd tail padded with 0), 32 per step.
TARGET static void cvt_run(const float *src, int n, uint32_t *pairs) {
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
        _mm512_storeu_si512(pairs + i / 2, (__m512i)v);
    }
    if (i < n) {
        const int rest = n - i;
        const __mmask16 lo = rest >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << rest) - 1);
        const __mmask16 hi = rest > 16 ? (__mmask16)((1u << (rest - 16)) - 1) : 0;
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + i + 16), _mm512_maskz_loadu_ps(lo, src + i));
        const __mmask16 out = (__mmask16)((1u << ((rest + 1) / 2)) - 1);
        _mm512_mask_storeu_epi32(pairs + i / 2, out, (__m512i)v);
    }
}

// Packs op(A)[i0 .. i0+MR) x [k0 .. k0+kc) as pairs: out[p * MR + r] = (A[r][k0+2p], A[r][k0+2p+1]).
TARGET static void pack_a(const float *A, int lda, int trans, int i0, int rows, int k0, int kc, uint32_t *out) {
    const int pairs = (kc + 1) / 2;
    if (!trans) {
        // Row r's pairs are contiguous: convert the run, then spread it over the panel.
        uint32_t run[KC / 2];
        for (int r = 0; r < MR; ++r) {
            if (r < rows) cvt_run(A + (size_t)(i0 + r) * lda + k0, kc, run);
            for (int p = 0; p < pairs; ++p) out[p * MR + r] = r < rows ? run[p] : 0;
        }
        return;
    }
    // op(A) = A^T: the panel's rows are `rows` contiguous values of rows k and k+1 of A.
    const __m512i idx = _mm512_loadu_si512(interleave);
    const __mmask16 m = (__mmask16)((1u << rows) - 1);
    for (int p = 0; p < pairs; ++p) {
        const float *r0 = A + (size_t)(k0 + 2 * p) * lda + i0;
        __m512 a = _mm512_maskz_loadu_ps(m, r0);
        __m512 b = 2 * p + 1 < kc ? _mm512_maskz_loadu_ps(m, r0 + lda) : _mm512_setzero_ps();
        __m512i v = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(b, a));
        _mm512_mask_storeu_epi32(out + p * MR, (__mmask16)((1u << MR) - 1), v);  // rows past `rows` were loaded as 0
    }
}

// Packs op(B)[k0 .. k0+kc) x [j0 .. j0+NR) as pairs: out[p * NR + j] = (B[k0+2p][j], B[k0+2p+1][j]).
// The common case (B not transposed, a full panel) converts 16 columns of two rows per step.
TARGET static void pack_b(const float *B, int ldb, int trans, int j0, int cols, int k0, int kc, uint32_t *out) {
    const int pairs = (kc + 1) / 2;
    if (!trans && cols == NR) {
        const __m512i idx = _mm512_loadu_si512(interleave);
        for (int p = 0; p < pairs; ++p) {
            const int k = k0 + 2 * p;
            const float *r0 = B + (size_t)k * ldb + j0;
            for (int h = 0; h < 2; ++h) {
                __m512 a = _mm512_loadu_ps(r0 + 16 * h);
                __m512 b = 2 * p + 1 < kc ? _mm512_loadu_ps(r0 + ldb + 16 * h) : _mm512_setzero_ps();
                __m512i both = (__m512i)_mm512_cvtne2ps_pbh(b, a);  // lanes 0..15: row k, 16..31: row k+1 (bf16, nearest even)
                __m512i pairs16 = _mm512_permutexvar_epi16(idx, both);
                _mm512_storeu_si512(out + p * NR + 16 * h, pairs16);
            }
        }
        return;
    }
    if (trans) {
        // op(B) = B^T: column j's pairs are contiguous in row j of B.
        uint32_t run[KC / 2];
        for (int j = 0; j < NR; ++j) {
            if (j < cols) cvt_run(B + (size_t)(j0 + j) * ldb + k0, kc, run);
            for (int p = 0; p < pairs; ++p) out[p * NR + j] = j < cols ? run[p] : 0;
        }
        return;
    }
    for (int p = 0; p < pairs; ++p) {
        const int k = k0 + 2 * p;
        for (int j = 0; j < NR; ++j) {
            uint32_t v = 0;
            if (j < cols) {
                uint16_t lo = bf16_bits(B[(size_t)k * ldb + j0 + j]);
                uint16_t hi = 2 * p + 1 < kc ? bf16_bits(B[(size_t)(k + 1) * ldb + j0 + j]) : 0;
                v = (uint32_t)lo | ((uint32_t)hi << 16);
            }
            out[p * NR + j] = v;
        }
    }
}

// acc (MR x NR) = sum over pairs of Ap x Bp; then C = alpha * acc + beta * C on the valid rows x cols.
TARGET static void micro(int pairs, const uint32_t *Ap, const uint32_t *Bp, float *C, int ldc, int rows, int cols, float alpha,
                         float beta) {
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps(), c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
    __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps(), c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
    __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps(), c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    for (int p = 0; p < pairs; ++p) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(Bp + p * NR);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(Bp + p * NR + 16);
        const uint32_t *a = Ap + p * MR;
        __m512bh x;
        x = (__m512bh)_mm512_set1_epi32((int)a[0]); c00 = _mm512_dpbf16_ps(c00, x, b0); c01 = _mm512_dpbf16_ps(c01, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[1]); c10 = _mm512_dpbf16_ps(c10, x, b0); c11 = _mm512_dpbf16_ps(c11, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[2]); c20 = _mm512_dpbf16_ps(c20, x, b0); c21 = _mm512_dpbf16_ps(c21, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[3]); c30 = _mm512_dpbf16_ps(c30, x, b0); c31 = _mm512_dpbf16_ps(c31, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[4]); c40 = _mm512_dpbf16_ps(c40, x, b0); c41 = _mm512_dpbf16_ps(c41, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[5]); c50 = _mm512_dpbf16_ps(c50, x, b0); c51 = _mm512_dpbf16_ps(c51, x, b1);
    }
    __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int r = 0; r < rows; ++r) {
        for (int h = 0; h < 2; ++h) {
            const int n = cols - 16 * h;
            if (n <= 0) break;
            const __mmask16 m = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
            float *c = C + (size_t)r * ldc + 16 * h;
            __m512 v = _mm512_mul_ps(va, acc[r][h]);
            if (beta != 0) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c), v);
            _mm512_mask_storeu_ps(c, m, v);
        }
    }
}

void dt_gemm_bf16(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                  float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int i = 0; i < M; ++i) for (int j = 0; j < N; ++j) C[(size_t)i * ldc + j] = beta == 0 ? 0 : beta * C[(size_t)i * ldc + j];
        return;
    }
    const int mBlocks = (M + MR - 1) / MR;
    // Packing buffers per thread, kept between calls: a fresh multi-megabyte
    // allocation is a fresh mmap, and its page faults cost more than the packing.
    static _Thread_local uint32_t *Ap = NULL;
    static _Thread_local size_t capacity = 0;
    static _Thread_local uint32_t Bp[NR * (KC / 2)] __attribute__((aligned(64)));
    const size_t need = (size_t)mBlocks * MR * (KC / 2);
    if (need > capacity) {
        free(Ap);
        Ap = aligned_alloc(64, need * 4);  // need * 4 is a multiple of 64: MR * KC / 2 * 4 = 4608
        capacity = Ap ? need : 0;
        if (!Ap) abort();
    }
    for (int k0 = 0; k0 < K; k0 += KC) {
        const int kc = K - k0 < KC ? K - k0 : KC, pairs = (kc + 1) / 2;
        const float b = k0 == 0 ? beta : 1.0f;  // later K blocks add to what the first wrote
        for (int ib = 0; ib < mBlocks; ++ib) {
            const int i0 = ib * MR, rows = M - i0 < MR ? M - i0 : MR;
            pack_a(A, lda, transA, i0, rows, k0, kc, Ap + (size_t)ib * MR * pairs);
        }
        for (int j0 = 0; j0 < N; j0 += NR) {
            const int cols = N - j0 < NR ? N - j0 : NR;
            pack_b(B, ldb, transB, j0, cols, k0, kc, Bp);
            for (int ib = 0; ib < mBlocks; ++ib) {
                const int i0 = ib * MR, rows = M - i0 < MR ? M - i0 : MR;
                micro(pairs, Ap + (size_t)ib * MR * pairs, Bp, C + (size_t)i0 * ldc + j0, ldc, rows, cols, alpha, b);
            }
        }
    }
}
