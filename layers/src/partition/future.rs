use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_mqtt::{BoxError, Message};
use tower_service::Service;

use super::lanes::Turn;

pin_project! {
    /// Response future of [`Partition`](super::Partition): waits for the turn of the
    /// request's key, then calls (a clone of) the inner service. Dropping it, or its
    /// completion, hands the turn to the next request of the key.
    pub struct ResponseFuture<S, K, R = Message>
    where
        S: Service<R>,
        K: Hash,
        K: Eq,
        K: Clone,
    {
        #[pin]
        state: State<S::Future>,
        inner: S,
        request: Option<R>,
        turn: Option<Turn<K>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Behind an earlier message of the same key, or waiting for the inner service.
        Queued,
        Called {
            #[pin]
            future: F,
        },
    }
}

impl<S, K, R> ResponseFuture<S, K, R>
where
    S: Service<R>,
    K: Hash + Eq + Clone,
{
    pub(super) fn new(turn: Turn<K>, inner: S, request: R) -> Self {
        Self {
            state: State::Queued,
            inner,
            request: Some(request),
            turn: Some(turn),
        }
    }
}

impl<S, K, R> Future for ResponseFuture<S, K, R>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Queued => {
                    let turn = this
                        .turn
                        .as_ref()
                        .expect("partition::ResponseFuture polled after completion");
                    ready!(turn.poll_turn(cx));
                    if let Err(e) = ready!(this.inner.poll_ready(cx)) {
                        *this.turn = None;
                        return Poll::Ready(Err(e.into()));
                    }
                    let request = this.request.take().expect("called once");
                    let future = this.inner.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let output = ready!(future.poll(cx));
                    // The next message of this key may start now.
                    *this.turn = None;
                    return Poll::Ready(output.map_err(Into::into));
                }
            }
        }
    }
}

impl<S, K, R> fmt::Debug for ResponseFuture<S, K, R>
where
    S: Service<R>,
    K: Hash + Eq + Clone + fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Queued => "queued",
            State::Called { .. } => "called",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("turn", &self.turn)
            .finish_non_exhaustive()
    }
}
