// swift-tools-version:5.9
import PackageDescription

// Layout and dependency rules: ../shared/DESIGN.md. Net knows nothing of MPI,
// HDF5, files or argv; Cams imports Net only; DistTrain wires everything.
// The engine's own kernels (BN, pooling, im2col, Winograd transforms) are
// written to vectorise; without a CPU level they compile for SSE2 and every
// SIMD fused multiply-add becomes a libm call. "haswell" = AVX2 + FMA
// (every x86 server since 2015, and the Zen 4 machines this project runs on).
#if arch(x86_64)
let cpuFlags = ["-target-cpu", "haswell"]
#else
let cpuFlags: [String] = []
#endif

let package = Package(
    name: "disttrain",
    products: [
        .executable(name: "disttrain", targets: ["disttrain"]),
        .library(name: "Net", targets: ["Net"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // The runtime only: the ONNX and TensorBoard messages are generated once by proto/generate.sh
        // and committed (Sources/DistTrain/Proto), so no build runs protoc or builds its plugin.
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // C shims: a modulemap plus a header of static inline wrappers for the
        // macros Swift cannot import (the _NumericsShims pattern).
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5",
                       providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CImage", path: "Sources/CImage", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev", "libjpeg-dev"])]),
        // DICOM (DCMTK, with its JPEG, JPEG-LS and RLE decoders; JPEG 2000 through
        // OpenJPEG, libopenjp2-7-dev) and NIfTI-1 (niftilib) behind a small extern "C"
        // surface (include/medical.h, include/j2k.h); DICOM results (dcmsr's SR
        // documents, Secondary Capture; SHA-256 by OpenSSL's libcrypto, which
        // libdcmtk-dev depends on) in include/dicom_write.h; the DICOM node
        // (storage SCP and SCU, dcmnet) in include/dicom_net.h.
        .target(name: "CMedical", path: "Sources/CMedical",
                cxxSettings: [.unsafeFlags(["-I/usr/include/nifti", "-I/usr/include/openjpeg-2.5"])],
                linkerSettings: ["dcmnet", "dcmsr", "dcmjpeg", "dcmjpls", "dcmimgle", "dcmdata", "oflog", "ofstd", "ijg8", "ijg12",
                                 "ijg16", "dcmtkcharls", "openjp2", "niftiio", "znz", "z", "crypto"].map { .linkedLibrary($0) }),
        // Kernels chosen at run time by CPUID (bf16 GEMM on AVX512-BF16); the
        // target builds for the same floor as the rest, each kernel names its ISA.
        .target(name: "CKernels", path: "Sources/CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        // Convolutions through oneDNN (libdnnl-dev; its OpenMP pool runs them).
        .target(name: "CDNNL", path: "Sources/CDNNL", cxxSettings: [.unsafeFlags(["-O2"])],
                linkerSettings: [.linkedLibrary("dnnl"), .linkedLibrary("gomp")]),
        .target(name: "Net", dependencies: ["CBLAS", "CKernels", "CDNNL"],
                swiftSettings: [.unsafeFlags(cpuFlags),
                                .unsafeFlags(["-Ounchecked"], .when(configuration: .release))]),
        .target(name: "Cams", dependencies: ["Net"]),
        .target(name: "DistTrain", dependencies: [
            "Net", "Cams", "CMPI", "CHDF5", "CImage", "CMedical",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ]),
        .executableTarget(name: "disttrain", dependencies: ["DistTrain"]),
        .testTarget(name: "NetTests", dependencies: ["Net", "Cams", "DistTrain"]),
        .testTarget(name: "DistTrainTests", dependencies: ["DistTrain", "Net", "Cams"]),
    ]
)
