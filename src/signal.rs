//! Shutdown on SIGINT / SIGTERM: the [`CancellationToken`] for
//! [`Consumer::run`](crate::Consumer::run) that a service would otherwise wire up by hand.

use tokio_util::sync::CancellationToken;

/// A token cancelled by the first SIGINT (Ctrl-C) or SIGTERM; on platforms other than
/// Unix, by Ctrl-C.
///
/// Pass it (or a clone) to [`Consumer::run`](crate::Consumer::run): on a signal the
/// consumer stops reading, drains the calls in progress, acknowledges and disconnects,
/// as on any cancellation. The handlers are installed before this function returns, so
/// a signal sent right after it cannot kill the process instead. Once a handler is
/// installed tokio keeps it for the life of the process: later SIGINTs and SIGTERMs no
/// longer end the process by themselves. The task waiting for the signals ends when the
/// token is cancelled, by a signal or otherwise.
///
/// ```no_run
/// use tower::service_fn;
/// use tower_mqtt::{BoxError, Config, Consumer, Message, QoS};
///
/// # async fn example() -> Result<(), BoxError> {
/// let consumer = Consumer::builder(Config::new("127.0.0.1").client_id("ingest"))
///     .topic("sensors/+/temp", QoS::AtLeastOnce)
///     .build()?;
/// let service = service_fn(|_msg: Message| async { Ok::<(), BoxError>(()) });
/// consumer.run(service, tower_mqtt::signal::shutdown_on_signals()).await?;
/// # Ok(()) }
/// ```
///
/// # Panics
///
/// Must be called inside a tokio runtime with its I/O driver enabled
/// (`#[tokio::main]`, or a runtime built with `enable_all()`); it spawns a task and
/// registers the signal handlers there. Panics otherwise.
#[must_use = "the token is the only way to observe the signal"]
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let signalled = signals();
    let cancelled = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = signalled => cancelled.cancel(),
            () = cancelled.cancelled() => {}
        }
    });
    token
}

/// Registers the handlers now and returns a future that completes on the first signal.
#[cfg(unix)]
fn signals() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};

    let register = |kind| {
        signal(kind).expect(
            "tower_mqtt::signal::shutdown_on_signals: cannot install a signal handler; call it \
             inside a tokio runtime with the I/O driver enabled",
        )
    };
    let mut interrupt = register(SignalKind::interrupt());
    let mut terminate = register(SignalKind::terminate());
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }
}

/// Registers the handler now and returns a future that completes on the first Ctrl-C.
#[cfg(not(unix))]
fn signals() -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut ctrl_c = tokio::signal::windows::ctrl_c().expect(
        "tower_mqtt::signal::shutdown_on_signals: cannot install a Ctrl-C handler; call it \
         inside a tokio runtime with the I/O driver enabled",
    );
    async move {
        ctrl_c.recv().await;
    }
}
