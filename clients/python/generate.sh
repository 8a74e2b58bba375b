#!/usr/bin/env bash
# Generates the protobuf and gRPC modules of the public contract
# (proto/stockraft/v1/*.proto) into src/stockraft/_proto/, which is not
# committed: the proto files are the one source of truth.
#
# Usage: ./generate.sh [PYTHON]   (default: .venv/bin/python, else python3)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
proto_root="$(cd "$here/../../proto" && pwd)"
python="${1:-}"
if [ -z "$python" ]; then
  if [ -x "$here/.venv/bin/python" ]; then python="$here/.venv/bin/python"; else python=python3; fi
fi
out="$here/src/stockraft/_proto"

# Write into a scratch folder and swap it in, so a failed run never leaves
# half a package behind.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# google/protobuf/any.proto comes from grpcio-tools' bundled include folder,
# which grpc_tools.protoc adds to the import path itself.
"$python" -m grpc_tools.protoc \
  -I "$proto_root" \
  --python_out="$scratch" --pyi_out="$scratch" --grpc_python_out="$scratch" \
  "$proto_root"/stockraft/v1/*.proto

# protoc writes absolute imports (`from stockraft.v1 import inventory_pb2`)
# that mirror the proto package. Inside this package that module lives at
# stockraft._proto.stockraft.v1, so make those imports relative.
find "$scratch/stockraft" -name '*.py' -print0 | xargs -0 sed -i -E \
  's/^from stockraft\.v1 import /from . import /'
touch "$scratch/__init__.py" "$scratch/stockraft/__init__.py" "$scratch/stockraft/v1/__init__.py"

# The service config travels with the package, so an installed client
# retries as clients/service_config.json says.
cp "$here/../service_config.json" "$scratch/service_config.json"

rm -rf "$out"
mkdir -p "$(dirname "$out")"
cp -r "$scratch" "$out"
echo "generated $out"
