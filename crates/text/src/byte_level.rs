//! The GPT-2 byte-to-character table of byte-level BPE, read backwards: which bytes a
//! token's characters stand for.

/// Printable bytes stand for themselves; the other 68 are shifted past 255 in order.
fn printable(b: u32) -> bool {
    (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
}

/// The character that stands for byte `b` in byte-level tokens.
pub(crate) fn symbol_of(b: u8) -> char {
    let b = b as u32;
    let code = if printable(b) {
        b
    } else {
        256 + (0..b).filter(|&x| !printable(x)).count() as u32
    };
    char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The byte a byte-level symbol stands for, or `None` for a character outside the table.
fn byte_of(c: char) -> Option<u8> {
    let c = c as u32;
    if c < 256 {
        return printable(c).then_some(c as u8);
    }
    let n = c.checked_sub(256)?;
    (0u32..256).filter(|&b| !printable(b)).nth(n as usize).map(|b| b as u8)
}

/// The number of bytes a byte-level token's text stands for, or `None` when it is not
/// made of byte-level symbols.
pub(crate) fn decoded_len(token: &str) -> Option<usize> {
    token.chars().map(byte_of).try_fold(0, |n, b| b.map(|_| n + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_a_bijection_on_the_256_bytes() {
        let chars: Vec<char> = (0u32..0x200)
            .filter_map(char::from_u32)
            .filter(|&c| byte_of(c).is_some())
            .collect();
        assert_eq!(chars.len(), 256);
        let mut bytes: Vec<u8> = chars.iter().filter_map(|&c| byte_of(c)).collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
        // The space is shifted: GPT-2's "Ġ" is U+0120.
        assert_eq!(byte_of('\u{120}'), Some(b' '));
        assert_eq!(byte_of('A'), Some(b'A'));
        assert_eq!(decoded_len("\u{120}the"), Some(4));
        assert_eq!(decoded_len("<|eos|>"), Some(7));
        assert_eq!(decoded_len("\u{2581}x"), None);
        for b in 0..=255u8 {
            assert_eq!(byte_of(symbol_of(b)), Some(b));
        }
    }
}
