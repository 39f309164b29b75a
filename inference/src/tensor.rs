//! Tensors as they travel over JSON, and their canonical byte encoding.
//!
//! Wire form (requests, responses, proof blobs): `{"shape": [..], "dtype": "f32", "data": [..]}`
//! with `data` flat in row-major order and dtypes `f32`, `f64`, `i64`, `i32`, `u8`, `bool`.
//! Parsing never panics: every shape, count, range and dtype is checked and a failure names the
//! input. Non-finite floats cannot be written in JSON; they are written as `null` and read back as
//! NaN.
//!
//! Compact form ([`TensorEncoding::Base64`]): `"data_b64"` instead of `"data"`, a string holding
//! the elements row-major and little-endian (IEEE 754 for floats, two's complement for integers,
//! one byte 0 or 1 per bool), base64 with the standard alphabet and `=` padding (RFC 4648 §4).
//! It must decode to exactly `product(shape) * size_of(dtype)` bytes. A tensor carries exactly one
//! of `data` and `data_b64`. Floats keep their exact bits (infinities included) and there is no
//! number text to write or parse: the form for large tensors. Both forms read the same
//! [`TensorData`], so the canonical encoding (and every hash over it) does not depend on which
//! one travelled.
//!
//! The canonical encoding ([`canonical_bytes`], hashed by [`canonical_hash`]) is what proof records
//! commit to. Version 1, all integers little-endian:
//!
//! ```text
//! "WTNS" | u8 version = 1 | u32 tensor count
//! per tensor, in ascending byte order of name:
//!   u32 name length | name (UTF-8) | u8 dtype code (f32=1 f64=2 i64=3 i32=4 u8=5 bool=6)
//!   u32 rank | u64 per dim | elements, row-major, little-endian (bool = 0x00/0x01;
//!   every NaN is written as the quiet NaN 0x7fc00000 / 0x7ff8000000000000)
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::InferenceError;

/// Element types accepted and produced over JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F64,
    I64,
    I32,
    U8,
    Bool,
}

impl DType {
    /// The wire name (`"f32"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }

    /// Parse a wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<DType> {
        Some(match s {
            "f32" => DType::F32,
            "f64" => DType::F64,
            "i64" => DType::I64,
            "i32" => DType::I32,
            "u8" => DType::U8,
            "bool" => DType::Bool,
            _ => return None,
        })
    }

    /// Code in the canonical encoding.
    fn code(self) -> u8 {
        match self {
            DType::F32 => 1,
            DType::F64 => 2,
            DType::I64 => 3,
            DType::I32 => 4,
            DType::U8 => 5,
            DType::Bool => 6,
        }
    }

    /// Bytes per element in memory.
    pub fn size_of(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::U8 | DType::Bool => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Flat, row-major element storage of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorValues {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

impl TensorValues {
    pub fn dtype(&self) -> DType {
        match self {
            TensorValues::F32(_) => DType::F32,
            TensorValues::F64(_) => DType::F64,
            TensorValues::I64(_) => DType::I64,
            TensorValues::I32(_) => DType::I32,
            TensorValues::U8(_) => DType::U8,
            TensorValues::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorValues::F32(v) => v.len(),
            TensorValues::F64(v) => v.len(),
            TensorValues::I64(v) => v.len(),
            TensorValues::I32(v) => v.len(),
            TensorValues::U8(v) => v.len(),
            TensorValues::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` widened to f64, for tolerance comparisons and messages.
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        Some(match self {
            TensorValues::F32(v) => f64::from(*v.get(i)?),
            TensorValues::F64(v) => *v.get(i)?,
            TensorValues::I64(v) => *v.get(i)? as f64,
            TensorValues::I32(v) => f64::from(*v.get(i)?),
            TensorValues::U8(v) => f64::from(*v.get(i)?),
            TensorValues::Bool(v) => f64::from(u8::from(*v.get(i)?)),
        })
    }
}

/// One tensor: a shape and exactly `product(shape)` values.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorData {
    shape: Vec<usize>,
    values: TensorValues,
}

/// Named tensors, ordered by name (the order of the canonical encoding).
pub type Tensors = BTreeMap<String, TensorData>;

impl TensorData {
    /// A tensor, if `values` holds exactly `product(shape)` elements.
    pub fn new(shape: Vec<usize>, values: TensorValues) -> Result<TensorData, String> {
        let expected = element_count(&shape).ok_or("shape overflows")?;
        if expected != values.len() {
            return Err(format!(
                "shape {shape:?} needs {expected} elements, data has {}",
                values.len()
            ));
        }
        Ok(TensorData { shape, values })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.values.dtype()
    }

    pub fn values(&self) -> &TensorValues {
        &self.values
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Bitwise equality (NaNs compare equal to NaNs, -0.0 differs from 0.0): the comparison used
    /// when the engine build and CPU tag match.
    pub fn bitwise_eq(&self, other: &TensorData) -> bool {
        if self.shape != other.shape || self.dtype() != other.dtype() {
            return false;
        }
        let mut a = Vec::new();
        let mut b = Vec::new();
        self.encode_elements(&mut a);
        other.encode_elements(&mut b);
        a == b
    }

    /// A copy zero-padded (false for bool) at the end of every axis up to `target` (same rank,
    /// every dim >= ours).
    pub(crate) fn padded(&self, target: &[usize]) -> TensorData {
        debug_assert_eq!(target.len(), self.shape.len());
        if target == self.shape.as_slice() {
            return self.clone();
        }
        fn pad<T: Copy>(src: &[T], shape: &[usize], target: &[usize], zero: T) -> Vec<T> {
            let total: usize = target.iter().product();
            let mut out = vec![zero; total];
            if src.is_empty() {
                return out;
            }
            // Copy row by row along the last axis; `idx` walks the source's outer coordinates.
            let rank = shape.len();
            let row = shape[rank - 1];
            let mut idx = vec![0usize; rank.saturating_sub(1)];
            for chunk in src.chunks(row) {
                let mut offset = 0usize;
                for (axis, &i) in idx.iter().enumerate() {
                    offset = offset * target[axis] + i;
                }
                offset *= target[rank - 1];
                out[offset..offset + row].copy_from_slice(chunk);
                for axis in (0..idx.len()).rev() {
                    idx[axis] += 1;
                    if idx[axis] < shape[axis] {
                        break;
                    }
                    idx[axis] = 0;
                }
            }
            out
        }
        let values = if self.shape.is_empty() {
            self.values.clone()
        } else {
            match &self.values {
                TensorValues::F32(v) => TensorValues::F32(pad(v, &self.shape, target, 0.0)),
                TensorValues::F64(v) => TensorValues::F64(pad(v, &self.shape, target, 0.0)),
                TensorValues::I64(v) => TensorValues::I64(pad(v, &self.shape, target, 0)),
                TensorValues::I32(v) => TensorValues::I32(pad(v, &self.shape, target, 0)),
                TensorValues::U8(v) => TensorValues::U8(pad(v, &self.shape, target, 0)),
                TensorValues::Bool(v) => TensorValues::Bool(pad(v, &self.shape, target, false)),
            }
        };
        TensorData {
            shape: target.to_vec(),
            values,
        }
    }

    /// The elements row-major and little-endian, bits as they are (bool = 0x00/0x01): the bytes
    /// of `data_b64`.
    pub fn le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.dtype().size_of());
        match &self.values {
            TensorValues::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorValues::F64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorValues::I64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorValues::I32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorValues::U8(v) => out.extend_from_slice(v),
            TensorValues::Bool(v) => out.extend(v.iter().map(|b| u8::from(*b))),
        }
        out
    }

    fn encode_elements(&self, out: &mut Vec<u8>) {
        out.reserve(self.len() * self.dtype().size_of());
        match &self.values {
            TensorValues::F32(v) => v.iter().for_each(|x| {
                let x = if x.is_nan() {
                    f32::from_bits(0x7fc0_0000)
                } else {
                    *x
                };
                out.extend_from_slice(&x.to_le_bytes())
            }),
            TensorValues::F64(v) => v.iter().for_each(|x| {
                let x = if x.is_nan() {
                    f64::from_bits(0x7ff8_0000_0000_0000)
                } else {
                    *x
                };
                out.extend_from_slice(&x.to_le_bytes())
            }),
            TensorValues::I64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorValues::I32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorValues::U8(v) => out.extend_from_slice(v),
            TensorValues::Bool(v) => out.extend(v.iter().map(|b| u8::from(*b))),
        }
    }
}

/// `product(shape)`, or `None` on overflow.
pub(crate) fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d))
}

/// The canonical encoding of a set of named tensors (see the module docs).
pub fn canonical_bytes(tensors: &Tensors) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"WTNS");
    out.push(1);
    out.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
    // BTreeMap<String, _> iterates in ascending byte order of the names.
    for (name, t) in tensors {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(t.dtype().code());
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in &t.shape {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        t.encode_elements(&mut out);
    }
    out
}

/// BLAKE3 of [`canonical_bytes`].
pub fn canonical_hash(tensors: &Tensors) -> [u8; 32] {
    *blake3::hash(&canonical_bytes(tensors)).as_bytes()
}

impl Serialize for TensorData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Tensor", 3)?;
        s.serialize_field("shape", &self.shape)?;
        s.serialize_field("dtype", &self.dtype())?;
        // serde_json writes non-finite floats as `null`.
        match &self.values {
            TensorValues::F32(v) => s.serialize_field("data", v)?,
            TensorValues::F64(v) => s.serialize_field("data", v)?,
            TensorValues::I64(v) => s.serialize_field("data", v)?,
            TensorValues::I32(v) => s.serialize_field("data", v)?,
            TensorValues::U8(v) => s.serialize_field("data", v)?,
            TensorValues::Bool(v) => s.serialize_field("data", v)?,
        }
        s.end()
    }
}

/// How tensors are written: `data` as JSON numbers (the default) or `data_b64`. A request's
/// `"output_encoding"` picks the form of its answer's outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TensorEncoding {
    #[default]
    Json,
    Base64,
}

/// A tensor, or a map of named tensors, to be written in a given [`TensorEncoding`]:
/// `serde_json::to_vec(&Encoded(&tensors, TensorEncoding::Base64))`.
pub struct Encoded<'a, T: ?Sized>(pub &'a T, pub TensorEncoding);

impl Serialize for Encoded<'_, TensorData> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Encoded(tensor, encoding) = *self;
        match encoding {
            TensorEncoding::Json => tensor.serialize(serializer),
            TensorEncoding::Base64 => {
                let mut s = serializer.serialize_struct("Tensor", 3)?;
                s.serialize_field("shape", &tensor.shape)?;
                s.serialize_field("dtype", &tensor.dtype())?;
                s.serialize_field("data_b64", &BASE64.encode(tensor.le_bytes()))?;
                s.end()
            }
        }
    }
}

impl Serialize for Encoded<'_, Tensors> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, tensor) in self.0 {
            map.serialize_entry(name, &Encoded(tensor, self.1))?;
        }
        map.end()
    }
}

impl Encoded<'_, Tensors> {
    /// Append the JSON of these named tensors to `out`: the bytes `serde_json::to_writer` writes,
    /// but base64 is encoded straight into `out` a few KB at a time, with no copy of the
    /// elements, no intermediate string and no escape scan (base64 needs no escaping). For
    /// large answers: a 1.4 MB `data_b64` costs about half as much this way.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        if self.1 == TensorEncoding::Json {
            return serde_json::to_writer(out, self.0);
        }
        out.push(b'{');
        for (i, (name, tensor)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, name)?;
            out.extend_from_slice(b":{\"shape\":");
            serde_json::to_writer(&mut *out, &tensor.shape)?;
            out.extend_from_slice(b",\"dtype\":\"");
            out.extend_from_slice(tensor.dtype().as_str().as_bytes());
            out.extend_from_slice(b"\",\"data_b64\":\"");
            let mut w = Base64Writer::new(out);
            match &tensor.values {
                TensorValues::F32(v) => w.put(v, f32::to_le_bytes),
                TensorValues::F64(v) => w.put(v, f64::to_le_bytes),
                TensorValues::I64(v) => w.put(v, i64::to_le_bytes),
                TensorValues::I32(v) => w.put(v, i32::to_le_bytes),
                TensorValues::U8(v) => w.put(v, |b| [b]),
                TensorValues::Bool(v) => w.put(v, |b| [u8::from(b)]),
            }
            w.finish();
            out.extend_from_slice(b"\"}");
        }
        out.push(b'}');
        Ok(())
    }
}

/// Base64 of a stream of element bytes, appended to a buffer chunk by chunk.
struct Base64Writer<'a> {
    out: &'a mut Vec<u8>,
    /// A multiple of 3 (no padding between chunks) and of every element size (8, 4, 1).
    chunk: [u8; 3072],
    filled: usize,
    text: String,
}

impl<'a> Base64Writer<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Base64Writer {
            out,
            chunk: [0; 3072],
            filled: 0,
            text: String::with_capacity(4096),
        }
    }

    fn put<T: Copy, const N: usize>(&mut self, values: &[T], bytes: fn(T) -> [u8; N]) {
        for x in values {
            // N divides the chunk size, so a full chunk is exactly full.
            if self.filled == self.chunk.len() {
                self.flush();
            }
            self.chunk[self.filled..self.filled + N].copy_from_slice(&bytes(*x));
            self.filled += N;
        }
    }

    fn flush(&mut self) {
        self.text.clear();
        BASE64.encode_string(&self.chunk[..self.filled], &mut self.text);
        self.out.extend_from_slice(self.text.as_bytes());
        self.filled = 0;
    }

    /// Encode what is left, with padding.
    fn finish(mut self) {
        if self.filled > 0 {
            self.flush();
        }
    }
}

/// `#[serde(serialize_with)]` helper: named tensors written with `data_b64`.
pub(crate) fn serialize_base64<S: Serializer>(
    tensors: &Tensors,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    Encoded(tensors, TensorEncoding::Base64).serialize(serializer)
}

impl<'de> Deserialize<'de> for TensorData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawTensor::deserialize(deserializer)?;
        raw.into_tensor(&RequestLimits::unbounded())
            .map_err(de::Error::custom)
    }
}

/// A tensor as written, before any checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor<'a> {
    shape: Vec<u64>,
    dtype: String,
    #[serde(default)]
    data: Option<Vec<Scalar>>,
    #[serde(default, borrow)]
    data_b64: Option<Base64Text<'a>>,
}

/// A request tensor before its elements are read: `shape` is read up to the rank limit, and
/// `data` stays raw JSON until the dtype and shape have passed the limits, then is read up to the
/// count the shape needs ([`UpTo`]). An array longer than allowed is refused as it is read,
/// not after it has been allocated.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestTensor<'a> {
    #[serde(borrow)]
    shape: &'a RawValue,
    dtype: String,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    data_b64: Option<Base64Text<'a>>,
}

impl RequestTensor<'_> {
    fn into_tensor(self, limits: &RequestLimits) -> Result<TensorData, String> {
        let shape: Vec<u64> = read_up_to(self.shape, limits.max_rank, |max| {
            format!("rank is above the limit of {max}")
        })
        .map_err(|e| format!("shape: {e}"))?;
        let data = match self.data {
            None => None,
            Some(raw) => {
                // The checks `RawTensor::into_tensor` makes, first: they bound `count`.
                parse_dtype(&self.dtype)?;
                let (_, count) = checked_shape(&shape, limits)?;
                let data = read_up_to(raw, count, |count| {
                    format!("more than the {count} elements the shape needs")
                })
                .map_err(|e| format!("data: {e}"))?;
                Some(data)
            }
        };
        RawTensor {
            shape,
            dtype: self.dtype,
            data,
            data_b64: self.data_b64,
        }
        .into_tensor(limits)
    }
}

const TOO_MANY_INPUTS: &str = "more inputs than the limit";

/// Reads a JSON object of at most `.0` entries (values left raw), refusing the first one past it.
struct EntriesUpTo(usize);

impl<'de> DeserializeSeed<'de> for EntriesUpTo {
    type Value = BTreeMap<String, &'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntriesUpTo {
    type Value = BTreeMap<String, &'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object of at most {} entries", self.0)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        let mut read = 0usize;
        while let Some((name, value)) = map.next_entry::<String, &'de RawValue>()? {
            read += 1;
            if read > self.0 {
                return Err(de::Error::custom(TOO_MANY_INPUTS));
            }
            out.insert(name, value);
        }
        Ok(out)
    }
}

/// A JSON array of at most `max` elements; `past(max)` names the refusal.
fn read_up_to<T: for<'de> Deserialize<'de>>(
    raw: &RawValue,
    max: usize,
    past: fn(usize) -> String,
) -> Result<Vec<T>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    UpTo {
        max,
        past,
        element: PhantomData,
    }
    .deserialize(&mut de)
}

/// Reads a JSON array of at most `max` elements, refusing the first one past it.
struct UpTo<T> {
    max: usize,
    past: fn(usize) -> String,
    element: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for UpTo<T> {
    type Value = Vec<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for UpTo<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of at most {} elements", self.max)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // No reservation from the bound: a short body must not reserve what its shape claims.
        let mut out = Vec::new();
        while let Some(element) = seq.next_element::<T>()? {
            if out.len() == self.max {
                return Err(de::Error::custom((self.past)(self.max)));
            }
            out.push(element);
        }
        Ok(out)
    }
}

/// The text of `data_b64`, borrowed from the body when it has no JSON escapes.
#[derive(Deserialize)]
struct Base64Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// One JSON number, bool or null, kept exactly as parsed.
#[derive(Clone, Copy)]
enum Scalar {
    Bool(bool),
    U(u64),
    I(i64),
    F(f64),
    Null,
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, a bool or null")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::U(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::I(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::F(v))
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl Scalar {
    fn describe(self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::U(v) => v.to_string(),
            Scalar::I(v) => v.to_string(),
            Scalar::F(v) => v.to_string(),
            Scalar::Null => "null".into(),
        }
    }

    fn as_f64(self) -> Option<f64> {
        match self {
            Scalar::U(v) => Some(v as f64),
            Scalar::I(v) => Some(v as f64),
            Scalar::F(v) => Some(v),
            Scalar::Null => Some(f64::NAN),
            Scalar::Bool(_) => None,
        }
    }

    fn as_i64(self) -> Option<i64> {
        match self {
            Scalar::U(v) => i64::try_from(v).ok(),
            Scalar::I(v) => Some(v),
            _ => None,
        }
    }
}

/// Size bounds applied while parsing a request. Network input never allocates past these.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    /// At most this many named inputs.
    pub max_inputs: usize,
    /// At most this many axes per tensor.
    pub max_rank: usize,
    /// At most this many elements in all inputs together, before and after padding to buckets.
    /// Axes of length 0 count as 1 here, so a zero-element tensor cannot smuggle in an axis
    /// long enough to make padding (or the model) allocate without bound.
    pub max_elements: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        // 4 Mi elements is 16 MiB of f32 (64 MiB transiently while parsing JSON numbers): above
        // any body the gateway should accept as JSON anyway.
        RequestLimits {
            max_inputs: 64,
            max_rank: 8,
            max_elements: 4 << 20,
        }
    }
}

impl RequestLimits {
    fn unbounded() -> Self {
        RequestLimits {
            max_inputs: usize::MAX,
            max_rank: usize::MAX,
            max_elements: usize::MAX,
        }
    }
}

fn parse_dtype(text: &str) -> Result<DType, String> {
    DType::parse(text)
        .ok_or_else(|| format!("unknown dtype {text:?} (expected f32, f64, i64, i32, u8 or bool)"))
}

/// The shape and element count, if within `limits` (zero-length axes counted as 1, see
/// [`RequestLimits::max_elements`]).
fn checked_shape(shape: &[u64], limits: &RequestLimits) -> Result<(Vec<usize>, usize), String> {
    if shape.len() > limits.max_rank {
        return Err(format!(
            "rank {} is above the limit of {}",
            shape.len(),
            limits.max_rank
        ));
    }
    let shape = shape
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| format!("dimension {d} is too large")))
        .collect::<Result<Vec<_>, _>>()?;
    let span = shape
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul((*d).max(1)));
    let count = element_count(&shape)
        .filter(|_| span.is_some_and(|n| n <= limits.max_elements))
        .ok_or_else(|| {
            format!(
                "shape {shape:?} is above the limit of {} elements",
                limits.max_elements
            )
        })?;
    Ok((shape, count))
}

impl RawTensor<'_> {
    fn into_tensor(self, limits: &RequestLimits) -> Result<TensorData, String> {
        let dtype = parse_dtype(&self.dtype)?;
        let (shape, count) = checked_shape(&self.shape, limits)?;
        let data = match (self.data, self.data_b64) {
            (Some(data), None) => data,
            (None, Some(Base64Text(text))) => {
                let values = decode_base64(&text, dtype, &shape, count)?;
                return Ok(TensorData { shape, values });
            }
            (Some(_), Some(_)) => {
                return Err("has both `data` and `data_b64`; give exactly one".into());
            }
            (None, None) => return Err("has neither `data` nor `data_b64`".into()),
        };
        if count != data.len() {
            return Err(format!(
                "shape {shape:?} needs {count} elements, data has {}",
                data.len()
            ));
        }
        let bad =
            |i: usize, s: Scalar| format!("data[{i}] = {} is not a valid {dtype}", s.describe());
        let values = match dtype {
            DType::F32 => TensorValues::F32(
                data.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let x = s.as_f64().ok_or_else(|| bad(i, *s))?;
                        let y = x as f32;
                        // A finite f64 that overflows f32 would silently become infinity.
                        if x.is_finite() && !y.is_finite() {
                            return Err(bad(i, *s));
                        }
                        Ok(y)
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DType::F64 => TensorValues::F64(
                data.iter()
                    .enumerate()
                    .map(|(i, s)| s.as_f64().ok_or_else(|| bad(i, *s)))
                    .collect::<Result<_, _>>()?,
            ),
            DType::I64 => TensorValues::I64(
                data.iter()
                    .enumerate()
                    .map(|(i, s)| s.as_i64().ok_or_else(|| bad(i, *s)))
                    .collect::<Result<_, _>>()?,
            ),
            DType::I32 => TensorValues::I32(
                data.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        s.as_i64()
                            .and_then(|v| i32::try_from(v).ok())
                            .ok_or_else(|| bad(i, *s))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DType::U8 => TensorValues::U8(
                data.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        s.as_i64()
                            .and_then(|v| u8::try_from(v).ok())
                            .ok_or_else(|| bad(i, *s))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DType::Bool => TensorValues::Bool(
                data.iter()
                    .enumerate()
                    .map(|(i, s)| match s {
                        Scalar::Bool(b) => Ok(*b),
                        _ => Err(bad(i, *s)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(TensorData { shape, values })
    }
}

/// The elements of a `data_b64` string: exactly `count` elements of `dtype`. The length is
/// checked before anything is decoded, so a wrong one allocates nothing.
fn decode_base64(
    text: &str,
    dtype: DType,
    shape: &[usize],
    count: usize,
) -> Result<TensorValues, String> {
    let size = dtype.size_of();
    // Tensors read without request limits (a proof blob's outputs) may declare any shape: a
    // byte count past `usize` is refused here, not wrapped (a wrapped count once let an empty
    // string pass as 2^62 elements).
    let expected = count.checked_mul(size).ok_or_else(|| {
        format!("shape {shape:?} of {dtype} is more bytes than this machine can address")
    })?;
    if !text.len().is_multiple_of(4) {
        return Err(format!(
            "data_b64 is not valid base64: its length {} is not a multiple of 4 (standard \
             alphabet with `=` padding)",
            text.len()
        ));
    }
    let padding = text.bytes().rev().take(2).filter(|b| *b == b'=').count();
    let holds = (text.len() / 4 * 3).saturating_sub(padding);
    if holds != expected {
        return Err(format!(
            "data_b64 holds {holds} bytes; shape {shape:?} of {dtype} needs {count} x {size} = \
             {expected}"
        ));
    }
    let bytes = BASE64
        .decode(text)
        .map_err(|e| format!("data_b64 is not valid base64: {e}"))?;
    if bytes.len() != expected {
        return Err(format!(
            "data_b64 holds {} bytes; shape {shape:?} of {dtype} needs {count} x {size} = \
             {expected}",
            bytes.len()
        ));
    }
    fn words<const N: usize, T>(bytes: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .map(|c| from(c.try_into().expect("chunks_exact gives N bytes")))
            .collect()
    }
    Ok(match dtype {
        DType::F32 => TensorValues::F32(words(&bytes, f32::from_le_bytes)),
        DType::F64 => TensorValues::F64(words(&bytes, f64::from_le_bytes)),
        DType::I64 => TensorValues::I64(words(&bytes, i64::from_le_bytes)),
        DType::I32 => TensorValues::I32(words(&bytes, i32::from_le_bytes)),
        DType::U8 => TensorValues::U8(bytes),
        DType::Bool => TensorValues::Bool(
            bytes
                .iter()
                .enumerate()
                .map(|(i, b)| match b {
                    0 => Ok(false),
                    1 => Ok(true),
                    _ => Err(format!(
                        "data_b64 byte {i} = {b} is not a valid bool (0 or 1)"
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// How the caller wants the proof: returned inline, or stored as a Walrus blob (the gateway's
/// publisher does the storing; this crate only parses the wish).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProofMode {
    Inline,
    Store,
}

/// The inputs of a request: named, or a single unnamed tensor for a one-input model.
#[derive(Clone, Debug, PartialEq)]
pub enum RequestInputs {
    Named(Tensors),
    Unnamed(TensorData),
}

/// A parsed and bounded `POST /v1/inference/{model}` body:
/// `{"inputs": {"<name>": {"shape","dtype","data"}}, "proof": "inline"|"store",
/// "output_encoding": "json"|"base64"}` where `inputs` may instead be a single tensor object when
/// the model has one input, and any tensor may carry `data_b64` instead of `data`.
#[derive(Clone, Debug, PartialEq)]
pub struct InferenceRequest {
    pub inputs: RequestInputs,
    /// `None` when the body did not say (the gateway applies `--store-proofs`).
    pub proof: Option<ProofMode>,
    /// How the answer writes its outputs (default: JSON numbers).
    pub output_encoding: TensorEncoding,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest<'a> {
    #[serde(borrow)]
    inputs: &'a RawValue,
    #[serde(default)]
    proof: Option<ProofMode>,
    #[serde(default)]
    output_encoding: TensorEncoding,
}

/// What [`InferenceRequest::to_json`] writes.
#[derive(Serialize)]
struct RequestBody<'a> {
    inputs: RequestBodyInputs<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proof: Option<ProofMode>,
    #[serde(skip_serializing_if = "is_json")]
    output_encoding: TensorEncoding,
}

#[derive(Serialize)]
#[serde(untagged)]
enum RequestBodyInputs<'a> {
    Named(Encoded<'a, Tensors>),
    Unnamed(Encoded<'a, TensorData>),
}

fn is_json(encoding: &TensorEncoding) -> bool {
    *encoding == TensorEncoding::Json
}

impl InferenceRequest {
    /// A request with named inputs, no proof preference and JSON outputs.
    pub fn named(inputs: Tensors) -> Self {
        InferenceRequest {
            inputs: RequestInputs::Named(inputs),
            proof: None,
            output_encoding: TensorEncoding::Json,
        }
    }

    /// This request as a body that [`InferenceRequest::from_json`] reads back equal, with its
    /// inputs written in `inputs` encoding (a client's way to send `data_b64`). In the JSON form,
    /// non-finite floats come back as NaN; in base64 every bit comes back.
    pub fn to_json(&self, inputs: TensorEncoding) -> Vec<u8> {
        let body = RequestBody {
            inputs: match &self.inputs {
                RequestInputs::Named(m) => RequestBodyInputs::Named(Encoded(m, inputs)),
                RequestInputs::Unnamed(t) => RequestBodyInputs::Unnamed(Encoded(t, inputs)),
            },
            proof: self.proof,
            output_encoding: self.output_encoding,
        };
        serde_json::to_vec(&body).expect("a request always serializes")
    }

    /// Parse a request body. Errors: [`InferenceError::BadRequest`] for the envelope,
    /// [`InferenceError::BadInput`] naming the input, [`InferenceError::TooLarge`] past `limits`.
    pub fn from_json(body: &[u8], limits: &RequestLimits) -> Result<Self, InferenceError> {
        let raw: RawRequest<'_> =
            serde_json::from_slice(body).map_err(|e| InferenceError::BadRequest(e.to_string()))?;
        let inputs_json = raw.inputs.get();
        // Read no more entries than a request may have (a single tensor has up to four keys),
        // so a body of a million names is refused as it is read.
        let cap = limits.max_inputs.max(4);
        let mut de = serde_json::Deserializer::from_str(inputs_json);
        let map = EntriesUpTo(cap).deserialize(&mut de).map_err(|e| {
            if e.to_string().contains(TOO_MANY_INPUTS) {
                InferenceError::TooLarge(format!(
                    "more than {cap} inputs, above the limit of {}",
                    limits.max_inputs
                ))
            } else {
                InferenceError::BadRequest("`inputs` must be an object of named tensors".into())
            }
        })?;
        // A single tensor object has a string `dtype`; a map of named tensors has objects as values.
        let single = map
            .get("dtype")
            .is_some_and(|v| v.get().trim_start().starts_with('"'));
        let inputs = if single {
            RequestInputs::Unnamed(parse_tensor("<single input>", inputs_json, limits)?)
        } else {
            if map.len() > limits.max_inputs {
                return Err(InferenceError::TooLarge(format!(
                    "{} inputs, above the limit of {}",
                    map.len(),
                    limits.max_inputs
                )));
            }
            let mut tensors = Tensors::new();
            let mut total = 0usize;
            for (name, value) in map {
                let t = parse_tensor(&name, value.get(), limits)?;
                total = total.saturating_add(t.len());
                if total > limits.max_elements {
                    return Err(InferenceError::TooLarge(format!(
                        "inputs hold more than {} elements together",
                        limits.max_elements
                    )));
                }
                tensors.insert(name, t);
            }
            RequestInputs::Named(tensors)
        };
        Ok(InferenceRequest {
            inputs,
            proof: raw.proof,
            output_encoding: raw.output_encoding,
        })
    }
}

fn parse_tensor(
    name: &str,
    json: &str,
    limits: &RequestLimits,
) -> Result<TensorData, InferenceError> {
    let raw: RequestTensor = serde_json::from_str(json).map_err(|e| {
        InferenceError::bad_input(
            name,
            format!("expected {{\"shape\", \"dtype\", \"data\" or \"data_b64\"}}: {e}"),
        )
    })?;
    raw.into_tensor(limits).map_err(|reason| {
        if reason.contains("above the limit") {
            InferenceError::TooLarge(format!("input `{name}`: {reason}"))
        } else {
            InferenceError::bad_input(name, reason)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `body` is refused with 400 naming input `a`, for a reason containing `needle`.
    fn assert_bad_input_a(body: &str, limits: &RequestLimits, needle: &str) {
        let err = InferenceRequest::from_json(body.as_bytes(), limits).unwrap_err();
        match &err {
            InferenceError::BadInput { input, reason } => {
                assert_eq!(input, "a");
                assert!(reason.contains(needle), "{reason} lacks {needle}");
            }
            other => panic!("{body}: {other:?}"),
        }
        assert_eq!(err.http_status(), 400);
    }
    use proptest::prelude::*;

    fn t(shape: Vec<usize>, values: TensorValues) -> TensorData {
        TensorData::new(shape, values).unwrap()
    }

    #[test]
    fn parses_named_and_unnamed() {
        let limits = RequestLimits::default();
        let named =
            br#"{"inputs":{"x":{"shape":[2],"dtype":"i64","data":[1,-2]}},"proof":"store"}"#;
        let req = InferenceRequest::from_json(named, &limits).unwrap();
        assert_eq!(req.proof, Some(ProofMode::Store));
        let RequestInputs::Named(m) = req.inputs else {
            panic!("named")
        };
        assert_eq!(m["x"], t(vec![2], TensorValues::I64(vec![1, -2])));

        let unnamed = br#"{"inputs":{"shape":[1,2],"dtype":"bool","data":[true,false]}}"#;
        let req = InferenceRequest::from_json(unnamed, &limits).unwrap();
        assert_eq!(
            req.inputs,
            RequestInputs::Unnamed(t(vec![1, 2], TensorValues::Bool(vec![true, false])))
        );
    }

    #[test]
    fn rejects_bad_values_naming_the_input() {
        let limits = RequestLimits::default();
        for (body, needle) in [
            (
                r#"{"inputs":{"a":{"shape":[2],"dtype":"u8","data":[1,256]}}}"#,
                "data[1] = 256",
            ),
            (
                r#"{"inputs":{"a":{"shape":[1],"dtype":"i32","data":[1.5]}}}"#,
                "data[0] = 1.5",
            ),
            (
                r#"{"inputs":{"a":{"shape":[1],"dtype":"f32","data":[1e300]}}}"#,
                "not a valid f32",
            ),
            (
                r#"{"inputs":{"a":{"shape":[3],"dtype":"f32","data":[1,2]}}}"#,
                "needs 3 elements",
            ),
            (
                r#"{"inputs":{"a":{"shape":[1],"dtype":"f16","data":[1]}}}"#,
                "unknown dtype",
            ),
            (
                r#"{"inputs":{"a":{"shape":[1],"dtype":"bool","data":[1]}}}"#,
                "not a valid bool",
            ),
            (
                r#"{"inputs":{"a":{"shape":[1],"dtype":"f32","data":["x"]}}}"#,
                "expected",
            ),
        ] {
            assert_bad_input_a(body, &limits, needle);
        }
    }

    #[test]
    fn bounds_are_413_and_envelope_errors_400() {
        let limits = RequestLimits {
            max_inputs: 1,
            max_rank: 2,
            max_elements: 4,
        };
        for body in [
            r#"{"inputs":{"a":{"shape":[5],"dtype":"f32","data":[1,2,3,4,5]}}}"#,
            r#"{"inputs":{"a":{"shape":[1,1,1],"dtype":"f32","data":[1]}}}"#,
            r#"{"inputs":{"a":{"shape":[18446744073709551615,2],"dtype":"f32","data":[]}}}"#,
            r#"{"inputs":{"a":{"shape":[0,5],"dtype":"f32","data":[]}}}"#,
            r#"{"inputs":{"a":{"shape":[1],"dtype":"f32","data":[1]},"b":{"shape":[1],"dtype":"f32","data":[1]}}}"#,
        ] {
            let err = InferenceRequest::from_json(body.as_bytes(), &limits).unwrap_err();
            assert_eq!(err.http_status(), 413, "{body}: {err}");
        }
        for body in [
            "",
            "{}",
            "[]",
            r#"{"inputs":[]}"#,
            r#"{"inputs":{},"extra":1}"#,
            r#"{"inputs":{},"proof":"x"}"#,
        ] {
            let err = InferenceRequest::from_json(body.as_bytes(), &limits).unwrap_err();
            assert!(
                matches!(err, InferenceError::BadRequest(_)),
                "{body}: {err:?}"
            );
        }
    }

    #[test]
    fn json_round_trip_keeps_bits_and_nan_becomes_null() {
        let x = t(vec![3], TensorValues::F32(vec![0.1, -0.0, f32::NAN]));
        let json = serde_json::to_string(&x).unwrap();
        assert_eq!(
            json,
            r#"{"shape":[3],"dtype":"f32","data":[0.1,-0.0,null]}"#
        );
        let back: TensorData = serde_json::from_str(&json).unwrap();
        assert!(back.bitwise_eq(&x));
    }

    #[test]
    fn padding_places_rows_at_their_coordinates() {
        let x = t(vec![2, 2], TensorValues::I32(vec![1, 2, 3, 4]));
        let p = x.padded(&[3, 3]);
        assert_eq!(
            p,
            t(
                vec![3, 3],
                TensorValues::I32(vec![1, 2, 0, 3, 4, 0, 0, 0, 0])
            )
        );
    }

    #[test]
    fn canonical_encoding_is_fixed() {
        let mut m = Tensors::new();
        m.insert("b".into(), t(vec![1], TensorValues::Bool(vec![true])));
        m.insert("a".into(), t(vec![], TensorValues::U8(vec![7])));
        let bytes = canonical_bytes(&m);
        let expected: Vec<u8> = [
            b"WTNS".as_slice(),
            &[1, 2, 0, 0, 0],
            &[1, 0, 0, 0, b'a', 5, 0, 0, 0, 0, 7],
            &[1, 0, 0, 0, b'b', 6, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    /// One tensor of every dtype, with values at the edges of each type.
    fn every_dtype() -> Vec<TensorData> {
        vec![
            t(
                vec![2, 3],
                TensorValues::F32(vec![0.1, -0.0, 1e-45, f32::MAX, -3.5, 1.0]),
            ),
            t(
                vec![4],
                TensorValues::F64(vec![0.1, -0.0, f64::MIN_POSITIVE, -1e300]),
            ),
            t(vec![3], TensorValues::I64(vec![i64::MIN, -1, i64::MAX])),
            t(vec![1, 3], TensorValues::I32(vec![i32::MIN, 0, i32::MAX])),
            t(vec![3], TensorValues::U8(vec![0, 128, 255])),
            t(vec![2, 1], TensorValues::Bool(vec![true, false])),
            t(vec![], TensorValues::F32(vec![2.5])),
            t(vec![0, 2], TensorValues::I64(vec![])),
        ]
    }

    fn body(tensor: &TensorData, encoding: TensorEncoding) -> Vec<u8> {
        InferenceRequest::named([("a".to_string(), tensor.clone())].into()).to_json(encoding)
    }

    fn parse_one(body: &[u8]) -> TensorData {
        match InferenceRequest::from_json(body, &RequestLimits::default())
            .unwrap()
            .inputs
        {
            RequestInputs::Named(mut m) => m.remove("a").unwrap(),
            RequestInputs::Unnamed(_) => panic!("named"),
        }
    }

    #[test]
    fn base64_and_json_forms_read_the_same_tensor_for_every_dtype() {
        for x in every_dtype() {
            let json = body(&x, TensorEncoding::Json);
            let b64 = body(&x, TensorEncoding::Base64);
            let text = String::from_utf8(b64.clone()).unwrap();
            assert!(
                text.contains("\"data_b64\"") && !text.contains("\"data\""),
                "{text}"
            );
            let (from_json, from_b64) = (parse_one(&json), parse_one(&b64));
            assert!(from_json.bitwise_eq(&x), "{:?}: JSON form", x.dtype());
            assert!(from_b64.bitwise_eq(&x), "{:?}: base64 form", x.dtype());
            let named = |t: TensorData| canonical_bytes(&[("a".to_string(), t)].into());
            assert_eq!(named(from_json), named(from_b64), "{:?}", x.dtype());
        }
    }

    #[test]
    fn base64_bytes_are_little_endian_row_major() {
        let body = br#"{"inputs":{"shape":[2],"dtype":"i32","data_b64":"AQAAAP7///8="}}"#;
        let req = InferenceRequest::from_json(body, &RequestLimits::default()).unwrap();
        assert_eq!(
            req.inputs,
            RequestInputs::Unnamed(t(vec![2], TensorValues::I32(vec![1, -2])))
        );
        // 1.0f32 = 0x3f800000, written 00 00 80 3f; the escaped `\/` of JSON reads as `/`.
        let body =
            br#"{"inputs":{"x":{"shape":[1],"dtype":"f32","data_b64":"AACAPw=="},"y":{"shape":[3],"dtype":"u8","data_b64":"\/\/8A"}}}"#;
        let RequestInputs::Named(m) = InferenceRequest::from_json(body, &RequestLimits::default())
            .unwrap()
            .inputs
        else {
            panic!("named")
        };
        assert_eq!(m["x"], t(vec![1], TensorValues::F32(vec![1.0])));
        assert_eq!(m["y"], t(vec![3], TensorValues::U8(vec![255, 255, 0])));
    }

    #[test]
    fn base64_keeps_infinities_json_cannot() {
        let x = t(
            vec![3],
            TensorValues::F32(vec![f32::INFINITY, f32::NEG_INFINITY, -0.0]),
        );
        assert!(parse_one(&body(&x, TensorEncoding::Base64)).bitwise_eq(&x));
        let from_json = parse_one(&body(&x, TensorEncoding::Json));
        assert!(from_json.values().get_f64(0).unwrap().is_nan());
    }

    #[test]
    fn rejects_bad_base64_naming_the_input() {
        let limits = RequestLimits::default();
        for (body, needle) in [
            (
                r#"{"inputs":{"a":{"shape":[2],"dtype":"f32","data_b64":"AAAAAAAAAA=="}}}"#,
                "holds 7 bytes; shape [2] of f32 needs 2 x 4 = 8",
            ),
            (
                r#"{"inputs":{"a":{"shape":[2],"dtype":"f32","data_b64":"AAAAAAAAAAAAAAAA"}}}"#,
                "holds 12 bytes",
            ),
            (
                r#"{"inputs":{"a":{"shape":[2],"dtype":"f32","data_b64":""}}}"#,
                "holds 0 bytes",
            ),
            (
                r#"{"inputs":{"a":{"shape":[1],"dtype":"u8","data_b64":"AAA"}}}"#,
                "not a multiple of 4",
            ),
            (
                r#"{"inputs":{"a":{"shape":[2],"dtype":"f32","data_b64":"AAAA*AAAAAA="}}}"#,
                "not valid base64",
            ),
            (
                r#"{"inputs":{"a":{"shape":[1],"dtype":"u8","data_b64":"A==="}}}"#,
                "not valid base64",
            ),
            (
                r#"{"inputs":{"a":{"shape":[3],"dtype":"bool","data_b64":"AAEC"}}}"#,
                "byte 2 = 2 is not a valid bool",
            ),
            (
                r#"{"inputs":{"a":{"shape":[1],"dtype":"u8","data":[1],"data_b64":"AQ=="}}}"#,
                "both `data` and `data_b64`",
            ),
            (
                r#"{"inputs":{"a":{"shape":[1],"dtype":"u8"}}}"#,
                "neither `data` nor `data_b64`",
            ),
            (
                r#"{"inputs":{"a":{"shape":[1],"dtype":"u8","data_b64":[1]}}}"#,
                "expected",
            ),
        ] {
            assert_bad_input_a(body, &limits, needle);
        }
    }

    #[test]
    fn base64_inputs_are_bounded_like_json_ones() {
        let limits = RequestLimits {
            max_inputs: 1,
            max_rank: 2,
            max_elements: 4,
        };
        for body in [
            // Five elements (the 20 bytes are there): above the element limit.
            r#"{"inputs":{"a":{"shape":[5],"dtype":"f32","data_b64":"AAAAAAAAAAAAAAAAAAAAAAAAAAA="}}}"#,
            // The shape alone is refused: a huge one does not make the decoder allocate.
            r#"{"inputs":{"a":{"shape":[4294967296,4294967296],"dtype":"u8","data_b64":"AA=="}}}"#,
            r#"{"inputs":{"a":{"shape":[1,1,1],"dtype":"u8","data_b64":"AA=="}}}"#,
            r#"{"inputs":{"a":{"shape":[1],"dtype":"u8","data_b64":"AA=="},"b":{"shape":[1],"dtype":"u8","data_b64":"AA=="}}}"#,
        ] {
            let err = InferenceRequest::from_json(body.as_bytes(), &limits).unwrap_err();
            assert_eq!(err.http_status(), 413, "{body}: {err}");
        }
        // Four elements are fine.
        let ok = r#"{"inputs":{"a":{"shape":[2,2],"dtype":"u8","data_b64":"AQIDBA=="}}}"#;
        InferenceRequest::from_json(ok.as_bytes(), &limits).unwrap();
    }

    #[test]
    fn output_encoding_is_read_and_written_back() {
        let limits = RequestLimits::default();
        let body = br#"{"inputs":{"shape":[1],"dtype":"u8","data":[3]},"output_encoding":"base64","proof":"inline"}"#;
        let req = InferenceRequest::from_json(body, &limits).unwrap();
        assert_eq!(req.output_encoding, TensorEncoding::Base64);
        assert_eq!(req.proof, Some(ProofMode::Inline));
        for encoding in [TensorEncoding::Json, TensorEncoding::Base64] {
            let back = InferenceRequest::from_json(&req.to_json(encoding), &limits).unwrap();
            assert_eq!(back, req);
        }
        let plain = br#"{"inputs":{"shape":[1],"dtype":"u8","data":[3]}}"#;
        let req = InferenceRequest::from_json(plain, &limits).unwrap();
        assert_eq!(req.output_encoding, TensorEncoding::Json);
        assert_eq!(req.to_json(TensorEncoding::Json), plain.to_vec());
        let err = InferenceRequest::from_json(
            br#"{"inputs":{"shape":[1],"dtype":"u8","data":[3]},"output_encoding":"hex"}"#,
            &limits,
        )
        .unwrap_err();
        assert!(matches!(err, InferenceError::BadRequest(_)), "{err:?}");
    }

    #[test]
    fn encoded_outputs_write_data_b64() {
        let m: Tensors = [
            (
                "s".to_string(),
                t(vec![2], TensorValues::F32(vec![1.0, -2.0])),
            ),
            ("b".to_string(), t(vec![1], TensorValues::Bool(vec![true]))),
        ]
        .into();
        assert_eq!(
            serde_json::to_string(&Encoded(&m, TensorEncoding::Base64)).unwrap(),
            r#"{"b":{"shape":[1],"dtype":"bool","data_b64":"AQ=="},"s":{"shape":[2],"dtype":"f32","data_b64":"AACAPwAAAMA="}}"#
        );
        assert_eq!(
            serde_json::to_string(&Encoded(&m, TensorEncoding::Json)).unwrap(),
            serde_json::to_string(&m).unwrap()
        );
    }

    #[test]
    fn write_json_writes_what_serde_json_writes() {
        let mut m: Tensors = every_dtype()
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("t{i}\"\n"), t))
            .collect();
        // Across chunk boundaries (3072 bytes).
        m.insert(
            "long f32".into(),
            t(
                vec![1001],
                TensorValues::F32((0..1001).map(|i| i as f32 / 7.0).collect()),
            ),
        );
        m.insert(
            "long u8".into(),
            t(
                vec![3074],
                TensorValues::U8((0..3074).map(|i| i as u8).collect()),
            ),
        );
        m.insert("empty".into(), t(vec![0], TensorValues::F64(vec![])));
        for encoding in [TensorEncoding::Json, TensorEncoding::Base64] {
            let mut out = b"x".to_vec();
            Encoded(&m, encoding).write_json(&mut out).unwrap();
            let mut expected = b"x".to_vec();
            expected.extend(serde_json::to_vec(&Encoded(&m, encoding)).unwrap());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
        let mut out = Vec::new();
        Encoded(&Tensors::new(), TensorEncoding::Base64)
            .write_json(&mut out)
            .unwrap();
        assert_eq!(out, b"{}");
    }

    proptest! {
        #[test]
        fn base64_round_trip_keeps_every_bit(bits in proptest::collection::vec(any::<u32>(), 0..20)) {
            let values: Vec<f32> = bits.iter().map(|b| f32::from_bits(*b)).collect();
            let x = t(vec![values.len()], TensorValues::F32(values));
            let back = parse_one(&body(&x, TensorEncoding::Base64));
            prop_assert_eq!(back.le_bytes(), x.le_bytes());
        }

        #[test]
        fn arbitrary_base64_never_panics(text in "[A-Za-z0-9+/=*]{0,24}", n in 0usize..8, dtype in 0usize..6) {
            let dtype = ["f32", "f64", "i64", "i32", "u8", "bool"][dtype];
            let body = format!(r#"{{"inputs":{{"shape":[{n}],"dtype":"{dtype}","data_b64":"{text}"}}}}"#);
            let _ = InferenceRequest::from_json(body.as_bytes(), &RequestLimits::default());
        }

        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = InferenceRequest::from_json(&body, &RequestLimits::default());
        }

        #[test]
        fn f32_tensors_round_trip(values in proptest::collection::vec(any::<f32>(), 0..20)) {
            let x = t(vec![values.len()], TensorValues::F32(values));
            let back: TensorData = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            prop_assert_eq!(canonical_bytes(&[("x".to_string(), back)].into()), canonical_bytes(&[("x".to_string(), x)].into()));
        }
    }
}
