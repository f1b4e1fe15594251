#!/bin/bash
# Regenerates Sources/DistTrain/Proto/*.pb.swift from the official .proto files in this folder.
# Dev-time only: CI and the package build never run it (the generated files are committed), since
# building protoc-gen-swift takes minutes. Needs protoc (Debian: protobuf-compiler; 3.21 was used)
# and protoc-gen-swift from swift-protobuf at the version Package.swift names (1.39.0):
#   git clone https://github.com/apple/swift-protobuf /tmp/swift-protobuf && cd /tmp/swift-protobuf \
#     && git checkout 1.39.0 && swift build -c release --product protoc-gen-swift
#   PROTOC_GEN_SWIFT=/tmp/swift-protobuf/.build/release/protoc-gen-swift proto/generate.sh
# The messages stay internal to DistTrain; ONNXExport and TensorBoard are their only users.
set -euo pipefail
cd "$(dirname "$0")"
plugin=${PROTOC_GEN_SWIFT:-$(command -v protoc-gen-swift || true)}
[ -x "$plugin" ] || { echo "generate.sh: set PROTOC_GEN_SWIFT to a protoc-gen-swift 1.39.0 binary" >&2; exit 1; }
out=../Sources/DistTrain/Proto
rm -f "$out"/*.pb.swift
protoc --plugin=protoc-gen-swift="$plugin" --swift_out="$out" --swift_opt=FileNaming=DropPath,Visibility=Internal \
  -I . onnx/onnx.proto tensorboard/compat/proto/{event,summary,histogram,tensor,resource_handle,tensor_shape,types}.proto
ls -l "$out"/*.pb.swift
