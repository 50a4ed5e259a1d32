//! Finding the four models in a models folder (DESIGN.md §3).
//!
//! Users arrive with weights laid out in different ways: our documented folder names, their own
//! names listed in a manifest, or a Hugging Face hub cache they already downloaded with the hub
//! tools. We accept all three, and when names do not settle it we read each folder's config to
//! see what it holds (`model_type`, or a TRIBE `config.yaml`). Nothing is ever downloaded.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a model folder is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The TRIBE v2 brain model (config.yaml + best.ckpt or model.safetensors).
    Brain,
    /// LLaMA-3.2-3B (or Qwen3 for the mini variant).
    Text,
    /// Wav2Vec-BERT 2.0.
    Audio,
    /// V-JEPA2 (ViT-g, or ViT-L for the mini variant).
    Video,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Brain, Role::Text, Role::Audio, Role::Video];

    pub fn key(self) -> &'static str {
        match self {
            Role::Brain => "tribe",
            Role::Text => "text",
            Role::Audio => "audio",
            Role::Video => "video",
        }
    }

    /// Folder names we look for first, in order (DESIGN.md §3 and the released variants).
    fn known_names(self) -> &'static [&'static str] {
        match self {
            Role::Brain => &["tribev2", "tribev2-mini"],
            Role::Text => &["Llama-3.2-3B", "Qwen3-0.6B"],
            Role::Audio => &["w2v-bert-2.0"],
            Role::Video => &["vjepa2-vitg-fpc64-256", "vjepa2-vitl-fpc64-256"],
        }
    }

    /// Hub repository ids, for `models--org--name` cache folders.
    fn hub_ids(self) -> &'static [&'static str] {
        match self {
            Role::Brain => &["facebook/tribev2"],
            Role::Text => &["meta-llama/Llama-3.2-3B", "Qwen/Qwen3-0.6B"],
            Role::Audio => &["facebook/w2v-bert-2.0"],
            Role::Video => &[
                "facebook/vjepa2-vitg-fpc64-256",
                "facebook/vjepa2-vitl-fpc64-256",
            ],
        }
    }
}

/// The resolved folders.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSet {
    pub brain: PathBuf,
    pub text: Option<PathBuf>,
    pub audio: Option<PathBuf>,
    pub video: Option<PathBuf>,
}

/// What a folder holds, from its files.
pub fn detect_role(dir: &Path) -> Option<Role> {
    if dir.join("config.yaml").is_file()
        && (dir.join("best.ckpt").is_file() || dir.join("model.safetensors").is_file())
    {
        return Some(Role::Brain);
    }
    let cfg = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&cfg).ok()?;
    match v.get("model_type")?.as_str()? {
        "llama" | "qwen3" | "qwen2" => Some(Role::Text),
        "wav2vec2-bert" => Some(Role::Audio),
        "vjepa2" => Some(Role::Video),
        _ => None,
    }
}

/// The snapshot folder of a hub cache entry `models--org--name`: the one `refs/main` names, else
/// the most recently modified snapshot.
fn hub_snapshot(entry: &Path) -> Option<PathBuf> {
    let snaps = entry.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(entry.join("refs/main")) {
        let p = snaps.join(rev.trim());
        if p.is_dir() {
            return Some(p);
        }
    }
    std::fs::read_dir(&snaps)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// A manifest (`tribe-models.json`) maps roles to folders: `{"tribe": "my-tribe", "text": "..."}`.
fn manifest(dir: &Path) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let p = dir.join("tribe-models.json");
    let Ok(s) = std::fs::read_to_string(&p) else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_str(&s).map_err(|e| Error::Json {
        path: p.clone(),
        message: e.to_string(),
        fix: r#"write {"tribe": "<folder>", "text": "<folder>", "audio": "<folder>", "video": "<folder>"}"#.into(),
    })?;
    match v {
        serde_json::Value::Object(m) => Ok(Some(m)),
        _ => Err(Error::Json {
            path: p,
            message: "expected a JSON object".into(),
            fix: "map role names to folders".into(),
        }),
    }
}

/// Find the folder for one role.
pub fn find_role(models_dir: &Path, role: Role) -> Result<Option<PathBuf>> {
    if let Some(m) = manifest(models_dir)?
        && let Some(name) = m.get(role.key()).and_then(|v| v.as_str())
    {
        let p = models_dir.join(name);
        let p = if p.join("snapshots").is_dir() {
            hub_snapshot(&p).unwrap_or(p)
        } else {
            p
        };
        if detect_role(&p) != Some(role) {
            return Err(Error::Model {
                path: p,
                message: format!(
                    "tribe-models.json names this folder for '{}', but it does not hold such a model",
                    role.key()
                ),
                fix: "check the manifest and the folder's config".into(),
            });
        }
        return Ok(Some(p));
    }
    for name in role.known_names() {
        let p = models_dir.join(name);
        if detect_role(&p) == Some(role) {
            return Ok(Some(p));
        }
    }
    for id in role.hub_ids() {
        let entry = models_dir.join(format!("models--{}", id.replace('/', "--")));
        if let Some(s) = hub_snapshot(&entry)
            && detect_role(&s) == Some(role)
        {
            return Ok(Some(s));
        }
    }
    // Last resort: any folder whose config says what it is.
    let mut found: Vec<PathBuf> = std::fs::read_dir(models_dir)
        .map_err(|e| Error::io(models_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && detect_role(p) == Some(role))
        .collect();
    found.sort();
    Ok(found.into_iter().next())
}

/// Resolve the models needed for `needed` roles; the brain model is always needed.
pub fn resolve(models_dir: &Path, needed: &[Role]) -> Result<ModelSet> {
    let layout_fix = format!(
        "put HF-layout folders in {}: tribev2/ (config.yaml, best.ckpt), Llama-3.2-3B/, w2v-bert-2.0/, vjepa2-vitg-fpc64-256/ \
         (or a tribe-models.json manifest, or a Hugging Face hub cache); see README.md 'Models'",
        models_dir.display()
    );
    if !models_dir.is_dir() {
        return Err(Error::Model {
            path: models_dir.to_path_buf(),
            message: "the models folder does not exist".into(),
            fix: layout_fix,
        });
    }
    let get = |role: Role| -> Result<Option<PathBuf>> {
        let p = find_role(models_dir, role)?;
        if p.is_none() && (role == Role::Brain || needed.contains(&role)) {
            return Err(Error::Model {
                path: models_dir.to_path_buf(),
                message: format!(
                    "no {} model found",
                    match role {
                        Role::Brain => "TRIBE v2 brain",
                        Role::Text => "text (Llama-3.2-3B or Qwen3)",
                        Role::Audio => "audio (w2v-bert-2.0)",
                        Role::Video => "video (V-JEPA2)",
                    }
                ),
                fix: layout_fix.clone(),
            });
        }
        Ok(p)
    };
    Ok(ModelSet {
        brain: get(Role::Brain)?.expect("checked above"),
        text: get(Role::Text)?,
        audio: get(Role::Audio)?,
        video: get(Role::Video)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folder naming only: the tokenizer inside is gzipped in the fixture, which naming ignores.
    fn tiny() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models-tiny")
    }

    #[test]
    fn finds_the_tiny_models_by_name() {
        let s = resolve(&tiny(), &[Role::Text, Role::Audio, Role::Video]).unwrap();
        assert!(s.brain.ends_with("tribev2"));
        assert!(s.text.unwrap().ends_with("Llama-3.2-3B"));
        assert!(s.audio.unwrap().ends_with("w2v-bert-2.0"));
        assert!(s.video.unwrap().ends_with("vjepa2-vitg-fpc64-256"));
    }

    #[test]
    fn hub_cache_and_config_detection() {
        let d = tempfile::tempdir().unwrap();
        // Hub cache layout for the audio model.
        let snap = d
            .path()
            .join("models--facebook--w2v-bert-2.0/snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(d.path().join("models--facebook--w2v-bert-2.0/refs")).unwrap();
        std::fs::write(
            d.path().join("models--facebook--w2v-bert-2.0/refs/main"),
            "abc123",
        )
        .unwrap();
        std::fs::copy(
            tiny().join("w2v-bert-2.0/config.json"),
            snap.join("config.json"),
        )
        .unwrap();
        assert_eq!(find_role(d.path(), Role::Audio).unwrap(), Some(snap));
        // An oddly named folder found by its config.
        let odd = d.path().join("my-llama");
        std::fs::create_dir_all(&odd).unwrap();
        std::fs::copy(
            tiny().join("Llama-3.2-3B/config.json"),
            odd.join("config.json"),
        )
        .unwrap();
        assert_eq!(find_role(d.path(), Role::Text).unwrap(), Some(odd));
        // No brain model: a clear model error (exit 78).
        let e = resolve(d.path(), &[]).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::MODEL_ERROR);
        assert!(e.to_string().contains("TRIBE"));
    }
}
