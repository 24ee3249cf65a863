//! Buffers a request needs, kept per worker thread and used again by the next request, so a
//! request on a warm thread allocates none of them.
//!
//! Why: every request on the fast path needs a few byte buffers (the first bytes of its head,
//! the head that goes upstream, the upstream's first read, the head that goes back) and an
//! array of header slots for the parser. Allocated afresh they were most of what a request
//! allocated (the counting test in `connection/allocations.rs` counts them); kept here, the
//! allocator is asked only while a thread is warming up or serving more requests at once than
//! it has ever served.
//!
//! A buffer is taken with [`take`] and given back with [`give`]; one that is never given back
//! (an early return, a panic) is simply freed, so forgetting costs an allocation, never
//! memory. What is kept is bounded: at most [`KEEP`] buffers a thread, none larger than
//! [`LARGEST_KEPT`] (a buffer a large head or body grew is freed rather than kept), so an idle
//! proxy holds at most 8 MiB a thread whatever traffic it once had (128 byte buffers and 128
//! slot arrays of at most 32 KiB), and in practice much less: a request's buffers are 1 to
//! 16 KiB, its slot arrays 3 to 4 KiB.
//!
//! A buffer is given back empty (cleared), so no request can read another's bytes (no code
//! here or in its users reads a buffer's spare room), and nothing here crosses threads:
//! a buffer given back on another thread (a task moved by a work-stealing runtime) joins that
//! thread's list.

use std::cell::RefCell;

/// Buffers kept per thread and kind.
pub(crate) const KEEP: usize = 128;

/// A buffer that grew past this is freed rather than kept.
pub(crate) const LARGEST_KEPT: usize = 32 * 1024;

thread_local! {
    static BYTES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static SLOTS: RefCell<Vec<Vec<httparse::Header<'static>>>> = const { RefCell::new(Vec::new()) };
}

/// An empty byte buffer with room for at least `capacity` bytes.
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    let kept = BYTES.with_borrow_mut(|free| {
        // The most recently given back first: likeliest to be in the cache still.
        let at = free.iter().rposition(|b| b.capacity() >= capacity)?;
        Some(free.swap_remove(at))
    });
    kept.unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// Gives `buf` back for the next request on this thread (see the module docs for what is
/// kept).
pub(crate) fn give(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > LARGEST_KEPT {
        return;
    }
    buf.clear();
    BYTES.with_borrow_mut(|free| {
        if free.len() < KEEP {
            free.push(buf);
        }
    });
}

/// `n` empty header slots for `httparse`, for a head borrowed for `'h`.
///
/// The kept arrays are `'static` (empty slots borrow nothing), which serve any shorter borrow;
/// turning them back into `'static` ones ([`give_slots`]) is a `map` that `collect` does in
/// place (same size and alignment: the standard library reuses the allocation), so no slot
/// array is allocated on a warm thread and no `unsafe` is needed.
pub(crate) fn slots<'h>(n: usize) -> Vec<httparse::Header<'h>> {
    let kept = SLOTS.with_borrow_mut(|free| {
        let at = free.iter().rposition(|s| s.capacity() >= n)?;
        Some(free.swap_remove(at))
    });
    match kept {
        Some(mut kept) => {
            kept.resize(n, httparse::EMPTY_HEADER);
            // `Vec` is covariant: `'static` slots are slots for any shorter borrow.
            kept
        }
        None => vec![httparse::EMPTY_HEADER; n],
    }
}

/// Gives header slots back (their borrows end here: every slot is emptied).
pub(crate) fn give_slots(slots: Vec<httparse::Header<'_>>) {
    let emptied: Vec<httparse::Header<'static>> =
        slots.into_iter().map(|_| httparse::EMPTY_HEADER).collect();
    if emptied.capacity() * std::mem::size_of::<httparse::Header<'static>>() > LARGEST_KEPT {
        return;
    }
    SLOTS.with_borrow_mut(|free| {
        if free.len() < KEEP {
            free.push(emptied);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty() {
        let mut a = take(100);
        a.extend_from_slice(b"secret");
        let ptr = a.as_ptr();
        give(a);
        let b = take(50);
        assert_eq!(b.as_ptr(), ptr, "the same allocation");
        assert!(b.is_empty(), "nothing of the request before");
        // Too small for what is asked: a new one.
        let c = take(4096);
        assert!(c.capacity() >= 4096);
        assert_ne!(c.as_ptr(), ptr);
    }

    #[test]
    fn large_buffers_and_more_than_keep_are_freed() {
        give(Vec::with_capacity(LARGEST_KEPT + 1));
        for _ in 0..KEEP + 10 {
            give(Vec::with_capacity(10));
        }
        BYTES.with_borrow(|free| {
            assert_eq!(free.len(), KEEP);
            assert!(free.iter().all(|b| b.capacity() <= LARGEST_KEPT));
        });
    }

    #[test]
    fn header_slots_are_reused_in_place() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        let mut s = slots(8);
        let ptr = s.as_ptr() as usize;
        {
            let mut req = httparse::Request::new(&mut s);
            assert!(req.parse(&head).unwrap().is_complete());
        }
        give_slots(s);
        let again = slots(4);
        assert_eq!(again.as_ptr() as usize, ptr, "the same allocation");
        assert_eq!(again.len(), 4);
        assert!(
            again
                .iter()
                .all(|h| h.name.is_empty() && h.value.is_empty())
        );
    }
}
