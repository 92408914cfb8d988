//! Spreading independent pieces of CPU work over the machine's threads.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `items.iter().map(f).collect()`, on up to `available_parallelism()` scoped threads that each
/// take the next item when they finish one, since items may cost very different amounts. The
/// results keep the items' order; a panic in `f` is raised again here.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let (f, next) = (&f, &next);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// `f(offset, chunk)` over `data` cut into one contiguous chunk per thread (up to
/// `available_parallelism()`, none shorter than `min_share` unless `data` is), each chunk's
/// `offset` its first index in `data`: for loops over long arrays whose elements are
/// independent, such as folding an update into running sums. Short data runs here, on this
/// thread. A panic in `f` is raised again here.
pub fn for_chunks<T: Send>(data: &mut [T], min_share: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(data.len() / min_share.max(1));
    if threads <= 1 {
        return f(0, data);
    }
    let share = data.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let mut chunks = data.chunks_mut(share).enumerate();
        // This thread takes the first chunk itself.
        let first = chunks.next();
        let handles: Vec<_> = chunks.map(|(i, chunk)| scope.spawn(move || f(i * share, chunk))).collect();
        if let Some((_, chunk)) = first {
            f(0, chunk);
        }
        for handle in handles {
            handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_data_once_at_their_offsets() {
        for (len, min_share) in [(0, 1), (5, 10), (1000, 1), (1001, 100), (7, 3)] {
            let mut data = vec![0usize; len];
            for_chunks(&mut data, min_share, |offset, chunk| {
                for (i, x) in chunk.iter_mut().enumerate() {
                    *x += offset + i + 1;
                }
            });
            assert_eq!(data, (1..=len).collect::<Vec<_>>(), "len {len}, min_share {min_share}");
        }
    }

    #[test]
    fn results_keep_the_items_order() {
        let items: Vec<u64> = (0..1000).collect();
        // Uneven costs, so that threads finish out of order.
        let squares = map(&items, |&i| {
            if i % 97 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            i * i
        });
        assert_eq!(squares, items.iter().map(|i| i * i).collect::<Vec<_>>());
        assert!(map(&[] as &[u8], |_| 0).is_empty());
    }

    #[test]
    #[should_panic(expected = "item 7")]
    fn a_panic_in_the_work_reaches_the_caller() {
        let items: Vec<u32> = (0..20).collect();
        map(&items, |&i| assert!(i != 7, "item 7"));
    }
}
