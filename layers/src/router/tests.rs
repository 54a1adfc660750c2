use std::sync::{Arc, Mutex};

use tower::{service_fn, ServiceExt};
use tower_mqtt::testing::{disposition, test_message};
use tower_mqtt::{AckPolicy, BoxError, Disposition, Message, Permanent};

use super::*;

/// (route name, params) of every call.
type Seen = Arc<Mutex<Vec<(&'static str, Option<Params>)>>>;

/// A handler that records that route `name` took the message.
fn handler(
    name: &'static str,
    seen: &Seen,
) -> impl Service<Message, Response = (), Error = BoxError, Future = impl Send> + Clone + Send {
    let seen = seen.clone();
    service_fn(move |m: Message| {
        seen.lock().unwrap().push((name, Params::of(&m).cloned()));
        async { Ok::<_, BoxError>(()) }
    })
}

fn router(filters: &[&'static str], seen: &Seen) -> Router {
    filters.iter().fold(Router::new(), |r, f| {
        r.route(f, handler(f, seen)).expect("a valid route")
    })
}

/// Which route took `topic`.
async fn winner(router: &Router, seen: &Seen, topic: &str) -> Option<&'static str> {
    seen.lock().unwrap().clear();
    let _ = router.clone().oneshot(test_message(topic, "x")).await;
    seen.lock().unwrap().first().map(|(name, _)| *name)
}

#[tokio::test]
async fn the_most_specific_route_wins_whatever_the_order_they_were_added_in() {
    let seen = Seen::default();
    let mut filters = vec![
        "devices/#",
        "devices/+/telemetry",
        "devices/7/#",
        "#",
        "devices/7/telemetry/#",
    ];
    for _ in 0..filters.len() {
        filters.rotate_left(1);
        let r = router(&filters, &seen);
        assert_eq!(
            winner(&r, &seen, "devices/7/telemetry").await,
            Some("devices/7/telemetry/#")
        );
        assert_eq!(
            winner(&r, &seen, "devices/7/status").await,
            Some("devices/7/#")
        );
        assert_eq!(
            winner(&r, &seen, "devices/8/telemetry").await,
            Some("devices/+/telemetry")
        );
        assert_eq!(
            winner(&r, &seen, "devices/8/status").await,
            Some("devices/#")
        );
        assert_eq!(winner(&r, &seen, "devices").await, Some("devices/#"));
        assert_eq!(winner(&r, &seen, "alerts/1").await, Some("#"));
    }
}

#[tokio::test]
async fn exact_beats_plus_beats_hash_at_the_first_differing_level() {
    let seen = Seen::default();
    let r = router(&["+/b", "a/#", "a/+", "a"], &seen);
    assert_eq!(
        winner(&r, &seen, "a/b").await,
        Some("a/+"),
        "level 1: a beats +"
    );
    assert_eq!(winner(&r, &seen, "a").await, Some("a"), "no level beats #");
    assert_eq!(winner(&r, &seen, "x/b").await, Some("+/b"));
    assert_eq!(winner(&r, &seen, "a/b/c").await, Some("a/#"));
}

#[tokio::test]
async fn captures_by_name_by_index_and_the_rest() {
    let seen = Seen::default();
    let r = router(&["sites/{site}/+/#", "x/+/{b}"], &seen);
    winner(&r, &seen, "sites/berlin/pump-7/temp/inlet").await;
    let params = seen.lock().unwrap()[0].1.clone().expect("params");
    assert_eq!(params.route(), "sites/{site}/+/#");
    assert_eq!(params.get("site"), Some("berlin"));
    assert_eq!(
        (params.index(0), params.index(1), params.index(2)),
        (Some("berlin"), Some("pump-7"), None)
    );
    assert_eq!((params.len(), params.rest()), (2, Some("temp/inlet")));
    winner(&r, &seen, "sites/berlin/pump-7").await;
    let params = seen.lock().unwrap()[0].1.clone().expect("params");
    assert_eq!(params.rest(), Some(""), "# matched no level");
    winner(&r, &seen, "x/1/2").await;
    let params = seen.lock().unwrap()[0].1.clone().expect("params");
    assert_eq!(
        (params.get("b"), params.index(0), params.rest()),
        (Some("2"), Some("1"), None)
    );
    assert_eq!(params.get("site"), None);
}

#[tokio::test]
async fn wildcards_at_the_first_level_do_not_match_dollar_topics() {
    let seen = Seen::default();
    let r = router(&["#", "+/broker/uptime", "$SYS/#"], &seen);
    assert_eq!(
        winner(&r, &seen, "$SYS/broker/uptime").await,
        Some("$SYS/#")
    );
    let r = router(&["#"], &seen);
    assert_eq!(winner(&r, &seen, "$SYS/broker/uptime").await, None);
}

#[tokio::test]
async fn no_route_is_a_permanent_error_by_default() {
    let seen = Seen::default();
    let r = router(&["devices/#"], &seen);
    let error = r
        .clone()
        .oneshot(test_message("alerts/7", "x"))
        .await
        .unwrap_err();
    assert!(error.is::<Permanent>(), "{error}");
    let no_route = std::error::Error::source(&*error)
        .and_then(|e| e.downcast_ref::<NoRoute>())
        .expect("a NoRoute inside");
    assert_eq!(no_route.topic(), "alerts/7");
    // Acknowledged, never redelivered, whatever the consumer's rule.
    let d = disposition(r, test_message("alerts/7", "x"), AckPolicy::default()).await;
    assert_eq!(d, Disposition::Reject);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_fallback_takes_what_no_route_matches_without_params() {
    let seen = Seen::default();
    let r = router(&["devices/#"], &seen).fallback(handler("fallback", &seen));
    assert_eq!(winner(&r, &seen, "alerts/7").await, Some("fallback"));
    assert_eq!(seen.lock().unwrap()[0].1, None);
}

#[tokio::test]
async fn errors_of_a_route_pass_through() {
    let r = Router::new()
        .route(
            "t",
            service_fn(|_: Message| async { Err::<(), _>(std::io::Error::other("disk full")) }),
        )
        .unwrap();
    let error = r.oneshot(test_message("t", "x")).await.unwrap_err();
    assert!(error.is::<std::io::Error>(), "{error}");
}

#[test]
fn bad_routes_are_typed_errors_naming_the_filter_and_the_fix() {
    let seen = Seen::default();
    let cases = [
        ("", "must not be empty"),
        ("a/#/b", "'#' must be a whole level and the last one"),
        ("a/b#", "'#' must be a whole level"),
        ("a/+b", "'+' must be a whole level"),
        ("a/{dev ice}", "only ASCII letters"),
        ("a/{x}/{x}", "appears twice"),
        ("a/x{y}", "a capture is a whole level"),
        ("a/\0", "NUL"),
    ];
    for (filter, reason) in cases {
        let error = Router::new()
            .route(filter, handler("x", &seen))
            .unwrap_err();
        assert_eq!(error.filter(), filter);
        assert!(error.to_string().contains(reason), "{filter:?}: {error}");
    }
    let error = Router::new()
        .route("a/{x}", handler("x", &seen))
        .unwrap()
        .route("a/+", handler("y", &seen))
        .unwrap_err();
    assert!(error.to_string().contains("same filter"), "{error}");
}

#[test]
fn filters_are_the_mqtt_filters_in_the_order_added() {
    let seen = Seen::default();
    let r = router(&["a/#", "a/{x}/b", "a/b/c"], &seen);
    assert_eq!(r.filters(), ["a/#", "a/+/b", "a/b/c"]);
    assert_eq!(
        format!("{r:?}"),
        r#"Router { routes: ["a/b/c", "a/{x}/b", "a/#"], .. }"#
    );
}
