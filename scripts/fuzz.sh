#!/usr/bin/env bash
# make fuzz: libFuzzer targets (swiftc -sanitize=fuzzer,address), each run for FUZZ_SECONDS (default 60) from a seed
# corpus of real data:
#   tar        the tar reader            shards built from synthetic data, a GNU tar of shared files
#   npy        the .npy parser           npy members of a shard, numpy-saved arrays of the shared photos
#   coco       the COCO JSON walk        ../shared/data COCO files (cut to the first records), small hand-made ones
#   llava      the LLaVA JSON/JSONL walk ../shared/data LLaVA files (cut), small hand-made ones
#   tokenizer  tokenizer.json + encoder  small tokenizer.json files trained by `tokenizers`, text encoded by the
#                                        shared gpt2 and mistral-v1 tokenizers
#   image      image probe + decoder     small JPEG/PNG variants of the shared photos (modes, progressive, EXIF)
# FUZZ_TARGETS picks some ("coco llava"); FUZZ_JOBS (default 1) runs that many at once, each under `nice`.
# A crash, an out-of-bounds access (ASan) or a failed invariant stops that target with the input saved under
# .build/fuzz/findings-TARGET/; exit 0 means every target ran clean for the whole time. Each run's statistics
# are in .build/fuzz/fuzz-TARGET.log; the grown corpus stays in .build/fuzz/corpus-TARGET/ for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${FUZZ_DIR:-$PWD/.build/fuzz}"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGETS="${FUZZ_TARGETS:-tar npy coco llava tokenizer image}"
JOBS="${FUZZ_JOBS:-1}"
PYTHON="${PYTHON:-.venv/bin/python}"
BIN="${VLMDATA_BIN:-$PWD/.build/release/vlmdata}"
SHARED="${SHARED_DATA:-$PWD/../shared/data}"
# swift-crypto (VLMIO's sha256) is linked from a SwiftPM build of this package, uninstrumented.
SPM="${CRYPTO_BUILD:-$PWD/.build/release}"
[ -d "$SPM/Crypto.build" ] || SPM="$PWD/.build/debug"
[ -d "$SPM/Crypto.build" ] || { echo "fuzz: no SwiftPM build with swift-crypto in $SPM (run swift build first)"; exit 2; }
mkdir -p "$OUT/lib"
FLAGS=(-sanitize=fuzzer,address -parse-as-library -swift-version 6 -package-name vlmdata -g -Onone -I "$OUT/lib"
       -I "$SPM/Modules" -I Sources/CTurboJPEG -I Sources/CPNG -I Sources/CArchive -I Sources/CDeflate)
for inc in "$SPM"/{Crypto,CryptoBoringWrapper}.build/include; do [ -d "$inc" ] || continue; FLAGS+=(-Xcc -I -Xcc "$inc"); done
CHECKOUT="$(dirname "$SPM")/checkouts/swift-crypto/Sources"
[ -d "$CHECKOUT" ] || CHECKOUT="$PWD/.build/checkouts/swift-crypto/Sources"
for inc in "$CHECKOUT"/CCryptoBoringSSL/include "$CHECKOUT"/CCryptoBoringSSLShims/include; do FLAGS+=(-Xcc -I -Xcc "$inc"); done
CRYPTO_OBJECTS=$(find "$SPM/Crypto.build" "$SPM/CryptoBoringWrapper.build" "$SPM/CCryptoBoringSSL.build" \
    "$SPM/CCryptoBoringSSLShims.build" -name '*.o')
LINK=(-L "$OUT/lib" -lVLMText -lVLMShard -lVLMIO -lVLMCore $CRYPTO_OBJECTS -lturbojpeg -lpng16 -ldeflate -larchive)

# The modules the targets need, instrumented: VLMCore, the parts of VLMIO they use, VLMShard's tar and npy code,
# VLMText. Built apart from SwiftPM so nothing else pays for the instrumentation.
# Each is rebuilt only when one of its sources or a module below it is newer than the built one.
below=()
uptodate() {
    local out="$1"; shift
    [ -e "$out" ] || return 1
    for f in "$@" "${below[@]}"; do [ "$f" -nt "$out" ] && return 1; done
    return 0
}
module() {
    local name="$1"; shift
    below+=("$OUT/lib/lib$name.a")
    uptodate "$OUT/lib/lib$name.a" "$@" && return 0
    swiftc "${FLAGS[@]}" -module-name "$name" -emit-module -emit-module-path "$OUT/lib/$name.swiftmodule" \
        -emit-library -static -o "$OUT/lib/lib$name.a" "$@"
}
module VLMCore Sources/VLMCore/*.swift
module VLMIO Sources/VLMIO/{AtomicFile,Hashing,JSONStream,ImageHeader,DecodeImage,DecodeJPEG,DecodePNG,DecodeEXIF,ArchiveReader}.swift
module VLMShard Sources/VLMShard/TarReader.swift Sources/VLMShard/TarWriter.swift Sources/VLMShard/Npy.swift
module VLMText Sources/VLMText/*.swift
# Each target with the stage files it drives (internal to VLMPipeline, so compiled into the target).
sources_for() {
    case "$1" in
        coco) echo Tests/fuzz/FuzzCOCO.swift Tests/fuzz/FuzzScratch.swift Sources/VLMPipeline/Ingest/ImageKeys.swift Sources/VLMPipeline/Ingest/PackedStrings.swift ;;
        llava) echo Tests/fuzz/FuzzLLaVA.swift Tests/fuzz/FuzzScratch.swift Sources/VLMPipeline/Ingest/LLaVARecord.swift ;;
        image) echo Tests/fuzz/FuzzImage.swift Sources/VLMPipeline/Ingest/ImageProbe.swift ;;
        tokenizer) echo Tests/fuzz/FuzzTokenizer.swift ;;
        tar) echo Tests/fuzz/FuzzTar.swift ;;
        npy) echo Tests/fuzz/FuzzNpy.swift ;;
    esac
}
for target in $TARGETS; do
    uptodate "$OUT/fuzz-$target" $(sources_for "$target") && continue
    # (ld.gold warns about every ASan symbol it cannot export; the log keeps them out of sight.)
    swiftc "${FLAGS[@]}" -module-name "Fuzz_$target" -o "$OUT/fuzz-$target" $(sources_for "$target") "${LINK[@]}" \
        2>"$OUT/link-$target.log" || { grep -v "Cannot export local symbol" "$OUT/link-$target.log"; exit 1; }
done
[ -z "${FUZZ_BUILD_ONLY:-}" ] || exit 0

# Seed corpus from real data.
corpus="$OUT/seeds"
rm -rf "$corpus" "$OUT/ws"
mkdir -p "$corpus/tar" "$corpus/npy"
"$(dirname "$BIN")/vlmdata-bench" synthetic --workspace "$OUT/ws" --count 6 --tokens 40 \
    --patches 4 --patch-dim 48 >/dev/null
"$BIN" shard --workspace "$OUT/ws" --target-size 8KB --quiet >/dev/null
cp "$OUT"/ws/shards/train-00000[0-2].tar "$corpus/tar/"
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
"$PYTHON" scripts/fuzz_seeds.py "$SHARED" "$corpus"
# Inputs that once failed stay in the seeds: each run starts by replaying them.
for f in Tests/fuzz/regressions/*; do
    target="${f##*/}"; target="${target%%-*}"
    [ -d "$corpus/$target" ] && cp "$f" "$corpus/$target/"
done
export FUZZ_TOKENIZERS="$SHARED/tokenizers/gpt2/tokenizer.json:$SHARED/tokenizers/mistral-v1/tokenizer.json"

run() {
    local target="$1"
    mkdir -p "$OUT/findings-$target" "$OUT/corpus-$target"
    rm -f "$OUT/findings-$target"/*
    echo "fuzz-$target: ${SECONDS_EACH}s from $(ls "$corpus/$target" | wc -l) seeds"
    if nice "$OUT/fuzz-$target" "$OUT/corpus-$target" "$corpus/$target" -max_total_time="$SECONDS_EACH" \
        -max_len=65536 -timeout=20 -rss_limit_mb=3072 -artifact_prefix="$OUT/findings-$target/" \
        -print_final_stats=1 2>"$OUT/fuzz-$target.log"; then
        echo "fuzz-$target: clean; $(grep -E '^stat::number_of_executed_units' "$OUT/fuzz-$target.log" | awk '{print $2}') runs," \
            "$(grep -E '^stat::average_exec_per_sec' "$OUT/fuzz-$target.log" | awk '{print $2}') exec/s," \
            "corpus $(ls "$OUT/corpus-$target" | wc -l) files; $(grep -E 'cov:' "$OUT/fuzz-$target.log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+')"
    else
        echo "fuzz-$target: FAILED; the input is in $OUT/findings-$target/, the log in $OUT/fuzz-$target.log"
        grep -m5 -E "ERROR|Fatal|precondition|error:" "$OUT/fuzz-$target.log" || true
        return 1
    fi
}

status=0
pids=()
for target in $TARGETS; do
    run "$target" & pids+=($!)
    if [ "${#pids[@]}" -ge "$JOBS" ]; then wait "${pids[0]}" || status=1; pids=("${pids[@]:1}"); fi
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
