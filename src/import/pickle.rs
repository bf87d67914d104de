//! A small pickle interpreter for the subset `torch.save` writes (protocols 2 to 5).
//!
//! It builds a value tree instead of running arbitrary code: the few torch calls that rebuild
//! tensors are evaluated into [`Value::Tensor`], storage persistent ids into [`Value::Storage`],
//! and any other call is kept, unevaluated, as [`Value::Object`] so that errors can name it.
//! Containers are reference counted (memo gets are cheap) and carry their nesting depth, which
//! is capped so that hostile input can neither exhaust memory by doubling nor overflow the
//! stack when the tree is dropped.

use std::collections::HashMap;
use std::rc::Rc;

/// Deepest nesting accepted; real state dicts are 3 to 6 levels deep.
const MAX_DEPTH: u16 = 100;

/// Element types of torch storages, named after their `torch.*Storage` classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDType {
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

impl StorageDType {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Self::F64 | Self::F32 | Self::F16 | Self::BF16)
    }
}

/// A storage named by a persistent id: `('storage', torch.FloatStorage, key, location, numel[, view])`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: StorageDType,
    /// Elements in the storage (for a legacy view: in the root storage it views).
    pub numel: usize,
    /// Legacy views: the storage is elements `[offset, offset + len)` of storage `key`.
    pub view: Option<(usize, usize)>,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided window on a storage (in elements).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits, as its little-endian two's-complement bytes.
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Vec<Value>>, u16),
    List(Rc<Vec<Value>>, u16),
    Dict(Rc<Vec<(Value, Value)>>, u16),
    Global(Rc<(String, String)>),
    /// A call that was not evaluated: `callable(*args)`.
    Object(Rc<(Value, Value)>, u16),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn depth(&self) -> u16 {
        match self {
            Value::Tuple(_, d) | Value::List(_, d) | Value::Dict(_, d) | Value::Object(_, d) => *d,
            _ => 0,
        }
    }

    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {b}"),
            Value::Int(i) => format!("int {i}"),
            Value::BigInt(b) => format!("{}-byte int", b.len()),
            Value::Float(f) => format!("float {f}"),
            Value::Str(s) => format!("string {s:?}"),
            Value::Bytes(b) => format!("{} bytes", b.len()),
            Value::Tuple(t, _) => format!("tuple of {}", t.len()),
            Value::List(l, _) => format!("list of {}", l.len()),
            Value::Dict(d, _) => format!("dict of {}", d.len()),
            Value::Global(g) => format!("{}.{}", g.0, g.1),
            Value::Object(o, _) => match &o.0 {
                Value::Global(g) => format!("a {}.{} object", g.0, g.1),
                other => format!("a call of {}", other.describe()),
            },
            Value::Storage(s) => format!("storage {}", s.key),
            Value::Tensor(t) => format!("tensor {:?}", t.size),
        }
    }
}

fn nested(items: &[Value]) -> Result<u16, String> {
    let d = items.iter().map(Value::depth).max().unwrap_or(0) + 1;
    if d > MAX_DEPTH {
        return Err(format!("pickle nests deeper than {MAX_DEPTH} levels"));
    }
    Ok(d)
}

fn tuple(items: Vec<Value>) -> Result<Value, String> {
    let d = nested(&items)?;
    Ok(Value::Tuple(Rc::new(items), d))
}

/// One decoded pickle.
#[derive(Debug)]
pub struct Pickle {
    pub value: Value,
    /// Bytes of input it took, up to and including `STOP`.
    pub len: usize,
    /// Every storage its persistent ids named, whether or not the value still reaches it.
    pub storages: Vec<StorageRef>,
}

/// Reads one pickle from the front of `data`.
pub fn load(data: &[u8]) -> Result<Pickle, String> {
    let mut vm = Vm {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        storages: Vec::new(),
    };
    let value = vm.run()?;
    Ok(Pickle {
        value,
        len: vm.pos,
        storages: vm.storages,
    })
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    storages: Vec<StorageRef>,
}

impl<'a> Vm<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "pickle truncated at byte {} (wanted {n} more bytes, {} left)",
                self.pos,
                self.data.len() - self.pos
            )),
        }
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn len(&mut self, n: u64) -> Result<usize, String> {
        usize::try_from(n).map_err(|_| format!("pickle length {n} too large"))
    }

    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("pickle truncated at byte {}: unterminated line", self.pos))?;
        let line = self.take(n + 1)?;
        std::str::from_utf8(&line[..n]).map_err(|_| format!("non-UTF-8 text at byte {}", self.pos))
    }

    fn string(&mut self, n: usize) -> Result<Value, String> {
        let at = self.pos;
        let bytes = self.take(n)?;
        let s =
            std::str::from_utf8(bytes).map_err(|_| format!("invalid UTF-8 string at byte {at}"))?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn bytes(&mut self, n: usize) -> Result<Value, String> {
        Ok(Value::Bytes(Rc::from(self.take(n)?)))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v)
    }

    fn pop(&mut self) -> Result<Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(format!("pickle stack underflow at byte {}", self.pos));
        }
        Ok(self.stack.pop().unwrap())
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(format!("pickle stack underflow at byte {}", self.pos));
        }
        Ok(self.stack.last_mut().unwrap())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| format!("pickle has no mark to pop at byte {}", self.pos))?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&self, id: u32) -> Result<Value, String> {
        self.memo
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("pickle memo entry {id} missing at byte {}", self.pos))
    }

    fn memo_put(&mut self, id: u32) -> Result<(), String> {
        let v = self.top()?.clone();
        self.memo.insert(id, v);
        Ok(())
    }

    fn extend_list(&mut self, items: Vec<Value>) -> Result<(), String> {
        let add = nested(&items)?;
        let pos = self.pos;
        match self.top()? {
            Value::List(list, d) => {
                Rc::make_mut(list).extend(items);
                *d = (*d).max(add);
                Ok(())
            }
            other => Err(format!("APPEND to {} at byte {pos}", other.describe())),
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err(format!("odd number of dict items at byte {}", self.pos));
        }
        let add = nested(&items)?;
        let pos = self.pos;
        match self.top()? {
            Value::Dict(dict, d) => {
                let dict = Rc::make_mut(dict);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    // Python keeps the first position and the last value of a repeated key.
                    match dict.iter_mut().find(|(old, _)| *old == k) {
                        Some(slot) => slot.1 = v,
                        None => dict.push((k, v)),
                    }
                }
                *d = (*d).max(add);
                Ok(())
            }
            // `BUILD` on unevaluated objects may still feed them items; keep nothing.
            Value::Object(..) => Ok(()),
            other => Err(format!("SETITEM on {} at byte {pos}", other.describe())),
        }
    }

    /// The value a literal opcode (None, a bool, a number, a string, bytes) pushes;
    /// `None` for every other opcode.
    fn literal(&mut self, op: u8, at: usize) -> Result<Option<Value>, String> {
        Ok(Some(match op {
            b'N' => Value::None,
            b'\x88' => Value::Bool(true),
            b'\x89' => Value::Bool(false),
            b'J' => {
                let v = self.u32()? as i32;
                Value::Int(v as i64)
            }
            b'K' => {
                let v = self.u8()?;
                Value::Int(v as i64)
            }
            b'M' => {
                let v = self.u16()?;
                Value::Int(v as i64)
            }
            b'I' | b'L' => {
                let line = self.line()?;
                match line.trim_end_matches('L') {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    t => Value::Int(
                        t.parse()
                            .map_err(|_| format!("bad INT {line:?} at byte {at}"))?,
                    ),
                }
            }
            b'\x8a' | b'\x8b' => {
                let n = if op == b'\x8a' {
                    self.u8()? as usize
                } else {
                    self.u32()? as usize
                };
                let bytes = self.take(n)?;
                // Little-endian two's complement; wider than i64 only for torch's magic number.
                if n > 8 {
                    Value::BigInt(Rc::from(bytes))
                } else {
                    let neg = bytes.last().is_some_and(|b| b & 0x80 != 0);
                    let mut buf = if neg { [0xff; 8] } else { [0; 8] };
                    buf[..n].copy_from_slice(bytes);
                    Value::Int(i64::from_le_bytes(buf))
                }
            }
            b'G' => {
                let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                Value::Float(v)
            }
            b'F' => {
                let line = self.line()?;
                let v = line
                    .parse()
                    .map_err(|_| format!("bad FLOAT {line:?} at byte {at}"))?;
                Value::Float(v)
            }
            b'X' => {
                let n = self.u32()? as usize;
                self.string(n)?
            }
            b'\x8c' => {
                let n = self.u8()? as usize;
                self.string(n)?
            }
            b'\x8d' => {
                let n = self.u64()?;
                let n = self.len(n)?;
                self.string(n)?
            }
            b'U' | b'C' => {
                let n = self.u8()? as usize;
                self.bytes(n)?
            }
            b'T' | b'B' => {
                let n = self.u32()? as usize;
                self.bytes(n)?
            }
            b'\x8e' => {
                let n = self.u64()?;
                let n = self.len(n)?;
                self.bytes(n)?
            }
            _ => return Ok(None),
        }))
    }

    /// Runs a memo opcode (get or put); `false` for every other opcode.
    fn memo_op(&mut self, op: u8) -> Result<bool, String> {
        match op {
            b'h' => {
                let id = self.u8()? as u32;
                let v = self.memo_get(id)?;
                self.push(v)
            }
            b'j' => {
                let id = self.u32()?;
                let v = self.memo_get(id)?;
                self.push(v)
            }
            b'q' => {
                let id = self.u8()? as u32;
                self.memo_put(id)?;
            }
            b'r' => {
                let id = self.u32()?;
                self.memo_put(id)?;
            }
            b'\x94' => {
                let id = self.memo.len() as u32;
                self.memo_put(id)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self
                .u8()
                .map_err(|_| format!("pickle ends without STOP at byte {at}"))?;
            if let Some(v) = self.literal(op, at)? {
                self.push(v);
                continue;
            }
            if self.memo_op(op)? {
                continue;
            }
            match op {
                b'\x80' => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                b'\x95' => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)
                }
                b')' => self.push(tuple(vec![])?),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(tuple(items)?)
                }
                b'\x85' | b'\x86' | b'\x87' => {
                    let n = (op - b'\x84') as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(tuple(items)?)
                }
                b']' => self.push(Value::List(Rc::new(vec![]), 1)),
                b'l' => {
                    let items = self.pop_mark()?;
                    let d = nested(&items)?;
                    self.push(Value::List(Rc::new(items), d))
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_list(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_list(items)?
                }
                b'}' => self.push(Value::Dict(Rc::new(vec![]), 1)),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Rc::new(vec![]), 1));
                    self.set_items(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.push(Value::Global(Rc::new((module, name))))
                }
                b'\x93' => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => {
                            self.push(Value::Global(Rc::new((m.to_string(), n.to_string()))))
                        }
                        _ => return Err(format!("STACK_GLOBAL without names at byte {at}")),
                    }
                }
                b'R' | b'\x81' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = call(callable, args).map_err(|e| format!("{e} (at byte {at})"))?;
                    self.push(v)
                }
                b'b' => {
                    // BUILD sets object state (e.g. an OrderedDict's `_metadata`): not needed.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(pid).map_err(|e| format!("{e} (at byte {at})"))?;
                    if let Value::Storage(s) = &v {
                        self.storages.push((**s).clone());
                    }
                    self.push(v)
                }
                b'\x8f' => self.push(Value::List(Rc::new(vec![]), 1)), // EMPTY_SET, as a list
                b'\x90' => {
                    let items = self.pop_mark()?;
                    self.extend_list(items)?
                }
                other => {
                    return Err(format!(
                        "unsupported or invalid pickle opcode 0x{other:02x} at byte {at}"
                    ))
                }
            }
        }
    }
}

fn as_usize(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        other => Err(format!("{what} is {}, not a size", other.describe())),
    }
}

fn as_sizes(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items, _) | Value::List(items, _) => {
            items.iter().map(|i| as_usize(i, what)).collect()
        }
        other => Err(format!("{what} is {}, not a tuple", other.describe())),
    }
}

fn args_of(args: &Value) -> &[Value] {
    match args {
        Value::Tuple(items, _) => items,
        _ => &[],
    }
}

/// `REDUCE`/`NEWOBJ`: evaluates the torch and collections calls found in state dicts.
fn call(callable: Value, args: Value) -> Result<Value, String> {
    let name = match &callable {
        Value::Global(g) => (g.0.as_str(), g.1.as_str()),
        _ => ("", ""),
    };
    let a = args_of(&args);
    match name {
        ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict")
            if a.is_empty() =>
        {
            Ok(Value::Dict(Rc::new(vec![]), 1))
        }
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            if a.len() < 4 {
                return Err(format!("{}.{} with {} arguments", name.0, name.1, a.len()));
            }
            let storage = match &a[0] {
                Value::Storage(s) => (**s).clone(),
                other => {
                    return Err(format!(
                        "tensor built on {}, not a storage",
                        other.describe()
                    ))
                }
            };
            let offset = as_usize(&a[1], "tensor storage offset")?;
            let size = as_sizes(&a[2], "tensor size")?;
            let stride = as_sizes(&a[3], "tensor stride")?;
            if size.len() != stride.len() {
                return Err(format!(
                    "tensor size {size:?} and stride {stride:?} differ in rank"
                ));
            }
            Ok(Value::Tensor(Rc::new(TensorRef {
                storage,
                offset,
                size,
                stride,
            })))
        }
        // Parameter(data, requires_grad, hooks[, state]) is its data for our purpose.
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state")
            if matches!(a.first(), Some(Value::Tensor(_))) =>
        {
            Ok(a[0].clone())
        }
        // _rebuild_from_type_v2(func, type, args, state) = func(*args) as a subclass.
        ("torch._tensor", "_rebuild_from_type_v2") if a.len() >= 3 => {
            call(a[0].clone(), a[2].clone())
        }
        _ => {
            let d = nested(&[callable.clone(), args.clone()])?;
            Ok(Value::Object(Rc::new((callable, args)), d))
        }
    }
}

/// `BINPERSID`: torch's storage ids; anything else is kept as an opaque tuple.
fn persistent_load(pid: Value) -> Result<Value, String> {
    let items = match &pid {
        Value::Tuple(items, _) => items,
        other => {
            return Err(format!(
                "persistent id is {}, not a tuple",
                other.describe()
            ))
        }
    };
    if !matches!(items.first(), Some(Value::Str(s)) if &**s == "storage") {
        return Err(format!(
            "persistent id {} is not a torch storage",
            pid.describe()
        ));
    }
    if items.len() < 5 {
        return Err(format!(
            "storage persistent id has {} fields, not 5",
            items.len()
        ));
    }
    let dtype = match &items[1] {
        Value::Global(g) => StorageDType::from_class(&g.1)
            .ok_or_else(|| format!("unsupported storage type {}.{}", g.0, g.1))?,
        other => return Err(format!("storage type is {}", other.describe())),
    };
    let key = match &items[2] {
        Value::Str(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        other => return Err(format!("storage key is {}", other.describe())),
    };
    let numel = as_usize(&items[4], "storage size")?;
    // Legacy views: (view_key, offset, view_size) on the root storage `key`.
    let view = match items.get(5) {
        None | Some(Value::None) => None,
        Some(Value::Tuple(v, _)) if v.len() == 3 => Some((
            as_usize(&v[1], "storage view offset")?,
            as_usize(&v[2], "storage view size")?,
        )),
        Some(other) => return Err(format!("storage view is {}", other.describe())),
    };
    Ok(Value::Storage(Rc::new(StorageRef {
        key,
        dtype,
        numel,
        view,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_protocol_2_dict_with_memo_and_setitems() {
        // pickle.dumps({'a': 1, 'b': [2.5, 'x'], 'c': -3}, protocol=2) from CPython 3.11.
        let bytes = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(G@\x04\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x04eX\x01\x00\x00\x00cq\x05J\xfd\xff\xff\xffu.";
        let p = load(bytes).unwrap();
        assert_eq!(p.len, bytes.len());
        let v = p.value;
        let Value::Dict(d, _) = v else {
            panic!("not a dict")
        };
        let keys: Vec<_> = d.iter().map(|(k, _)| k.describe()).collect();
        assert_eq!(keys, ["string \"a\"", "string \"b\"", "string \"c\""]);
        assert_eq!(d[0].1, Value::Int(1));
        assert_eq!(d[2].1, Value::Int(-3));
        let Value::List(l, _) = &d[1].1 else {
            panic!("not a list")
        };
        assert_eq!(l[0], Value::Float(2.5));
    }

    #[test]
    fn long1_is_sign_extended() {
        // pickle.dumps(-2**40, protocol=2) and 2**40.
        let v = load(b"\x80\x02\x8a\x06\x00\x00\x00\x00\x00\xff.")
            .unwrap()
            .value;
        assert_eq!(v, Value::Int(-(1i64 << 40)));
        let v = load(b"\x80\x02\x8a\x06\x00\x00\x00\x00\x00\x01.")
            .unwrap()
            .value;
        assert_eq!(v, Value::Int(1i64 << 40));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut bytes = b"\x80\x02N".to_vec();
        bytes.extend(std::iter::repeat_n(b'\x85', 100_000));
        bytes.push(b'.');
        let err = load(&bytes).unwrap_err();
        assert!(err.contains("deeper"), "{err}");
    }

    #[test]
    fn memo_doubling_stays_cheap() {
        // x = []; repeat: x = [x, x] -- 2^60 leaves if copied, a few bytes when shared.
        let mut bytes = b"\x80\x02]q\x00".to_vec();
        for _ in 0..60 {
            bytes.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        bytes.push(b'.');
        assert!(load(&bytes).is_ok());
    }
}
