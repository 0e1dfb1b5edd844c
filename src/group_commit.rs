//! Hits that arrive together share one gateway call.
//!
//! A WASIp3 runtime keeps an instance of the component for many requests and
//! hands it several at once (Spin 4 and `wasmtime serve`: up to 16 at a time,
//! 128 in all). Sent one by one, every hit would pay for its own outgoing
//! request, on the component's side and on the gateway's: the call, not the page,
//! is what a hit costs. So the hits that meet in one instance go out together,
//! as one `POST /v1/hits/batch` (or `/v1/page-hits/batch`): a hit that finds no
//! call out sends every hit waiting, and hits that arrive while it is out wait
//! for it to come back, then go out together in the next one. Batching is driven by load, not
//! a timer, the way the gateway's own group commit is: a lone hit goes out at
//! once, and under load each call carries what gathered during the last.
//!
//! Every hit keeps its own id and gets its own answer (its own N), so a batch
//! changes nothing the gateway counts; it only changes how many calls carry it.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::thread::LocalKey;

use crate::gateway::{Gateway, GatewayError};
use counter_api::{Hit, PageHit, PageRecorded, Recorded};

/// Records `hit` through `gateway`, in one call with whatever other hits this
/// instance is recording at the same moment.
pub async fn record_hit(gateway: &Gateway<'_>, hit: Hit) -> Result<Recorded, GatewayError> {
    share(&HITS, hit, async |hits| gateway.record_hits(hits).await).await
}

/// [`record_hit`] for a hit on a named counter.
pub async fn record_page_hit(
    gateway: &Gateway<'_>,
    hit: PageHit,
) -> Result<PageRecorded, GatewayError> {
    share(&PAGE_HITS, hit, async |hits| {
        gateway.record_page_hits(hits).await
    })
    .await
}

thread_local! {
    // An instance is single-threaded: its concurrent requests are tasks that
    // take turns, so a RefCell is all the sharing needs.
    static HITS: RefCell<Queue<Hit, Recorded>> = RefCell::default();
    static PAGE_HITS: RefCell<Queue<PageHit, PageRecorded>> = RefCell::default();
}

type Outcome<A> = Result<A, GatewayError>;

/// One hit waiting for its answer.
struct Waiting<H, A> {
    /// Taken when the hit is sent.
    hit: RefCell<Option<H>>,
    outcome: RefCell<Option<Outcome<A>>>,
}

struct Queue<H, A> {
    /// Hits not yet sent.
    waiting: Vec<Rc<Waiting<H, A>>>,
    /// Whether a call is out now.
    in_flight: bool,
    /// How many calls have come back, so a waiting request knows one has.
    returned: u64,
    /// Requests to wake when a call comes back.
    wakers: Vec<Waker>,
}

impl<H, A> Default for Queue<H, A> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
            in_flight: false,
            returned: 0,
            wakers: Vec::new(),
        }
    }
}

type SharedQueue<H, A> = LocalKey<RefCell<Queue<H, A>>>;

async fn share<H: 'static, A: 'static>(
    queue: &'static SharedQueue<H, A>,
    hit: H,
    send: impl AsyncFnOnce(Vec<H>) -> Vec<Outcome<A>>,
) -> Outcome<A> {
    let mine = Rc::new(Waiting {
        hit: RefCell::new(Some(hit)),
        outcome: RefCell::new(None),
    });
    queue.with_borrow_mut(|q| q.waiting.push(mine.clone()));
    let mut send = Some(send);
    loop {
        if let Some(outcome) = mine.outcome.borrow_mut().take() {
            return outcome;
        }
        // A hit not sent yet leads if no call is out; a hit already on its way,
        // or one that must wait for the call out, waits for a call to come back.
        // One call at a time per instance: the gateway acknowledges at once
        // (its listener), so a call is never held up by a delayed ACK, and a
        // second call would only split the next batch.
        let next = queue.with_borrow_mut(|q| {
            if mine.hit.borrow().is_some() && !q.in_flight {
                q.in_flight = true;
                Next::Send(std::mem::take(&mut q.waiting))
            } else {
                Next::Wait {
                    returned: q.returned,
                }
            }
        });
        match next {
            Next::Send(batch) => {
                // This request's own hit is in the batch it sends, so it sends once.
                let send = send.take().expect("a request sends one batch");
                let flight = Flight { queue, batch };
                let hits = flight
                    .batch
                    .iter()
                    .filter_map(|w| w.hit.borrow_mut().take())
                    .collect();
                let outcomes = send(hits).await;
                for (waiting, outcome) in flight.batch.iter().zip(outcomes) {
                    *waiting.outcome.borrow_mut() = Some(outcome);
                }
            }
            Next::Wait { returned } => call_returned(queue, returned).await,
        }
    }
}

enum Next<H, A> {
    Send(Vec<Rc<Waiting<H, A>>>),
    /// Wait until more than `returned` calls have come back.
    Wait {
        returned: u64,
    },
}

/// A batch on its way. However the call ends, even if the request that sent it
/// is dropped midway, every hit of the batch gets an outcome and the next batch
/// may go.
struct Flight<H: 'static, A: 'static> {
    queue: &'static SharedQueue<H, A>,
    batch: Vec<Rc<Waiting<H, A>>>,
}

impl<H, A> Drop for Flight<H, A> {
    fn drop(&mut self) {
        for waiting in &self.batch {
            let mut outcome = waiting.outcome.borrow_mut();
            if outcome.is_none() {
                *outcome = Some(Err(GatewayError::Unreachable {
                    authority: "the gateway".into(),
                    detail: "the call carrying this hit was abandoned".into(),
                }));
            }
        }
        let wakers = self.queue.with_borrow_mut(|q| {
            q.in_flight = false;
            q.returned += 1;
            std::mem::take(&mut q.wakers)
        });
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// Waits until a call comes back, the `returned`th having come back already.
async fn call_returned<H, A>(queue: &'static SharedQueue<H, A>, returned: u64) {
    poll_fn(|cx| {
        queue.with_borrow_mut(|q| {
            if q.returned == returned {
                q.wakers.push(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
    })
    .await
}
