//! Which files the layout never indexes: the validator's default ignores plus `.bidsignore`.
//!
//! `.bidsignore` uses `.gitignore` syntax (the BIDS validator reads it with the `ignore` npm
//! package). We translate each line to globs: a pattern without `/` matches at any depth, a
//! leading `/` anchors it at the dataset root, a trailing `/` matches a folder and everything in
//! it, `*` stays inside one path component and `**` crosses them, `!` re-includes, and the last
//! matching line wins, as in git.

use crate::error::{Error, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::path::Path;

/// Top-level folders that are never raw data (deno validator `src/files/ignore.ts`): derivatives
/// have their own layout, `stimuli/` is opaque and read only through `stim_file`.
const DEFAULT_IGNORED_TOP: &[&str] = &[
    "derivatives",
    "sourcedata",
    "code",
    "stimuli",
    "log",
    "logs",
];

#[derive(Debug)]
pub struct IgnoreRules {
    set: GlobSet,
    /// For each glob in `set`: is it a negation (`!pattern`)?
    negated: Vec<bool>,
    patterns: Vec<String>,
}

impl IgnoreRules {
    /// No `.bidsignore`: only the default ignores apply.
    pub fn empty() -> Self {
        IgnoreRules {
            set: GlobSet::empty(),
            negated: Vec::new(),
            patterns: Vec::new(),
        }
    }

    /// Reads `<root>/.bidsignore` when it exists.
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join(".bidsignore");
        match std::fs::read(&path) {
            Ok(bytes) => Self::parse(&String::from_utf8_lossy(&bytes), &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::empty()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Parses `.bidsignore` text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut b = GlobSetBuilder::new();
        let mut negated = Vec::new();
        let mut patterns = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r').trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (neg, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, line.strip_prefix('\\').unwrap_or(line)),
            };
            for glob in translate(pat) {
                let g = GlobBuilder::new(&glob)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| Error::DatasetInvalid {
                        path: path.to_path_buf(),
                        reason: format!(
                            "line {}: pattern '{line}' is not a valid glob: {e}",
                            i + 1
                        ),
                        fix: "fix or remove the line (patterns use .gitignore syntax)".into(),
                    })?;
                b.add(g);
                negated.push(neg);
            }
            patterns.push(line.to_string());
        }
        let set = b.build().map_err(|e| Error::DatasetInvalid {
            path: path.to_path_buf(),
            reason: format!("cannot compile patterns: {e}"),
            fix: "fix the .bidsignore patterns (.gitignore syntax)".into(),
        })?;
        Ok(IgnoreRules {
            set,
            negated,
            patterns,
        })
    }

    /// The patterns as written (for the dry-run summary).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// `rel` is relative to the dataset root, with `/` separators.
    pub fn is_ignored(&self, rel: &str) -> bool {
        let top = rel.split('/').next().unwrap_or("");
        if DEFAULT_IGNORED_TOP.contains(&top) {
            return true;
        }
        if rel.split('/').any(|c| c.starts_with('.')) {
            return true;
        }
        let hits = self.set.matches(rel);
        match hits.iter().max() {
            Some(&last) => !self.negated[last],
            None => false,
        }
    }
}

/// One `.gitignore` line -> globs relative to the root: the path itself and, because a matched
/// folder hides everything under it, `<path>/**`. A trailing `/` (folder only) is treated like a
/// plain pattern: a BIDS file is never named like the folder someone meant to hide.
fn translate(pat: &str) -> Vec<String> {
    let p = pat.trim_end_matches('/');
    let anchored = p.contains('/');
    let p = p.trim_start_matches('/');
    let base = if anchored || p.starts_with("**") {
        p.to_string()
    } else {
        format!("**/{p}")
    };
    vec![format!("{base}/**"), base]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> IgnoreRules {
        IgnoreRules::parse(text, Path::new(".bidsignore")).unwrap()
    }

    #[test]
    fn gitignore_semantics() {
        let r = rules(
            "run-*_echo-*_FLASH.json\n**/sub-*_ses-mri_run-*_echo-*_FLASH.nii.gz\n# comment\n/extra/\n*.txt\n!keep.txt\n",
        );
        assert!(r.is_ignored("run-1_echo-1_FLASH.json"));
        assert!(r.is_ignored("sub-01/anat/run-1_echo-1_FLASH.json"));
        assert!(r.is_ignored("sub-01/ses-mri/anat/sub-01_ses-mri_run-1_echo-1_FLASH.nii.gz"));
        assert!(r.is_ignored("extra/a/b.nii"));
        assert!(!r.is_ignored("sub-01/extra/b.nii"));
        assert!(r.is_ignored("sub-01/func/extra_file_that_is_not_bids.txt"));
        assert!(!r.is_ignored("sub-01/func/keep.txt"));
        assert!(!r.is_ignored("sub-01/func/sub-01_task-a_bold.nii"));
        // `*` does not cross folders.
        let r = rules("sub-*_bold.nii\nfoo/*.nii\n");
        assert!(r.is_ignored("sub-01/func/sub-01_bold.nii"));
        assert!(r.is_ignored("foo/a.nii"));
        assert!(!r.is_ignored("foo/x/a.nii"));
    }

    #[test]
    fn default_ignores() {
        let r = IgnoreRules::empty();
        assert!(r.is_ignored("derivatives/fmriprep/sub-01/func/x_bold.nii"));
        assert!(r.is_ignored("stimuli/a.mp4"));
        assert!(r.is_ignored(".git/config"));
        assert!(r.is_ignored("sub-01/.DS_Store"));
        assert!(!r.is_ignored("sub-01/func/sub-01_task-a_bold.nii"));
    }
}
