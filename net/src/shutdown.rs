//! A one-shot, executor-local trigger: many tasks wait, one `fire` wakes all.
//! Used for graceful shutdown (SIGTERM/SIGINT) and to close a connection.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

#[derive(Clone, Default)]
pub struct Trigger {
    inner: Rc<Inner>,
}

#[derive(Default)]
struct Inner {
    fired: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Trigger {
    pub fn new() -> Trigger {
        Trigger::default()
    }

    pub fn fire(&self) {
        if !self.inner.fired.replace(true) {
            for w in self.inner.waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    pub fn is_fired(&self) -> bool {
        self.inner.fired.get()
    }

    /// Resolves once `fire` has been called.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.inner.fired.get() {
                Poll::Ready(())
            } else {
                let mut w = self.inner.waiters.borrow_mut();
                if !w.iter().any(|x| x.will_wake(cx.waker())) {
                    w.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}
