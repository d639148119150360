//! The GGUF container format (trusted side, inside the enclave): a pure parser of a model
//! file's header — its metadata and tensor directory — over the bytes that were hashed.
//!
//! ```text
//!   "GGUF" | version u32 | tensors u64 | keys u64 | key/value pairs | tensor directory
//!   | padding to `general.alignment` (32) | tensor data (each tensor at an aligned offset)
//! ```
//!
//! Why Vouch's own: the header is untrusted input read by attested code, and the only
//! reader we had is candle's, which comes with candle itself (now the optional reference
//! runtime, `--features candle`): a newcomer's build and the attested code base should not
//! carry a tensor library to read a few kilobytes of header. This parser works in place over
//! the loaded buffer, is bounded (every count is checked against the bytes left before
//! anything is allocated, so a hostile count cannot make it reserve memory), and tells
//! truncation ([`ModelError::Truncated`]) from malformation ([`ModelError::Malformed`]).
//! It is stricter than llama.cpp's loader nowhere a real file would notice: versions 2 and
//! 3 (little-endian), no duplicate keys or tensor names, no nested arrays, UTF-8 strings,
//! at most four dimensions, aligned tensor offsets. Tensor types it does not know are kept
//! as numbers, so a runtime can refuse them by tensor name.
//!
//! It does not read tensor data: it says where each tensor lies, and [`Content::tensor_size`]
//! how long it is; the runtimes read the bytes themselves.

use std::collections::HashMap;

use super::packed::Packed;
use super::ModelError;

/// The GGUF magic, as the first four bytes of the file.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// Tensor data alignment when `general.alignment` is absent (GGUF's default).
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
const MAX_DIMS: usize = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// GGUF type 0.
    U8(u8),
    /// GGUF type 1.
    I8(i8),
    /// GGUF type 2.
    U16(u16),
    /// GGUF type 3.
    I16(i16),
    /// GGUF type 4.
    U32(u32),
    /// GGUF type 5.
    I32(i32),
    /// GGUF type 10.
    U64(u64),
    /// GGUF type 11.
    I64(i64),
    /// GGUF type 6.
    F32(f32),
    /// GGUF type 12.
    F64(f64),
    /// GGUF type 7.
    Bool(bool),
    /// GGUF type 8.
    String(String),
    /// GGUF type 9: values of one (non-array) type, kept packed (a vocabulary of 262 144
    /// tokens is three flat buffers, not 786 432 values).
    Array(Array),
}

/// An array value, packed by element type.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Strings),
}

impl Array {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements' type.
    pub fn element_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F32(_) => ValueType::F32,
            Array::F64(_) => ValueType::F64,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
        }
    }

    fn type_id(&self) -> u32 {
        self.element_type().id()
    }
}

/// Strings packed in one buffer ([`Packed`]); every entry was a `&str` when pushed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Strings(Packed);

impl Strings {
    /// Appends one string.
    pub fn push(&mut self, s: &str) {
        self.0.push(s.as_bytes());
    }

    /// The number of strings.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// String `i`.
    pub fn get(&self, i: usize) -> Option<&str> {
        // Only whole `&str`s are pushed, so every entry is UTF-8.
        (i < self.len()).then(|| std::str::from_utf8(self.0.get(i)).ok()).flatten()
    }

    /// The strings in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }
}

impl<'a> FromIterator<&'a str> for Strings {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let mut out = Strings::default();
        iter.into_iter().for_each(|s| out.push(s));
        out
    }
}

/// A metadata value's type, as the error messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    Bool,
    String,
    Array,
}

impl ValueType {
    /// The GGUF type id.
    fn id(self) -> u32 {
        match self {
            ValueType::U8 => 0,
            ValueType::I8 => 1,
            ValueType::U16 => 2,
            ValueType::I16 => 3,
            ValueType::U32 => 4,
            ValueType::I32 => 5,
            ValueType::F32 => 6,
            ValueType::Bool => 7,
            ValueType::String => 8,
            ValueType::Array => 9,
            ValueType::U64 => 10,
            ValueType::I64 => 11,
            ValueType::F64 => 12,
        }
    }
}

/// A metadata value of another type than the one asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, found {actual}")]
pub struct WrongType {
    /// The type asked for (`"U32"`, `"array of F32"`).
    pub expected: String,
    /// The value's type, spelled the same way.
    pub actual: String,
}

impl Value {
    /// This value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F32(_) => ValueType::F32,
            Value::F64(_) => ValueType::F64,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
        }
    }

    /// The value's type as errors spell it: `"U32"`, `"array of String"`.
    pub fn type_name(&self) -> String {
        match self {
            Value::Array(a) => format!("array of {:?}", a.element_type()),
            other => format!("{:?}", other.value_type()),
        }
    }

    fn wrong(&self, expected: ValueType) -> WrongType {
        WrongType { expected: format!("{expected:?}"), actual: self.type_name() }
    }

    fn wrong_array(&self, element: ValueType) -> WrongType {
        WrongType { expected: format!("array of {element:?}"), actual: self.type_name() }
    }

    /// A `U32` value.
    pub fn to_u32(&self) -> Result<u32, WrongType> {
        match self {
            Value::U32(n) => Ok(*n),
            other => Err(other.wrong(ValueType::U32)),
        }
    }

    /// A `U64` value.
    pub fn to_u64(&self) -> Result<u64, WrongType> {
        match self {
            Value::U64(n) => Ok(*n),
            other => Err(other.wrong(ValueType::U64)),
        }
    }

    /// An `I32` value.
    pub fn to_i32(&self) -> Result<i32, WrongType> {
        match self {
            Value::I32(n) => Ok(*n),
            other => Err(other.wrong(ValueType::I32)),
        }
    }

    /// An `F32` value.
    pub fn to_f32(&self) -> Result<f32, WrongType> {
        match self {
            Value::F32(x) => Ok(*x),
            other => Err(other.wrong(ValueType::F32)),
        }
    }

    /// A `Bool` value.
    pub fn to_bool(&self) -> Result<bool, WrongType> {
        match self {
            Value::Bool(b) => Ok(*b),
            other => Err(other.wrong(ValueType::Bool)),
        }
    }

    /// A `String` value.
    pub fn to_string(&self) -> Result<&String, WrongType> {
        match self {
            Value::String(s) => Ok(s),
            other => Err(other.wrong(ValueType::String)),
        }
    }

    /// An array of strings.
    pub fn to_strings(&self) -> Result<&Strings, WrongType> {
        match self {
            Value::Array(Array::String(v)) => Ok(v),
            other => Err(other.wrong_array(ValueType::String)),
        }
    }

    /// An array of `F32`.
    pub fn to_f32s(&self) -> Result<&[f32], WrongType> {
        match self {
            Value::Array(Array::F32(v)) => Ok(v),
            other => Err(other.wrong_array(ValueType::F32)),
        }
    }

    /// An array of `I32`.
    pub fn to_i32s(&self) -> Result<&[i32], WrongType> {
        match self {
            Value::Array(Array::I32(v)) => Ok(v),
            other => Err(other.wrong_array(ValueType::I32)),
        }
    }

    /// An array of `Bool`.
    pub fn to_bools(&self) -> Result<&[bool], WrongType> {
        match self {
            Value::Array(Array::Bool(v)) => Ok(v),
            other => Err(other.wrong_array(ValueType::Bool)),
        }
    }

    /// The GGUF type id.
    fn type_id(&self) -> u32 {
        self.value_type().id()
    }
}

/// A tensor's element type: ggml's type ids. Types this runtime has no use for beyond a
/// refusal are [`TensorType::Other`], named by [`TensorType::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs, non_camel_case_types)] // ggml's spellings
pub enum TensorType {
    F32,
    F16,
    BF16,
    F64,
    I8,
    I16,
    I32,
    I64,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    /// Any other ggml type id (the IQ and ternary types, MXFP4, ...).
    Other(u32),
}

impl TensorType {
    /// The types with a variant of their own, by ggml type id.
    const NAMED: [(u32, TensorType); 20] = [
        (0, TensorType::F32),
        (1, TensorType::F16),
        (2, TensorType::Q4_0),
        (3, TensorType::Q4_1),
        (6, TensorType::Q5_0),
        (7, TensorType::Q5_1),
        (8, TensorType::Q8_0),
        (9, TensorType::Q8_1),
        (10, TensorType::Q2_K),
        (11, TensorType::Q3_K),
        (12, TensorType::Q4_K),
        (13, TensorType::Q5_K),
        (14, TensorType::Q6_K),
        (15, TensorType::Q8_K),
        (24, TensorType::I8),
        (25, TensorType::I16),
        (26, TensorType::I32),
        (27, TensorType::I64),
        (28, TensorType::F64),
        (30, TensorType::BF16),
    ];

    fn from_id(id: u32) -> TensorType {
        TensorType::NAMED.iter().find(|(i, _)| *i == id).map_or(TensorType::Other(id), |(_, t)| *t)
    }

    /// The ggml type id.
    pub fn id(self) -> u32 {
        match self {
            TensorType::Other(id) => id,
            named => TensorType::NAMED.iter().find(|(_, t)| *t == named).map_or(u32::MAX, |(i, _)| *i),
        }
    }

    /// ggml's name for the type (`"Q4_K"`, `"IQ2_XXS"`, `"type 99"` when unknown).
    pub fn name(self) -> String {
        let known = match self.id() {
            16 => "IQ2_XXS",
            17 => "IQ2_XS",
            18 => "IQ3_XXS",
            19 => "IQ1_S",
            20 => "IQ4_NL",
            21 => "IQ3_S",
            22 => "IQ2_S",
            23 => "IQ4_XS",
            29 => "IQ1_M",
            34 => "TQ1_0",
            35 => "TQ2_0",
            39 => "MXFP4",
            _ => "",
        };
        match self {
            TensorType::Other(id) if known.is_empty() => format!("type {id}"),
            TensorType::Other(_) => known.to_owned(),
            named => format!("{named:?}"),
        }
    }

    /// Values per block and bytes per block, for the types whose layout this parser knows.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        Some(match self {
            TensorType::F32 | TensorType::I32 => (1, 4),
            TensorType::F16 | TensorType::BF16 | TensorType::I16 => (1, 2),
            TensorType::F64 | TensorType::I64 => (1, 8),
            TensorType::I8 => (1, 1),
            TensorType::Q4_0 => (32, 18),
            TensorType::Q4_1 => (32, 20),
            TensorType::Q5_0 => (32, 22),
            TensorType::Q5_1 => (32, 24),
            TensorType::Q8_0 => (32, 34),
            TensorType::Q8_1 => (32, 36),
            TensorType::Q2_K => (256, 84),
            TensorType::Q3_K => (256, 110),
            TensorType::Q4_K => (256, 144),
            TensorType::Q5_K => (256, 176),
            TensorType::Q6_K => (256, 210),
            TensorType::Q8_K => (256, 292),
            TensorType::Other(_) => return None,
        })
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type.
    pub ty: TensorType,
    /// Dimensions, outermost first (a matrix is `[rows, cols]`; GGUF stores them innermost
    /// first, and this is that list reversed).
    pub dims: Vec<usize>,
    /// Offset of the data from [`Content::tensor_data_offset`].
    pub offset: u64,
}

impl TensorInfo {
    /// The number of values.
    pub fn elem_count(&self) -> usize {
        self.dims.iter().product()
    }
}

/// A parsed GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// The format version (2 or 3).
    pub version: u32,
    /// Metadata, by key.
    pub metadata: HashMap<String, Value>,
    /// The tensor directory, by name.
    pub tensor_infos: HashMap<String, TensorInfo>,
    /// Where tensor data starts in the file.
    pub tensor_data_offset: u64,
}

/// Reads little-endian fields from the buffer, reporting a short read as truncation.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn truncated(&self, what: &str) -> ModelError {
        ModelError::Truncated {
            actual_len: self.bytes.len() as u64,
            needed: format!("the header ends early (in {what}, at byte {})", self.pos),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ModelError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.bytes.len() => {
                let out = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(out)
            }
            _ => Err(self.truncated(what)),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ModelError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, ModelError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// A count of items each at least `min_bytes` long: more than the bytes left could
    /// hold is truncation, found before anything is allocated for them.
    fn count(&mut self, min_bytes: usize, what: &str) -> Result<usize, ModelError> {
        let n = self.u64(what)?;
        match usize::try_from(n).ok().and_then(|n| n.checked_mul(min_bytes)) {
            Some(need) if need <= self.remaining() => Ok(n as usize),
            _ => Err(ModelError::Truncated {
                actual_len: self.bytes.len() as u64,
                needed: format!(
                    "the header ends early ({what}: {n} declared, {} bytes left)",
                    self.remaining()
                ),
            }),
        }
    }

    fn string(&mut self, what: &str) -> Result<String, ModelError> {
        let len = self.count(1, what)?;
        let raw = self.take(len, what)?;
        // Some writers end strings with NULs, which GGUF does not ask for; like llama.cpp's
        // and candle's readers, drop them.
        let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        String::from_utf8(raw[..end].to_vec())
            .map_err(|_| malformed(format!("{what} is not UTF-8 (at byte {})", self.pos - len)))
    }

    fn value(&mut self, type_id: u32, what: &str) -> Result<Value, ModelError> {
        Ok(match type_id {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => Value::Bool(self.bool(what)?),
            8 => Value::String(self.string(what)?),
            9 => Value::Array(self.array_value(what)?),
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            t => return Err(malformed(format!("{what}: unknown value type {t}"))),
        })
    }
}

impl Reader<'_> {
    fn bool(&mut self, what: &str) -> Result<bool, ModelError> {
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(malformed(format!("{what}: boolean byte {b}"))),
        }
    }

    /// `n` elements read by `one`, after checking that `n × min_bytes` are left.
    fn elements<T>(
        &mut self,
        min_bytes: usize,
        what: &str,
        mut one: impl FnMut(&mut Self) -> Result<T, ModelError>,
    ) -> Result<Vec<T>, ModelError> {
        let n = self.count(min_bytes, what)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(one(self)?);
        }
        Ok(out)
    }

    /// An array's element type, count and elements (arrays of arrays are refused: llama.cpp
    /// has no use for them either).
    fn array_value(&mut self, what: &str) -> Result<Array, ModelError> {
        let elem = self.u32(what)?;
        Ok(match elem {
            0 => Array::U8(self.elements(1, what, |r| Ok(r.array::<1>(what)?[0]))?),
            1 => Array::I8(self.elements(1, what, |r| Ok(r.array::<1>(what)?[0] as i8))?),
            2 => Array::U16(self.elements(2, what, |r| Ok(u16::from_le_bytes(r.array(what)?)))?),
            3 => Array::I16(self.elements(2, what, |r| Ok(i16::from_le_bytes(r.array(what)?)))?),
            4 => Array::U32(self.elements(4, what, |r| r.u32(what))?),
            5 => Array::I32(self.elements(4, what, |r| Ok(i32::from_le_bytes(r.array(what)?)))?),
            6 => Array::F32(self.elements(4, what, |r| Ok(f32::from_le_bytes(r.array(what)?)))?),
            7 => Array::Bool(self.elements(1, what, |r| r.bool(what))?),
            8 => {
                let n = self.count(8, what)?;
                let mut strings = Strings::default();
                for _ in 0..n {
                    strings.push(&self.string(what)?);
                }
                Array::String(strings)
            }
            9 => return Err(malformed(format!("{what}: arrays of arrays are not supported"))),
            10 => Array::U64(self.elements(8, what, |r| r.u64(what))?),
            11 => Array::I64(self.elements(8, what, |r| Ok(i64::from_le_bytes(r.array(what)?)))?),
            12 => Array::F64(self.elements(8, what, |r| Ok(f64::from_le_bytes(r.array(what)?)))?),
            t => return Err(malformed(format!("{what}: unknown value type {t}"))),
        })
    }
}

fn malformed(reason: String) -> ModelError {
    ModelError::Malformed { reason }
}

impl Content {
    /// Parses the header at the start of `bytes` (the whole file).
    pub fn parse(bytes: &[u8]) -> Result<Content, ModelError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(ModelError::NotGguf { actual_magic: hex::encode(&bytes[..bytes.len().min(4)]) });
        }
        let mut r = Reader { bytes, pos: MAGIC.len() };
        let version = r.u32("the version")?;
        if version != 2 && version != 3 {
            return Err(malformed(format!(
                "GGUF version {version} (0x{version:08x}); this reader takes versions 2 and 3, little-endian"
            )));
        }
        // A tensor entry is at least 8 (name length) + 4 (rank) + 4 (type) + 8 (offset)
        // bytes; a key/value pair at least 8 (key length) + 4 (type) + 1.
        let tensor_count = r.count(24, "the tensor count")?;
        let kv_count = r.count(13, "the metadata count")?;

        let mut metadata = HashMap::with_capacity(kv_count);
        for _ in 0..kv_count {
            let key = r.string("a metadata key")?;
            let type_id = r.u32("a metadata type")?;
            let value = r.value(type_id, &format!("metadata {key:?}"))?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(malformed(format!("metadata key {key:?} appears twice")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(other) => {
                return Err(malformed(format!(
                    "general.alignment is {other:?}; expected a power of two as U32"
                )))
            }
        };

        let mut tensor_infos = HashMap::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            let name = r.string("a tensor name")?;
            let what = format!("tensor {name:?}");
            let rank = r.u32(&what)? as usize;
            if rank == 0 || rank > MAX_DIMS {
                return Err(malformed(format!("{what} has {rank} dimensions (1 to {MAX_DIMS} allowed)")));
            }
            let mut dims = Vec::with_capacity(rank);
            for _ in 0..rank {
                let d = r.u64(&what)?;
                dims.push(
                    usize::try_from(d).map_err(|_| malformed(format!("{what}: dimension {d} overflows")))?,
                );
            }
            dims.reverse();
            if dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).is_none() {
                return Err(malformed(format!("{what}: {dims:?} values overflow")));
            }
            let ty = TensorType::from_id(r.u32(&what)?);
            let offset = r.u64(&what)?;
            if offset % alignment != 0 {
                return Err(malformed(format!("{what}: offset {offset} is not a multiple of {alignment}")));
            }
            if tensor_infos.insert(name.clone(), TensorInfo { ty, dims, offset }).is_some() {
                return Err(malformed(format!("tensor {name:?} appears twice")));
            }
        }
        let tensor_data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
        Ok(Content { version, metadata, tensor_infos, tensor_data_offset })
    }

    /// The bytes of `info`'s data, or an error naming the tensor when its type's layout is
    /// unknown or its values are not a whole number of blocks.
    pub fn tensor_size(name: &str, info: &TensorInfo) -> Result<u64, ModelError> {
        let (block, block_bytes) = info.ty.block_layout().ok_or_else(|| ModelError::Weights {
            reason: format!("tensor {name:?} has type {}, which Vouch cannot read", info.ty),
        })?;
        let elems = info.elem_count();
        // Blocks run along the rows (the innermost dimension).
        if info.dims.last().is_some_and(|c| c % block != 0) {
            return Err(malformed(format!(
                "tensor {name:?}: rows of {} values are not whole {} blocks of {block}",
                info.dims.last().copied().unwrap_or(0),
                info.ty
            )));
        }
        (elems / block)
            .checked_mul(block_bytes)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| malformed(format!("tensor {name:?}: size overflows")))
    }

    /// Checks that every tensor lies inside a file of `file_len` bytes, before any is read.
    pub fn check_extents(&self, file_len: u64) -> Result<(), ModelError> {
        let mut needed = self.tensor_data_offset;
        for (name, info) in &self.tensor_infos {
            let size = Content::tensor_size(name, info)?;
            let end = self
                .tensor_data_offset
                .checked_add(info.offset)
                .and_then(|start| start.checked_add(size))
                .ok_or_else(|| malformed(format!("tensor {name:?}: offset {} overflows", info.offset)))?;
            needed = needed.max(end);
        }
        if needed > file_len {
            return Err(ModelError::Truncated {
                actual_len: file_len,
                needed: format!("its tensors need {needed} bytes"),
            });
        }
        Ok(())
    }
}

/// Writes a GGUF version 3 file: the metadata in the order given, then the tensors
/// (`name, type, dims outermost first, data`) at 32-byte-aligned offsets. The tests build
/// their model files with it; the enclave never writes GGUF.
pub fn write(metadata: &[(&str, Value)], tensors: &[(&str, TensorType, &[usize], &[u8])]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    fn value(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::U8(n) => out.push(*n),
            Value::I8(n) => out.push(*n as u8),
            Value::U16(n) => out.extend(n.to_le_bytes()),
            Value::I16(n) => out.extend(n.to_le_bytes()),
            Value::U32(n) => out.extend(n.to_le_bytes()),
            Value::I32(n) => out.extend(n.to_le_bytes()),
            Value::U64(n) => out.extend(n.to_le_bytes()),
            Value::I64(n) => out.extend(n.to_le_bytes()),
            Value::F32(x) => out.extend(x.to_le_bytes()),
            Value::F64(x) => out.extend(x.to_le_bytes()),
            Value::Bool(b) => out.push(u8::from(*b)),
            Value::String(s) => string(out, s),
            Value::Array(items) => {
                out.extend(items.type_id().to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                match items {
                    Array::U8(v) => out.extend(v),
                    Array::I8(v) => v.iter().for_each(|x| out.push(*x as u8)),
                    Array::U16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
                    Array::I16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
                    Array::U32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
                    Array::I32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
                    Array::U64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
                    Array::I64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
                    Array::F32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
                    Array::F64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
                    Array::Bool(v) => v.iter().for_each(|x| out.push(u8::from(*x))),
                    Array::String(v) => v.iter().for_each(|x| string(out, x)),
                }
            }
        }
    }
    let align = |n: usize| n.div_ceil(DEFAULT_ALIGNMENT as usize) * DEFAULT_ALIGNMENT as usize;
    let mut out = MAGIC.to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, v) in metadata {
        string(&mut out, key);
        out.extend(v.type_id().to_le_bytes());
        value(&mut out, v);
    }
    let mut offset = 0usize;
    for (name, ty, dims, data) in tensors {
        string(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        dims.iter().rev().for_each(|&d| out.extend((d as u64).to_le_bytes()));
        out.extend(ty.id().to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset = align(offset + data.len());
    }
    for (_, _, _, data) in tensors {
        out.resize(align(out.len()), 0);
        out.extend(*data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let data: Vec<u8> = (0..34u8).collect();
        let f32s: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        write(
            &[
                ("general.architecture", Value::String("llama".into())),
                ("n", Value::U32(7)),
                ("tokens", Value::Array(Array::String(["a", "bc"].into_iter().collect()))),
                ("scores", Value::Array(Array::F32(vec![0.5, -1.0]))),
                ("flag", Value::Bool(true)),
            ],
            &[("w", TensorType::Q8_0, &[1, 32], &data), ("v", TensorType::F32, &[2], &f32s)],
        )
    }

    #[test]
    fn what_is_written_parses_back() {
        let bytes = sample();
        let c = Content::parse(&bytes).unwrap();
        assert_eq!(c.version, 3);
        assert_eq!(c.metadata["n"], Value::U32(7));
        assert_eq!(c.metadata["general.architecture"].to_string().unwrap(), "llama");
        let tokens = c.metadata["tokens"].to_strings().unwrap();
        assert_eq!(tokens.iter().collect::<Vec<_>>(), ["a", "bc"]);
        assert_eq!((tokens.get(1), tokens.get(2)), (Some("bc"), None));
        assert_eq!(c.metadata["scores"].to_f32s().unwrap(), [0.5, -1.0]);
        assert_eq!(
            c.metadata["scores"].to_i32s().unwrap_err().to_string(),
            "expected array of I32, found array of F32"
        );
        assert_eq!(c.metadata["flag"].to_bool(), Ok(true));
        assert_eq!(c.tensor_data_offset % 32, 0);
        let w = &c.tensor_infos["w"];
        assert_eq!((w.ty, w.dims.as_slice(), w.offset), (TensorType::Q8_0, &[1usize, 32][..], 0));
        let v = &c.tensor_infos["v"];
        assert_eq!((v.ty, v.offset), (TensorType::F32, 64));
        let start = (c.tensor_data_offset + v.offset) as usize;
        assert_eq!(&bytes[start..start + 4], 1.0f32.to_le_bytes());
        c.check_extents(bytes.len() as u64).unwrap();
        assert_eq!(c.metadata["n"].to_u64().unwrap_err().to_string(), "expected U64, found U32");
    }

    #[test]
    fn tensor_type_ids_round_trip() {
        for id in 0..64 {
            assert_eq!(TensorType::from_id(id).id(), id);
        }
        for (id, ty) in TensorType::NAMED {
            assert_eq!((TensorType::from_id(id), ty.id()), (ty, id));
        }
        assert_eq!(TensorType::from_id(12).name(), "Q4_K");
        assert_eq!(TensorType::from_id(20).name(), "IQ4_NL");
    }

    #[test]
    fn every_truncation_is_reported_as_such() {
        let bytes = sample();
        let header_end = Content::parse(&bytes).unwrap().tensor_data_offset as usize;
        for len in 4..header_end - 32 {
            match Content::parse(&bytes[..len]) {
                Err(ModelError::Truncated { actual_len, .. }) => assert_eq!(actual_len, len as u64),
                other => panic!("{len} bytes: expected Truncated, got {other:?}"),
            }
        }
        // A whole header whose tensors run past the end.
        let c = Content::parse(&bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(c.check_extents(bytes.len() as u64 - 1), Err(ModelError::Truncated { .. })));
    }

    /// Byte offset of the first occurrence of `needle` in `bytes`.
    fn find(bytes: &[u8], needle: &[u8]) -> usize {
        bytes.windows(needle.len()).position(|w| w == needle).unwrap()
    }

    #[test]
    fn malformed_headers_are_refused_with_the_reason() {
        let good = sample();
        let refuse = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            edit(&mut b);
            match Content::parse(&b).and_then(|c| c.check_extents(b.len() as u64).map(|_| c)) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted"),
            }
        };
        assert_eq!(
            refuse(&|b| b[0] = b'X'),
            "not a GGUF file: first bytes are 58475546, expected 47475546 (\"GGUF\")"
        );
        assert!(refuse(&|b| b[4] = 1).contains("GGUF version 1"));
        assert!(refuse(&|b| b[4..8].copy_from_slice(&3u32.to_be_bytes())).contains("little-endian"));
        // A hostile count is truncation, found before any allocation.
        assert!(refuse(&|b| b[16..24].copy_from_slice(&u64::MAX.to_le_bytes())).contains("metadata count"));
        // The value type of "n" (U32 = 4) made unknown, then made a nested array.
        let n_type = find(&good, b"n\x04\x00\x00\x00") + 1;
        assert!(refuse(&|b| b[n_type] = 13).contains("unknown value type 13"));
        let scores_type = find(&good, b"scores") + 6 + 4;
        assert!(refuse(&|b| b[scores_type] = 9).contains("arrays of arrays"));
        let flag = find(&good, b"flag") + 4 + 4;
        assert!(refuse(&|b| b[flag] = 2).contains("boolean byte 2"));
        let bc = find(&good, b"bc");
        assert!(refuse(&|b| b[bc] = 0xff).contains("is not UTF-8"));
        let twice = write(&[("n", Value::U32(1)), ("n", Value::U32(2))], &[]);
        assert_eq!(
            Content::parse(&twice).unwrap_err().to_string(),
            "malformed GGUF file: metadata key \"n\" appears twice"
        );
        let f32s = [0u8; 4];
        let twice = write(&[], &[("t", TensorType::F32, &[1], &f32s), ("t", TensorType::F32, &[1], &f32s)]);
        assert_eq!(
            Content::parse(&twice).unwrap_err().to_string(),
            "malformed GGUF file: tensor \"t\" appears twice"
        );
        // Tensor "w": rank 5, then an unaligned offset, then a type Vouch cannot size.
        let w = find(&good, b"\x01\x00\x00\x00\x00\x00\x00\x00w") + 9;
        assert!(refuse(&|b| b[w] = 5).contains("has 5 dimensions"));
        let w_type = w + 4 + 16;
        assert!(refuse(&|b| b[w_type] = 99).contains("tensor \"w\" has type type 99"));
        assert!(refuse(&|b| b[w_type] = 16).contains("tensor \"w\" has type IQ2_XXS"));
        // Q4_K rows are 256 values: a row of 32 is not whole blocks.
        assert!(refuse(&|b| b[w_type] = 12).contains("not whole Q4_K blocks of 256"));
        let v_offset = find(&good, b"v\x01\x00\x00\x00") + 1 + 4 + 8 + 4;
        assert!(refuse(&|b| b[v_offset] = 65).contains("offset 65 is not a multiple of 32"));
        assert!(refuse(&|b| b[v_offset + 7] = 0xff).contains("need"));
    }
}
