//! A restricted reader for the pickle inside a PyTorch `torch.save` zip (Lightning `best.ckpt`).
//!
//! Why not `candle_core::pickle`: it aborts on any dict subclass anywhere in the file (NEWOBJ +
//! SETITEMS on an `OrderedDict`) and does not hand back non-tensor values such as
//! `model_build_args`, which the release checkpoint needs (RUST-STACK.md pitfall 4).
//!
//! Why this is safe: a pickle is a program for a stack machine whose GLOBAL/REDUCE opcodes can
//! name and call any Python callable. This reader never calls anything. It resolves GLOBAL
//! against a short whitelist (the same kind of list as `torch.load(weights_only=True)`) and
//! rejects every other name at the GLOBAL opcode itself, so a `posix.system` or `builtins.eval`
//! is refused before it could even be applied. REDUCE/NEWOBJ are interpreted as *data
//! constructors* for the whitelisted names only: `OrderedDict()` builds an empty dict,
//! `_rebuild_tensor_v2(...)` builds a tensor *description* (storage key, offset, shape,
//! strides); tensor bytes are read later, from the zip entry, straight into their final buffer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// The element type of a torch storage (from `torch.FloatStorage` etc.).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDtype {
    /// Bytes per element, as stored in `archive/data/<key>`.
    pub fn size(self) -> usize {
        match self {
            StorageDtype::F64 | StorageDtype::I64 => 8,
            StorageDtype::F32 | StorageDtype::I32 => 4,
            StorageDtype::F16 | StorageDtype::BF16 | StorageDtype::I16 => 2,
            StorageDtype::I8 | StorageDtype::U8 | StorageDtype::Bool => 1,
        }
    }

    /// The name users know from safetensors/candle, used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            StorageDtype::F64 => "F64",
            StorageDtype::F32 => "F32",
            StorageDtype::F16 => "F16",
            StorageDtype::BF16 => "BF16",
            StorageDtype::I64 => "I64",
            StorageDtype::I32 => "I32",
            StorageDtype::I16 => "I16",
            StorageDtype::I8 => "I8",
            StorageDtype::U8 => "U8",
            StorageDtype::Bool => "BOOL",
        }
    }

    fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => StorageDtype::F64,
            "FloatStorage" => StorageDtype::F32,
            "HalfStorage" => StorageDtype::F16,
            "BFloat16Storage" => StorageDtype::BF16,
            "LongStorage" => StorageDtype::I64,
            "IntStorage" => StorageDtype::I32,
            "ShortStorage" => StorageDtype::I16,
            "CharStorage" => StorageDtype::I8,
            "ByteStorage" => StorageDtype::U8,
            "BoolStorage" => StorageDtype::Bool,
            _ => return None,
        })
    }
}

/// A tensor as the pickle describes it; its bytes live in the zip entry `data/<key>`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage_key: String,
    pub dtype: StorageDtype,
    /// Elements in the whole storage (a tensor may view part of it).
    pub storage_numel: usize,
    /// Offset into the storage, in elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// The callables we agree to *name*. None is ever called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(StorageDtype),
}

/// Plain data built by the reader. Lists and dicts are shared (`Rc<RefCell>`) because pickle
/// mutates containers after memoizing them (SETITEMS on a memoized dict), so a later BINGET must
/// see the filled container, as in Python.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Global),
    /// A persistent storage reference: ('storage', FloatStorage, key, location, numel).
    Storage {
        dtype: StorageDtype,
        key: String,
        numel: usize,
    },
    Tensor(Rc<TensorRef>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// Items of a tuple or list (a pickled `(2, 3072)` may be either, depending on the writer).
    pub fn as_seq(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(t) => Some(t.as_ref().clone()),
            Value::List(l) => Some(l.borrow().clone()),
            _ => None,
        }
    }

    /// Entries of a dict in insertion order.
    pub fn as_dict(&self) -> Option<Vec<(Value, Value)>> {
        match self {
            Value::Dict(d) => Some(d.borrow().clone()),
            _ => None,
        }
    }

    /// `dict[key]` for a string key.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(d) => d
                .borrow()
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v.clone()),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage { .. } => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// Why a pickle was refused; the checkpoint loader wraps it with the file name.
#[derive(Debug, Clone, PartialEq)]
pub struct PickleError {
    pub offset: usize,
    pub message: String,
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pickle byte {}: {}", self.offset, self.message)
    }
}

type PResult<T> = std::result::Result<T, PickleError>;

/// Resolve `module.name` against the whitelist. Everything else is refused here, at the GLOBAL
/// opcode, so that no later opcode can ever apply it.
fn resolve_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", storage) => StorageDtype::from_storage_class(storage).map(Global::Storage),
        _ => None,
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Start of the opcode being run, for error messages.
    op_pos: usize,
    stack: Vec<Value>,
    /// Saved stacks at each MARK (the `metastack` of CPython's unpickler).
    marks: Vec<Vec<Value>>,
    memo: HashMap<u32, Value>,
}

/// Parse a pickle into plain data. Never executes anything (see the module docs).
pub fn parse(data: &[u8]) -> PResult<Value> {
    let mut m = Machine {
        data,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    m.run()
}

impl<'a> Machine<'a> {
    fn err<T>(&self, message: impl Into<String>) -> PResult<T> {
        Err(PickleError {
            offset: self.op_pos,
            message: message.into(),
        })
    }

    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => self.err("unexpected end of data (truncated pickle)"),
        }
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> PResult<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> PResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> PResult<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn line(&mut self) -> PResult<&'a str> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("unterminated text line");
        };
        let s = std::str::from_utf8(&rest[..n]).or_else(|_| self.err("text line is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> PResult<String> {
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => self.err("string is not UTF-8"),
        }
    }

    fn len(&mut self, n: u64) -> PResult<usize> {
        match usize::try_from(n) {
            Ok(n) if n <= self.data.len() - self.pos => Ok(n),
            _ => self.err(format!("length {n} runs past the end of the data")),
        }
    }

    fn pop(&mut self) -> PResult<Value> {
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn top(&mut self) -> PResult<&mut Value> {
        let off = self.op_pos;
        self.stack.last_mut().ok_or(PickleError {
            offset: off,
            message: "stack underflow".into(),
        })
    }

    /// Pop everything since the last MARK.
    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let Some(saved) = self.marks.pop() else {
            return self.err("MARK expected");
        };
        Ok(std::mem::replace(&mut self.stack, saved))
    }

    fn memo_get(&self, idx: u32) -> PResult<Value> {
        match self.memo.get(&idx) {
            Some(v) => Ok(v.clone()),
            None => self.err(format!("memo key {idx} was never stored")),
        }
    }

    fn memo_put(&mut self, idx: u32) -> PResult<()> {
        let v = match self.stack.last() {
            Some(v) => v.clone(),
            None => return self.err("stack underflow"),
        };
        self.memo.insert(idx, v);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> PResult<()> {
        if !items.len().is_multiple_of(2) {
            return self.err("odd number of items for SETITEMS");
        }
        let off = self.op_pos;
        match self.top()? {
            Value::Dict(d) => {
                let mut d = d.borrow_mut();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    // A repeated key replaces the earlier value, as in Python.
                    if let Some(slot) = d.iter_mut().find(|(ek, _)| same_key(ek, &k)) {
                        slot.1 = v;
                    } else {
                        d.push((k, v));
                    }
                }
                Ok(())
            }
            other => Err(PickleError {
                offset: off,
                message: format!("SETITEM(S) on a {}, not a dict", other.kind()),
            }),
        }
    }

    fn append_items(&mut self, items: Vec<Value>) -> PResult<()> {
        let off = self.op_pos;
        match self.top()? {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => Err(PickleError {
                offset: off,
                message: format!("APPEND(S) on a {}, not a list", other.kind()),
            }),
        }
    }

    /// REDUCE / NEWOBJ: interpret a whitelisted constructor as data. Nothing is called.
    fn construct(&mut self, callable: Value, args: Value) -> PResult<Value> {
        let Value::Global(g) = callable else {
            return self.err(format!(
                "REDUCE applies a {}, not a whitelisted class",
                callable.kind()
            ));
        };
        let args = match args {
            Value::Tuple(t) => t,
            other => {
                return self.err(format!(
                    "REDUCE arguments must be a tuple, found {}",
                    other.kind()
                ));
            }
        };
        match g {
            Global::OrderedDict => {
                if !args.is_empty() {
                    return self.err("OrderedDict(...) with arguments is not supported");
                }
                Ok(Value::Dict(Rc::new(RefCell::new(Vec::new()))))
            }
            Global::RebuildParameter => match args.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => self.err("_rebuild_parameter expects a tensor as its first argument"),
            },
            Global::RebuildTensorV2 => self.rebuild_tensor(&args),
            Global::Storage(_) => self.err("a storage class cannot be constructed directly"),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`.
    fn rebuild_tensor(&self, args: &[Value]) -> PResult<Value> {
        if args.len() < 4 {
            return self.err("_rebuild_tensor_v2 needs at least 4 arguments");
        }
        let Value::Storage { dtype, key, numel } = &args[0] else {
            return self.err(format!(
                "_rebuild_tensor_v2: first argument is a {}, not a storage",
                args[0].kind()
            ));
        };
        let offset = self.usize_arg(&args[1], "storage offset")?;
        let shape = self.usize_seq(&args[2], "size")?;
        let stride = self.usize_seq(&args[3], "stride")?;
        if shape.len() != stride.len() {
            return self.err(format!(
                "tensor size {shape:?} and stride {stride:?} differ in rank"
            ));
        }
        // The largest element index must stay inside the storage (no reads out of bounds later).
        if shape.iter().all(|&d| d > 0) {
            let mut last = offset as u128;
            for (&d, &s) in shape.iter().zip(&stride) {
                last += (d as u128 - 1) * s as u128;
            }
            if last >= *numel as u128 {
                return self.err(format!(
                    "tensor (offset {offset}, size {shape:?}, stride {stride:?}) reaches past its storage of {numel} elements"
                ));
            }
        }
        Ok(Value::Tensor(Rc::new(TensorRef {
            storage_key: key.clone(),
            dtype: *dtype,
            storage_numel: *numel,
            offset,
            shape,
            stride,
        })))
    }

    fn usize_arg(&self, v: &Value, what: &str) -> PResult<usize> {
        match v.as_int() {
            Some(i) if i >= 0 => Ok(i as usize),
            _ => self.err(format!(
                "{what} must be a non-negative int, found {}",
                v.kind()
            )),
        }
    }

    fn usize_seq(&self, v: &Value, what: &str) -> PResult<Vec<usize>> {
        match v.as_seq() {
            Some(items) => items.iter().map(|i| self.usize_arg(i, what)).collect(),
            None => self.err(format!("{what} must be a tuple, found {}", v.kind())),
        }
    }

    /// BINPERSID: torch's persistent id for a storage.
    fn persistent(&self, pid: Value) -> PResult<Value> {
        let items = match pid.as_seq() {
            Some(items) => items,
            None => return self.err("persistent id is not a tuple"),
        };
        if items.len() < 5 || items[0].as_str() != Some("storage") {
            return self
                .err("persistent id is not a ('storage', type, key, location, numel) tuple");
        }
        let Value::Global(Global::Storage(dtype)) = items[1] else {
            return self.err("persistent id names an unknown storage type");
        };
        let Some(key) = items[2].as_str() else {
            return self.err("storage key is not a string");
        };
        let numel = self.usize_arg(&items[4], "storage size")?;
        Ok(Value::Storage {
            dtype,
            key: key.to_owned(),
            numel,
        })
    }

    fn run(&mut self) -> PResult<Value> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if p > 5 {
                        return self.err(format!("pickle protocol {p} is newer than 5"));
                    }
                }
                0x95 => {
                    // FRAME: only a size hint.
                    self.u64()?;
                }
                b'.' => {
                    // STOP
                    return self.pop();
                }
                b'(' => {
                    // MARK
                    let saved = std::mem::take(&mut self.stack);
                    self.marks.push(saved);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = self.u8()? as usize;
                    if n > 8 {
                        return self.err("integer wider than 64 bits");
                    }
                    let b = self.take(n)?;
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)));
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.stack.push(Value::Float(f64::from_be_bytes(
                        b.try_into().expect("8 bytes"),
                    )));
                }
                b'X' => {
                    let n = self.u32()? as u64;
                    let n = self.len(n)?;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8d => {
                    let n = self.u64()?;
                    let n = self.len(n)?;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'T' | b'B' => {
                    let n = self.u32()? as u64;
                    let n = self.len(n)?;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                0x8e => {
                    let n = self.u64()?;
                    let n = self.len(n)?;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'}' => self
                    .stack
                    .push(Value::Dict(Rc::new(RefCell::new(Vec::new())))),
                b']' => self
                    .stack
                    .push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                b')' => self.stack.push(Value::Tuple(Rc::new(Vec::new()))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack
                        .push(Value::Dict(Rc::new(RefCell::new(Vec::new()))));
                    self.set_items(items)?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return self.err("stack underflow");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    // MEMOIZE
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'0' => {
                    self.pop()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'1' => {
                    // POP_MARK
                    self.pop_mark()?;
                }
                b'c' => {
                    let module = self.line()?.to_owned();
                    let name = self.line()?.to_owned();
                    self.global(&module, &name)?;
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => {
                            let (m, n) = (m.to_owned(), n.to_owned());
                            self.global(&m, &n)?;
                        }
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.construct(callable, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    // NEWOBJ: cls.__new__(cls, *args); only dict subclasses we know.
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.construct(cls, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD: state for an object. Only an empty/None state on a dict is plain data.
                    let state = self.pop()?;
                    let empty = match &state {
                        Value::None => true,
                        Value::Dict(d) => d.borrow().is_empty(),
                        Value::Tuple(t) => t.iter().all(|v| matches!(v, Value::None)),
                        _ => false,
                    };
                    if !empty || !matches!(self.top()?, Value::Dict(_)) {
                        return self.err("BUILD with object state is not plain data");
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid)?;
                    self.stack.push(v);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append_items(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append_items(items)?;
                }
                other => {
                    return self.err(format!(
                        "opcode 0x{other:02x} is not allowed in a weights-only checkpoint (it needs code execution or is not plain data)"
                    ));
                }
            }
        }
    }

    fn global(&mut self, module: &str, name: &str) -> PResult<()> {
        match resolve_global(module, name) {
            Some(g) => {
                self.stack.push(Value::Global(g));
                Ok(())
            }
            None => self.err(format!(
                "refusing to load global '{module}.{name}': only plain containers and tensors are read \
                 (collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch.*Storage); nothing is executed"
            )),
        }
    }
}

fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_os_system_before_reduce() {
        // cos\nsystem\n(S'echo pwned'\ntR.  (protocol 0) -- GLOBAL must be refused at once.
        let p = b"cos\nsystem\n(X\x04\x00\x00\x00echotR.";
        let e = parse(p).unwrap_err();
        assert!(e.message.contains("os.system"), "{e}");
        assert_eq!(e.offset, 0);
    }

    #[test]
    fn reads_plain_containers() {
        // {'a': (1, 2), 'b': [True, None], 'c': 1.5} at protocol 2
        let p: &[u8] =
            b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01K\x02\x86X\x01\x00\x00\x00b]q\x01(\x88Ne\
X\x01\x00\x00\x00cG?\xf8\x00\x00\x00\x00\x00\x00u.";
        let v = parse(p).unwrap();
        let a = v.get("a").unwrap().as_seq().unwrap();
        assert_eq!(
            a.iter().map(|x| x.as_int().unwrap()).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let b = v.get("b").unwrap().as_seq().unwrap();
        assert!(matches!(b[0], Value::Bool(true)) && matches!(b[1], Value::None));
        assert!(matches!(v.get("c"), Some(Value::Float(x)) if x == 1.5));
    }

    #[test]
    fn memo_sees_later_mutation() {
        // d = {}; memo 0 = d; d['x'] = 1; return (d_from_memo,)
        let p: &[u8] = b"\x80\x02}q\x00X\x01\x00\x00\x00xK\x01sh\x00\x85.";
        let v = parse(p).unwrap();
        let t = v.as_seq().unwrap();
        assert_eq!(t[0].get("x").unwrap().as_int(), Some(1));
    }

    #[test]
    fn truncated_is_an_error() {
        let e = parse(b"\x80\x02}q\x00(X\x10\x00\x00\x00ab").unwrap_err();
        assert!(
            e.message.contains("past the end") || e.message.contains("truncated"),
            "{e}"
        );
    }
}
