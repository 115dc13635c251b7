#!/usr/bin/env bash
# Compiles proto/ with Google's protoc (from PyPI grpcio-tools, the compiler
# grpcio, grpc-java, grpc-go and grpc-dotnet users have), as the build
# compiles it with protox: the contract must compile in every gRPC stack.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import grpc_tools' 2>/dev/null || python3 -m pip install --quiet grpcio-tools
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python3 -m grpc_tools.protoc -Iproto --python_out="$out" --grpc_python_out="$out" \
  --descriptor_set_out="$out/all.pb" proto/meldnet/v1/*.proto
echo "protoc: $(ls proto/meldnet/v1/*.proto | wc -l) files compile"
python3 scripts/check_proto_names.py "$out/all.pb"
