//! Where a string's run of plain bytes ends: the one scan every string
//! the reader reads, skips or writes goes through.

/// The length of the longest prefix of `bytes` that a JSON string holds as
/// is: no quote, backslash or control character (all ASCII, so the prefix
/// always ends on a character boundary).
///
/// The wasm guest, built with SIMD, looks at 16 bytes at a time first.
#[inline(always)]
pub fn plain_len(bytes: &[u8]) -> usize {
    // Eight bytes at a time: `below(x, n)` sets a byte's high bit where that
    // byte of `x` is below `n`, so the lowest set bit marks the first stop
    // (bits above a real match may be false positives; bits below it never are).
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    fn below(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH
    }
    #[inline(always)]
    fn stops(chunk: &[u8]) -> u64 {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1)
            | below(x, 0x20)
    }
    let mut i = 0;
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if let Some(chunk) = bytes.get(..16) {
        let stop = stops16(chunk);
        if stop != 0 {
            return stop.trailing_zeros() as usize;
        }
        i = 16;
        while let Some(chunk) = bytes.get(i..i + 16) {
            let stop = stops16(chunk);
            if stop != 0 {
                return i + stop.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    // The first eight bytes outside the loop: most strings end within
    // them, and in the guest entering a loop costs its interruption check.
    if let Some(chunk) = bytes.get(i..i + 8) {
        let stop = stops(chunk);
        if stop != 0 {
            return i + (stop.trailing_zeros() / 8) as usize;
        }
        i += 8;
        while let Some(chunk) = bytes.get(i..i + 8) {
            let stop = stops(chunk);
            if stop != 0 {
                return i + (stop.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// [`plain_len`]'s stops in 16 bytes as a bit mask (bit i: byte i), with
/// wasm's SIMD: per byte, about a third of the 8-byte word's instructions.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn stops16(chunk: &[u8]) -> u32 {
    use std::arch::wasm32::{
        u8x16_bitmask, u8x16_eq, u8x16_splat, u8x16_sub_sat, v128, v128_load, v128_or,
    };
    let c: &[u8; 16] = chunk.try_into().unwrap_or(&[0; 16]);
    // SAFETY: `c` is 16 readable bytes, and wasm's `v128.load` has no
    // alignment requirement. (Built lane by lane, it is 16 loads.)
    let v = unsafe { v128_load(c.as_ptr().cast::<v128>()) };
    let quote = u8x16_eq(v, u8x16_splat(b'"'));
    let backslash = u8x16_eq(v, u8x16_splat(b'\\'));
    // The high bit of `0x9f - v` (saturating) is set where `v < 0x20`, and
    // the bit mask reads only high bits: one instruction on x86, which has
    // no unsigned byte compare (`u8x16_lt` costs three).
    let control = u8x16_sub_sat(u8x16_splat(0x9f), v);
    u32::from(u8x16_bitmask(v128_or(v128_or(quote, backslash), control)))
}
