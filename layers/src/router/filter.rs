//! Route filters: MQTT topic filters whose single-level wildcards may carry a name,
//! parsed once, matched level by level with the captures kept.

use super::RouteError;

/// One level of a route filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(String),
    /// `+`, or `{name}`.
    One(Option<String>),
    /// `#`: the rest, zero or more levels.
    Rest,
}

impl Level {
    /// Lower is more specific: an exact level, then `+`, then `#`.
    fn rank(&self) -> u8 {
        match self {
            Self::Exact(_) => 0,
            Self::One(_) => 1,
            Self::Rest => 2,
        }
    }
}

/// A parsed route filter.
#[derive(Debug, Clone)]
pub(super) struct Filter {
    levels: Vec<Level>,
}

/// What a filter captured from a topic: each single-level wildcard's level (with its
/// name, if any), and what `#` matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Captures {
    pub(super) levels: Vec<(Option<String>, String)>,
    pub(super) rest: Option<String>,
}

impl Filter {
    pub(super) fn parse(filter: &str) -> Result<Self, RouteError> {
        let problem = |reason| RouteError::new(filter, reason);
        if filter.is_empty() {
            return Err(problem("a route filter must not be empty"));
        }
        if filter.contains('\0') {
            return Err(problem("a route filter must not contain NUL"));
        }
        let parts: Vec<&str> = filter.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "#" if i + 1 == parts.len() => Level::Rest,
                "+" => Level::One(None),
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                    let name = &p[1..p.len() - 1];
                    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(problem(
                            "a capture name has only ASCII letters, digits and '_' (e.g. \"devices/{device_id}/telemetry\")",
                        ));
                    }
                    if levels.contains(&Level::One(Some(name.to_owned()))) {
                        return Err(problem(
                            "a capture name appears twice; name each level differently",
                        ));
                    }
                    Level::One(Some(name.to_owned()))
                }
                p if p.contains('#') => {
                    return Err(problem(
                        "'#' must be a whole level and the last one (e.g. \"a/b/#\")",
                    ))
                }
                p if p.contains('+') => {
                    return Err(problem("'+' must be a whole level (e.g. \"a/+/c\")"))
                }
                p if p.contains(['{', '}']) => return Err(problem(
                    "a capture is a whole level \"{name}\" (e.g. \"devices/{device}/telemetry\")",
                )),
                p => Level::Exact(p.to_owned()),
            };
            levels.push(level);
        }
        Ok(Self { levels })
    }

    /// The filter as MQTT writes it (names dropped: `{device}` is `+`), which is what
    /// the consumer subscribes to.
    pub(super) fn mqtt(&self) -> String {
        let levels: Vec<&str> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Exact(s) => s.as_str(),
                Level::One(_) => "+",
                Level::Rest => "#",
            })
            .collect();
        levels.join("/")
    }

    /// Specificity, compared lexicographically: lower is more specific.
    pub(super) fn ranks(&self) -> Vec<u8> {
        self.levels.iter().map(Level::rank).collect()
    }

    /// The captures if `topic` matches (MQTT rules: a wildcard at the first level does
    /// not match a topic starting with `$`).
    pub(super) fn matches(&self, topic: &str) -> Option<Captures> {
        if topic.starts_with('$') && self.levels.first().is_some_and(|l| l.rank() > 0) {
            return None;
        }
        let mut captures = Captures::default();
        let mut offset = 0;
        let mut parts = topic.split('/');
        for level in &self.levels {
            if *level == Level::Rest {
                // Zero levels ("a/#" matches "a") or the remainder after this slash.
                captures.rest = Some(topic.get(offset..).unwrap_or("").to_owned());
                return Some(captures);
            }
            let part = parts.next()?;
            offset += part.len() + 1;
            match level {
                Level::Exact(s) if s != part => return None,
                Level::One(name) => captures.levels.push((name.clone(), part.to_owned())),
                _ => {}
            }
        }
        parts.next().is_none().then_some(captures)
    }
}
