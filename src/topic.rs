//! Topic filter and shared group validation (MQTT 3.1.1 §4.7, MQTT 5 §4.7–4.8).

/// Why `filter` is not a valid MQTT topic filter, or `None` if it is.
pub(crate) fn filter_problem(filter: &str) -> Option<&'static str> {
    if filter.is_empty() {
        return Some("a topic filter must not be empty");
    }
    if filter.len() > 65_535 {
        return Some("a topic filter must be at most 65535 bytes");
    }
    if filter.contains('\0') {
        return Some("a topic filter must not contain NUL");
    }
    if filter.starts_with("$share/") {
        return Some("do not write the $share/<group>/ prefix; pass the plain filter and set ConsumerBuilder::shared_group(group)");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Some("'#' must be a whole level and the last one (e.g. \"a/b/#\")");
        }
        if level.contains('+') && *level != "+" {
            return Some("'+' must be a whole level (e.g. \"a/+/c\")");
        }
    }
    None
}

/// Why `topic` is not a valid MQTT topic name (what a PUBLISH is sent to), or `None`.
pub(crate) fn name_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        return Some("a topic name must not be empty");
    }
    if topic.len() > 65_535 {
        return Some("a topic name must be at most 65535 bytes");
    }
    if topic.contains('\0') {
        return Some("a topic name must not contain NUL");
    }
    if topic.contains(['+', '#']) {
        return Some(
            "a topic name must not contain the wildcards '+' or '#' (those are for subscriptions)",
        );
    }
    None
}

/// Whether `group` can be used as a shared subscription group name.
pub(crate) fn group_is_valid(group: &str) -> bool {
    !group.is_empty() && !group.contains(['/', '+', '#', '\0'])
}

/// Whether the topic name `topic` matches the filter `filter` (MQTT 4.7 rules).
///
/// Our own rather than rumqttc's `mqttbytes::matches`: that one returns false for every
/// topic starting with `$`, even against an explicit filter such as `$SYS/#`, so a
/// consumer subscribed to `$SYS/...` would never find its subscription.
pub(crate) fn matches(filter: &str, topic: &str) -> bool {
    // Wildcards at the first level never match topics starting with '$'.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) | (None, None) => return true,
            (Some(fl), Some(tl)) if fl == "+" || fl == tl => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_filters_pass() {
        for f in ["a", "a/b", "a/+/c", "+", "#", "a/#", "+/+/#", "/a", "a//b"] {
            assert_eq!(filter_problem(f), None, "{f}");
        }
    }

    #[test]
    fn invalid_filters_are_named() {
        for f in [
            "",
            "a/#/b",
            "a#",
            "a/b#",
            "a+",
            "a/+b/c",
            "#/a",
            "$share/g/a",
        ] {
            assert!(filter_problem(f).is_some(), "{f}");
        }
    }

    #[test]
    fn group_names() {
        assert!(group_is_valid("workers"));
        for g in ["", "a/b", "a+", "#"] {
            assert!(!group_is_valid(g), "{g}");
        }
    }

    #[test]
    fn matching_follows_the_spec() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "x/y"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(!matches("a/b", "a/c"));
        // An explicit `$` filter matches (rumqttc's matcher refuses every `$` topic).
        assert!(matches("$SYS/#", "$SYS/broker/uptime"));
        assert!(!rumqttc::mqttbytes::matches("$SYS/broker/uptime", "$SYS/#"));
    }
}
