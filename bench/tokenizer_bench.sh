#!/bin/bash
# Encode throughput of the tokenizer on one core: 1 MiB of English prose made by repeating the
# repository's English test documents (model card, data provenance, the TinyStories notes: files
# that do not change), then the same text with no spaces or added tokens at all (one 1 MiB
# pre-token, the worst case for BPE). Usage: bench/tokenizer_bench.sh [build-dir]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
llava=$build/llava
model=$here/tests/data/llava-1.5-7b-hf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat "$model/model_card_README.md" "$here/tests/data/PROVENANCE.md" \
    "$here/tests/data/llama2c/stories260K.md" > "$tmp/one.txt"
: > "$tmp/english.txt"
while [ "$(stat -c %s "$tmp/english.txt")" -lt 1048576 ]; do cat "$tmp/one.txt" >> "$tmp/english.txt"; done
head -c 1048576 "$tmp/english.txt" | iconv -f UTF-8 -t UTF-8 -c > "$tmp/english_1m.txt"
tr -d ' \n\t<>' < "$tmp/english_1m.txt" > "$tmp/nospace.txt"
while [ "$(stat -c %s "$tmp/nospace.txt")" -lt 1048576 ]; do
  tr -d ' \n\t<>' < "$tmp/english_1m.txt" >> "$tmp/nospace.txt"
done
head -c 1048576 "$tmp/nospace.txt" | iconv -f UTF-8 -t UTF-8 -c > "$tmp/nospace_1m.txt"
echo "== 1 MiB English ($(stat -c %s "$tmp/english_1m.txt") bytes)"
taskset -c 0 "$llava" tokenize -m "$model" --bench --file "$tmp/english_1m.txt"
echo "== 1 MiB without spaces: a single pre-token ($(stat -c %s "$tmp/nospace_1m.txt") bytes)"
taskset -c 0 "$llava" tokenize -m "$model" --bench --file "$tmp/nospace_1m.txt"
