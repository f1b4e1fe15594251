// Convolutions through oneDNN (Debian's libdnnl 2.6, the library PyTorch
// uses on CPUs) behind a small C surface for Net's Conv2d. Every tensor the
// caller passes is plain fp32: x and dx (N, C, H, W), y and dy (N, OC, OH, OW),
// w and dw (OC, C, KH, KW); x and dx are NHWC instead when `x_last`, y and dy
// when `y_last` (channels-last). With y_last the primitives work on NHWC, so y
// and dx need no reorder; otherwise oneDNN picks its own layouts (blocked
// nChw16c for AVX-512). In bf16 the operands are rounded to bfloat16 and
// products accumulate in fp32, as PyTorch's CPU autocast does.
// Errors: functions return 0 on success, else nonzero with a one-line message
// from dt_dnnl_error(). One thread at a time calls these (the layers share
// scratch buffers and a stream); oneDNN itself runs each call on its OpenMP pool.
#ifndef DISTTRAIN_DNNLCONV_H
#define DISTTRAIN_DNNLCONV_H
#ifdef __cplusplus
extern "C" {
#endif

typedef struct dt_dnnl_conv dt_dnnl_conv;

/// One convolution layer's primitives, created per input shape and cached.
dt_dnnl_conv *dt_dnnl_conv_new(int C, int OC, int KH, int KW, int stride, int pad);
void dt_dnnl_conv_free(dt_dnnl_conv *conv);

/// y = conv(x, w). `bf16`: bfloat16 operands, fp32 accumulation and output.
/// Keeps oneDNN's copy of x for dt_dnnl_conv_backward with the same x. With `x_bf16`
/// (bf16 and y_last only) x holds bfloat16 values (uint16, NHWC) and is used as it is,
/// in backward too: it must stay unchanged until then.
int dt_dnnl_conv_forward(dt_dnnl_conv *conv, int bf16, int x_last, int y_last, int N, int H, int W, const float *x,
                         int x_bf16, const float *w, float *y);

/// dw += dL/dw (when dw is not NULL) and dx = dL/dx (when dx is not NULL),
/// for the x, w given to the last forward of this shape and dy = dL/dy. With `dy_bf16`
/// (bf16 and y_last only) dy holds bfloat16 values (uint16) and is used as it is; `x_bf16` as in forward.
int dt_dnnl_conv_backward(dt_dnnl_conv *conv, int bf16, int x_last, int y_last, int N, int H, int W, const float *x,
                          int x_bf16, const float *w, const float *dy, int dy_bf16, float *dw, float *dx);

/// The best of `reps` timings (seconds) of one oneDNN matmul C (M x N, fp32) = A (M x K) B (K x N) with
/// A and B in bf16 (or fp32) and a zero-filled input: the GEMM roof the convolutions are measured against.
/// Returns a negative number on failure (dt_dnnl_error says why).
double dt_dnnl_matmul_seconds(int M, int N, int K, int bf16, int reps);

/// Threads oneDNN runs on (its OpenMP pool); the engine sets it to its own count.
void dt_dnnl_set_threads(int n);

/// The oneDNN implementation chosen for the last forward of `conv` (e.g. "jit_bf16:avx512_core_bf16").
const char *dt_dnnl_conv_impl(dt_dnnl_conv *conv);

/// The last error's message on this thread.
const char *dt_dnnl_error(void);


// MARK: fused inference (FusedInference.swift)
// A network's eval-mode forward with each BatchNorm already folded into its
// convolution: y = relu?(conv(x, w) + b (+ y's previous contents when `sum`)),
// forward_inference primitives, weights converted once per shape. Activations
// stay in one layout between layers, the `mode`: 1 bf16 NHWC (uint16); 0 fp32
// nChw16c (oneDNN's blocked AVX-512 layout; every channel count a multiple of
// 16); 2 fp32 NHWC. Only the network's input is plain (fp32 NCHW, `x_plain`)
// and only the last map leaves the layout (dt_dnnl_fused_plain).

typedef struct dt_dnnl_fused dt_dnnl_fused;

/// A folded convolution: w (OC, C, K, K) and b (OC) plain fp32, copied. `sum`: add y's previous contents
/// (a residual shortcut already in y) before the ReLU.
dt_dnnl_fused *dt_dnnl_fused_conv_new(int C, int OC, int K, int stride, int pad, const float *w, const float *b,
                                      int mode, int sum, int relu);
/// Max pooling over square windows (padding counts as -infinity).
dt_dnnl_fused *dt_dnnl_fused_maxpool_new(int C, int K, int stride, int pad, int mode);
void dt_dnnl_fused_free(dt_dnnl_fused *f);
/// Runs the layer on x (N, C, H, W) into y. `x_plain`: x is fp32 NCHW (the network's input), else the activation layout.
int dt_dnnl_fused_run(dt_dnnl_fused *f, int N, int H, int W, const void *x, int x_plain, void *y);
/// An activation (N, C, H, W) in the layout of `mode` to plain fp32 NCHW.
int dt_dnnl_fused_plain(int N, int C, int H, int W, int mode, const void *x, float *y);
/// The oneDNN implementation of the shape the layer ran last (e.g. "jit:avx512_core_bf16"); "" before its first run.
const char *dt_dnnl_fused_impl(dt_dnnl_fused *f);

#ifdef __cplusplus
}
#endif
#endif
