// ResNet-18's 20 convolutions (1 input channel, batch 32) through oneDNN alone,
// forward + backward data + backward weights, in oneDNN's preferred layouts
// with no reorders: the floor under disttrain's convolution time.
//   bench/onednn_convs [size 224] [b = bf16 | f = fp32] [n = nhwc | a = oneDNN's layout] [batch 32] [d = direct | w = auto]
// Built and run by bench/onednn_convs (g++ -O2 -ldnnl, OMP_NUM_THREADS=2). `w` lets
// oneDNN choose (Winograd for 3x3 stride 1 in fp32), as the engine does on large maps.
#include <oneapi/dnnl/dnnl.hpp>
#include <chrono>
#include <cstdio>
#include <vector>
#include <cstdlib>
using namespace dnnl;
using tag = memory::format_tag; using dt = memory::data_type;
struct L { int C, OC, H, k, s, p; };
int main(int argc, char** argv) {
  int N = argc > 4 ? atoi(argv[4]) : 32, S = argc > 1 ? atoi(argv[1]) : 224; bool bf = argc > 2 && argv[2][0] == 'b';
  algorithm alg = argc > 5 && argv[5][0] == 'w' ? algorithm::convolution_auto : algorithm::convolution_direct;
  tag act = (argc > 3 && argv[3][0]=='n') ? tag::nhwc : tag::any;
  engine eng(engine::kind::cpu, 0); stream st(eng);
  std::vector<L> ls; int h = S;
  ls.push_back({1,64,h,7,2,3}); h /= 4;
  int c = 64;
  for (int st2 = 0; st2 < 4; st2++) { int oc = 64 << st2;
    if (st2 == 0) { for (int i=0;i<4;i++) ls.push_back({64,64,h,3,1,1}); continue; }
    ls.push_back({c,oc,h,3,2,1}); ls.push_back({c,oc,h,1,2,0}); h /= 2;
    for (int i=0;i<3;i++) ls.push_back({oc,oc,h,3,1,1}); c = oc; }
  double tf=0,tbd=0,tbw=0, flops=0;
  dt d = bf ? dt::bf16 : dt::f32;
  for (auto& l : ls) {
    int OH = (l.H + 2*l.p - l.k)/l.s + 1;
    memory::dims src{N,l.C,l.H,l.H}, wei{l.OC,l.C,l.k,l.k}, dst{N,l.OC,OH,OH}, str{l.s,l.s}, pad{l.p,l.p};
    auto smd = memory::desc(src, d, act), wmd = memory::desc(wei, d, tag::any), dmd = memory::desc(dst, bf? dt::f32 : dt::f32, act);
    auto fd = convolution_forward::desc(prop_kind::forward_training, alg, smd, wmd, dmd, str, pad, pad);
    auto fpd = convolution_forward::primitive_desc(fd, eng);
    auto bdd = convolution_backward_data::desc(alg, memory::desc(src, dt::f32, act), wmd,
                                               memory::desc(dst, d, act), str, pad, pad);
    auto bdpd = convolution_backward_data::primitive_desc(bdd, eng, fpd);
    auto bwd = convolution_backward_weights::desc(alg, smd, memory::desc(wei, dt::f32, tag::any),
                                                  memory::desc(dst, d, act), str, pad, pad);
    auto bwpd = convolution_backward_weights::primitive_desc(bwd, eng, fpd);
    memory ms(fpd.src_desc(), eng), mw(fpd.weights_desc(), eng), md(fpd.dst_desc(), eng);
    memory mdd(bdpd.diff_dst_desc(), eng), mds(bdpd.diff_src_desc(), eng), mbw(bdpd.weights_desc(), eng);
    memory mws(bwpd.src_desc(), eng), mwdd(bwpd.diff_dst_desc(), eng), mdw(bwpd.diff_weights_desc(), eng);
    auto f = convolution_forward(fpd); auto bd = convolution_backward_data(bdpd); auto bw = convolution_backward_weights(bwpd);
    auto run = [&](int which){
      auto t0 = std::chrono::steady_clock::now();
      if (which==0) f.execute(st, {{DNNL_ARG_SRC,ms},{DNNL_ARG_WEIGHTS,mw},{DNNL_ARG_DST,md}});
      if (which==1 && l.C > 1) bd.execute(st, {{DNNL_ARG_DIFF_DST,mdd},{DNNL_ARG_WEIGHTS,mbw},{DNNL_ARG_DIFF_SRC,mds}});
      if (which==2) bw.execute(st, {{DNNL_ARG_SRC,mws},{DNNL_ARG_DIFF_DST,mwdd},{DNNL_ARG_DIFF_WEIGHTS,mdw}});
      st.wait(); return std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count(); };
    for (int w=0;w<3;w++) run(w);
    double a=1e9,b=1e9,cc=1e9; for (int r=0;r<3;r++){ a=std::min(a,run(0)); b=std::min(b,run(1)); cc=std::min(cc,run(2)); }
    tf+=a; tbd+=b; tbw+=cc; double fl = 2.0*N*l.OC*OH*OH*l.C*l.k*l.k; flops += fl*(l.C>1?3:2);
    printf("C%4d OC%4d H%3d k%d s%d: fwd %.1f bwdD %.1f bwdW %.1f GF/s, %.2f ms  %s\n", l.C, l.OC, l.H, l.k, l.s,
           fl / a / 1e9, fl / b / 1e9, fl / cc / 1e9, (a + b + cc) * 1e3, fpd.impl_info_str());
  }
  printf("total fwd %.3f bwdD %.3f bwdW %.3f s; %.1f GFLOP/s\n", tf,tbd,tbw, flops/(tf+tbd+tbw)/1e9);
}
