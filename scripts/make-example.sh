#!/usr/bin/env bash
# Completes the bundled example (examples/bids + examples/models) from the one copy of each media
# file and tiny model kept in tests/fixtures. Copies (never symlinks: the app refuses stimuli that
# lead outside the dataset). Idempotent, and safe to run several times at once (tests do): runs
# are serialised by a lock on this script, and every file is written under a temporary name and
# renamed into place, so a reader never sees half a file.
set -euo pipefail
cd "$(dirname "$0")/.."
exec 9<"scripts/make-example.sh"
flock 9
fx=tests/fixtures
st=examples/bids/stimuli

tmp=
trap 'rm -f "$tmp"' EXIT
# place SRC DST: copy (or gunzip, for *.gz) SRC to DST unless DST is already newer.
place() {
  local src=$1 dst=$2
  [ "$dst" -nt "$src" ] && return 0
  tmp=$(mktemp "$(dirname "$dst")/.make-example.XXXXXX")
  case "$src" in
    *.gz) gunzip -c "$src" >"$tmp" ;;
    *) cp "$src" "$tmp" ;;
  esac
  chmod 644 "$tmp"
  mv -f "$tmp" "$dst"
  tmp=
}

mkdir -p "$st/movie" "$st/story" "$st/speech" examples/models
place "$fx/data/stimuli/espeak-ng-generated/alice_testsrc2_320x240_24fps.mp4" "$st/movie/alice_testsrc2.mp4"
place "$fx/data/stimuli/pocketsphinx-librivox/sense_and_sensibility_01_austen_64kb-0870.wav" "$st/story/librivox_0870.wav"
place "$fx/data/stimuli/pocketsphinx-librivox/sense_and_sensibility_01_austen_64kb-0890.wav" "$st/story/librivox_0890.wav"
place "$fx/data/stimuli/whisper-jfk/jfk.flac" "$st/speech/jfk.flac"
for m in tribev2 Llama-3.2-3B w2v-bert-2.0 vjepa2-vitg-fpc64-256; do
  mkdir -p "examples/models/$m"
  for f in "$fx/models-tiny/$m/"*; do
    # The tokenizer is kept gzipped in the fixtures (9 MB of JSON); models folders hold it
    # plain, as on the Hub.
    place "$f" "examples/models/$m/$(basename "$f" .gz)"
  done
done
echo "example ready: examples/bids (BIDS dataset), examples/models (TINY random models: the maps are meaningless)"
