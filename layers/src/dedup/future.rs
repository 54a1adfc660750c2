use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_mqtt::{BoxError, Message, Redeliver};
use tower_service::Service;

use super::store::{Claim, StoreFuture};
use super::{InProgress, Shared};

const TARGET: &str = "tower_mqtt_layers::dedup";

pin_project! {
    /// Response future of [`Dedup`](super::Dedup): the claim of the message's id, the
    /// inner call, then the record (after success) or the release of the lease (after
    /// failure).
    pub struct ResponseFuture<S>
    where
        S: Service<Message>,
    {
        #[pin]
        state: State<S>,
        shared: Arc<Shared>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S>
    where
        S: Service<Message>,
    {
        Claiming {
            claim: StoreFuture<Claim>,
            service: Option<S>,
            message: Option<Message>,
            key: String,
            token: String,
        },
        Calling {
            #[pin]
            call: S::Future,
            key: String,
            token: String,
        },
        Recording {
            record: StoreFuture<()>,
            key: String,
            response: Option<S::Response>,
        },
        Releasing {
            release: StoreFuture<()>,
            key: String,
            error: Option<BoxError>,
        },
        Unkeyed {
            #[pin]
            call: S::Future,
        },
        Finished {
            result: Option<Result<S::Response, BoxError>>,
        },
    }
}

impl<S: Service<Message>> ResponseFuture<S> {
    pub(super) fn claiming(
        claim: StoreFuture<Claim>,
        service: S,
        message: Message,
        key: String,
        token: String,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            state: State::Claiming {
                claim,
                service: Some(service),
                message: Some(message),
                key,
                token,
            },
            shared,
        }
    }

    pub(super) fn unkeyed(call: S::Future, shared: Arc<Shared>) -> Self {
        Self {
            state: State::Unkeyed { call },
            shared,
        }
    }

    pub(super) fn finished(error: BoxError, shared: Arc<Shared>) -> Self {
        Self {
            state: State::Finished {
                result: Some(Err(error)),
            },
            shared,
        }
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<Message>,
    S::Response: Default,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared = &**this.shared;
        loop {
            match this.state.as_mut().project() {
                StateProj::Claiming {
                    claim,
                    service,
                    message,
                    key,
                    token,
                } => {
                    let claimed = ready!(claim.as_mut().poll(cx));
                    let key = std::mem::take(key);
                    match claimed {
                        Ok(Claim::Acquired) => {
                            let (Some(mut service), Some(message)) =
                                (service.take(), message.take())
                            else {
                                return Poll::Ready(Err(
                                    "dedup future polled after it completed".into()
                                ));
                            };
                            let token = std::mem::take(token);
                            let call = service.call(message);
                            this.state.set(State::Calling { call, key, token });
                        }
                        Ok(Claim::Done) => {
                            shared.stats.count_duplicate();
                            tracing::debug!(target: TARGET, key = %key,
                                "duplicate message: acknowledged without calling the service");
                            return Poll::Ready(Ok(S::Response::default()));
                        }
                        Ok(Claim::Held) => {
                            shared.stats.count_in_progress();
                            tracing::debug!(target: TARGET, key = %key,
                                "message id leased by another call: not acknowledged, it comes back");
                            return Poll::Ready(Err(Redeliver::new(InProgress::new(key)).into()));
                        }
                        Err(e) => {
                            shared.stats.count_store_failure();
                            tracing::warn!(target: TARGET, key = %key, error = %e,
                                "dedup store unreachable: message not processed, not acknowledged");
                            return Poll::Ready(Err(Redeliver::new(e).into()));
                        }
                    }
                }
                StateProj::Calling { call, key, token } => {
                    let result = ready!(call.poll(cx));
                    let key = std::mem::take(key);
                    match result {
                        Ok(response) => {
                            let record = shared.store.record(&key, shared.ttl);
                            this.state.set(State::Recording {
                                record,
                                key,
                                response: Some(response),
                            });
                        }
                        Err(error) => {
                            let release = shared.store.release(&key, token);
                            this.state.set(State::Releasing {
                                release,
                                key,
                                error: Some(error.into()),
                            });
                        }
                    }
                }
                StateProj::Recording {
                    record,
                    key,
                    response,
                } => {
                    match ready!(record.as_mut().poll(cx)) {
                        Ok(()) => shared.stats.count_processed(),
                        Err(e) => {
                            shared.stats.count_record_failure();
                            tracing::warn!(target: TARGET, key = %key, error = %e,
                                "processed, but the id could not be recorded: the message is \
                                 acknowledged; a copy arriving after the lease ends would be \
                                 processed again");
                        }
                    }
                    return Poll::Ready(
                        response
                            .take()
                            .ok_or_else(|| "dedup future polled after it completed".into()),
                    );
                }
                StateProj::Releasing {
                    release,
                    key,
                    error,
                } => {
                    if let Err(e) = ready!(release.as_mut().poll(cx)) {
                        tracing::warn!(target: TARGET, key = %key, error = %e,
                            "the lease of a failed message could not be released: its copies \
                             wait until the lease expires");
                    }
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(|| "dedup future polled after it completed".into())));
                }
                StateProj::Unkeyed { call } => {
                    return call.poll(cx).map_err(Into::into);
                }
                StateProj::Finished { result } => {
                    return Poll::Ready(
                        result.take().unwrap_or_else(|| {
                            Err("dedup future polled after it completed".into())
                        }),
                    );
                }
            }
        }
    }
}

impl<S: Service<Message>> fmt::Debug for ResponseFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (state, key) = match &self.state {
            State::Claiming { key, .. } => ("claiming", Some(key)),
            State::Calling { key, .. } => ("calling", Some(key)),
            State::Recording { key, .. } => ("recording", Some(key)),
            State::Releasing { key, .. } => ("releasing", Some(key)),
            State::Unkeyed { .. } => ("unkeyed", None),
            State::Finished { .. } => ("finished", None),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("key", &key)
            .finish()
    }
}
