#!/usr/bin/env bash
# Completes the bundled example (examples/bids + examples/models) from the one copy of each media
# file and tiny model kept in tests/fixtures. Copies (never symlinks: the app refuses stimuli that
# lead outside the dataset). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
fx=tests/fixtures
st=examples/bids/stimuli
mkdir -p "$st/movie" "$st/story" "$st/speech" examples/models
cp -u "$fx/data/stimuli/espeak-ng-generated/alice_testsrc2_320x240_24fps.mp4" "$st/movie/alice_testsrc2.mp4"
cp -u "$fx/data/stimuli/pocketsphinx-librivox/sense_and_sensibility_01_austen_64kb-0870.wav" "$st/story/librivox_0870.wav"
cp -u "$fx/data/stimuli/pocketsphinx-librivox/sense_and_sensibility_01_austen_64kb-0890.wav" "$st/story/librivox_0890.wav"
cp -u "$fx/data/stimuli/whisper-jfk/jfk.flac" "$st/speech/jfk.flac"
for m in tribev2 Llama-3.2-3B w2v-bert-2.0 vjepa2-vitg-fpc64-256; do
  mkdir -p "examples/models/$m"
  for f in "$fx/models-tiny/$m/"*; do
    case "$f" in
      # Kept gzipped in the fixtures (9 MB of JSON); models folders hold it plain, as on the Hub.
      *.json.gz) [ "examples/models/$m/$(basename "$f" .gz)" -nt "$f" ] || gunzip -c "$f" > "examples/models/$m/$(basename "$f" .gz)" ;;
      *) cp -u "$f" "examples/models/$m/" ;;
    esac
  done
done
echo "example ready: examples/bids (BIDS dataset), examples/models (TINY random models: the maps are meaningless)"
