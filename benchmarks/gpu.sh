#!/usr/bin/env bash
# The GPU figures, for a machine with an NVIDIA GPU (run from the repository root, in the venv
# with a CUDA build of torch): Moshi 7B's shape with random weights in bfloat16, int8 and int4,
# each with and without CUDA graphs (ms per frame, peak GPU memory), PersonaPlex's prompt phase
# at 7B, and the speech-to-text step at the 1B's shape. Writes one JSON line per run to
# $OUT (default ./gpu-figures) and prints the tables. About 10 minutes on an H100, most of it
# writing the 15 GB checkpoints.
#
#     bash benchmarks/gpu.sh            # or OUT=/tmp/figures bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=${OUT:-gpu-figures}
mkdir -p "$out"
"$python" -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU"; print(torch.cuda.get_device_name(0), torch.__version__)'

for dtype in bfloat16 int8 int4; do
    echo "== Moshi 7B shape, $dtype (eager, then CUDA graphs)"
    "$python" -m app bench --config 7b --random-weights --device cuda --dtype "$dtype" \
        --frames 200 --warmup 20 --json | tail -1 | tee "$out/moshi-7b-$dtype.json"
done
echo "== PersonaPlex 7B shape: the prompt phase"
"$python" -m app bench --config 7b --random-weights --personaplex --device cuda \
    --frames 50 --warmup 10 --json | tail -1 | tee "$out/personaplex-7b.json"
echo "== Kyutai STT 1B shape, on the GPU"
"$python" benchmarks/bench_transcribe.py --shapes 1b --device cuda --dtype bfloat16 --json \
    | tee "$out/stt-1b.json"
"$python" - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for path in sorted(out.glob("*.json")):
    for line in path.read_text().splitlines():
        r = json.loads(line)
        eager = r.get("eager", {})
        print(f"{path.stem:20} graphs p50 {r.get('ms_per_frame_p50', r.get('total_ms_p50'))} ms, "
              f"eager p50 {eager.get('ms_per_frame_p50')} ms, peak GPU {r.get('peak_device_mb')} MB"
              + (f", prompt {r['prompt']}" if "prompt" in r else ""))
PY
