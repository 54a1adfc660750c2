use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_mqtt::BoxError;

pin_project! {
    /// Response future of [`Decode`](super::Decode): the inner call, or the decode
    /// failure when the payload did not decode.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called {
            #[pin]
            future: F,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn called(future: F) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    pub(super) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { future } => {
                Poll::Ready(ready!(future.poll(cx)).map_err(Into::into))
            }
            StateProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("decode::ResponseFuture polled after completion"))),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ResponseFuture");
        match &self.state {
            State::Called { .. } => s.field("state", &"called"),
            State::Failed { error } => s.field("error", error),
        }
        .finish_non_exhaustive()
    }
}
