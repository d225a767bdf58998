#!/usr/bin/env bash
# Build the wheel and check that it installs and imports in a fresh virtual environment, away
# from the source tree, with its console script, and that `sktransfer demo` says clearly that the
# examples are not part of the wheel. The heavy dependencies (torch, sentence-transformers...)
# are borrowed from .venv through a .pth file instead of being installed a second time (5 GB).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_python="$root/.venv/bin/python"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$venv_python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/dist" "$root" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
wheel="$(ls "$work"/dist/sktransfer-*.whl)"
python3 -m venv "$work/venv"
site="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
deps="$("$venv_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# A path added by a .pth file is not a site directory, so .venv's editable sktransfer (its own
# .pth finder) stays invisible: the only sktransfer here is the wheel's.
echo "$deps" > "$site/sktransfer-deps.pth"
"$work/venv/bin/python" -m pip install --quiet --no-deps "$wheel" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

cd "$work"
"$work/venv/bin/python" - "$site" <<'PY'
import sys
import sktransfer
from sktransfer import EmbeddingCache, FineTuningClassifier, ImageEncoder, TextEncoder, make_table_encoder  # noqa: F401

assert sktransfer.__file__.startswith(sys.argv[1]), f"imported {sktransfer.__file__}, not the wheel"
heavy = {"dask", "distributed", "ray", "skada", "peft", "timm", "onnx", "onnxruntime", "onnxscript", "openvino", "nncf", "pyspark", "py4j"} & set(sys.modules)
assert not heavy, f"import sktransfer imported the optional {sorted(heavy)}"
import sktransfer.dask, sktransfer.ray, sktransfer.spark  # noqa: E401,F401  (the extras' modules ship in the wheel)
print(f"[wheel] sktransfer {sktransfer.__version__} imports from {sktransfer.__file__}")
PY
"$work/venv/bin/sktransfer" --help > /dev/null
set +e
demo="$("$work/venv/bin/sktransfer" demo --quick 2>&1)"
status=$?
set -e
if [ "$status" -eq 0 ] || ! grep -q "source checkout" <<<"$demo"; then
  echo "[wheel] 'sktransfer demo' from the wheel should fail and say the examples need a source checkout; got ($status): $demo" >&2
  exit 1
fi
echo "[wheel] console script works; 'sktransfer demo' says: ${demo#sktransfer: error: }"
