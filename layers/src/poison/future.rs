use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_mqtt::{BoxError, Permanent};

use super::TooManyDeliveries;

pin_project! {
    /// Response future of [`MaxDeliveries`](super::MaxDeliveries): the inner call, or,
    /// for a message above the limit, its [`TooManyDeliveries`] error inside a
    /// [`Permanent`] marker.
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
        TooMany {
            error: Option<TooManyDeliveries>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn called(future: F) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    pub(super) fn too_many(error: TooManyDeliveries) -> Self {
        Self {
            state: State::TooMany { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { future } => future.poll(cx).map_err(Into::into),
            StateProj::TooMany { error } => {
                let error = error
                    .take()
                    .expect("poison::ResponseFuture polled after completion");
                Poll::Ready(Err(Permanent::new(error).into()))
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ResponseFuture");
        match &self.state {
            State::Called { .. } => s.field("state", &"called"),
            State::TooMany { error } => s.field("too_many", error),
        }
        .finish()
    }
}
