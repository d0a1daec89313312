//! Header maps as proxy-wasm hands them over (and takes them): a count,
//! then the sizes of every name and value, then the bytes, each followed by
//! a NUL. Decoding is lossy and checked: a header value holding bytes that
//! are not UTF-8 (HTTP allows obs-text) becomes text with replacement
//! characters, and a truncated map yields the pairs it holds — never a
//! panic, which would take the filter down for every request after it.

/// Decodes a serialized header map.
pub fn decode(bytes: &[u8]) -> Vec<(String, String)> {
    let word = |at: usize| -> Option<usize> {
        let four: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(four) as usize)
    };
    let Some(count) = word(0) else {
        return Vec::new();
    };
    let mut pairs = Vec::new();
    let mut data = 4usize.saturating_add(count.saturating_mul(8));
    for n in 0..count {
        let sizes = 4 + n * 8;
        let (Some(name_len), Some(value_len)) = (word(sizes), word(sizes + 4)) else {
            break;
        };
        let name_end = data.saturating_add(name_len);
        let value_start = name_end.saturating_add(1);
        let value_end = value_start.saturating_add(value_len);
        let (Some(name), Some(value)) =
            (bytes.get(data..name_end), bytes.get(value_start..value_end))
        else {
            break;
        };
        pairs.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        data = value_end.saturating_add(1);
    }
    pairs
}

/// Serializes a header map.
pub fn encode(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_read_back_what_was_written() {
        let pairs = [(":method", "POST"), ("x-empty", ""), ("accept", "a, b")];
        let decoded = decode(&encode(&pairs));
        let expected: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(decoded, expected);
        assert!(decode(&encode(&[])).is_empty());
    }

    #[test]
    fn bytes_that_are_not_utf8_become_replacement_characters() {
        let mut bytes = encode(&[("x-foo", "ab")]);
        let at = bytes.len() - 3;
        bytes[at] = 0xff;
        assert_eq!(decode(&bytes), vec![("x-foo".into(), "\u{fffd}b".into())]);
    }

    #[test]
    fn truncated_or_lying_maps_never_panic() {
        let bytes = encode(&[("a", "1"), ("b", "2")]);
        for cut in 0..bytes.len() {
            let _ = decode(&bytes[..cut]);
        }
        let mut lying = bytes.clone();
        lying[0] = 0xff;
        lying[1] = 0xff;
        let _ = decode(&lying);
        let mut huge = bytes;
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_empty());
        assert!(decode(&[]).is_empty());
    }
}
