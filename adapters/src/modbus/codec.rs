//! The register codec: 16-bit registers (and bits) to typed values and back, with word and
//! byte order, then scale and offset.
//!
//! Pure: no I/O, no clock, no allocation beyond the result. Everything here is tested with
//! literal register values.

use super::{ByteOrder, DataType, RegisterDef, Value, WordOrder};
use crate::modbus::error::CodecError;

/// Puts registers as they came off the wire into big-endian byte order.
fn to_be_bytes(words: &[u16], word_order: WordOrder, byte_order: ByteOrder) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(words.len() * 2);
    let mut push = |w: u16| {
        let w = match byte_order {
            ByteOrder::High => w,
            ByteOrder::Low => w.swap_bytes(),
        };
        bytes.extend_from_slice(&w.to_be_bytes());
    };
    match word_order {
        WordOrder::High => words.iter().copied().for_each(&mut push),
        WordOrder::Low => words.iter().rev().copied().for_each(&mut push),
    }
    bytes
}

/// Turns big-endian bytes into registers in the wire layout (inverse of [`to_be_bytes`]).
fn from_be_bytes(bytes: &[u8], word_order: WordOrder, byte_order: ByteOrder) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let w = u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]);
            match byte_order {
                ByteOrder::High => w,
                ByteOrder::Low => w.swap_bytes(),
            }
        })
        .collect();
    if word_order == WordOrder::Low {
        words.reverse();
    }
    words
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

#[allow(clippy::float_cmp)]
fn is_identity(reg: &RegisterDef) -> bool {
    reg.scale == 1.0 && reg.offset == 0.0
}

#[allow(clippy::cast_precision_loss)]
fn scaled_int(reg: &RegisterDef, raw: i128) -> Value {
    if is_identity(reg) {
        Value::Int(raw)
    } else {
        Value::Float(raw as f64 * reg.scale + reg.offset)
    }
}

fn scaled_float(reg: &RegisterDef, raw: f64) -> Value {
    if is_identity(reg) {
        Value::Float(raw)
    } else {
        Value::Float(raw * reg.scale + reg.offset)
    }
}

/// Decodes a register value from the registers it occupies (`words.len()` must be at least
/// [`RegisterDef::width`]), applying layout, then scale and offset.
///
/// Register bits (`reg.bit`) are taken from the first register. Text is decoded as ASCII with
/// trailing NULs removed; a byte outside ASCII becomes U+FFFD rather than failing the read.
///
/// # Errors
/// [`CodecError::WrongLength`] when `words` is shorter than the type needs.
pub fn decode(reg: &RegisterDef, words: &[u16]) -> Result<Value, CodecError> {
    let width = usize::from(reg.width());
    if words.len() < width {
        return Err(CodecError::WrongLength {
            data_type: reg.data_type,
            expected: width,
            got: words.len(),
        });
    }
    let words = &words[..width];
    if let Some(bit) = reg.bit {
        return Ok(Value::Bool(words[0] >> (bit & 15) & 1 == 1));
    }
    let b = to_be_bytes(words, reg.word_order, reg.byte_order);
    Ok(match reg.data_type {
        DataType::U16 => scaled_int(reg, u16::from_be_bytes(array(&b)).into()),
        DataType::I16 => scaled_int(reg, i16::from_be_bytes(array(&b)).into()),
        DataType::U32 => scaled_int(reg, u32::from_be_bytes(array(&b)).into()),
        DataType::I32 => scaled_int(reg, i32::from_be_bytes(array(&b)).into()),
        DataType::U64 => scaled_int(reg, u64::from_be_bytes(array(&b)).into()),
        DataType::I64 => scaled_int(reg, i64::from_be_bytes(array(&b)).into()),
        DataType::F32 => scaled_float(reg, f32::from_be_bytes(array(&b)).into()),
        DataType::F64 => scaled_float(reg, f64::from_be_bytes(array(&b))),
        DataType::Bool => Value::Bool(words[0] != 0),
        DataType::String { .. } => {
            // Text keeps register order; only the byte order inside a register applies.
            let b = to_be_bytes(words, WordOrder::High, reg.byte_order);
            let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
            Value::Text(
                b[..end]
                    .iter()
                    .map(|&c| {
                        if c.is_ascii() {
                            char::from(c)
                        } else {
                            '\u{FFFD}'
                        }
                    })
                    .collect(),
            )
        }
    })
}

/// Decodes a coil or discrete input.
#[must_use]
pub fn decode_bit(bit: bool) -> Value {
    Value::Bool(bit)
}

/// Removes scale and offset from a number and rounds it into the integer range `[min, max]`.
#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
fn raw_int(reg: &RegisterDef, value: &Value, min: i128, max: i128) -> Result<i128, CodecError> {
    if let (Value::Int(i), true) = (value, is_identity(reg)) {
        return if (min..=max).contains(i) {
            Ok(*i)
        } else {
            Err(CodecError::OutOfRange {
                value: value.to_string(),
                raw: *i as f64,
                data_type: reg.data_type,
            })
        };
    }
    let x = number(reg, value)?;
    let raw = ((x - reg.offset) / reg.scale).round();
    // The float bounds of i128 conversions are inexact near 2^63/2^64; compare in f64 and
    // then check the converted integer again.
    if !raw.is_finite() || raw < min as f64 || raw > max as f64 {
        return Err(CodecError::OutOfRange {
            value: value.to_string(),
            raw,
            data_type: reg.data_type,
        });
    }
    let r = raw as i128;
    if (min..=max).contains(&r) {
        Ok(r)
    } else {
        Err(CodecError::OutOfRange {
            value: value.to_string(),
            raw,
            data_type: reg.data_type,
        })
    }
}

fn number(reg: &RegisterDef, value: &Value) -> Result<f64, CodecError> {
    match value {
        Value::Int(_) | Value::Float(_) => value.as_f64().ok_or_else(|| mismatch(reg, value)),
        Value::Bool(_) | Value::Text(_) => Err(mismatch(reg, value)),
    }
}

fn mismatch(reg: &RegisterDef, value: &Value) -> CodecError {
    CodecError::TypeMismatch {
        value: value.to_string(),
        data_type: reg.data_type,
    }
}

/// Encodes a value into the registers it occupies on the wire: removes offset and scale
/// (rounding to the nearest integer for integer types), then applies the layout.
///
/// For a register bit this returns a one-register mask value with only that bit set or clear
/// relative to zero; callers merge it into the current register (see the client). Coils and
/// discrete inputs encode `true` as `[1]` and `false` as `[0]`.
///
/// # Errors
/// [`CodecError::OutOfRange`] when the raw number does not fit the type,
/// [`CodecError::TypeMismatch`] for a value of the wrong kind, [`CodecError::BadText`] for text
/// that is not ASCII or too long.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn encode(reg: &RegisterDef, value: &Value) -> Result<Vec<u16>, CodecError> {
    let (wo, bo) = (reg.word_order, reg.byte_order);
    if reg.bit.is_some() {
        return encode_bool(reg, value);
    }
    let bytes: Vec<u8> = match reg.data_type {
        DataType::U16 => (raw_int(reg, value, 0, u16::MAX.into())? as u16)
            .to_be_bytes()
            .to_vec(),
        DataType::I16 => (raw_int(reg, value, i16::MIN.into(), i16::MAX.into())? as i16)
            .to_be_bytes()
            .to_vec(),
        DataType::U32 => (raw_int(reg, value, 0, u32::MAX.into())? as u32)
            .to_be_bytes()
            .to_vec(),
        DataType::I32 => (raw_int(reg, value, i32::MIN.into(), i32::MAX.into())? as i32)
            .to_be_bytes()
            .to_vec(),
        DataType::U64 => (raw_int(reg, value, 0, u64::MAX.into())? as u64)
            .to_be_bytes()
            .to_vec(),
        DataType::I64 => (raw_int(reg, value, i64::MIN.into(), i64::MAX.into())? as i64)
            .to_be_bytes()
            .to_vec(),
        DataType::F32 => {
            let raw = (number(reg, value)? - reg.offset) / reg.scale;
            if raw.is_finite() && raw.abs() > f64::from(f32::MAX) {
                return Err(CodecError::OutOfRange {
                    value: value.to_string(),
                    raw,
                    data_type: reg.data_type,
                });
            }
            (raw as f32).to_be_bytes().to_vec()
        }
        DataType::F64 => ((number(reg, value)? - reg.offset) / reg.scale)
            .to_be_bytes()
            .to_vec(),
        DataType::String { registers } => {
            let Value::Text(text) = value else {
                return Err(mismatch(reg, value));
            };
            if !text.is_ascii() || text.len() > usize::from(registers) * 2 {
                return Err(CodecError::BadText {
                    text: text.clone(),
                    registers,
                });
            }
            let mut b = text.as_bytes().to_vec();
            b.resize(usize::from(registers) * 2, 0);
            return Ok(from_be_bytes(&b, WordOrder::High, bo));
        }
        DataType::Bool => return encode_bool(reg, value),
    };
    Ok(from_be_bytes(&bytes, wo, bo))
}

/// A boolean as one register: the register bit set (or clear) relative to zero, or 0/1.
fn encode_bool(reg: &RegisterDef, value: &Value) -> Result<Vec<u16>, CodecError> {
    let on = match value {
        Value::Bool(b) => *b,
        Value::Int(0) => false,
        Value::Int(1) => true,
        _ => return Err(mismatch(reg, value)),
    };
    Ok(vec![match reg.bit {
        Some(bit) => u16::from(on) << (bit & 15),
        None => u16::from(on),
    }])
}

/// The value the register will actually hold after writing `value` (scaled integers rounded,
/// floats at f32 precision, text padded); `None` when the value cannot be written at all.
pub fn normalize(def: &RegisterDef, value: &Value) -> Option<Value> {
    if def.table.is_bits() {
        return encode(def, value)
            .ok()
            .map(|w| Value::Bool(w.first().is_some_and(|x| *x != 0)));
    }
    let words = encode(def, value).ok()?;
    decode(def, &words).ok()
}

/// Whether the register `def`, observed at `observed`, fails to hold `desired`: the desired
/// value is first brought to what the register can hold (an f32 setpoint of 0.1 is compared
/// at f32 precision), then compared within the register's tolerance. A value the register
/// cannot hold at all always differs. Pure, for planners.
#[must_use]
pub fn register_differs(def: &RegisterDef, desired: &Value, observed: &Value) -> bool {
    match normalize(def, desired) {
        Some(d) => differs(&d, observed, def.tolerance),
        None => true,
    }
}

/// Whether `observed` fails to match `desired`: numbers (booleans as 0/1) differ when further
/// apart than `tolerance`; text compares exactly; a number never matches text.
#[must_use]
pub fn differs(desired: &Value, observed: &Value, tolerance: f64) -> bool {
    match (desired, observed) {
        (Value::Text(a), Value::Text(b)) => a != b,
        (Value::Int(a), Value::Int(b)) if tolerance == 0.0 => a != b,
        _ => match (desired.as_f64(), observed.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() > tolerance || a.is_nan() != b.is_nan(),
            _ => true,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

    use super::*;
    use crate::modbus::{Layout, Table};

    fn reg(data_type: DataType, layout: Layout) -> RegisterDef {
        RegisterDef::new("r", Table::Holding, 0, data_type).layout(layout)
    }

    #[test]
    fn decode_should_read_123_45_in_all_four_layouts() {
        let cases = [
            (Layout::None, [0x42F6, 0xE666]),
            (Layout::ByteSwap, [0xF642, 0x66E6]),
            (Layout::WordSwap, [0xE666, 0x42F6]),
            (Layout::WordByteSwap, [0x66E6, 0xF642]),
        ];
        for (layout, words) in cases {
            let r = reg(DataType::F32, layout);
            assert_eq!(
                decode(&r, &words).unwrap(),
                Value::Float(f64::from(123.45f32)),
                "{layout:?}"
            );
            assert_eq!(
                encode(&r, &Value::Float(123.45)).unwrap(),
                words,
                "{layout:?}"
            );
        }
    }

    #[test]
    fn decode_should_swap_words_for_low_word_order() {
        // 0x12345678 as u32
        assert_eq!(
            decode(&reg(DataType::U32, Layout::None), &[0x1234, 0x5678]).unwrap(),
            Value::Int(0x1234_5678)
        );
        assert_eq!(
            decode(&reg(DataType::U32, Layout::WordSwap), &[0x5678, 0x1234]).unwrap(),
            Value::Int(0x1234_5678)
        );
        assert_eq!(
            decode(&reg(DataType::U32, Layout::ByteSwap), &[0x3412, 0x7856]).unwrap(),
            Value::Int(0x1234_5678)
        );
        assert_eq!(
            decode(&reg(DataType::U32, Layout::WordByteSwap), &[0x7856, 0x3412]).unwrap(),
            Value::Int(0x1234_5678)
        );
    }

    #[test]
    fn decode_should_read_signed_and_wide_integers() {
        assert_eq!(
            decode(&reg(DataType::I16, Layout::None), &[0xFFFE]).unwrap(),
            Value::Int(-2)
        );
        assert_eq!(
            decode(&reg(DataType::I32, Layout::None), &[0xFFFF, 0xFF85]).unwrap(),
            Value::Int(-123)
        );
        assert_eq!(
            decode(
                &reg(DataType::U64, Layout::None),
                &[0x0123, 0x4567, 0x89AB, 0xCDEF]
            )
            .unwrap(),
            Value::Int(0x0123_4567_89AB_CDEF)
        );
        assert_eq!(
            decode(
                &reg(DataType::U64, Layout::WordSwap),
                &[0xCDEF, 0x89AB, 0x4567, 0x0123]
            )
            .unwrap(),
            Value::Int(0x0123_4567_89AB_CDEF)
        );
        assert_eq!(
            decode(
                &reg(DataType::I64, Layout::None),
                &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]
            )
            .unwrap(),
            Value::Int(-1)
        );
        assert_eq!(
            decode(&reg(DataType::U64, Layout::None), &[0xFFFF; 4]).unwrap(),
            Value::Int(u64::MAX.into())
        );
    }

    #[test]
    fn decode_should_read_f64_literals() {
        // 1.0 = 0x3FF0_0000_0000_0000; -2.5 = 0xC004_0000_0000_0000
        assert_eq!(
            decode(&reg(DataType::F64, Layout::None), &[0x3FF0, 0, 0, 0]).unwrap(),
            Value::Float(1.0)
        );
        assert_eq!(
            decode(
                &reg(DataType::F64, Layout::WordByteSwap),
                &[0, 0, 0, 0x04C0]
            )
            .unwrap(),
            Value::Float(-2.5)
        );
        assert_eq!(
            encode(&reg(DataType::F64, Layout::WordSwap), &Value::Float(-2.5)).unwrap(),
            vec![0, 0, 0, 0xC004]
        );
    }

    #[test]
    fn decode_should_apply_scale_then_offset() {
        let r = reg(DataType::I16, Layout::None).scaled(0.1, -40.0);
        // raw 652 -> 65.2 - 40 = 25.2
        let Value::Float(x) = decode(&r, &[652]).unwrap() else {
            panic!("not a float")
        };
        assert!((x - 25.2).abs() < 1e-9);
        assert_eq!(encode(&r, &Value::Float(25.2)).unwrap(), vec![652]);
        assert_eq!(encode(&r, &Value::Float(25.24)).unwrap(), vec![652]);
        assert_eq!(encode(&r, &Value::Float(25.26)).unwrap(), vec![653]);
    }

    #[test]
    fn encode_should_refuse_values_out_of_range_after_scaling() {
        let r = reg(DataType::U16, Layout::None).scaled(0.01, 0.0);
        assert_eq!(encode(&r, &Value::Float(655.35)).unwrap(), vec![65535]);
        assert!(matches!(
            encode(&r, &Value::Float(655.36)),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode(&reg(DataType::U16, Layout::None), &Value::Int(-1)),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode(&reg(DataType::I16, Layout::None), &Value::Int(40_000)),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode(&reg(DataType::F32, Layout::None), &Value::Float(1e39)),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode(&reg(DataType::U32, Layout::None), &Value::Float(f64::NAN)),
            Err(CodecError::OutOfRange { .. })
        ));
    }

    #[test]
    fn encode_should_keep_full_precision_for_unscaled_64_bit_integers() {
        let r = reg(DataType::U64, Layout::None);
        let v = Value::Int(u64::MAX.into());
        assert_eq!(encode(&r, &v).unwrap(), vec![0xFFFF; 4]);
        let r = reg(DataType::I64, Layout::WordByteSwap);
        let v = Value::Int(i64::MIN.into());
        let words = encode(&r, &v).unwrap();
        assert_eq!(words, vec![0, 0, 0, 0x0080]);
        assert_eq!(decode(&r, &words).unwrap(), v);
    }

    #[test]
    fn encode_should_refuse_a_value_of_the_wrong_kind() {
        assert!(matches!(
            encode(&reg(DataType::U16, Layout::None), &Value::Text("x".into())),
            Err(CodecError::TypeMismatch { .. })
        ));
        assert!(matches!(
            encode(&reg(DataType::Bool, Layout::None), &Value::Float(0.5)),
            Err(CodecError::TypeMismatch { .. })
        ));
    }

    #[test]
    fn strings_should_pad_with_nul_and_honour_byte_order() {
        let r = reg(DataType::String { registers: 3 }, Layout::None);
        assert_eq!(
            encode(&r, &Value::Text("ABC".into())).unwrap(),
            vec![0x4142, 0x4300, 0x0000]
        );
        assert_eq!(
            decode(&r, &[0x4142, 0x4300, 0x0000]).unwrap(),
            Value::Text("ABC".into())
        );
        let swapped = reg(DataType::String { registers: 2 }, Layout::WordByteSwap);
        assert_eq!(
            decode(&swapped, &[0x4241, 0x0043]).unwrap(),
            Value::Text("ABC".into())
        );
        assert!(matches!(
            encode(&r, &Value::Text("ABCDEFG".into())),
            Err(CodecError::BadText { .. })
        ));
        assert!(matches!(
            encode(&r, &Value::Text("Grüß".into())),
            Err(CodecError::BadText { .. })
        ));
    }

    #[test]
    fn bits_should_be_read_from_the_given_position() {
        let b3 = reg(DataType::Bool, Layout::None).with_bit(3);
        let b15 = reg(DataType::Bool, Layout::None).with_bit(15);
        assert_eq!(decode(&b3, &[0b1000]).unwrap(), Value::Bool(true));
        assert_eq!(decode(&b3, &[0b0111]).unwrap(), Value::Bool(false));
        assert_eq!(decode(&b15, &[0x8000]).unwrap(), Value::Bool(true));
        assert_eq!(encode(&b15, &Value::Bool(true)).unwrap(), vec![0x8000]);
        assert_eq!(
            decode(&reg(DataType::Bool, Layout::None), &[0]).unwrap(),
            Value::Bool(false)
        );
    }

    #[test]
    fn decode_should_refuse_too_few_registers() {
        assert!(matches!(
            decode(&reg(DataType::F64, Layout::None), &[1, 2, 3]),
            Err(CodecError::WrongLength {
                expected: 4,
                got: 3,
                ..
            })
        ));
    }

    proptest::proptest! {
        #[test]
        fn every_integer_round_trips_in_every_layout(x: i64, layout_ix in 0usize..4) {
            let layout = Layout::ALL[layout_ix];
            for data_type in [DataType::I64, DataType::I32, DataType::I16] {
                let r = reg(data_type, layout);
                let v = Value::Int(x.into());
                if let Ok(words) = encode(&r, &v) {
                    proptest::prop_assert_eq!(decode(&r, &words).unwrap(), v);
                }
            }
        }

        #[test]
        fn every_finite_f32_round_trips_in_every_layout(x: f32, layout_ix in 0usize..4) {
            proptest::prop_assume!(x.is_finite());
            let r = reg(DataType::F32, Layout::ALL[layout_ix]);
            let v = Value::Float(x.into());
            let words = encode(&r, &v).unwrap();
            proptest::prop_assert_eq!(decode(&r, &words).unwrap(), v);
        }
    }

    #[test]
    fn differs_should_use_the_tolerance_for_numbers_only() {
        assert!(!differs(&Value::Float(0.75), &Value::Float(0.7505), 0.001));
        assert!(differs(&Value::Float(0.75), &Value::Float(0.752), 0.001));
        assert!(!differs(&Value::Int(3), &Value::Float(3.0), 0.0));
        assert!(differs(&Value::Int(3), &Value::Int(4), 0.0));
        assert!(!differs(&Value::Bool(true), &Value::Int(1), 0.0));
        assert!(differs(
            &Value::Text("a".into()),
            &Value::Text("b".into()),
            10.0
        ));
        assert!(differs(&Value::Text("1".into()), &Value::Int(1), 10.0));
    }
}
