// Convolutions through oneDNN 2.6 (see include/dnnlconv.h).
//
// Per layer and input shape one Entry holds the three primitives (forward,
// backward data, backward weights), oneDNN's own buffers in the layouts it
// chose, and the reorders between those and the caller's plain fp32 tensors.
// A reorder is skipped where oneDNN chose the caller's layout and type.
// The forward's converted input is kept for the backward-weights pass of the
// same x (the engine runs backward on the input of the last forward).
#include "dnnlconv.h"

#include <oneapi/dnnl/dnnl.hpp>
// libgomp (oneDNN's runtime); its omp.h ships with gcc, not the clang that builds this.
extern "C" void omp_set_num_threads(int);

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

thread_local std::string lastError;

engine &cpuEngine() {
    static engine eng(engine::kind::cpu, 0);
    return eng;
}

stream &cpuStream() {
    static stream s(cpuEngine());
    return s;
}

/// Scratch shared by all layers for the buffers that live only during one
/// call (a forward's output, a backward's dy and dx in oneDNN's layouts):
/// keeping one per layer would hold several copies of every activation
/// (ResNet-50 at 224 px: 6.8 GiB instead of 3.5). Grows, never shrinks.
void *scratch(int slot, size_t bytes) {
    static std::vector<std::pair<void *, size_t>> slots(4, {nullptr, 0});
    auto &s = slots[slot];
    if (s.second < bytes) {
        std::free(s.first);
        s.second = (bytes + 63) / 64 * 64;
        s.first = std::aligned_alloc(64, s.second);
        if (!s.first) throw std::bad_alloc();
    }
    return s.first;
}

/// A buffer in oneDNN's chosen layout fed from (or draining to) a caller's
/// plain tensor. When the two descriptors agree the caller's memory is used
/// directly and no reorder runs. A transient bridge (slot >= 0) keeps its
/// buffer in the shared scratch slot, valid until that slot is used again.
struct Bridge {
    memory user;                 // wraps the caller's pointer (handle set per call)
    memory inner;                // == user when no reorder is needed
    std::unique_ptr<reorder> toInner, toUser;
    bool same = true;
    int slot = -1;

    Bridge() = default;
    /// `in`: caller -> inner (inputs); `out`: inner -> caller (outputs); `accumulate`: the caller's tensor += inner.
    Bridge(const memory::desc &userMD, const memory::desc &innerMD, bool in, int slot = -1, bool accumulate = false)
        : slot(slot) {
        auto &eng = cpuEngine();
        user = memory(userMD, eng, DNNL_MEMORY_NONE);
        same = userMD == innerMD && !accumulate;
        if (same) {
            inner = user;
            return;
        }
        inner = slot >= 0 ? memory(innerMD, eng, DNNL_MEMORY_NONE) : memory(innerMD, eng);
        if (in) {
            toInner.reset(new reorder(reorder::primitive_desc(eng, userMD, eng, innerMD)));
        } else {
            primitive_attr attr;
            if (accumulate) {
                post_ops ops;
                ops.append_sum(1.0f);
                attr.set_post_ops(ops);
            }
            toUser.reset(new reorder(reorder::primitive_desc(eng, innerMD, eng, userMD, attr)));
        }
    }

    /// The caller's data in oneDNN's layout.
    memory &load(const void *p) {
        user.set_data_handle(const_cast<void *>(p));
        if (!same) {
            claim();
            toInner->execute(cpuStream(), user, inner);
        }
        return inner;
    }
    /// Where the primitive writes; call store() after it ran.
    memory &target(void *p) {
        user.set_data_handle(p);
        if (!same) claim();
        return inner;
    }
    void claim() {
        if (slot >= 0) inner.set_data_handle(scratch(slot, inner.get_desc().get_size()));
    }
    void store() {
        if (!same) toUser->execute(cpuStream(), inner, user);
    }
};

struct Entry {
    int N, H, W, bf16, xLast, yLast;
    algorithm algo;
    memory::desc xMD, yMD, wMD;          // the caller's plain fp32 tensors
    memory::dims strides, padding;
    tag act;                             // the primitives' activation layout: nhwc, or any
    convolution_forward::primitive_desc fpd;
    std::unique_ptr<convolution_forward> fwd;
    Bridge x, w, y;
    const float *xFed = nullptr;         // x whose conversion x.inner holds
    bool backwardReady = false;
    convolution_backward_data::primitive_desc bdpd;
    convolution_backward_weights::primitive_desc bwpd;
    std::unique_ptr<convolution_backward_data> bd;
    std::unique_ptr<convolution_backward_weights> bw;
    Bridge dyD, wD, dx;                  // backward data: dy, w, dx in its layouts
    Bridge xW, dyW, dw;                  // backward weights: x, dy, dw
    memory dyBF16, xBF16;                // a caller's bf16 NHWC dy or x, wrapped as it is (made on first use)
    bool xWShared = false, dyWShared = false, wDShared = false;
};

}  // namespace

struct dt_dnnl_conv {
    int C, OC, KH, KW, stride, pad;
    std::vector<std::unique_ptr<Entry>> entries;  // most recent first
    std::string impl;

    Entry &entry(int bf16, int xLast, int yLast, int N, int H, int W) {
        for (size_t i = 0; i < entries.size(); i++) {
            Entry &e = *entries[i];
            if (e.N == N && e.H == H && e.W == W && e.bf16 == bf16 && e.xLast == xLast && e.yLast == yLast) {
                if (i) std::rotate(entries.begin(), entries.begin() + i, entries.begin() + i + 1);
                return *entries[0];
            }
        }
        auto e = std::make_unique<Entry>();
        e->N = N; e->H = H; e->W = W; e->bf16 = bf16; e->xLast = xLast; e->yLast = yLast;
        int OH = (H + 2 * pad - KH) / stride + 1, OW = (W + 2 * pad - KW) / stride + 1;
        e->xMD = memory::desc({N, C, H, W}, dt::f32, xLast ? tag::nhwc : tag::nchw);
        e->yMD = memory::desc({N, OC, OH, OW}, dt::f32, yLast ? tag::nhwc : tag::nchw);
        // Channels-last outputs: the primitives work on NHWC (no reorder of y and dx; bf16 operands converted
        // in place). Else oneDNN's choice.
        e->act = yLast ? tag::nhwc : tag::any;
        e->wMD = memory::desc({OC, C, KH, KW}, dt::f32, tag::oihw);
        e->strides = {stride, stride};
        e->padding = {pad, pad};
        dt op = bf16 ? dt::bf16 : dt::f32;
        // fp32 3x3 stride-1 layers run as Winograd F(4x4, 3x3) where its 4x4 output tiles cover the map
        // with little waste (bench/onednn_convs, 2 threads: 1.3-2.5x the direct kernels' speed on maps of
        // 7x7 and more, or 4x4, 8x8, 10x10; slower on 1x1, 2x2, 3x3 and 5x5, which are mostly padding);
        // bf16 has direct kernels only.
        auto tiles = [](int n) { return double(n) / (double((n + 3) / 4) * 4); };
        bool winograd = !bf16 && KH == 3 && KW == 3 && stride == 1 && tiles(OH) * tiles(OW) >= 0.6;
        e->algo = winograd ? algorithm::convolution_auto : algorithm::convolution_direct;
        auto fd = convolution_forward::desc(prop_kind::forward_training, e->algo,
                                            memory::desc({N, C, H, W}, op, e->act), memory::desc({OC, C, KH, KW}, op, tag::any),
                                            memory::desc({N, OC, OH, OW}, dt::f32, e->act), e->strides, e->padding, e->padding);
        e->fpd = convolution_forward::primitive_desc(fd, cpuEngine());
        e->fwd.reset(new convolution_forward(e->fpd));
        e->x = Bridge(e->xMD, e->fpd.src_desc(), true);
        e->w = Bridge(e->wMD, e->fpd.weights_desc(), true);
        e->y = Bridge(e->yMD, e->fpd.dst_desc(), false, 0);
        impl = e->fpd.impl_info_str();
        entries.insert(entries.begin(), std::move(e));
        if (entries.size() > 4) entries.pop_back();  // train, eval and CAM batch shapes at most
        return *entries[0];
    }

    void prepareBackward(Entry &e) {
        if (e.backwardReady) return;
        auto &eng = cpuEngine();
        dt op = e.bf16 ? dt::bf16 : dt::f32;
        memory::dims xd = e.xMD.dims(), yd = e.yMD.dims(), wd = e.wMD.dims();
        auto bdd = convolution_backward_data::desc(e.algo, memory::desc(xd, dt::f32, e.act),
                                                   memory::desc(wd, op, tag::any), memory::desc(yd, op, e.act),
                                                   e.strides, e.padding, e.padding);
        e.bdpd = convolution_backward_data::primitive_desc(bdd, eng, e.fpd);
        e.bd.reset(new convolution_backward_data(e.bdpd));
        auto bwd = convolution_backward_weights::desc(e.algo, memory::desc(xd, op, e.act),
                                                      memory::desc(wd, dt::f32, tag::any), memory::desc(yd, op, e.act),
                                                      e.strides, e.padding, e.padding);
        e.bwpd = convolution_backward_weights::primitive_desc(bwd, eng, e.fpd);
        e.bw.reset(new convolution_backward_weights(e.bwpd));
        e.dyD = Bridge(e.yMD, e.bdpd.diff_dst_desc(), true, 1);
        e.wDShared = e.bdpd.weights_desc() == e.fpd.weights_desc();
        if (!e.wDShared) e.wD = Bridge(e.wMD, e.bdpd.weights_desc(), true);
        e.dx = Bridge(e.xMD, e.bdpd.diff_src_desc(), false, 0);
        e.xWShared = e.bwpd.src_desc() == e.fpd.src_desc();
        if (!e.xWShared) e.xW = Bridge(e.xMD, e.bwpd.src_desc(), true, 3);
        e.dyWShared = e.bwpd.diff_dst_desc() == e.bdpd.diff_dst_desc();
        if (!e.dyWShared) e.dyW = Bridge(e.yMD, e.bwpd.diff_dst_desc(), true, 2);
        e.dw = Bridge(e.wMD, e.bwpd.diff_weights_desc(), false, -1, true);
        e.backwardReady = true;
    }
};

namespace {
/// body() under the C surface's error convention: 0, or 1 with the message in lastError.
template <class Body>
int guarded(const char *what, Body body) {
    try {
        body();
        return 0;
    } catch (const std::exception &err) {
        lastError = std::string("oneDNN convolution ") + what + ": " + err.what();
        return 1;
    }
}

/// The caller's bf16 NHWC tensor `p` wrapped in `m`, which must match `inner` (the primitive's own layout).
memory &wrapBF16(memory &m, const memory::desc &inner, const Entry &e, const memory::dims &dims, const float *p) {
    auto want = memory::desc(dims, dt::bf16, tag::nhwc);
    if (!e.bf16 || !e.yLast || inner != want) throw std::runtime_error("a bfloat16 tensor needs bf16 primitives on NHWC");
    if (!m) m = memory(want, cpuEngine(), DNNL_MEMORY_NONE);
    m.set_data_handle(const_cast<float *>(p));
    return m;
}
}  // namespace

extern "C" {

dt_dnnl_conv *dt_dnnl_conv_new(int C, int OC, int KH, int KW, int stride, int pad) {
    auto *c = new dt_dnnl_conv();
    c->C = C; c->OC = OC; c->KH = KH; c->KW = KW; c->stride = stride; c->pad = pad;
    return c;
}

void dt_dnnl_conv_free(dt_dnnl_conv *conv) { delete conv; }

int dt_dnnl_conv_forward(dt_dnnl_conv *conv, int bf16, int x_last, int y_last, int N, int H, int W, const float *x,
                         int x_bf16, const float *w, float *y) {
    return guarded("forward", [&] {
        Entry &e = conv->entry(bf16, x_last, y_last, N, H, W);
        auto &s = cpuStream();
        memory &xi = x_bf16 ? wrapBF16(e.xBF16, e.fpd.src_desc(), e, e.xMD.dims(), x) : e.x.load(x);
        e.xFed = x_bf16 ? nullptr : x;
        memory &wi = e.w.load(w);
        memory &yi = e.y.target(y);
        e.fwd->execute(s, {{DNNL_ARG_SRC, xi}, {DNNL_ARG_WEIGHTS, wi}, {DNNL_ARG_DST, yi}});
        e.y.store();
        s.wait();
    });
}

int dt_dnnl_conv_backward(dt_dnnl_conv *conv, int bf16, int x_last, int y_last, int N, int H, int W, const float *x,
                          int x_bf16, const float *w, const float *dy, int dy_bf16, float *dw, float *dx) {
    return guarded("backward", [&] {
        Entry &e = conv->entry(bf16, x_last, y_last, N, H, W);
        conv->prepareBackward(e);
        auto &s = cpuStream();
        // A bf16 dy serves both backward primitives (they share its layout: bf16 NHWC).
        if (dy_bf16 && !e.dyWShared) throw std::runtime_error("a bfloat16 dy needs one dy layout for both backward passes");
        memory &dyD = dy_bf16 ? wrapBF16(e.dyBF16, e.bdpd.diff_dst_desc(), e, e.yMD.dims(), dy) : e.dyD.load(dy);
        if (dx) {
            memory &wi = e.wDShared ? e.w.inner : e.wD.load(w);  // w as the forward converted it
            memory &dxi = e.dx.target(dx);
            e.bd->execute(s, {{DNNL_ARG_DIFF_DST, dyD}, {DNNL_ARG_WEIGHTS, wi}, {DNNL_ARG_DIFF_SRC, dxi}});
            e.dx.store();
        }
        if (dw) {
            memory &xi = x_bf16 ? wrapBF16(e.xBF16, e.bwpd.src_desc(), e, e.xMD.dims(), x)
                       : e.xWShared ? (e.xFed == x ? e.x.inner : e.x.load(x)) : e.xW.load(x);
            memory &dyi = e.dyWShared ? dyD : e.dyW.load(dy);
            memory &dwi = e.dw.target(dw);
            e.bw->execute(s, {{DNNL_ARG_SRC, xi}, {DNNL_ARG_DIFF_DST, dyi}, {DNNL_ARG_DIFF_WEIGHTS, dwi}});
            e.dw.store();
        }
        s.wait();
    });
}

double dt_dnnl_matmul_seconds(int M, int N, int K, int bf16, int reps) {
    double best = -1;
    int rc = guarded("matmul", [&] {
        auto &eng = cpuEngine();
        auto &s = cpuStream();
        dt op = bf16 ? dt::bf16 : dt::f32;
        auto pd = matmul::primitive_desc(matmul::desc(memory::desc({M, K}, op, tag::ab), memory::desc({K, N}, op, tag::ab),
                                                      memory::desc({M, N}, dt::f32, tag::ab)), eng);
        memory a(pd.src_desc(), eng), b(pd.weights_desc(), eng), c(pd.dst_desc(), eng);
        std::fill_n(static_cast<char *>(a.get_data_handle()), pd.src_desc().get_size(), 0);
        std::fill_n(static_cast<char *>(b.get_data_handle()), pd.weights_desc().get_size(), 0);
        matmul mm(pd);
        for (int r = 0; r <= reps; r++) {
            auto t0 = std::chrono::steady_clock::now();
            mm.execute(s, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
            s.wait();
            double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (r > 0 && (best < 0 || t < best)) best = t;  // r == 0 warms up
        }
    });
    return rc ? -1 : best;
}

void dt_dnnl_set_threads(int n) { omp_set_num_threads(n < 1 ? 1 : n); }

const char *dt_dnnl_conv_impl(dt_dnnl_conv *conv) { return conv->impl.c_str(); }

const char *dt_dnnl_error(void) { return lastError.c_str(); }

}  // extern "C"

// MARK: fused inference (see include/dnnlconv.h)

namespace {
/// The activation layout between fused layers (the mode): 1 bf16 NHWC, 0 fp32 nChw16c (C a multiple of 16), 2 fp32 NHWC.
memory::desc activation(int N, int C, int H, int W, int mode) {
    if (mode == 1) return memory::desc({N, C, H, W}, dt::bf16, tag::nhwc);
    if (mode == 2) return memory::desc({N, C, H, W}, dt::f32, tag::nhwc);
    if (C % 16) throw std::runtime_error("a blocked fp32 activation needs a multiple of 16 channels, got " + std::to_string(C));
    return memory::desc({N, C, H, W}, dt::f32, tag::nChw16c);
}

struct FusedEntry {
    int N, H, W, xPlain;
    std::string impl;               // the implementation oneDNN chose for this shape
    std::unique_ptr<primitive> run;
    memory src, dst;                // the caller's x (in its layout) and y, handles set per call
    memory srcInner;                // x in the primitive's layout when the caller's differs
    std::unique_ptr<reorder> toSrc;
    memory weights, bias;           // converted once
};
}  // namespace

struct dt_dnnl_fused {
    bool pool;
    int C, OC, K, stride, pad, mode, sum, relu;
    std::vector<float> w, b;
    std::vector<std::unique_ptr<FusedEntry>> entries;  // most recent first

    FusedEntry &entry(int N, int H, int W, int xPlain) {
        for (size_t i = 0; i < entries.size(); i++) {
            FusedEntry &e = *entries[i];
            if (e.N == N && e.H == H && e.W == W && e.xPlain == xPlain) {
                if (i) std::rotate(entries.begin(), entries.begin() + i, entries.begin() + i + 1);
                return *entries[0];
            }
        }
        auto &eng = cpuEngine();
        auto e = std::make_unique<FusedEntry>();
        e->N = N; e->H = H; e->W = W; e->xPlain = xPlain;
        int OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
        memory::desc userX = xPlain ? memory::desc({N, C, H, W}, dt::f32, tag::nchw) : activation(N, C, H, W, mode);
        memory::desc y = activation(N, OC, OH, OW, mode);
        bool bf16 = mode == 1;
        memory::desc srcMD = userX;
        memory::dims strides{stride, stride}, padding{pad, pad};
        if (pool) {
            auto d = pooling_forward::desc(prop_kind::forward_inference, algorithm::pooling_max, userX, y, strides, {K, K},
                                           padding, padding);
            auto pd = pooling_forward::primitive_desc(d, eng);
            e->run.reset(new pooling_forward(pd));
            e->impl = pd.impl_info_str();
        } else {
            dt op = bf16 ? dt::bf16 : dt::f32;
            // The network's input (1 or 3 plain channels) goes in the layout oneDNN picks for it.
            memory::desc src = xPlain ? memory::desc({N, C, H, W}, op, tag::any) : userX;
            memory::desc wAny({OC, C, K, K}, op, tag::any), bMD({OC}, dt::f32, tag::x);
            primitive_attr attr;
            post_ops ops;
            if (sum) ops.append_sum(1.0f);
            if (relu) ops.append_eltwise(1.0f, algorithm::eltwise_relu, 0.0f, 0.0f);
            attr.set_post_ops(ops);
            // fp32 3x3 stride-1 layers as training runs them (the same rule: convolution_auto, so oneDNN may
            // take Winograd), the rest direct; direct also where oneDNN refuses auto for these post-ops and layouts.
            auto tiles = [](int n) { return double(n) / (double((n + 3) / 4) * 4); };
            bool winograd = !bf16 && K == 3 && stride == 1 && tiles(OH) * tiles(OW) >= 0.6;
            convolution_forward::primitive_desc pd;
            bool made = false;
            if (winograd) {
                try {
                    auto d = convolution_forward::desc(prop_kind::forward_inference, algorithm::convolution_auto, src, wAny,
                                                       bMD, y, strides, padding, padding);
                    pd = convolution_forward::primitive_desc(d, attr, eng);
                    made = true;
                } catch (const dnnl::error &) {}
            }
            if (!made) {
                auto d = convolution_forward::desc(prop_kind::forward_inference, algorithm::convolution_direct, src, wAny, bMD,
                                                   y, strides, padding, padding);
                pd = convolution_forward::primitive_desc(d, attr, eng);
            }
            srcMD = pd.src_desc();
            e->run.reset(new convolution_forward(pd));
            e->impl = pd.impl_info_str();
            auto &s = cpuStream();
            memory userW(memory::desc({OC, C, K, K}, dt::f32, tag::oihw), eng, w.data());
            e->weights = memory(pd.weights_desc(), eng);
            reorder(userW, e->weights).execute(s, userW, e->weights);
            e->bias = memory(bMD, eng);
            std::copy(b.begin(), b.end(), static_cast<float *>(e->bias.get_data_handle()));
            s.wait();
        }
        e->src = memory(userX, eng, DNNL_MEMORY_NONE);
        e->dst = memory(y, eng, DNNL_MEMORY_NONE);
        if (srcMD != userX) {
            e->srcInner = memory(srcMD, eng);
            e->toSrc.reset(new reorder(reorder::primitive_desc(eng, userX, eng, srcMD)));
        }
        entries.insert(entries.begin(), std::move(e));
        if (entries.size() > 4) entries.pop_back();
        return *entries[0];
    }
};

extern "C" {

dt_dnnl_fused *dt_dnnl_fused_conv_new(int C, int OC, int K, int stride, int pad, const float *w, const float *b,
                                      int mode, int sum, int relu) {
    auto *f = new dt_dnnl_fused();
    f->pool = false;
    f->C = C; f->OC = OC; f->K = K; f->stride = stride; f->pad = pad; f->mode = mode; f->sum = sum; f->relu = relu;
    f->w.assign(w, w + size_t(OC) * C * K * K);
    f->b.assign(b, b + OC);
    return f;
}

dt_dnnl_fused *dt_dnnl_fused_maxpool_new(int C, int K, int stride, int pad, int mode) {
    auto *f = new dt_dnnl_fused();
    f->pool = true;
    f->C = C; f->OC = C; f->K = K; f->stride = stride; f->pad = pad; f->mode = mode; f->sum = 0; f->relu = 0;
    return f;
}

void dt_dnnl_fused_free(dt_dnnl_fused *f) { delete f; }

int dt_dnnl_fused_run(dt_dnnl_fused *f, int N, int H, int W, const void *x, int x_plain, void *y) {
    return guarded(f->pool ? "max pool" : "fused forward", [&] {
        FusedEntry &e = f->entry(N, H, W, x_plain);
        auto &s = cpuStream();
        e.src.set_data_handle(const_cast<void *>(x));
        e.dst.set_data_handle(y);
        memory &src = e.toSrc ? e.srcInner : e.src;
        if (e.toSrc) e.toSrc->execute(s, e.src, e.srcInner);
        if (f->pool) e.run->execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, e.dst}});
        else e.run->execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, e.weights}, {DNNL_ARG_BIAS, e.bias}, {DNNL_ARG_DST, e.dst}});
        s.wait();
    });
}

int dt_dnnl_fused_plain(int N, int C, int H, int W, int mode, const void *x, float *y) {
    return guarded("reorder", [&] {
        auto &eng = cpuEngine();
        auto &s = cpuStream();
        memory from(activation(N, C, H, W, mode), eng, const_cast<void *>(x));
        memory to(memory::desc({N, C, H, W}, dt::f32, tag::nchw), eng, y);
        reorder(from, to).execute(s, from, to);
        s.wait();
    });
}

const char *dt_dnnl_fused_impl(dt_dnnl_fused *f) { return f->entries.empty() ? "" : f->entries[0]->impl.c_str(); }

}  // extern "C"
