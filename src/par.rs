//! Independent items of one request (a page's NICs, a batch's Activity Log
//! records) parsed on every core, in order.

/// Below this many items, one thread: spawning costs more than it saves.
const SPLIT_FROM: usize = 256;

/// Maps `items` in order (`f` gets each item's index), on up to four
/// threads when there are many.
pub fn map<T: Sync, U: Send>(items: &[T], f: impl Fn(usize, &T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(4);
    let run = |first: usize, part: &[T]| -> Vec<U> {
        part.iter()
            .enumerate()
            .map(|(i, x)| f(first + i, x))
            .collect()
    };
    if threads < 2 || items.len() < SPLIT_FROM {
        return run(0, items);
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let others: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .skip(1)
            .map(|(k, part)| s.spawn(move || run(k * chunk, part)))
            .collect();
        let mut out = run(0, &items[..chunk]);
        for other in others {
            out.extend(
                other
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            );
        }
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order_and_indexes_at_any_size() {
        for n in [0, 1, 255, 256, 257, 1000, 4099] {
            let items: Vec<u64> = (0..n).map(|i| i * 3).collect();
            let out = super::map(&items, |i, x| (i, *x + 1));
            assert_eq!(out.len(), items.len());
            for (i, (j, y)) in out.into_iter().enumerate() {
                assert_eq!((j, y), (i, items[i] + 1));
            }
        }
    }
}
