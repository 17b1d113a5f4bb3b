//! Whether a JSON number is beyond `f64` (serde_json refuses those),
//! decided on its digits: the reader never parses a float.

/// `2^1024 - 2^970`, halfway between `f64::MAX` and the next power of two:
/// the smallest decimal that a correctly rounding parser makes infinite.
pub(super) const F64_OVERFLOW_DIGITS: &[u8; 309] = b"179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792";

/// Whether a number of JSON grammar (its integer and fraction digits, and
/// its exponent with its sign) is beyond `f64`. serde_json refuses such a
/// number wherever it is; so does the reader, read or skipped, as it is the
/// only check of an object's values before a patch is made from it.
#[inline(never)]
pub(super) fn beyond_f64(integer: &[u8], fraction: &[u8], exponent: &[u8]) -> bool {
    let (negative, exponent) = match exponent.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, exponent),
    };
    // Saturated far beyond any digit count that fits in memory.
    let exponent = exponent
        .iter()
        .fold(0i64, |e, d| (e * 10 + i64::from(d - b'0')).min(1 << 40));
    let exponent = if negative { -exponent } else { exponent };
    let digits = integer.iter().chain(fraction).copied();
    let Some(leading_zeros) = digits.clone().position(|d| d != b'0') else {
        return false; // zero
    };
    let mut significant = digits.skip(leading_zeros);
    // The power of ten of the first significant digit.
    let magnitude = integer.len() as i64 - 1 - leading_zeros as i64 + exponent;
    if magnitude != 308 {
        return magnitude > 308;
    }
    for &limit in F64_OVERFLOW_DIGITS {
        let digit = significant.next().unwrap_or(b'0');
        if digit != limit {
            return digit > limit;
        }
    }
    // Equal to the limit or above it (a tie rounds to even: up).
    true
}
