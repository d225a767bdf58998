#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: a virtual environment in .venv with sktransfer installed
# in editable mode, plus the offline pretrained weights seeded where the ordinary loaders look.
# A second run only re-checks the stamp and the weights, which takes a second or two.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SKTRANSFER_VENV:-$root/.venv}"
python_bin="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[bootstrap] creating virtual environment in $venv"
  "$python_bin" -m venv "$venv"
fi

# PyTorch builds that pip finds on this kind of machine without downloading gigabytes.
case "$(uname -m)" in
  x86_64) torch_spec="torch==2.14.1 torchvision==0.29.1" ;;
  aarch64) torch_spec="torch==2.9.1 torchvision==0.24.1" ;;
  *) torch_spec="torch torchvision" ;;
esac
torch_spec="${SKTRANSFER_TORCH_SPEC:-$torch_spec}"

stamp_file="$venv/.sktransfer-install-stamp"
stamp="$(cat "$root/pyproject.toml" "$root/scripts/bootstrap.sh" | sha256sum | cut -c1-16) $torch_spec"
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
  echo "[bootstrap] installing sktransfer and its test/example/docs/cli/lint/dask/ray/spark/domain/lora/timm/onnx/openvino extras (a few minutes the first time)"
  # Byte-compiled at install (pip's default), not --no-compile: these machines set
  # PYTHONDONTWRITEBYTECODE=1, so a module without a .pyc is compiled again in every process (the
  # test suite took about 5 minutes longer that way).
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --progress-bar off $torch_spec -e "$root[test,examples,docs,cli,lint,dask,ray,spark,domain,lora,timm,onnx,openvino]" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$stamp" > "$stamp_file"
fi

"$venv/bin/python" "$root/scripts/seed_offline_weights.py"

# Spark (the spark extra, its tests and `sktransfer embed --spark`) runs on a Java 17+ runtime, which pip cannot
# install: say how to get one where it is missing (the Spark tests fail without it, they are not skipped).
if ! problem="$("$venv/bin/python" -c 'from sktransfer.spark import java_problem; print(java_problem() or "")')" \
    || [ -n "$problem" ]; then
  echo "[bootstrap] warning: ${problem:-could not check for Java (import sktransfer.spark failed)}" >&2
fi
