//! Request bodies that a retry can send again. The first attempt streams the downstream body
//! as it arrives and keeps a copy of it up to a limit; a later attempt gets the original
//! stream if no attempt read from it yet (a connect failure sent nothing), or the copy if an
//! earlier attempt read the whole body within the limit. Otherwise the request cannot be
//! retried: its bytes are gone.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// The request side: hands out one body per attempt.
pub struct Replayable<B = Incoming> {
    shared: Arc<Mutex<Shared<B>>>,
}

struct Shared<B> {
    /// The downstream body, while no attempt has read from it.
    original: Option<B>,
    /// The rest of a body an attempt read in part and then dropped: not replayable, but
    /// drained before the proxy answers itself, so the client's connection stays usable.
    leftover: Option<B>,
    /// The whole body, once an attempt read all of it within the limit.
    recorded: Option<Recorded>,
    limit: usize,
}

#[derive(Clone, Default)]
struct Recorded {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

impl<B: Body<Data = Bytes> + Unpin> Replayable<B> {
    /// Keeps up to `limit` bytes of `body` for replay (0: only an unread body is reusable).
    pub fn new(body: B, limit: usize) -> Replayable<B> {
        // A body that is already over (a GET) is replayable at no cost, even concurrently.
        let (original, recorded) = if body.is_end_stream() {
            (None, Some(Recorded::default()))
        } else {
            (Some(body), None)
        };
        Replayable {
            shared: Arc::new(Mutex::new(Shared {
                original,
                leftover: None,
                recorded,
                limit,
            })),
        }
    }

    /// The body had no bytes to begin with.
    pub fn is_empty(&self) -> bool {
        let shared = self.lock();
        shared
            .recorded
            .as_ref()
            .is_some_and(|r| r.chunks.is_empty() && r.trailers.is_none())
            && shared.original.is_none()
    }

    /// Keeps up to `limit` bytes from now on (before the first attempt reads the body).
    pub fn set_limit(&self, limit: usize) {
        self.lock().limit = limit;
    }

    /// The part of the downstream body no attempt has read (all of it, or the rest of a
    /// body an attempt dropped part-way), taken for draining; `None` when it was read whole.
    pub fn take_unread(&self) -> Option<B> {
        let mut shared = self.lock();
        shared.original.take().or_else(|| shared.leftover.take())
    }

    /// Whether [`Replayable::attempt`] would give a body now.
    pub fn can_replay(&self) -> bool {
        let shared = self.lock();
        shared.original.is_some() || shared.recorded.is_some()
    }

    /// A body for the next attempt, or `None` when the bytes cannot be produced again.
    pub fn attempt(&self) -> Option<ReplayBody<B>> {
        let mut shared = self.lock();
        if let Some(original) = shared.original.take() {
            return Some(ReplayBody::Live(Live {
                body: Some(original),
                shared: self.shared.clone(),
                taken: false,
                copy: Some(Recorded::default()),
                copied: 0,
                limit: shared.limit,
                ended: false,
            }));
        }
        let recorded = shared.recorded.clone()?;
        Some(ReplayBody::Replay {
            chunks: recorded.chunks.into(),
            trailers: recorded.trailers,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared<B>> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The body of one upstream attempt.
pub enum ReplayBody<B = Incoming> {
    /// The downstream body, streamed (and copied, within the limit).
    Live(Live<B>),
    /// A copy of a body an earlier attempt read whole.
    Replay {
        chunks: std::collections::VecDeque<Bytes>,
        trailers: Option<HeaderMap>,
    },
}

/// The downstream body on its first read.
pub struct Live<B> {
    body: Option<B>,
    shared: Arc<Mutex<Shared<B>>>,
    /// A frame was taken from `body`: it cannot go back unread.
    taken: bool,
    /// What was read so far, while it fits the limit.
    copy: Option<Recorded>,
    copied: usize,
    limit: usize,
    /// The body went through to its end.
    ended: bool,
}

impl<B: Body<Data = Bytes> + Unpin> ReplayBody<B> {
    /// `body`, streamed once and never kept (requests that are not retried).
    pub fn streamed(body: B) -> ReplayBody<B> {
        Replayable::new(body, 0)
            .attempt()
            .unwrap_or(ReplayBody::Replay {
                chunks: Default::default(),
                trailers: None,
            })
    }
}

impl<B: Body> Live<B> {
    fn keep(&mut self, frame: &Frame<Bytes>) {
        let Some(copy) = self.copy.as_mut() else {
            return;
        };
        if let Some(data) = frame.data_ref() {
            self.copied += data.len();
            if self.copied > self.limit {
                self.copy = None;
                return;
            }
            copy.chunks.push(data.clone());
        } else if let Some(trailers) = frame.trailers_ref() {
            copy.trailers = Some(trailers.clone());
        }
    }
}

impl<B> Live<B> {
    /// The whole body went through: the copy, if it fit, is what the next attempt sends.
    fn publish(&mut self) {
        self.ended = true;
        if let Some(copy) = self.copy.take() {
            let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            shared.recorded = Some(copy);
        }
    }
}

impl<B> Drop for Live<B> {
    /// An attempt that never read its body (the connection failed first) gives it back for
    /// the next attempt.
    fn drop(&mut self) {
        let Some(body) = self.body.take() else {
            return;
        };
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if !self.taken {
            shared.original = Some(body);
        } else if !self.ended {
            shared.leftover = Some(body);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for ReplayBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.get_mut() {
            ReplayBody::Live(live) => {
                let Some(body) = live.body.as_mut() else {
                    return Poll::Ready(None);
                };
                match ready!(Pin::new(body).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        live.taken = true;
                        live.keep(&frame);
                        // HTTP/2 stops polling once the body says it is over.
                        if live.body.as_ref().is_some_and(|b| b.is_end_stream()) {
                            live.publish();
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(error)) => {
                        live.taken = true;
                        live.copy = None;
                        Poll::Ready(Some(Err(error)))
                    }
                    None => {
                        live.taken = true;
                        live.publish();
                        Poll::Ready(None)
                    }
                }
            }
            ReplayBody::Replay { chunks, trailers } => {
                if let Some(chunk) = chunks.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReplayBody::Live(live) => live.body.as_ref().is_none_or(|b| b.is_end_stream()),
            ReplayBody::Replay { chunks, trailers } => chunks.is_empty() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplayBody::Live(live) => live
                .body
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint()),
            ReplayBody::Replay { chunks, .. } => {
                SizeHint::with_exact(chunks.iter().map(|c| c.len() as u64).sum())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use http_body_util::BodyExt;

    use super::*;

    /// A body of given chunks that, like HTTP/2's, knows when it is over.
    struct Chunks(VecDeque<Bytes>);

    fn chunks(parts: &[&'static str]) -> Chunks {
        Chunks(
            parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
        )
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(|c| Ok(Frame::data(c))))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    async fn read(body: ReplayBody<Chunks>) -> String {
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_body_read_whole_within_the_limit_is_sent_again() {
        let replayable = Replayable::new(chunks(&["hello ", "world"]), 64);
        assert_eq!(read(replayable.attempt().unwrap()).await, "hello world");
        assert_eq!(read(replayable.attempt().unwrap()).await, "hello world");
        assert_eq!(read(replayable.attempt().unwrap()).await, "hello world");
    }

    #[tokio::test]
    async fn a_body_larger_than_the_limit_cannot_be_sent_again() {
        let replayable = Replayable::new(chunks(&["hello ", "world"]), 8);
        assert_eq!(read(replayable.attempt().unwrap()).await, "hello world");
        assert!(replayable.attempt().is_none());
    }

    #[tokio::test]
    async fn an_unread_body_goes_back_for_the_next_attempt_whatever_its_size() {
        let replayable = Replayable::new(chunks(&["hello ", "world"]), 0);
        drop(replayable.attempt().unwrap());
        assert_eq!(read(replayable.attempt().unwrap()).await, "hello world");
        assert!(replayable.attempt().is_none(), "the limit 0 keeps no copy");
    }

    #[tokio::test]
    async fn a_body_read_in_part_is_lost() {
        let replayable = Replayable::new(chunks(&["hello ", "world"]), 64);
        let mut first = replayable.attempt().unwrap();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello ");
        drop(first);
        assert!(replayable.attempt().is_none());
    }

    #[tokio::test]
    async fn an_empty_body_serves_concurrent_attempts() {
        let replayable = Replayable::new(chunks(&[]), 0);
        assert!(replayable.is_empty());
        let (a, b) = (replayable.attempt().unwrap(), replayable.attempt().unwrap());
        assert!(a.is_end_stream() && b.is_end_stream());
        assert_eq!(read(a).await, "");
    }
}
