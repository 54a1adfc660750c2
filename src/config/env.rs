//! [`Config::from_env`] and [`Config::from_env_prefixed`]: connection settings from
//! environment variables.

use std::ffi::OsString;

use super::Config;
use crate::error::ConfigError;

impl Config {
    /// Connection settings from the environment:
    ///
    /// | variable | | sets |
    /// |---|---|---|
    /// | `MQTT_URL` | required | everything [`from_url`](Self::from_url) reads, query options included |
    /// | `MQTT_USERNAME` | optional | [`username`](Self::username) |
    /// | `MQTT_PASSWORD` | optional | [`password`](Self::password), so the password need not sit in the URL |
    /// | `MQTT_CLIENT_ID` | optional | [`client_id`](Self::client_id) |
    ///
    /// Each setting comes from one place: a user name, password or client id given both
    /// in the URL and in its variable is [`ConfigError::ConflictingOption`] naming
    /// both. An unset `MQTT_URL` is [`ConfigError::MissingEnvVar`]; an empty one, a
    /// variable that is not UTF-8 and an optional variable that is set but empty are
    /// [`ConfigError::InvalidOptionValue`] naming the variable. A URL that does not parse gives the errors of
    /// [`from_url`](Self::from_url). No error shows a password. Nothing else is read
    /// from the environment; further settings can be chained as usual.
    ///
    /// ```
    /// use tower_mqtt::Config;
    /// # std::env::set_var("MQTT_URL", "mqtts://ingest@broker.example.com?proto=v5");
    /// # std::env::set_var("MQTT_PASSWORD", "s3cret");
    /// # std::env::set_var("MQTT_CLIENT_ID", "ingest-7");
    /// // MQTT_URL=mqtts://ingest@broker.example.com?proto=v5
    /// // MQTT_PASSWORD=s3cret
    /// // MQTT_CLIENT_ID=ingest-7
    /// let config = Config::from_env()?;
    /// assert_eq!(config.host(), "broker.example.com");
    /// assert_eq!(config.get_username(), Some("ingest"));
    /// assert_eq!(config.get_client_id(), Some("ingest-7"));
    /// # Ok::<(), tower_mqtt::ConfigError>(())
    /// ```
    pub fn from_env() -> Result<Self, ConfigError> {
        from_lookup("", |name| std::env::var_os(name))
    }

    /// As [`from_env`](Self::from_env), with the variable names prefixed by
    /// `prefix` and `_`, for a service that talks to several brokers:
    /// `from_env_prefixed("INGEST")` reads `INGEST_MQTT_URL`, `INGEST_MQTT_USERNAME`,
    /// `INGEST_MQTT_PASSWORD` and `INGEST_MQTT_CLIENT_ID`. A trailing `_` of `prefix`
    /// is not doubled (`"INGEST_"` reads the same names); an empty prefix reads the
    /// names of [`from_env`](Self::from_env).
    ///
    /// ```
    /// use tower_mqtt::Config;
    /// # std::env::set_var("INGEST_MQTT_URL", "mqtt://10.0.0.1?client_id=ingest");
    /// # std::env::set_var("AUDIT_MQTT_URL", "mqtt://10.0.0.2?client_id=audit");
    /// let ingest = Config::from_env_prefixed("INGEST")?;
    /// let audit = Config::from_env_prefixed("AUDIT")?;
    /// assert_eq!(ingest.host(), "10.0.0.1");
    /// assert_eq!(audit.get_client_id(), Some("audit"));
    /// # Ok::<(), tower_mqtt::ConfigError>(())
    /// ```
    pub fn from_env_prefixed(prefix: &str) -> Result<Self, ConfigError> {
        from_lookup(prefix, |name| std::env::var_os(name))
    }
}

/// The settings read through `lookup` (the environment, or a map in tests) from the
/// variables named with `prefix`.
fn from_lookup(
    prefix: &str,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<Config, ConfigError> {
    let prefix = prefix.strip_suffix('_').unwrap_or(prefix);
    let name = |suffix: &str| -> String {
        if prefix.is_empty() {
            suffix.to_owned()
        } else {
            format!("{prefix}_{suffix}")
        }
    };
    let read = |name: &str| read(&lookup, name);

    let url_var = name("MQTT_URL");
    let url = read(&url_var)?.ok_or_else(|| ConfigError::MissingEnvVar {
        var: url_var.clone(),
    })?;
    let mut config = Config::from_url(&url)?;

    if let Some(username) = read(&name("MQTT_USERNAME"))? {
        if config.username.is_some() {
            return Err(ConfigError::ConflictingOption {
                option: name("MQTT_USERNAME"),
                other: "the user name in the URL of the MQTT_URL variable",
                resolution: "give the user name in one place: drop user@ from the URL, or unset the variable",
            });
        }
        config = config.username(username);
    }
    if let Some(password) = read(&name("MQTT_PASSWORD"))? {
        if config.password.is_some() {
            return Err(ConfigError::ConflictingOption {
                option: name("MQTT_PASSWORD"),
                other: "the password in the URL of the MQTT_URL variable",
                resolution: "give the password in one place: keep it out of the URL (mqtt://user@host), or unset the variable",
            });
        }
        config = config.password(password);
    }
    if let Some(client_id) = read(&name("MQTT_CLIENT_ID"))? {
        if config.client_id.is_some() {
            return Err(ConfigError::ConflictingOption {
                option: name("MQTT_CLIENT_ID"),
                other: "client_id in the query of the URL of the MQTT_URL variable",
                resolution: "give the client id in one place: drop client_id= from the URL, or unset the variable",
            });
        }
        config = config.client_id(client_id);
    }
    Ok(config)
}

/// The value of variable `name` through `lookup`, if set; never shown in an error.
fn read(
    lookup: &impl Fn(&str) -> Option<OsString>,
    name: &str,
) -> Result<Option<String>, ConfigError> {
    let invalid = |expected| ConfigError::InvalidOptionValue {
        option: name.to_owned(),
        expected,
    };
    match lookup(name) {
        None => Ok(None),
        Some(value) if value.is_empty() => Err(invalid(
            "a non-empty value (the variable is set but empty); unset it to leave the setting out",
        )),
        Some(value) => value
            .into_string()
            .map(Some)
            .map_err(|_| invalid("UTF-8 text (the variable's value is not UTF-8)")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::config::{ProtoVer, Secret};

    /// `from_lookup` over the given variables.
    fn from_vars(prefix: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        from_lookup(prefix, |name| vars.get(name).cloned())
    }

    #[test]
    fn the_url_is_parsed_as_by_from_url_query_included() {
        let c = from_vars(
            "",
            &[(
                "MQTT_URL",
                "mqtts://al%69ce:p%40ss@h:8884?client_id=ingest&proto=v5&keepalive=10&clean_start=true",
            )],
        )
        .unwrap();
        let direct = Config::from_url(
            "mqtts://alice:p%40ss@h:8884?client_id=ingest&proto=v5&keepalive=10&clean_start=true",
        )
        .unwrap();
        assert_eq!(format!("{c:?}"), format!("{direct:?}"));
        assert_eq!(c.get_proto_ver(), ProtoVer::V5);
        assert_eq!(c.get_keepalive(), Duration::from_secs(10));
        assert_eq!(c.password, Some(Secret("p@ss".into())));
    }

    #[test]
    fn credentials_and_client_id_come_from_their_variables() {
        let c = from_vars(
            "",
            &[
                ("MQTT_URL", "mqtt://h"),
                ("MQTT_USERNAME", "ingest"),
                ("MQTT_PASSWORD", "p@ss:w%41rd"),
                ("MQTT_CLIENT_ID", "ingest-1"),
            ],
        )
        .unwrap();
        assert_eq!(c.get_username(), Some("ingest"));
        // Taken as is: no percent-decoding outside the URL.
        assert_eq!(c.password, Some(Secret("p@ss:w%41rd".into())));
        assert_eq!(c.get_client_id(), Some("ingest-1"));

        // The usual split: the user in the URL, the password in its own variable.
        let c = from_vars(
            "",
            &[("MQTT_URL", "mqtt://ingest@h"), ("MQTT_PASSWORD", "pw")],
        )
        .unwrap();
        assert_eq!(c.get_username(), Some("ingest"));
        assert_eq!(c.password, Some(Secret("pw".into())));
    }

    #[test]
    fn a_prefix_names_other_variables() {
        let vars = [
            ("MQTT_URL", "mqtt://default"),
            ("INGEST_MQTT_URL", "mqtt://ingest-broker?client_id=a"),
            ("INGEST_MQTT_PASSWORD", "pw"),
            ("INGEST_MQTT_USERNAME", "u"),
        ];
        for prefix in ["INGEST", "INGEST_"] {
            let c = from_vars(prefix, &vars).unwrap();
            assert_eq!(c.host(), "ingest-broker");
            assert_eq!(c.get_client_id(), Some("a"));
            assert_eq!(c.get_username(), Some("u"));
        }
        let c = from_vars("", &vars).unwrap();
        assert_eq!((c.host(), c.get_username()), ("default", None));

        let e = from_vars("AUDIT", &vars).unwrap_err();
        assert!(
            matches!(&e, ConfigError::MissingEnvVar { var } if var == "AUDIT_MQTT_URL"),
            "{e:?}"
        );
    }

    #[test]
    fn a_missing_or_empty_url_names_the_variable_and_the_fix() {
        let e = from_vars("", &[("MQTT_PASSWORD", "hunter2")]).unwrap_err();
        match &e {
            ConfigError::MissingEnvVar { var } => assert_eq!(var, "MQTT_URL"),
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().starts_with("MQTT_URL: "), "{e}");
        assert!(e.to_string().contains("mqtt://"), "{e}");

        let e = from_vars("", &[("MQTT_URL", "")]).unwrap_err();
        assert!(
            matches!(&e, ConfigError::InvalidOptionValue { option, expected }
                if option == "MQTT_URL" && expected.contains("empty")),
            "{e:?}"
        );
    }

    #[test]
    fn empty_optional_variables_are_rejected_not_ignored() {
        for var in ["MQTT_USERNAME", "MQTT_PASSWORD", "MQTT_CLIENT_ID"] {
            let e = from_vars("", &[("MQTT_URL", "mqtt://h"), (var, "")]).unwrap_err();
            assert!(
                matches!(&e, ConfigError::InvalidOptionValue { option, .. } if option == var),
                "{var}: {e:?}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_value_that_is_not_utf8_names_the_variable_without_showing_it() {
        use std::os::unix::ffi::OsStringExt;
        let bad = || OsString::from_vec(b"hunter2\xff".to_vec());
        for var in [
            "MQTT_URL",
            "MQTT_USERNAME",
            "MQTT_PASSWORD",
            "MQTT_CLIENT_ID",
        ] {
            let e = from_lookup("", |name| match name {
                n if n == var => Some(bad()),
                "MQTT_URL" => Some("mqtt://h".into()),
                _ => None,
            })
            .unwrap_err();
            match &e {
                ConfigError::InvalidOptionValue { option, expected } => {
                    assert_eq!(option, var);
                    assert!(expected.contains("UTF-8"), "{expected}");
                }
                other => panic!("{var}: {other:?}"),
            }
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        }
    }

    #[test]
    fn a_setting_in_both_the_url_and_its_variable_conflicts() {
        for (url, var, value, in_url) in [
            (
                "mqtt://h?client_id=a",
                "MQTT_CLIENT_ID",
                "b",
                "client_id in the query",
            ),
            (
                "mqtt://u:hunter2@h",
                "MQTT_PASSWORD",
                "hunter3",
                "the password in the URL",
            ),
            (
                "mqtt://u@h",
                "MQTT_USERNAME",
                "v",
                "the user name in the URL",
            ),
            // Even with equal values: one place for each setting.
            (
                "mqtt://h?client_id=a",
                "MQTT_CLIENT_ID",
                "a",
                "client_id in the query",
            ),
        ] {
            let e = from_vars("", &[("MQTT_URL", url), (var, value)]).unwrap_err();
            match &e {
                ConfigError::ConflictingOption { option, other, .. } => {
                    assert_eq!(option, var);
                    assert!(other.contains(in_url), "{other}");
                    assert!(other.contains("MQTT_URL"), "{other}");
                }
                other => panic!("{var}: {other:?}"),
            }
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("hunter"), "{shown}");
        }
        let e = from_vars(
            "INGEST",
            &[
                ("INGEST_MQTT_URL", "mqtt://h?client_id=a"),
                ("INGEST_MQTT_CLIENT_ID", "b"),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(&e, ConfigError::ConflictingOption { option, .. } if option == "INGEST_MQTT_CLIENT_ID"),
            "{e:?}"
        );
    }

    #[test]
    fn url_errors_pass_through_without_the_password() {
        let e = from_vars("", &[("MQTT_URL", "mqtt://u:hunter2@h:0")]).unwrap_err();
        assert!(matches!(e, ConfigError::InvalidUrl { .. }), "{e:?}");
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
        let e = from_vars("", &[("MQTT_URL", "mqtt://h?qos=1")]).unwrap_err();
        assert_eq!(e, ConfigError::UnknownOption("qos".into()));
    }
}
