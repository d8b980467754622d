#!/usr/bin/env bash
# make fuzz: libFuzzer targets (swiftc -sanitize=fuzzer,address) on the tar reader and the .npy parser, each run
# for FUZZ_SECONDS (default 60) from a seed corpus of real data: tars and npy members of a training shard built
# from ../shared/data/coco-mini, numpy-saved arrays of the shared photos, a GNU tar of shared files.
# A crash, an out-of-bounds access (ASan) or a failed invariant stops the run with the input saved under
# .build/fuzz/findings-TARGET/; exit 0 means both targets ran clean for the whole time.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${FUZZ_DIR:-$PWD/.build/fuzz}"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
PYTHON="${PYTHON:-.venv/bin/python}"
BIN="${VLMDATA_BIN:-$PWD/.build/release/vlmdata}"
SHARED="${SHARED_DATA:-$PWD/../shared/data}"
mkdir -p "$OUT/lib"
FLAGS=(-sanitize=fuzzer,address -parse-as-library -swift-version 6 -package-name vlmdata -g -Onone -I "$OUT/lib")

# The modules the targets need, instrumented: VLMCore, the part of VLMIO the tar writer uses, and VLMShard's
# tar and npy code. Built apart from SwiftPM so nothing else pays for the instrumentation.
module() {
    local name="$1"; shift
    swiftc "${FLAGS[@]}" -module-name "$name" -emit-module -emit-module-path "$OUT/lib/$name.swiftmodule" \
        -emit-library -static -o "$OUT/lib/lib$name.a" "$@"
}
module VLMCore Sources/VLMCore/*.swift
module VLMIO Sources/VLMIO/AtomicFile.swift
module VLMShard Sources/VLMShard/TarReader.swift Sources/VLMShard/TarWriter.swift Sources/VLMShard/Npy.swift
for target in Tar Npy; do
    swiftc "${FLAGS[@]}" -o "$OUT/fuzz-${target,,}" "Tests/fuzz/Fuzz$target.swift" \
        -L "$OUT/lib" -lVLMShard -lVLMIO -lVLMCore
done

# Seed corpus from real data.
corpus="$OUT/seeds"
rm -rf "$corpus" "$OUT/ws"
mkdir -p "$corpus/tar" "$corpus/npy"
"$(dirname "$BIN")/vlmdata-bench" synthetic --workspace "$OUT/ws" --count 6 --tokens 40 \
    --patches 4 --patch-dim 48 >/dev/null
"$BIN" shard --workspace "$OUT/ws" --target-size 8KB --quiet >/dev/null
cp "$OUT"/ws/shards/train-00000[0-2].tar "$corpus/tar/"
cp Tests/fuzz/regressions/npy-* "$corpus/npy/"   # inputs that once failed
tar -cf "$corpus/tar/gnu-shared.tar" -C "$SHARED" README.md coco-mini/annotations 2>/dev/null || true
"$PYTHON" - "$OUT/ws/shards/train-000000.tar" "$SHARED/photos" "$corpus/npy" <<'PY'
import io, sys, tarfile, numpy as np
from PIL import Image
shard, photos, out = sys.argv[1:]
with tarfile.open(shard) as t:
    for m in t.getmembers():
        if m.name.endswith(".npy"):
            open(f"{out}/{m.name}", "wb").write(t.extractfile(m).read())
for name in ("camera.png", "coffee.png"):
    a = np.asarray(Image.open(f"{photos}/{name}").convert("RGB"))[:24, :24]
    np.save(f"{out}/{name}.npy", a)
    np.save(f"{out}/{name}-i4.npy", a.astype("<i4")[:4])
PY

status=0
for target in tar npy; do
    mkdir -p "$OUT/findings-$target" "$OUT/corpus-$target"
    echo "fuzz-$target: ${SECONDS_EACH}s from $(ls "$corpus/$target" | wc -l) seeds"
    if ! "$OUT/fuzz-$target" "$OUT/corpus-$target" "$corpus/$target" -max_total_time="$SECONDS_EACH" -max_len=65536 \
        -artifact_prefix="$OUT/findings-$target/" -print_final_stats=1 2>"$OUT/fuzz-$target.log"; then
        echo "fuzz-$target: FAILED; the input is in $OUT/findings-$target/, the log in $OUT/fuzz-$target.log"
        grep -m5 -E "ERROR|Fatal|precondition|error:" "$OUT/fuzz-$target.log" || true
        status=1
    else
        grep -E "stat::number_of_executed_runs|cov:" "$OUT/fuzz-$target.log" | tail -2
    fi
done
exit $status
