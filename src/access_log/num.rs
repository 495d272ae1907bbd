//! Decimal numbers straight into the line buffer: no `format!`, no temporary `String`.

/// Appends `n` in decimal.
#[inline]
pub(crate) fn push_u64(n: u64, out: &mut Vec<u8>) {
    push_padded(n, 1, out);
}

/// Appends `n` in decimal, zero-padded to at least `width` digits (at most 20 are honoured).
pub(crate) fn push_padded(mut n: u64, width: usize, out: &mut Vec<u8>) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = at.min(digits.len().saturating_sub(width));
    out.extend_from_slice(&digits[start..]);
}

pub(crate) fn push_i64(n: i64, out: &mut Vec<u8>) {
    if n < 0 {
        out.push(b'-');
    }
    push_u64(n.unsigned_abs(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let mut out = Vec::new();
        push_u64(0, &mut out);
        out.push(b' ');
        push_u64(u64::MAX, &mut out);
        out.push(b' ');
        push_padded(7, 3, &mut out);
        out.push(b' ');
        push_padded(12345, 2, &mut out);
        out.push(b' ');
        push_i64(i64::MIN, &mut out);
        assert_eq!(out, b"0 18446744073709551615 007 12345 -9223372036854775808");
    }
}
