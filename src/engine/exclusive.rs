//! Exclusivity: within one VNet Azure never gives one private IP to two NICs
//! at the same instant, so a claim's certain window bounds every other
//! claim's possible window on the same (VNet, IP): theirs end, at the
//! latest, where it certainly begins, and begin, at the earliest, where it
//! certainly ends. Two certain windows that overlap are a conflict
//! (reported by [`super::find_conflicts`]) and bound nothing of each other.
//!
//! Claims are derived per NIC ([`super::derive_claims`]), so arrival order
//! never matters; exclusivity is applied on top, over all the claims of one
//! (VNet, IP), whenever they are answered from. It only ever narrows a
//! possible window, never below its certain window, and never touches a
//! certain window: two NICs are never made certain at once.

use super::{Claim, Micros, Window};

/// A claim's possible window as the other claims on its (VNet, IP) bound it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounded {
    pub possible: Window,
    /// The claim (an index into the slice given) whose certain end bounds
    /// the start, when it moved it.
    pub start_by: Option<usize>,
    /// The claim whose certain start bounds the end, when it moved it.
    pub end_by: Option<usize>,
}

/// The possible windows of `claims` as exclusivity bounds them, in the
/// order given. Claims are grouped by (scope, IP or prefix) exactly;
/// `O(n log n)` per group.
pub fn exclusive(claims: &[&Claim]) -> Vec<Bounded> {
    let mut out: Vec<Bounded> = claims
        .iter()
        .map(|c| Bounded {
            possible: c.possible,
            start_by: None,
            end_by: None,
        })
        .collect();
    if claims.len() < 2 {
        return out;
    }
    // Groups: indices sorted by (scope, ip).
    let mut order: Vec<usize> = (0..claims.len()).collect();
    order.sort_by(|&a, &b| {
        (&*claims[a].key.scope, claims[a].key.ip).cmp(&(&*claims[b].key.scope, claims[b].key.ip))
    });
    let mut g = 0;
    while g < order.len() {
        let key = (&*claims[order[g]].key.scope, claims[order[g]].key.ip);
        let mut h = g + 1;
        while h < order.len() && (&*claims[order[h]].key.scope, claims[order[h]].key.ip) == key {
            h += 1;
        }
        if h - g > 1 {
            bound_group(claims, &order[g..h], &mut out);
        }
        g = h;
    }
    out
}

/// Bounds the claims `group` (indices into `claims`, one (scope, IP)).
fn bound_group(claims: &[&Claim], group: &[usize], out: &mut [Bounded]) {
    // Nonempty certain windows only: an empty one proves no instant.
    let proven = |&i: &usize| claims[i].certain.start < claims[i].certain.end;
    let mut starts: Vec<(Micros, usize)> = group
        .iter()
        .filter(|i| proven(i))
        .map(|&i| (claims[i].certain.start, i))
        .collect();
    let mut ends: Vec<(Micros, usize)> = group
        .iter()
        .filter(|i| proven(i))
        .map(|&i| (claims[i].certain.end, i))
        .collect();
    if starts.is_empty() {
        return;
    }
    starts.sort_unstable();
    ends.sort_unstable();
    for &i in group {
        let c = claims[i];
        // The earliest certain start at or after this claim's certain end:
        // a claim starting there does not overlap it (its start is past
        // this one's end), and nothing certain starts earlier after it.
        let k = starts.partition_point(|&(s, _)| s < c.certain.end);
        if let Some(&(s, j)) = starts.get(k)
            && j != i
            && s < out[i].possible.end
        {
            out[i].possible.end = s;
            out[i].end_by = Some(j);
        }
        // The latest certain end at or before this claim's certain start.
        let k = ends.partition_point(|&(e, _)| e <= c.certain.start);
        if k > 0 {
            let (e, j) = ends[k - 1];
            if j != i && e > out[i].possible.start {
                out[i].possible.start = e;
                out[i].start_by = Some(j);
            }
        }
    }
}
