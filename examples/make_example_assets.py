#!/usr/bin/env python3
"""Builds the committed part of examples/bids (run once by a developer; the output is committed).

What it makes, and why:
- tiny but real 4-D BOLD NIfTI files (4x4x3 voxels of seeded noise, int16) whose headers carry the
  run's volume count and TR, so the app's alignment is checked against real headers;
- word transcripts (`*_words.tsv`) next to each speech file, converted from the real forced
  alignments shipped with the media (pocketsphinx variants such as "and(2)" and "<sil>" removed);
- the image-localizer stimuli: synthetic faces, places and objects drawn with ffmpeg's geq
  filter. They are stand-ins labelled by category, not photographs.
The large media (wav, flac, mp4) are not committed here: scripts/make-example.sh copies them from
tests/fixtures/data/stimuli at set-up time, so the repository keeps one copy of each.

Needs numpy, nibabel and the ffmpeg CLI. Usage: python3 examples/make_example_assets.py
"""
import json, os, re, subprocess
import numpy as np
import nibabel as nb

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bids")
FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "data", "stimuli")
rng = np.random.default_rng(20261126)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def bold(path, n_vols, tr):
    data = (1000 + 20 * rng.standard_normal((4, 4, 3, n_vols))).astype(np.int16)
    aff = np.diag([12.0, 12.0, 16.0, 1.0])
    aff[:3, 3] = [-24.0, -24.0, -24.0]
    img = nb.Nifti1Image(data, aff)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = tr
    img.header.set_qform(aff, 1)
    img.header.set_sform(aff, 1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nb.save(img, path)


def clean_word(w):
    return re.sub(r"\(\d+\)$", "", w)


def words_from_pocketsphinx(src, dst):
    d = json.load(open(src))
    rows = ["onset\tduration\tword"]
    for w in d["w"]:
        t = clean_word(w["t"])
        if t.startswith("<") or t in ("[noise]",):
            continue
        rows.append(f"{w['b']:.3f}\t{w['d']:.3f}\t{t}")
    write(dst, "\n".join(rows) + "\n")


def words_from_tsv(src, dst):
    lines = open(src).read().splitlines()
    hdr = lines[0].split("\t")
    io, idu, iw = hdr.index("onset"), hdr.index("duration"), hdr.index("word")
    rows = ["onset\tduration\tword"]
    for l in lines[1:]:
        c = l.split("\t")
        if len(c) <= iw or not c[iw].strip():
            continue
        rows.append(f"{float(c[io]):.3f}\t{float(c[idu]):.3f}\t{clean_word(c[iw])}")
    write(dst, "\n".join(rows) + "\n")


def image(path, expr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=black:s=128x128,format=rgb24,geq={expr}",
                    "-frames:v", "1", path], check=True)


# ---- dataset-level files -------------------------------------------------------------------
write(f"{ROOT}/dataset_description.json", json.dumps({
    "Name": "tribe-bids example: two participants, movie, speech and an image localizer",
    "BIDSVersion": "1.10.0",
    "DatasetType": "raw",
    "License": "Stimuli: public domain speech (LibriVox, JFK inaugural address), espeak-ng synthesis of a public-domain text, synthetic video and images. BOLD: seeded noise. See README.",
    "Authors": ["tribe-bids developers"],
}, indent=2) + "\n")
write(f"{ROOT}/participants.tsv", "participant_id\tage\tsex\nsub-01\tn/a\tn/a\nsub-02\tn/a\tn/a\n")
write(f"{ROOT}/README", """tribe-bids example dataset

Two participants. The BOLD images are tiny (4x4x3 voxels) seeded noise: only their headers matter
(volume count, TR). The stimuli are real or synthetic media, all redistributable:
- task-movie (both participants, inherited top-level events): a 17 s testsrc2 video with the
  espeak-ng reading of the opening of Alice in Wonderland; words next to the video.
- task-story (sub-01, two runs): LibriVox "Sense and Sensibility" clips with forced-aligned words.
- task-speech (sub-02): JFK's inaugural address clip (public domain) with forced-aligned words.
- task-localizer (both): synthetic faces, places and objects, 1 s each, in blocks.
Media files are copied in by scripts/make-example.sh (one copy of each lives in tests/fixtures).
""")

# ---- movie: inherited top-level events and sidecar -------------------------------------------
write(f"{ROOT}/task-movie_bold.json", json.dumps({"TaskName": "movie", "RepetitionTime": 1.0}, indent=2) + "\n")
write(f"{ROOT}/task-movie_events.tsv", "onset\tduration\ttrial_type\tstim_file\n0.0\t17.0\tmovie\tmovie/alice_testsrc2.mp4\n")
words_from_tsv(f"{FIX}/espeak-ng-generated/alice_espeak_words.tsv", f"{ROOT}/stimuli/movie/alice_testsrc2_words.tsv")
for sub in ("01", "02"):
    bold(f"{ROOT}/sub-{sub}/func/sub-{sub}_task-movie_bold.nii.gz", 24, 1.0)

# ---- story (sub-01): speech with a transcript next to the audio ------------------------------
write(f"{ROOT}/task-story_bold.json", json.dumps({"TaskName": "story", "RepetitionTime": 1.5,
      "SliceTiming": [0.0, 0.5, 1.0]}, indent=2) + "\n")
for run, clip, dur in (("1", "0870", 7.1), ("2", "0890", 5.3)):
    words_from_pocketsphinx(f"{FIX}/pocketsphinx-librivox/sense_and_sensibility_01_austen_64kb-{clip}.json",
                            f"{ROOT}/stimuli/story/librivox_{clip}_words.tsv")
    write(f"{ROOT}/sub-01/func/sub-01_task-story_run-{run}_events.tsv",
          f"onset\tduration\ttrial_type\tstim_file\n2.0\t{dur}\tstory\tstory/librivox_{clip}.wav\n")
    bold(f"{ROOT}/sub-01/func/sub-01_task-story_run-{run}_bold.nii.gz", 12, 1.5)

# ---- speech (sub-02): JFK ----------------------------------------------------------------------
write(f"{ROOT}/task-speech_bold.json", json.dumps({"TaskName": "speech", "RepetitionTime": 2.0}, indent=2) + "\n")
words_from_tsv(f"{FIX}/whisper-jfk/jfk_words_pocketsphinx-5.1.1.tsv", f"{ROOT}/stimuli/speech/jfk_words.tsv")
write(f"{ROOT}/sub-02/func/sub-02_task-speech_events.tsv", "onset\tduration\ttrial_type\tstim_file\n1.0\t11.0\tspeech\tspeech/jfk.flac\n")
bold(f"{ROOT}/sub-02/func/sub-02_task-speech_bold.nii.gz", 10, 2.0)

# ---- localizer (both): faces, places, objects, 1 s each, blocks of 4 with 4 s rest -----------
faces = [  # skin-toned disc, dark eyes and mouth; exemplars vary in size and tone
    f"r='if(lt(hypot(X-64,Y-64),{r}),if(lt(hypot(X-{64-e},Y-52),6)+lt(hypot(X-{64+e},Y-52),6)+between(Y,84,88)*between(X,48,80),40,{c}),90)':"
    f"g='if(lt(hypot(X-64,Y-64),{r}),if(lt(hypot(X-{64-e},Y-52),6)+lt(hypot(X-{64+e},Y-52),6)+between(Y,84,88)*between(X,48,80),30,{c-50}),90)':"
    f"b='if(lt(hypot(X-64,Y-64),{r}),if(lt(hypot(X-{64-e},Y-52),6)+lt(hypot(X-{64+e},Y-52),6)+between(Y,84,88)*between(X,48,80),30,{c-90}),90)'"
    for r, e, c in ((44, 16, 230), (40, 14, 200), (48, 18, 215), (42, 15, 185))]
places = [  # sky gradient over ground with a house outline; exemplars vary horizon and house
    f"r='if(lt(Y,{h}),100+Y,if(between(X,{x},{x+40})*between(Y,{h-30},{h}),180,60))':"
    f"g='if(lt(Y,{h}),150+Y/2,if(between(X,{x},{x+40})*between(Y,{h-30},{h}),60,120))':"
    f"b='if(lt(Y,{h}),255-Y,if(between(X,{x},{x+40})*between(Y,{h-30},{h}),40,50))'"
    for h, x in ((70, 20), (80, 60), (64, 40), (90, 30))]
objects = [  # one saturated object (square or diamond) on grey
    f"r='if(lt(abs(X-64)+{k}*abs(Y-64),{s}),{cr},128)':g='if(lt(abs(X-64)+{k}*abs(Y-64),{s}),{cg},128)':b='if(lt(abs(X-64)+{k}*abs(Y-64),{s}),{cb},128)'"
    for k, s, cr, cg, cb in ((1, 40, 220, 40, 40), (0, 30, 40, 200, 60), (1, 50, 40, 60, 220), (0, 36, 230, 200, 30))]
for cat, exprs in (("face", faces), ("place", places), ("object", objects)):
    for i, e in enumerate(exprs, 1):
        image(f"{ROOT}/stimuli/localizer/{cat}_{i:02d}.png", e)
order = ["face", "place", "object", "place", "object", "face"]
rows, t = ["onset\tduration\ttrial_type\tstim_file"], 2.0
for cat in order:
    for i in range(1, 5):
        rows.append(f"{t:.1f}\t1.0\t{cat}\tlocalizer/{cat}_{i:02d}.png")
        t += 1.0
    t += 4.0
write(f"{ROOT}/task-localizer_bold.json", json.dumps({"TaskName": "localizer", "RepetitionTime": 2.0}, indent=2) + "\n")
for sub in ("01", "02"):
    write(f"{ROOT}/sub-{sub}/func/sub-{sub}_task-localizer_events.tsv", "\n".join(rows) + "\n")
    bold(f"{ROOT}/sub-{sub}/func/sub-{sub}_task-localizer_bold.nii.gz", int(t / 2) + 6, 2.0)
print("example assets written to", ROOT)
