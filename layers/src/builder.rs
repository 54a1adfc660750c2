//! [`ServiceBuilderExt`]: the failure-handling layers as `tower::ServiceBuilder`
//! methods.

use tower::ServiceBuilder;
use tower_layer::Stack;

#[cfg(feature = "batch")]
use crate::batch::BatchLayer;
#[cfg(feature = "catch-panic")]
use crate::catch_panic::CatchPanicLayer;
#[cfg(feature = "dead-letter")]
use crate::dead_letter::DeadLetterLayer;
#[cfg(feature = "json")]
use crate::decode::Json;
#[cfg(feature = "decode")]
use crate::decode::{DecodeLayer, Decoder};
#[cfg(feature = "dedup")]
use crate::dedup::DedupLayer;
#[cfg(feature = "partition")]
use crate::partition::PartitionLayer;
#[cfg(feature = "poison")]
use crate::poison::{InvalidMaxDeliveries, MaxDeliveriesLayer};
#[cfg(feature = "rate-limit")]
use crate::rate_limit::{InvalidRate, SharedRateLimitLayer};
#[cfg(feature = "retry")]
use crate::retry::{RetryLayer, RetryPolicy};

/// Adds this crate's failure-handling layers to [`tower::ServiceBuilder`], so a stack
/// reads top to bottom in the order a message goes through it (each method behind its
/// layer's feature):
///
/// ```
/// # #[cfg(all(feature = "catch-panic", feature = "retry", feature = "json"))] {
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_mqtt::BoxError;
/// use tower_mqtt_layers::decode::Decoded;
/// use tower_mqtt_layers::retry::RetryPolicy;
/// use tower_mqtt_layers::ServiceBuilderExt;
///
/// #[derive(serde::Deserialize)]
/// struct Reading {
///     celsius: f64,
/// }
///
/// let service = ServiceBuilder::new()
///     .catch_panic() //                     a panic fails this message only
///     .retry_messages(RetryPolicy::new(3)) // transient failures: up to 3 calls
///     .timeout(Duration::from_secs(5)) //   per attempt
///     .decode_json::<Reading>() //          invalid JSON: rejected (0x99), never retried
///     .service_fn(|reading: Decoded<Reading>| async move {
///         let _ = reading.value.celsius;
///         Ok::<_, BoxError>(())
///     });
/// # let _ = service;
/// # }
/// ```
///
/// The trait is sealed: it is implemented for `ServiceBuilder` only.
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Retry transient failures with `policy`: [`RetryLayer`].
    #[cfg(feature = "retry")]
    #[must_use]
    fn retry_messages<C>(self, policy: RetryPolicy<C>) -> ServiceBuilder<Stack<RetryLayer<C>, L>>;

    /// Decode each payload with `decoder` and hand the inner service a
    /// [`Decoded<T>`](crate::decode::Decoded): [`DecodeLayer`].
    #[cfg(feature = "decode")]
    #[must_use]
    fn decode<T, D>(self, decoder: D) -> ServiceBuilder<Stack<DecodeLayer<D, T>, L>>
    where
        D: Decoder<T>;

    /// Decode each payload as JSON into a `T`: [`DecodeLayer::json`].
    #[cfg(feature = "json")]
    #[must_use]
    fn decode_json<T>(self) -> ServiceBuilder<Stack<DecodeLayer<Json, T>, L>>
    where
        T: serde::de::DeserializeOwned;

    /// Turn a panic in the inner service into an error for that message:
    /// [`CatchPanicLayer`].
    #[cfg(feature = "catch-panic")]
    #[must_use]
    fn catch_panic(self) -> ServiceBuilder<Stack<CatchPanicLayer, L>>;

    /// Publish failures the consumer would drop to the topic `topic(message)` names,
    /// through `publisher`, before they are acknowledged: [`DeadLetterLayer`].
    #[cfg(feature = "dead-letter")]
    #[must_use]
    fn dead_letter<T>(
        self,
        publisher: tower_mqtt::Publisher,
        topic: T,
    ) -> ServiceBuilder<Stack<DeadLetterLayer, L>>
    where
        T: Fn(&tower_mqtt::Message) -> String + Send + Sync + 'static;

    /// Let the inner service see each message at most `limit` times
    /// ([`Message::delivery_count`](tower_mqtt::Message::delivery_count)); later
    /// deliveries fail permanently without calling it: [`MaxDeliveriesLayer`].
    ///
    /// # Errors
    ///
    /// [`InvalidMaxDeliveries::Zero`] when `limit` is 0.
    #[cfg(feature = "poison")]
    fn max_deliveries(
        self,
        limit: u32,
    ) -> Result<ServiceBuilder<Stack<MaxDeliveriesLayer, L>>, InvalidMaxDeliveries>;

    /// Run messages with the same `key(message)` one at a time, in arrival order, and
    /// different keys concurrently: [`PartitionLayer`] (at most
    /// [`DEFAULT_MAX_WAITING`](crate::partition::DEFAULT_MAX_WAITING) messages wait;
    /// `.layer(PartitionLayer::new(key).max_waiting(n)?)` for another bound).
    #[cfg(feature = "partition")]
    #[must_use]
    fn partition_by<F, K>(self, key: F) -> ServiceBuilder<Stack<PartitionLayer<F>, L>>
    where
        F: Fn(&tower_mqtt::Message) -> K + Send + Sync + 'static,
        K: std::hash::Hash + Eq + Clone + Send + 'static;

    /// At most `num` calls per `per` over every clone of the stack (all the consumer's
    /// connections): [`SharedRateLimitLayer`]. `num == 0` or a zero `per` is an
    /// [`InvalidRate`].
    #[cfg(feature = "rate-limit")]
    fn shared_rate_limit(
        self,
        num: u32,
        per: std::time::Duration,
    ) -> Result<ServiceBuilder<Stack<SharedRateLimitLayer, L>>, InvalidRate>;

    /// Collect requests into batches for the inner `Service<Batch<R, K>>`:
    /// [`BatchLayer`] (see [`crate::batch`]).
    #[cfg(feature = "batch")]
    #[must_use]
    fn batch<R, K>(self, batches: BatchLayer<R, K>) -> ServiceBuilder<Stack<BatchLayer<R, K>, L>>;

    /// Call the inner service once per message id; copies of a processed id are
    /// answered `Ok` without a call: [`DedupLayer`] (see [`crate::dedup`]).
    #[cfg(feature = "dedup")]
    #[must_use]
    fn dedup(self, dedup: DedupLayer) -> ServiceBuilder<Stack<DedupLayer, L>>;
}

impl<L> sealed::Sealed for ServiceBuilder<L> {}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "retry")]
    fn retry_messages<C>(self, policy: RetryPolicy<C>) -> ServiceBuilder<Stack<RetryLayer<C>, L>> {
        self.layer(RetryLayer::new(policy))
    }

    #[cfg(feature = "decode")]
    fn decode<T, D>(self, decoder: D) -> ServiceBuilder<Stack<DecodeLayer<D, T>, L>>
    where
        D: Decoder<T>,
    {
        self.layer(DecodeLayer::new(decoder))
    }

    #[cfg(feature = "json")]
    fn decode_json<T>(self) -> ServiceBuilder<Stack<DecodeLayer<Json, T>, L>>
    where
        T: serde::de::DeserializeOwned,
    {
        self.layer(DecodeLayer::json())
    }

    #[cfg(feature = "catch-panic")]
    fn catch_panic(self) -> ServiceBuilder<Stack<CatchPanicLayer, L>> {
        self.layer(CatchPanicLayer::new())
    }

    #[cfg(feature = "dead-letter")]
    fn dead_letter<T>(
        self,
        publisher: tower_mqtt::Publisher,
        topic: T,
    ) -> ServiceBuilder<Stack<DeadLetterLayer, L>>
    where
        T: Fn(&tower_mqtt::Message) -> String + Send + Sync + 'static,
    {
        self.layer(DeadLetterLayer::new(publisher, topic))
    }

    #[cfg(feature = "poison")]
    fn max_deliveries(
        self,
        limit: u32,
    ) -> Result<ServiceBuilder<Stack<MaxDeliveriesLayer, L>>, InvalidMaxDeliveries> {
        Ok(self.layer(MaxDeliveriesLayer::new(limit)?))
    }

    #[cfg(feature = "partition")]
    fn partition_by<F, K>(self, key: F) -> ServiceBuilder<Stack<PartitionLayer<F>, L>>
    where
        F: Fn(&tower_mqtt::Message) -> K + Send + Sync + 'static,
        K: std::hash::Hash + Eq + Clone + Send + 'static,
    {
        self.layer(PartitionLayer::new(key))
    }

    #[cfg(feature = "rate-limit")]
    fn shared_rate_limit(
        self,
        num: u32,
        per: std::time::Duration,
    ) -> Result<ServiceBuilder<Stack<SharedRateLimitLayer, L>>, InvalidRate> {
        Ok(self.layer(SharedRateLimitLayer::new(num, per)?))
    }

    #[cfg(feature = "batch")]
    fn batch<R, K>(self, batches: BatchLayer<R, K>) -> ServiceBuilder<Stack<BatchLayer<R, K>, L>> {
        self.layer(batches)
    }

    #[cfg(feature = "dedup")]
    fn dedup(self, dedup: DedupLayer) -> ServiceBuilder<Stack<DedupLayer, L>> {
        self.layer(dedup)
    }
}

mod sealed {
    #[allow(unreachable_pub)] // Sealed: public in a private module, so nobody can name it.
    pub trait Sealed {}
}

/// The whole stack of the example above, on messages made by `tower_mqtt::testing`.
#[cfg(all(test, feature = "catch-panic", feature = "retry", feature = "json"))]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tower::ServiceBuilder;
    use tower_mqtt::testing::{disposition, test_message};
    use tower_mqtt::{AckPolicy, BoxError, Disposition, RejectReason};

    use super::ServiceBuilderExt;
    use crate::decode::Decoded;
    use crate::retry::{Attempt, RetryPolicy, Transient};

    #[derive(serde::Deserialize)]
    struct Reading {
        celsius: f64,
    }

    #[tokio::test(start_paused = true)]
    async fn the_stack_reads_top_to_bottom() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let policy = RetryPolicy::new(3)
            .backoff(Duration::from_millis(10), Duration::from_millis(100), 0.5)
            .unwrap();
        let svc = ServiceBuilder::new()
            .catch_panic()
            .retry_messages(policy)
            .timeout(Duration::from_secs(1))
            .decode_json::<Reading>()
            .service_fn(move |Decoded { message, value }: Decoded<Reading>| {
                c.fetch_add(1, Ordering::Relaxed);
                async move {
                    assert!(
                        value.celsius < 100.0,
                        "{} °C on {}",
                        value.celsius,
                        message.topic()
                    );
                    if value.celsius < 0.0 && Attempt::of(&message) < 3 {
                        return Err::<(), BoxError>(Transient::new("frozen").into());
                    }
                    Ok(())
                }
            });
        let policy = AckPolicy::default();
        let run = |payload: &'static str| {
            let svc = svc.clone();
            async move { disposition(svc, test_message("s/1", payload), policy).await }
        };
        assert_eq!(run(r#"{"celsius": 21}"#).await, Disposition::Ack);
        assert_eq!(calls.swap(0, Ordering::Relaxed), 1);
        assert_eq!(run(r#"{"celsius": -5}"#).await, Disposition::Ack);
        assert_eq!(calls.swap(0, Ordering::Relaxed), 3, "two retries");
        assert_eq!(
            run("21 °C").await,
            Disposition::RejectWith(RejectReason::PayloadFormatInvalid)
        );
        assert_eq!(
            calls.swap(0, Ordering::Relaxed),
            0,
            "never reaches the service"
        );
        // The panic fails the message once (not retried), and the consumer's rule applies.
        assert_eq!(run(r#"{"celsius": 120}"#).await, Disposition::Redeliver);
        assert_eq!(calls.swap(0, Ordering::Relaxed), 1);
    }
}
