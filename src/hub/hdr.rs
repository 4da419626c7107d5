//! HdrHistogram V2 encodings (plain, or deflated) from a game server's
//! `metrics` frame, decoded straight into sparse `(value, count)` pairs.
//!
//! Nothing a client declares is trusted before it is checked against what
//! it sent: the payload length against the bytes present, the inflated
//! size against [`MAX_INFLATED_BYTES`], the histogram's parameters against
//! what HdrHistogram allows, every count's position against the range its
//! parameters give, and the number of distinct values against the caller's
//! cap. No counts array is ever built (a header may describe one of
//! millions of entries): the pairs are computed from the positions of the
//! non-zero counts, as the `hdrhistogram` crate's recorded-values iterator
//! reports them (each value is the highest of its bucket). The unit tests
//! check that equality on random histograms.

use flate2::read::ZlibDecoder;
use std::io::Read;

/// The largest a deflated histogram may inflate to.
pub const MAX_INFLATED_BYTES: usize = 256 * 1024;

const V2_COOKIE: u32 = 0x1c84_9313;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
const HEADER_BYTES: usize = 40;

/// Why an encoded histogram is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HdrError {
    #[error("shorter than an HdrHistogram V2 header")]
    Truncated,
    #[error("not an HdrHistogram V2 encoding (cookie {0:#010x})")]
    Cookie(u32),
    #[error("declares a {declared}-byte payload but carries {present} bytes")]
    Length { declared: u64, present: usize },
    #[error("inflates to more than {MAX_INFLATED_BYTES} bytes")]
    InflatesTooFar,
    #[error("the deflated payload is not a zlib stream")]
    Deflate,
    #[error("unsupported parameters ({0})")]
    Parameters(&'static str),
    #[error("a count is out of range or its encoding is broken")]
    Count,
    #[error("counts run past the range the header declares")]
    PastRange,
    #[error("more than {0} distinct values")]
    TooManyValues(usize),
}

/// The `(value, count)` pairs of an encoded histogram, by value, at most
/// `max_pairs` of them.
pub fn decode_pairs(bytes: &[u8], max_pairs: usize) -> Result<Vec<(u64, u64)>, HdrError> {
    match cookie(bytes)? {
        V2_COOKIE => decode_v2(bytes, max_pairs),
        V2_COMPRESSED_COOKIE => {
            let declared = u64::from(be_u32(bytes, 4)?);
            let present = bytes.len() - 8;
            if declared > present as u64 {
                return Err(HdrError::Length { declared, present });
            }
            let compressed = &bytes[8..8 + declared as usize];
            // At most one byte past the cap is ever inflated: enough to
            // tell that the cap was passed.
            let mut inflated = Vec::with_capacity((compressed.len() * 4).min(MAX_INFLATED_BYTES));
            ZlibDecoder::new(compressed)
                .take(MAX_INFLATED_BYTES as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|_| HdrError::Deflate)?;
            if inflated.len() > MAX_INFLATED_BYTES {
                return Err(HdrError::InflatesTooFar);
            }
            match cookie(&inflated)? {
                V2_COOKIE => decode_v2(&inflated, max_pairs),
                other => Err(HdrError::Cookie(other)),
            }
        }
        other => Err(HdrError::Cookie(other)),
    }
}

fn be_u32(bytes: &[u8], at: usize) -> Result<u32, HdrError> {
    let word = bytes.get(at..at + 4).ok_or(HdrError::Truncated)?;
    Ok(u32::from_be_bytes(word.try_into().expect("four bytes")))
}

fn be_u64(bytes: &[u8], at: usize) -> Result<u64, HdrError> {
    let word = bytes.get(at..at + 8).ok_or(HdrError::Truncated)?;
    Ok(u64::from_be_bytes(word.try_into().expect("eight bytes")))
}

fn cookie(bytes: &[u8]) -> Result<u32, HdrError> {
    be_u32(bytes, 0)
}

/// The bucket layout of a histogram, as HdrHistogram derives it from its
/// lowest discernible value, highest trackable value and precision.
struct Layout {
    unit_magnitude: u32,
    sub_bucket_half_count_magnitude: u32,
    sub_bucket_half_count: u64,
    sub_bucket_mask: u64,
    leading_zero_count_base: u32,
    /// Positions in the counts array the parameters allow.
    counts_len: u64,
}

impl Layout {
    fn new(low: u64, high: u64, digits: u32) -> Result<Self, HdrError> {
        if low < 1 {
            return Err(HdrError::Parameters("the lowest value is 0"));
        }
        if low > u64::MAX / 2 || high < 2 * low {
            return Err(HdrError::Parameters(
                "the highest value is below twice the lowest",
            ));
        }
        if digits > 5 {
            return Err(HdrError::Parameters("more than 5 significant digits"));
        }
        let largest = 2 * 10_u64.pow(digits);
        let unit_magnitude = 63 - low.leading_zeros();
        // ceil(log2(largest)), largest in [2, 200_000]
        let sub_bucket_count_magnitude = 64 - (largest - 1).leading_zeros();
        if unit_magnitude + sub_bucket_count_magnitude > 63 {
            return Err(HdrError::Parameters(
                "the precision cannot be held beyond the lowest value",
            ));
        }
        let sub_bucket_count = 1_u64 << sub_bucket_count_magnitude;
        let sub_bucket_half_count = sub_bucket_count / 2;
        // Buckets needed to cover `high` (HdrHistogram's `buckets_to_cover`).
        let mut smallest_untrackable = sub_bucket_count << unit_magnitude;
        let mut buckets = 1_u64;
        while smallest_untrackable <= high {
            if smallest_untrackable > u64::MAX / 2 {
                buckets += 1;
                break;
            }
            smallest_untrackable <<= 1;
            buckets += 1;
        }
        Ok(Self {
            unit_magnitude,
            sub_bucket_half_count_magnitude: sub_bucket_count_magnitude - 1,
            sub_bucket_half_count,
            sub_bucket_mask: (sub_bucket_count - 1) << unit_magnitude,
            leading_zero_count_base: 64 - unit_magnitude - sub_bucket_count_magnitude,
            counts_len: (buckets + 1) * sub_bucket_half_count,
        })
    }

    fn shifted(value: u64, by: u32) -> u64 {
        value.checked_shl(by).unwrap_or(u64::MAX)
    }

    /// The lowest value of the bucket at `index` (HdrHistogram's `value_for`).
    fn value_for(&self, index: u64) -> u64 {
        let bucket = (index >> self.sub_bucket_half_count_magnitude) as i64 - 1;
        let mut sub_bucket =
            (index & (self.sub_bucket_half_count - 1)) + self.sub_bucket_half_count;
        let bucket = if bucket < 0 {
            sub_bucket -= self.sub_bucket_half_count;
            0
        } else {
            bucket as u32
        };
        Self::shifted(sub_bucket, bucket + self.unit_magnitude)
    }

    /// The highest value counted with `value` (what iterating reports).
    fn highest_equivalent(&self, value: u64) -> u64 {
        if value == u64::MAX {
            return u64::MAX;
        }
        let bucket = self
            .leading_zero_count_base
            .saturating_sub((value | self.sub_bucket_mask).leading_zeros());
        let shift = self.unit_magnitude + bucket;
        let lowest = if shift >= 64 {
            0
        } else {
            (value >> shift) << shift
        };
        lowest.saturating_add(Self::shifted(1, shift)) - 1
    }
}

/// Reads one LEB128 varint of at most 9 bytes (the 9th carries 8 bits),
/// as HdrHistogram writes them.
fn varint(payload: &[u8], at: &mut usize) -> Result<u64, HdrError> {
    let mut value = 0_u64;
    for shift in 0..9 {
        let byte = *payload.get(*at).ok_or(HdrError::Count)?;
        *at += 1;
        if shift == 8 {
            return Ok(value | (u64::from(byte) << 56));
        }
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    unreachable!("the ninth byte returns")
}

fn decode_v2(bytes: &[u8], max_pairs: usize) -> Result<Vec<(u64, u64)>, HdrError> {
    if bytes.len() < HEADER_BYTES {
        return Err(HdrError::Truncated);
    }
    let declared = u64::from(be_u32(bytes, 4)?);
    if be_u32(bytes, 8)? != 0 {
        return Err(HdrError::Parameters("a normalizing index offset"));
    }
    let digits = be_u32(bytes, 12)?;
    let low = be_u64(bytes, 16)?;
    let high = be_u64(bytes, 24)?;
    if f64::from_bits(be_u64(bytes, 32)?) != 1.0 {
        return Err(HdrError::Parameters("a double-to-integer ratio"));
    }
    let present = bytes.len() - HEADER_BYTES;
    if declared > present as u64 {
        return Err(HdrError::Length { declared, present });
    }
    let layout = Layout::new(low, high, digits)?;
    let payload = &bytes[HEADER_BYTES..HEADER_BYTES + declared as usize];
    let mut pairs = Vec::new();
    let (mut at, mut index) = (0_usize, 0_u64);
    while at < payload.len() {
        let zigzag = varint(payload, &mut at)?;
        let number = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
        if number < 0 {
            // A run of empty positions.
            index = index
                .checked_add(number.unsigned_abs())
                .ok_or(HdrError::PastRange)?;
            continue;
        }
        if number > 0 {
            if index >= layout.counts_len {
                return Err(HdrError::PastRange);
            }
            if pairs.len() == max_pairs {
                return Err(HdrError::TooManyValues(max_pairs));
            }
            let value = layout.highest_equivalent(layout.value_for(index));
            pairs.push((value, number as u64));
        }
        index += 1;
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::{
        Histogram,
        serialization::{Deserializer, Serializer, V2DeflateSerializer, V2Serializer},
    };
    use proptest::prelude::*;

    fn encoded(histogram: &Histogram<u64>, deflate: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if deflate {
            V2DeflateSerializer::new()
                .serialize(histogram, &mut out)
                .unwrap();
        } else {
            V2Serializer::new().serialize(histogram, &mut out).unwrap();
        }
        out
    }

    fn recorded(histogram: &Histogram<u64>) -> Vec<(u64, u64)> {
        histogram
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    fn header(payload_len: u32, digits: u32, low: u64, high: u64) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&V2_COOKIE.to_be_bytes());
        out.extend_from_slice(&payload_len.to_be_bytes());
        out.extend_from_slice(&0_u32.to_be_bytes());
        out.extend_from_slice(&digits.to_be_bytes());
        out.extend_from_slice(&low.to_be_bytes());
        out.extend_from_slice(&high.to_be_bytes());
        out.extend_from_slice(&1.0_f64.to_bits().to_be_bytes());
        out
    }

    fn zigzag_varint(number: i64) -> Vec<u8> {
        let mut zigzag = ((number << 1) ^ (number >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let byte = (zigzag & 0x7f) as u8;
            zigzag >>= 7;
            if zigzag == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn deflated(inner: &[u8]) -> Vec<u8> {
        use flate2::{Compression, write::ZlibEncoder};
        use std::io::Write;
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(inner).unwrap();
        let compressed = encoder.finish().unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(&V2_COMPRESSED_COOKIE.to_be_bytes());
        out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        out.extend_from_slice(&compressed);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Ours and the crate's decoding agree on every histogram the crate writes.
        #[test]
        fn pairs_match_what_the_crate_reads_back(
            low_power in 0_u32..12,
            high_power in 12_u32..45,
            digits in 0_u8..=4,
            values in proptest::collection::vec((0_u64..1 << 44, 1_u64..1000), 0..60),
            deflate in any::<bool>(),
        ) {
            let low = 1_u64 << low_power;
            let high = (1_u64 << high_power).max(2 * low);
            let Ok(mut histogram) = Histogram::<u64>::new_with_bounds(low, high, digits) else {
                return Ok(());
            };
            for (value, count) in values {
                histogram.record_n(value.min(high), count).unwrap();
            }
            let bytes = encoded(&histogram, deflate);
            let back = Deserializer::new().deserialize::<u64, _>(&mut bytes.as_slice()).unwrap();
            prop_assert_eq!(decode_pairs(&bytes, 10_000).unwrap(), recorded(&back));
        }

        /// Whatever the bytes, decoding ends with pairs or an error, without panicking.
        #[test]
        fn any_bytes_decode_or_are_refused(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..256),
            cookie in prop_oneof![Just(V2_COOKIE), Just(V2_COMPRESSED_COOKIE), any::<u32>()],
        ) {
            if bytes.len() >= 4 {
                bytes[..4].copy_from_slice(&cookie.to_be_bytes());
            }
            if let Ok(pairs) = decode_pairs(&bytes, 100) {
                prop_assert!(pairs.len() <= 100);
            }
        }
    }

    #[test]
    fn a_length_prefix_larger_than_the_bytes_is_refused() {
        let bomb = header(u32::MAX, 3, 1, 3_600_000);
        assert_eq!(bomb.len(), 40);
        assert_eq!(
            decode_pairs(&bomb, 100),
            Err(HdrError::Length {
                declared: u64::from(u32::MAX),
                present: 0
            })
        );
        let mut compressed = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        compressed.extend_from_slice(&u32::MAX.to_be_bytes());
        compressed.extend_from_slice(&[0x78, 0x9c]);
        assert!(matches!(
            decode_pairs(&compressed, 100),
            Err(HdrError::Length { .. })
        ));
        // The inner header of a deflated one is checked the same way.
        assert!(matches!(
            decode_pairs(&deflated(&bomb), 100),
            Err(HdrError::Length { .. })
        ));
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_cap() {
        // 64 MiB of zeros deflate to ~64 KiB; inflating stops one byte past the cap.
        let mut inner = header(64 << 20, 3, 1, 3_600_000);
        inner.resize(inner.len() + (64 << 20), 0);
        let bomb = deflated(&inner);
        assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
        assert_eq!(decode_pairs(&bomb, 100), Err(HdrError::InflatesTooFar));
    }

    #[test]
    fn parameters_outside_hdrhistograms_rules_are_refused() {
        for (digits, low, high) in [
            (6, 1, 1000),
            (3, 0, 1000),
            (3, 100, 150),
            (5, 1 << 50, u64::MAX),
        ] {
            assert!(
                matches!(
                    decode_pairs(&header(0, digits, low, high), 100),
                    Err(HdrError::Parameters(_))
                ),
                "{digits} {low} {high}"
            );
        }
        // A count far past the declared range: 2^33 empty positions, then a count.
        let mut past = header(0, 1, 1, 100);
        let mut payload = zigzag_varint(-(1 << 33));
        payload.extend(zigzag_varint(1));
        past.extend_from_slice(&payload);
        past[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        assert_eq!(decode_pairs(&past, 100), Err(HdrError::PastRange));
    }

    #[test]
    fn the_pairs_are_capped() {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 1 << 20, 3).unwrap();
        for value in 0..500 {
            histogram.record(value * 7).unwrap();
        }
        let bytes = encoded(&histogram, false);
        assert_eq!(decode_pairs(&bytes, 499), Err(HdrError::TooManyValues(499)));
        assert_eq!(decode_pairs(&bytes, 500).unwrap().len(), 500);
    }
}
