//! Tokenization as the reference calls it: the HF `tokenizer.json`, offline, with
//! `add_special_tokens=False` (no BOS: TRIBE's contexts are plain running text, SPEC §5.3).

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// Token ids and each token's `[start, end)` character span.
pub type TokensWithOffsets = (Vec<u32>, Vec<(usize, usize)>);

pub struct TextTokenizer {
    tok: Tokenizer,
    path: PathBuf,
}

impl TextTokenizer {
    pub fn load(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::InputMissing {
                path: path.to_path_buf(),
                what: "the model's tokenizer.json".into(),
                fix: "copy tokenizer.json from the model's Hugging Face repository into the model folder".into(),
            });
        }
        let tok = Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            message: format!("cannot be read: {e}"),
        })?;
        Ok(TextTokenizer {
            tok,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token ids of `text`, without special tokens added (special tokens written in the text,
    /// like "<|eot_id|>", are still recognized, as in transformers).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tok.encode(text, false).map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            message: format!("failed to encode text: {e}"),
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids with each token's character span `[start, end)` in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<TokensWithOffsets> {
        let enc = self
            .tok
            .encode_char_offsets(text, false)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                message: format!("failed to encode text: {e}"),
            })?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Refuse a tokenizer that cannot belong to a model with `vocab_size` embedding rows and
    /// this `eos_token_id`: its regular vocabulary would index past the embedding, or the
    /// model's end-of-text token is not one of its tokens. (Llama-3.2's tokenizer has one
    /// added token, `<|image|>` = 128256, past the 128,256 rows; plain text never produces
    /// it, and the forward refuses any id past the embedding.)
    pub fn check_matches_model(
        &self,
        vocab_size: usize,
        eos_token_id: Option<u32>,
        config: &Path,
    ) -> Result<()> {
        let base = self.tok.get_vocab_size(false);
        if base > vocab_size {
            return Err(Error::Tokenizer {
                path: self.path.clone(),
                message: format!(
                    "has {base} regular tokens but the model ({}) has vocab_size {vocab_size}: they do not belong together\n  fix: use the tokenizer.json from the same model repository",
                    config.display()
                ),
            });
        }
        if let Some(eos) = eos_token_id
            && self.tok.id_to_token(eos).is_none()
        {
            return Err(Error::Tokenizer {
                path: self.path.clone(),
                message: format!(
                    "has no token with id {eos}, the model's eos_token_id ({}): they do not belong together\n  fix: use the tokenizer.json from the same model repository",
                    config.display()
                ),
            });
        }
        Ok(())
    }
}
