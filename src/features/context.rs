//! The running text each word is read in (SPEC §5.0, §6): sentences, the reference's
//! capitalization quirk, and neuralset's `AddContextToWords` parts.
//!
//! The reference builds one `Text` per timeline by joining the words with spaces, splitting it
//! into sentences with spaCy, and rewriting every sentence with Python's `str.capitalize()`
//! (first character upper-cased, **the rest lower-cased**: "thought alice,") and
//! `.rstrip(".")`, joined with ". ". Each word is then located in its sentence, and its context
//! is the text of up to 1,024 previous words (with the spaces and punctuation that followed
//! them) plus the word itself as written in the rewritten sentence.
//!
//! Sentence splitting is rule-based here (no spaCy). A word ends a sentence when, after
//! closing quotes and brackets, it ends in one `.`, or in `?`/`!` (and the other sentence marks
//! of spaCy's `sentencizer`), unless it is an abbreviation or an initial. Words made only of
//! punctuation right after a sentence end stay in that sentence, as the sentencizer keeps
//! trailing punctuation tokens. This is exactly the splitter the goldens were made with
//! (tests/fixtures/hf: "after words ending in '.'"; tests/fixtures/e2e: `spacy.blank("en")` +
//! `sentencizer`, splitting at `.` and `?`). Where it can differ from the released pipeline's
//! `en_core_web_lg` parser: sentences without final punctuation (Whisper run-ons) that the
//! parser would still cut, abbreviations missing from our list, a sentence mark inside a word
//! ("end.Next"), an opening quote glued to a sentence's first word, and a second spaCy parse of
//! the rewritten text that splits differently from the first. Each of these changes which
//! words are lower-cased and where ". " is inserted, so features differ only near them.

use std::ops::Range;

/// neuralset `AddContextToWords(max_context_len=1024)`: previous word parts kept.
pub const MAX_CONTEXT_WORDS: usize = 1024;

/// Words that end in a period without ending a sentence (spaCy English tokenizer exceptions,
/// where the period stays inside the token so the sentencizer never sees a bare ".").
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "rev", "gen", "gov", "sen", "rep", "adm",
    "capt", "col", "lt", "sgt", "messrs", "mt", "inc", "ltd", "co", "corp", "bros", "vs", "jan",
    "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "ala", "ariz",
    "ark", "calif", "colo", "conn", "del", "fla", "ga", "ill", "ind", "kan", "ky", "la", "md",
    "mass", "mich", "minn", "miss", "mo", "mont", "neb", "nev", "okla", "ore", "pa", "tenn", "va",
    "wash", "wis",
];

/// Characters spaCy's `sentencizer` treats as sentence ends (its default `punct_chars`, the
/// common subset).
fn is_sentence_mark(c: char) -> bool {
    matches!(
        c,
        '!' | '.'
            | '?'
            | '։'
            | '؟'
            | '۔'
            | '܀'
            | '܁'
            | '܂'
            | '।'
            | '॥'
            | '።'
            | '፧'
            | '፨'
            | '᙮'
            | '‼'
            | '‽'
            | '⁇'
            | '⁈'
            | '⁉'
            | '⸮'
            | '。'
            | '！'
            | '．'
            | '？'
            | '｡'
    )
}

fn is_closing(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '»' | '”' | '’' | '›')
}

/// Does this word (as written, with attached punctuation) end a sentence?
pub fn ends_sentence(word: &str) -> bool {
    let core = word.trim_end_matches(is_closing);
    let Some(last) = core.chars().next_back() else {
        return false;
    };
    if !is_sentence_mark(last) {
        return false;
    }
    if last != '.' {
        return true;
    }
    // "..." and ".." are one ellipsis token for spaCy, not a sentence mark.
    let stem = &core[..core.len() - 1];
    if stem.ends_with('.') {
        return false;
    }
    let stem = stem.trim_start_matches(|c: char| !c.is_alphanumeric());
    if stem.is_empty() {
        return true;
    }
    // "U.S.", "e.g.", "a.m.": the period is part of the token.
    if stem.contains('.') {
        return false;
    }
    // An initial ("J."): spaCy only splits a final period after a lower-case letter, a digit,
    // punctuation, or two capitals.
    let mut chars = stem.chars();
    if let (Some(c), None) = (chars.next(), chars.next())
        && c.is_uppercase()
    {
        return false;
    }
    !ABBREVIATIONS.contains(&stem.to_lowercase().as_str())
}

fn is_punctuation_only(word: &str) -> bool {
    !word.chars().any(char::is_alphanumeric)
}

/// Split a timeline's words into sentences (ranges of word indices, covering all words).
pub fn split_sentences<S: AsRef<str>>(words: &[S]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < words.len() {
        if ends_sentence(words[i].as_ref()) {
            let mut end = i + 1;
            while end < words.len() && is_punctuation_only(words[end].as_ref()) {
                end += 1;
            }
            if end < words.len() {
                out.push(start..end);
                start = end;
            }
            i = end;
        } else {
            i += 1;
        }
    }
    if start < words.len() {
        out.push(start..words.len());
    }
    out
}

/// Python's `str.capitalize()` applied to the first word of a sentence: title-case the first
/// character, lower-case the rest. Rust has no title case; the only characters where it differs
/// from upper case are the Latin digraphs and multi-character upper cases (ß -> "Ss").
fn python_capitalize_first(word: &str) -> String {
    let mut chars = word.chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let mut out = String::with_capacity(word.len());
    match first {
        'Ǆ' | 'ǅ' | 'ǆ' => out.push('ǅ'),
        'Ǉ' | 'ǈ' | 'ǉ' => out.push('ǈ'),
        'Ǌ' | 'ǋ' | 'ǌ' => out.push('ǋ'),
        'Ǳ' | 'ǲ' | 'ǳ' => out.push('ǲ'),
        c => {
            let mut up = c.to_uppercase();
            if let Some(u) = up.next() {
                out.push(u);
            }
            out.extend(up.flat_map(char::to_lowercase));
        }
    }
    out.push_str(&chars.as_str().to_lowercase());
    out
}

/// Python slicing `s[a:b]` on code points (clamped, empty when `a >= b`).
fn py_slice(s: &[char], a: usize, b: usize) -> String {
    let b = b.min(s.len());
    if a >= b {
        String::new()
    } else {
        s[a..b].iter().collect()
    }
}

/// The contexts of one timeline's words, stored as neuralset's parts so that both the exact
/// per-word contexts and longer windows can be assembled without copying the text per word.
#[derive(Debug, Clone)]
pub struct Contexts {
    /// Part of word i when it is read: from the previous cut to the end of the word.
    pub new_parts: Vec<String>,
    /// Part of word i once the next word has arrived: `new_parts[i]` plus the separator
    /// (space, punctuation, or the rest of the sentence) that follows it.
    pub final_parts: Vec<String>,
    /// Word texts as given (the span rule strips `len(word)` characters, not the rewritten word).
    pub words: Vec<String>,
    /// Sentence index of each word.
    pub sentence_of: Vec<usize>,
    /// The rewritten sentences (spaCy `text_with_ws` of the reference's second parse).
    pub sentences: Vec<String>,
    /// How many previous parts a context keeps.
    pub max_context: usize,
}

impl Contexts {
    /// Build the contexts for words already in reading order (onset ascending).
    pub fn build<S: AsRef<str>>(words: &[S], max_context: usize) -> Self {
        let ranges = split_sentences(words);
        let n_sent = ranges.len();
        let mut sentence_of = vec![0; words.len()];
        let mut sentence_char = vec![0usize; words.len()];
        let mut sentences = Vec::with_capacity(n_sent);
        for (k, r) in ranges.iter().enumerate() {
            let mut s = String::new();
            let mut pos = 0usize;
            for i in r.clone() {
                if i > r.start {
                    s.push(' ');
                    pos += 1;
                }
                let w = words[i].as_ref();
                let t = if i == r.start {
                    python_capitalize_first(w)
                } else {
                    w.to_lowercase()
                };
                sentence_of[i] = k;
                sentence_char[i] = pos;
                pos += t.chars().count();
                s.push_str(&t);
            }
            // AddText: `.rstrip(".")` per sentence, joined with ". "; spaCy's sentences then
            // carry their trailing whitespace.
            let mut s = s.trim_end_matches('.').to_string();
            if k + 1 < n_sent {
                s.push_str(". ");
            }
            sentences.push(s);
        }
        let sent_chars: Vec<Vec<char>> = sentences.iter().map(|s| s.chars().collect()).collect();

        // AddContextToWords, with the parts kept whole (the deque cut is applied on assembly).
        let n = words.len();
        let mut new_parts = Vec::with_capacity(n);
        let mut final_parts: Vec<String> = Vec::with_capacity(n);
        let mut start_char = 0usize;
        for i in 0..n {
            let k = sentence_of[i];
            let sent = &sent_chars[k];
            if i > 0 {
                let kp = sentence_of[i - 1];
                let new_sentence =
                    sentences[k] != sentences[kp] || sentence_char[i] <= sentence_char[i - 1];
                if new_sentence {
                    let rest = py_slice(&sent_chars[kp], start_char, usize::MAX);
                    final_parts[i - 1].push_str(&rest);
                    start_char = 0;
                } else {
                    final_parts[i - 1].push_str(&py_slice(sent, start_char, sentence_char[i]));
                    start_char = sentence_char[i];
                }
            }
            let last_char = sentence_char[i] + words[i].as_ref().chars().count();
            let new = py_slice(sent, start_char, last_char);
            new_parts.push(new.clone());
            final_parts.push(new);
            start_char = last_char;
        }
        Contexts {
            new_parts,
            final_parts,
            words: words.iter().map(|w| w.as_ref().to_string()).collect(),
            sentence_of,
            sentences,
            max_context,
        }
    }

    pub fn len(&self) -> usize {
        self.new_parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.new_parts.is_empty()
    }

    /// First part in word i's context (the deque keeps `max_context` previous parts).
    pub fn context_start(&self, i: usize) -> usize {
        i.saturating_sub(self.max_context)
    }

    /// Word i's context as the reference builds it.
    pub fn context(&self, i: usize) -> String {
        self.window(self.context_start(i), i)
    }

    /// The text parts `first..=last` read up to word `last` (final forms before it, the
    /// word's own part as it is read).
    pub fn window(&self, first: usize, last: usize) -> String {
        let mut s = String::new();
        for p in &self.final_parts[first..last] {
            s.push_str(p);
        }
        s.push_str(&self.new_parts[last]);
        s
    }

    /// The reference's Text event: the rewritten sentences joined.
    pub fn text(&self) -> String {
        self.sentences.concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_ends() {
        for w in ["them.", "it?", "No!", "said.\"", "(end.)", "3."] {
            assert!(ends_sentence(w), "{w}");
        }
        for w in [
            "Mr.", "Dr.", "U.S.", "e.g.", "J.", "wait...", "man,", "and", "St.", "…",
        ] {
            assert!(!ends_sentence(w), "{w}");
        }
    }

    #[test]
    fn capitalize_like_python() {
        assert_eq!(python_capitalize_first("alice"), "Alice");
        assert_eq!(python_capitalize_first("ALICE,"), "Alice,");
        assert_eq!(python_capitalize_first("ßtraße"), "Sstraße");
        assert_eq!(python_capitalize_first("ǆungla"), "ǅungla");
        assert_eq!(python_capitalize_first("\"hi"), "\"hi");
    }

    /// The e2e golden's words and contexts (tests/fixtures/e2e/events_reference.tsv).
    #[test]
    fn question_mark_gets_a_period_and_case_is_lowered() {
        let words = [
            "Is", "it?", "Yes,", "thought", "Alice.", "Then", "she", "SAW", "it",
        ];
        let c = Contexts::build(&words, MAX_CONTEXT_WORDS);
        assert_eq!(
            c.sentences,
            vec!["Is it?. ", "Yes, thought alice. ", "Then she saw it"]
        );
        assert_eq!(c.context(1), "Is it?");
        assert_eq!(c.context(2), "Is it?. Yes,");
        assert_eq!(c.context(4), "Is it?. Yes, thought alice.");
        assert_eq!(c.context(8), "Is it?. Yes, thought alice. Then she saw it");
    }

    #[test]
    fn final_period_is_stripped_and_deque_cuts() {
        let words = ["a", "b", "c", "d."];
        let c = Contexts::build(&words, 2);
        assert_eq!(c.context(3), "b c d");
        assert_eq!(c.context(1), "A b");
        assert_eq!(c.context_start(3), 1);
    }

    #[test]
    fn punctuation_words_stay_with_their_sentence() {
        let words = ["He", "said.", "\"", "Go", "on"];
        assert_eq!(split_sentences(&words), vec![0..3, 3..5]);
    }
}
