use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::util::{BoxCloneService, Oneshot};
use tower_mqtt::{BoxError, Message};

pin_project! {
    /// Response future of [`Router`](super::Router): the chosen route's (or the
    /// fallback's) readiness, then its call.
    pub struct ResponseFuture {
        #[pin]
        inner: Oneshot<BoxCloneService<Message, (), BoxError>, Message>,
    }
}

impl ResponseFuture {
    pub(super) fn new(inner: Oneshot<BoxCloneService<Message, (), BoxError>, Message>) -> Self {
        Self { inner }
    }
}

impl Future for ResponseFuture {
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
