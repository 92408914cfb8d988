//! Choosing parameters by name pattern, so that a method says "the body" or "the head"
//! without knowing a model's layers.
//!
//! Patterns are globs over the dotted parameter names: `*` matches any run of characters
//! (dots included). Registered models name their parts `body.` and `head.`, so `head.*` is the
//! classifier; `parts.rs` finds the parts of other models.

/// A set of glob patterns, minus exceptions: a name is selected when a pattern matches it
/// and no exception does.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Selector {
    patterns: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
}

/// Names of normalization layers' running statistics: buffers, not trained parameters
/// (PyTorch's BatchNorm also counts its batches; registered models do not).
pub const RUNNING_STATS: [&str; 3] = ["*.running_mean", "*.running_var", "*.num_batches_tracked"];
/// Normalization layers (parameters and statistics), as the registered models name them.
pub const NORM_LAYERS: [&str; 2] = ["*.bn*", "*.downsample.1.*"];

impl Selector {
    pub fn new<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Self {
        Self { patterns: patterns.into_iter().map(Into::into).collect(), except: Vec::new() }
    }

    /// The same selection without the names that `patterns` match.
    pub fn except<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.except.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Selects nothing.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn exceptions(&self) -> &[String] {
        &self.except
    }

    /// Selects every parameter.
    pub fn all() -> Self {
        Self::new(["*"])
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| glob_match(p, name)) && !self.except.iter().any(|p| glob_match(p, name))
    }
}

/// Glob matching with `*` only; iterative with backtracking to the last star.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_prefixes_suffixes_and_middles() {
        assert!(glob_match("head.*", "head.weight"));
        assert!(!glob_match("head.*", "body.fc1.weight"));
        assert!(glob_match("*.bn*", "body.layer1.0.bn1.running_mean"));
        assert!(glob_match("*", ""));
        assert!(glob_match("body.*.weight", "body.conv1.weight"));
        assert!(!glob_match("body.*.weight", "body.conv1.bias"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn selector_takes_any_matching_pattern() {
        let s = Selector::new(["head.*", "*.bn*"]);
        assert!(s.matches("head.bias"));
        assert!(s.matches("body.bn1.weight"));
        assert!(!s.matches("body.conv1.weight"));
        assert!(Selector::all().matches("anything"));
        assert!(!Selector::none().matches("anything"));
    }

    #[test]
    fn exceptions_remove_names_from_the_selection() {
        let trainable = Selector::all().except(RUNNING_STATS);
        assert!(trainable.matches("body.bn1.weight"));
        assert!(!trainable.matches("body.bn1.running_mean"));
        let no_norm = Selector::all().except(NORM_LAYERS);
        assert!(!no_norm.matches("body.bn2.bias"));
        assert!(!no_norm.matches("body.layer2.0.downsample.1.weight"));
        assert!(no_norm.matches("body.layer2.0.downsample.0.weight"));
        assert!(no_norm.matches("head.weight"));
    }
}
