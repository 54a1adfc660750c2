use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_mqtt::publisher::ResponseFuture as Confirmation;
use tower_mqtt::{BoxError, Message, Redeliver};
use tower_service::Service;

use super::error::DeadLetterFailed;
use super::letter::letter;
use super::{Shared, When};
use crate::attempts::AttemptsSeen;

pin_project! {
    /// Response future of [`DeadLetter`](super::DeadLetter): the inner call, then, for
    /// a failure that is dead-lettered, the publish of the dead letter.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        message: Option<Message>,
        attempts: AttemptsSeen,
        shared: Arc<Shared>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] call: F },
        Publishing { confirmation: Confirmation, topic: String, error: Option<BoxError> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(
        call: F,
        message: Message,
        attempts: AttemptsSeen,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            state: State::Calling { call },
            message: Some(message),
            attempts,
            shared,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    T: Default,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { call } => {
                    let error = match ready!(call.poll(cx)) {
                        Ok(response) => return Poll::Ready(Ok(response)),
                        Err(e) => e.into(),
                    };
                    let Some(message) = this.message.take() else {
                        return Poll::Ready(Err(error));
                    };
                    let failed: Result<(), BoxError> = Err(error);
                    let dropped = message.origin().disposition(&failed).acknowledges();
                    let Err(error) = failed else {
                        return Poll::Ready(Ok(T::default()));
                    };
                    if !dropped && this.shared.when == When::WouldBeDropped {
                        return Poll::Ready(Err(error));
                    }
                    let topic = (this.shared.topic)(&message);
                    let publisher = &this.shared.publisher;
                    let dead = letter(
                        &message,
                        &*error,
                        this.attempts.get(),
                        topic.clone(),
                        publisher.proto_ver(),
                    );
                    let confirmation = publisher.clone().call(dead);
                    this.state.set(State::Publishing {
                        confirmation,
                        topic,
                        error: Some(error),
                    });
                }
                StateProj::Publishing {
                    confirmation,
                    topic,
                    error,
                } => {
                    let published = ready!(Pin::new(confirmation).poll(cx));
                    let original = error
                        .take()
                        .unwrap_or_else(|| "dead-letter future polled after it completed".into());
                    return Poll::Ready(match published {
                        Ok(()) => {
                            tracing::warn!(target: "tower_mqtt_layers::dead_letter",
                                dead_letter_topic = %topic, error = %original,
                                "message dead-lettered; the original will be acknowledged");
                            Ok(T::default())
                        }
                        Err(e) => {
                            let failed = DeadLetterFailed::new(std::mem::take(topic), e, original);
                            Err(Redeliver::new(failed).into())
                        }
                    });
                }
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "calling",
            State::Publishing { .. } => "publishing",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
