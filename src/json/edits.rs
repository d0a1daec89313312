//! Test support: a few bytes of a generated document replaced, inserted or
//! removed, so properties also meet text that is nearly right.

use proptest::prelude::*;

/// Up to `max` edits, each putting one byte of `noise` somewhere.
pub fn edits(noise: &'static [u8], max: usize) -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(
        (
            any::<prop::sample::Index>(),
            0..3u8,
            proptest::sample::select(noise),
        ),
        0..=max,
    )
}

/// Where (an index scaled to the document), how (0 replace, 1 insert,
/// 2 remove) and what byte.
pub type Edit = (prop::sample::Index, u8, u8);

/// `doc` with `edits` made in order.
pub fn apply(mut doc: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for (at, how, byte) in edits {
        let i = at.index(doc.len() + 1);
        match how {
            0 if i < doc.len() => doc[i] = *byte,
            1 => doc.insert(i, *byte),
            _ if i < doc.len() => {
                doc.remove(i);
            }
            _ => {}
        }
    }
    doc
}
