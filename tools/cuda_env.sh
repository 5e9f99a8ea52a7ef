# Sourced by the Makefile: exports FORCE_CUDA=1 (and the test expectation that CUDA kernels are
# registered) when an nvcc whose release matches torch's CUDA version is available; otherwise
# leaves the build CPU-only and says why. Usage: source tools/cuda_env.sh <venv python>
_rl_python="${1:-python}"
_rl_nvcc="${CUDA_HOME:-/usr/local/cuda}/bin/nvcc"
[ -x "$_rl_nvcc" ] || _rl_nvcc="$(command -v nvcc || true)"
_rl_torch_cuda="$("$_rl_python" -c 'import torch; print(torch.version.cuda or "")')"
_rl_nvcc_release=""
if [ -n "$_rl_nvcc" ] && [ -x "$_rl_nvcc" ]; then
  _rl_nvcc_release="$("$_rl_nvcc" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')"
fi
if [ -n "${ROBUST_LIGHTNING_NO_CUDA:-}" ]; then
  echo "robust_lightning: ROBUST_LIGHTNING_NO_CUDA set; building CPU kernels only"
elif [ -n "$_rl_torch_cuda" ] && [ "$_rl_nvcc_release" = "$_rl_torch_cuda" ]; then
  export FORCE_CUDA=1 ROBUST_LIGHTNING_EXPECT_CUDA_KERNELS=1
  export CUDA_HOME="$(dirname "$(dirname "$_rl_nvcc")")"
else
  echo "robust_lightning: CPU kernels only (torch CUDA '${_rl_torch_cuda:-none}', nvcc '${_rl_nvcc_release:-none}')"
fi
unset _rl_python _rl_nvcc _rl_torch_cuda _rl_nvcc_release
