use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_mqtt::{BoxError, Message};
use tower_service::Service;

use super::{RetryClassifier, RetryPolicy};

type Inner<S, C> = tower::retry::future::ResponseFuture<RetryPolicy<C>, S, Message>;

pin_project! {
    /// Response future of [`Retry`](super::Retry): tower's retry future (the calls and
    /// the waits between them), with the policy and request types filled in.
    pub struct ResponseFuture<S, C>
    where
        S: Service<Message, Error = BoxError>,
        C: RetryClassifier,
    {
        #[pin]
        inner: Inner<S, C>,
    }
}

impl<S, C> ResponseFuture<S, C>
where
    S: Service<Message, Error = BoxError>,
    C: RetryClassifier,
{
    pub(super) fn new(inner: Inner<S, C>) -> Self {
        Self { inner }
    }
}

impl<S, C> Future for ResponseFuture<S, C>
where
    S: Service<Message, Error = BoxError>,
    C: RetryClassifier,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<S, C> fmt::Debug for ResponseFuture<S, C>
where
    S: Service<Message, Error = BoxError>,
    C: RetryClassifier,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
