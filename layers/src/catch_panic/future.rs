use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_mqtt::BoxError;

use super::Panicked;

pin_project! {
    /// Response future of [`CatchPanic`](super::CatchPanic): the inner call, whose
    /// panics become [`Panicked`] errors.
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
        // `call` panicked, or the future did and has been dropped.
        Panicked {
            error: Option<Panicked>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn called(future: F) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    pub(super) fn panicked(error: Panicked) -> Self {
        Self {
            state: State::Panicked { error: Some(error) },
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
        let mut state = self.project().state;
        let error = match state.as_mut().project() {
            StateProj::Called { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(poll) => return poll.map_err(Into::into),
                    Err(payload) => Panicked::from_payload(&*payload),
                }
            }
            StateProj::Panicked { error } => {
                let error = error
                    .take()
                    .expect("catch_panic::ResponseFuture polled after completion");
                return Poll::Ready(Err(error.into()));
            }
        };
        // A future that panicked must not be polled again: drop it now.
        state.set(State::Panicked { error: None });
        Poll::Ready(Err(error.into()))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ResponseFuture");
        match &self.state {
            State::Called { .. } => s.field("state", &"called"),
            State::Panicked { error } => s.field("panicked", error),
        }
        .finish()
    }
}
