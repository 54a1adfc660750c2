//! Draining the sessions of connection slots a consumer no longer runs
//! ([`ConsumerBuilder::drain_retired_sessions`](crate::ConsumerBuilder::drain_retired_sessions)).
//!
//! A consumer that ran `concurrency(n)` and now runs fewer connections leaves the
//! persistent sessions `<client_id>_k` (k ≥ the new count) on the broker, holding
//! whatever was queued or in flight for them, which nobody resumes again. A retired slot
//! resumes such a session with the consumer's own service, UNSUBSCRIBEs its filters so
//! that no new messages are routed to it, processes and acknowledges what the session
//! still holds, and once nothing has arrived for [`QUIET`] (and no call is running)
//! disconnects and ends the session (a clean-start connection), so nothing is left.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::driver::{forget_session, Driver, Settings};
use crate::error::{BoxError, RunError};
use crate::event::Event;
use crate::message::{Message, Origin};

/// How long a retired slot waits with nothing arriving before it ends the session.
pub(crate) const QUIET: Duration = Duration::from_secs(1);

/// What a retired slot has been doing.
#[derive(Debug)]
struct Activity {
    connected: AtomicBool,
    running: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }

    fn quiet(&self) -> bool {
        let last = *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.connected.load(Ordering::SeqCst)
            && self.running.load(Ordering::SeqCst) == 0
            && last.elapsed() >= QUIET
    }
}

/// The user's service, noting when calls start and end.
#[derive(Clone)]
struct Retiring<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Service<Message> for Retiring<S>
where
    S: Service<Message>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, message: Message) -> Self::Future {
        self.activity.running.fetch_add(1, Ordering::SeqCst);
        self.activity.touch();
        let fut = self.inner.call(message);
        let activity = self.activity.clone();
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            activity.touch();
            activity.running.fetch_sub(1, Ordering::SeqCst);
            result
        })
    }
}

/// Spawn a retired slot for each of `indices`, on `tasks`.
pub(crate) fn spawn<S>(
    settings: &Arc<Settings>,
    indices: std::ops::Range<usize>,
    origin: impl Fn(usize) -> Arc<Origin>,
    service: &S,
    stop: &CancellationToken,
    tasks: &mut JoinSet<Result<(), RunError>>,
) where
    S: Service<Message> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    for index in indices {
        let activity = Arc::new(Activity {
            connected: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        });
        let mut retired = Settings::clone(settings);
        retired.subscriptions = Vec::new();
        retired.unsubscribe = settings
            .subscriptions
            .iter()
            .map(|(f, _)| f.clone())
            .collect();
        let seen = activity.clone();
        let user_hook = settings.hook.clone();
        retired.hook = Some(Arc::new(move |event: &Event<'_>| {
            if matches!(event, Event::ConnectionUp { .. }) {
                seen.connected.store(true, Ordering::SeqCst);
                seen.touch();
            }
            if let Some(hook) = &user_hook {
                hook(event);
            }
        }));
        let retired = Arc::new(retired);
        let origin = origin(index);
        let client_id = origin.client_id.clone();
        let token = stop.child_token();
        let svc = Retiring {
            inner: service.clone(),
            activity: activity.clone(),
        };
        let driver = Driver::new(retired.clone(), origin, svc, token.clone());
        tasks.spawn(async move {
            let watch = async {
                loop {
                    tokio::time::sleep(QUIET / 4).await;
                    if activity.quiet() {
                        return;
                    }
                }
            };
            let running = driver.run();
            tokio::pin!(running);
            tokio::select! {
                // Shutdown (or a fatal error) before the session was drained: it stays.
                result = &mut running => return result,
                () = watch => {}
            }
            // Quiet: stop the slot (it drains and disconnects), then end its session.
            token.cancel();
            running.await?;
            match forget_session(&retired, &client_id).await {
                Ok(()) => tracing::info!(target: "tower_mqtt::connection", client_id = %client_id,
                    "retired session drained and ended"),
                Err(reason) => tracing::warn!(target: "tower_mqtt::connection", client_id = %client_id,
                    reason = %reason, "retired session drained, but ending it failed; it stays on the broker until it expires"),
            }
            Ok(())
        });
    }
}
