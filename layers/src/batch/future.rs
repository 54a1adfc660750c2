use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::sync::oneshot;
use tower_mqtt::BoxError;

use super::error::BatcherUnavailable;

/// Response future of [`Batcher`](super::Batcher): resolves when the message's batch
/// is done, with the message's own result.
pub struct ResponseFuture {
    state: State,
}

enum State {
    Waiting(oneshot::Receiver<Result<(), BoxError>>),
    Failed(Option<BoxError>),
}

impl ResponseFuture {
    pub(super) fn waiting(reply: oneshot::Receiver<Result<(), BoxError>>) -> Self {
        Self {
            state: State::Waiting(reply),
        }
    }

    pub(super) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed(Some(error)),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match &mut self.state {
            State::Waiting(reply) => match ready!(Pin::new(reply).poll(cx)) {
                Ok(result) => result,
                Err(_) => Err(BatcherUnavailable::STOPPED.into()),
            },
            State::Failed(error) => Err(error
                .take()
                .unwrap_or_else(|| "batch future polled after it completed".into())),
        })
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Waiting(_) => "waiting for its batch",
            State::Failed(_) => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
