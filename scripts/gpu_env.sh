# Sourced at the start of every command on the GPU machine: `source scripts/gpu_env.sh`.
# Installs the wheels carried in .whl/ (pydantic and friends; the image has none), puts them and this
# working tree on PYTHONPATH, keeps sliminfer's cache (compile cache, staged model) in /tmp/sliminfer-cache
# so that later calls on the same warm machine reuse it, sets OUT (default ./out) and prints the GPU.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export OUT="${OUT:-./out}" PYTHONUNBUFFERED=1 SLIMINFER_CACHE="${SLIMINFER_CACHE:-/tmp/sliminfer-cache}"
mkdir -p "$OUT" "$SLIMINFER_CACHE"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || echo "warning: installing the carried wheels failed; going on"
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "note: no .whl/ folder; pydantic must already be importable"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || true
