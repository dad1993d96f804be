#!/usr/bin/env bash
# Generates TypeScript from every .proto with ts-proto (protoc comes from Debian's
# protobuf-compiler). Output is not committed: `npm run build` and `npm test` regenerate it.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc not found: run scripts/install-system-deps.sh (Debian protobuf-compiler)" >&2; exit 1; }
rm -rf src/gen && mkdir -p src/gen
plugin=$(node -p "require.resolve('ts-proto/protoc-gen-ts_proto')" 2>/dev/null || echo ../node_modules/.bin/protoc-gen-ts_proto)
protoc --plugin=protoc-gen-ts_proto="$plugin" --ts_proto_out=src/gen \
  --ts_proto_opt=outputServices=grpc-js,esModuleInterop=true,env=node,oneof=unions-value,importSuffix=.js,useExactTypes=false,forceLong=number \
  -I proto $(find proto -name '*.proto' | sort)
