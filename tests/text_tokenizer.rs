//! Token ids of the real Llama-3.2 tokenizer (byte-identical copy in the tiny model folder)
//! against HF tokenizers' own output (tests/fixtures/data/tokenizer/golden_encodings.json).

mod common;

use common::fixture;
use tribe_bids::features::tokenize::TextTokenizer;

#[test]
fn golden_encodings_match_exactly() {
    let tok = TextTokenizer::load(&fixture("models-tiny/Llama-3.2-3B/tokenizer.json")).unwrap();
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("data/tokenizer/golden_encodings.json")).unwrap(),
    )
    .unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids_no_special"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text).unwrap();
        assert_eq!(got, want, "ids for {text:?}");
        // Character offsets are what fast mode uses to find a word's tokens in a window.
        let (ids, offsets) = tok.encode_with_offsets(text).unwrap();
        assert_eq!(ids, want);
        if let Some(off) = case["offsets_no_special"].as_array()
            && text.is_ascii()
        {
            let want_off: Vec<(usize, usize)> = off
                .iter()
                .map(|p| {
                    (
                        p[0].as_u64().unwrap() as usize,
                        p[1].as_u64().unwrap() as usize,
                    )
                })
                .collect();
            assert_eq!(offsets, want_off, "offsets for {text:?}");
        }
    }
}

/// The tiny-model goldens list the ids of their four contexts too.
#[test]
fn llama_golden_context_ids() {
    let tok = TextTokenizer::load(&fixture("models-tiny/Llama-3.2-3B/tokenizer.json")).unwrap();
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("hf/llama-tiny-golden.json")).unwrap(),
    )
    .unwrap();
    for ctx in golden["contexts"].as_array().unwrap() {
        let want: Vec<u32> = ctx["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(ctx["text"].as_str().unwrap()).unwrap(), want);
    }
}
