//! A bounded pickle machine that reads a ZODB data record (class pickle, then state
//! pickle, sharing one memo as ZODB's unpickler does) without building Python objects:
//! it keeps only what a record's class and its persistent references need (strings,
//! tuples, lists, globals) and drops the rest, like the `noload` ZODB's `referencesf` uses.
//!
//! Bounds: no recursion; every opcode consumes at least one input byte and allocates
//! O(1) plus the items it moves, so time and memory are O(record length). Values live
//! in an arena owned by the [`Reader`] (indices: no reference counting, no cycles to
//! leak); the reader's buffers are reused across records.

use super::{Class, NotZodb, RefKind, Reference};
use crate::types::Oid;
use std::collections::HashMap;

/// A value on the pickle stack.
#[derive(Clone, Copy, Debug, PartialEq)]
enum V {
    /// Anything whose content does not matter here (numbers, None, dicts, sets, objects).
    Other,
    /// A str or bytes: a span of the record or of `Reader::owned` (decoded protocol-0 text).
    Str(Span),
    /// An index into `Reader::nodes`.
    Node(u32),
    /// What a persistent reference loads: an index into the references found.
    Ref(u32),
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Span {
    owned: bool,
    start: u32,
    len: u32,
}

enum Node {
    Tuple(Vec<V>),
    List(Vec<V>),
    Global { module: V, name: V },
}

/// A reusable reader of ZODB records (keeps its buffers between records).
#[derive(Default)]
pub struct Reader {
    stack: Vec<V>,
    marks: Vec<usize>,
    memo: HashMap<u32, V>,
    nodes: Vec<Node>,
    owned: Vec<u8>,
    refs: Vec<Reference>,
}

type R<T> = std::result::Result<T, NotZodb>;

fn err<T>(at: usize, why: impl Into<String>) -> R<T> {
    Err(NotZodb { offset: at as u64, reason: why.into() })
}

/// One record being read: the input and the reader's buffers.
struct Run<'a> {
    d: &'a [u8],
    r: &'a mut Reader,
}

impl Reader {
    pub fn new() -> Reader {
        Reader::default()
    }

    /// Read a record: its class and its persistent references in pickle order.
    pub fn read(&mut self, data: &[u8]) -> R<(Class, Vec<Reference>)> {
        self.memo.clear();
        self.nodes.clear();
        self.owned.clear();
        self.refs.clear();
        if data.len() >= u32::MAX as usize {
            return err(0, "record of 4 GiB or more");
        }
        let mut run = Run { d: data, r: self };
        let (meta, end) = run.pickle(0)?;
        let class = run.class_of(meta).ok_or_else(|| NotZodb {
            offset: 0,
            reason: "the first pickle does not name a class (a global, (class, args) or ((module, name), args))".into(),
        })?;
        if end == data.len() {
            return err(end, "no state pickle after the class pickle");
        }
        let (_state, end) = run.pickle(end)?;
        if end != data.len() {
            return err(end, format!("{} bytes after the state pickle", data.len() - end));
        }
        Ok((class, std::mem::take(&mut self.refs)))
    }
}

/// A little-endian unsigned integer of `n` bytes.
fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64)
}

impl Run<'_> {
    fn bytes(&self, s: Span) -> &[u8] {
        let src: &[u8] = if s.owned { &self.r.owned } else { self.d };
        &src[s.start as usize..(s.start + s.len) as usize]
    }

    fn text(&self, v: V) -> Option<String> {
        match v {
            V::Str(s) => std::str::from_utf8(self.bytes(s)).ok().map(str::to_string),
            _ => None,
        }
    }

    fn node(&mut self, n: Node) -> V {
        self.r.nodes.push(n);
        V::Node((self.r.nodes.len() - 1) as u32)
    }

    fn tuple(&self, v: V) -> Option<&[V]> {
        match v {
            V::Node(i) => match &self.r.nodes[i as usize] {
                Node::Tuple(t) => Some(t),
                _ => None,
            },
            _ => None,
        }
    }

    fn class_of(&self, meta: V) -> Option<Class> {
        match meta {
            V::Ref(r) => Some(Class::Persistent(self.r.refs[r as usize].oid)),
            V::Node(i) => match &self.r.nodes[i as usize] {
                Node::Global { .. } => self.named(meta),
                // (class, args): formats 2, 5, 6; ((module, name), args): formats 3, 4, 7.
                Node::Tuple(t) if t.len() == 2 => match t[0] {
                    V::Ref(r) => Some(Class::Persistent(self.r.refs[r as usize].oid)),
                    c => self.named(c),
                },
                _ => None,
            },
            _ => None,
        }
    }

    /// A class named by a global, or by a (module, name) tuple of strings.
    fn named(&self, v: V) -> Option<Class> {
        let V::Node(i) = v else { return None };
        let (m, n) = match &self.r.nodes[i as usize] {
            Node::Global { module, name } => (*module, *name),
            Node::Tuple(t) if t.len() == 2 => (t[0], t[1]),
            _ => return None,
        };
        Some(Class::Named { module: self.text(m)?, name: self.text(n)? })
    }

    fn oid(&self, v: V, at: usize) -> R<Oid> {
        match v {
            V::Str(s) if s.len == 8 => Ok(Oid(u64::from_be_bytes(self.bytes(s).try_into().unwrap()))),
            V::Str(s) => err(at, format!("a persistent reference names a {}-byte oid (ZODB oids have 8)", s.len)),
            _ => err(at, "a persistent reference's oid is not a string"),
        }
    }

    fn class_name(&self, v: V) -> Option<String> {
        match self.named(v) {
            Some(Class::Named { module, name }) => Some(format!("{module}.{name}")),
            _ => None,
        }
    }

    /// A persistent id, in the forms `ZODB.serialize.ObjectWriter.persistent_id` writes
    /// (and `ObjectReader` reads): oid; (oid, class); ['w', (oid[, db])]; [oid] (legacy
    /// weak); ['m', (db, oid, class)]; ['n', (db, oid)]. Anything else is an error.
    fn reference(&self, pid: V, at: usize) -> R<Reference> {
        let list = |v: V| match v {
            V::Node(i) => match &self.r.nodes[i as usize] {
                Node::List(l) => Some(l.as_slice()),
                _ => None,
            },
            _ => None,
        };
        if let V::Str(_) = pid {
            return Ok(Reference { oid: self.oid(pid, at)?, kind: RefKind::Strong, class: None });
        }
        if let Some(t) = self.tuple(pid) {
            if t.len() != 2 {
                return err(at, format!("a persistent reference is a {}-tuple (expected (oid, class))", t.len()));
            }
            return Ok(Reference { oid: self.oid(t[0], at)?, kind: RefKind::Strong, class: self.class_name(t[1]) });
        }
        let Some(l) = list(pid) else {
            return err(at, "a persistent reference is neither an oid, a tuple nor a list");
        };
        if l.len() == 1 {
            return Ok(Reference { oid: self.oid(l[0], at)?, kind: RefKind::Weak { database: None }, class: None });
        }
        let kind = match (l.len(), l.first().map(|v| self.text(*v))) {
            (2, Some(Some(k))) => k,
            _ => return err(at, "an extended persistent reference is not [type, args]"),
        };
        let Some(args) = self.tuple(l[1]) else {
            return err(at, format!("the arguments of a '{kind}' reference are not a tuple"));
        };
        let db = |v: V| self.text(v).ok_or_else(|| NotZodb { offset: at as u64, reason: "bad database name".into() });
        match (kind.as_str(), args) {
            ("w", [o]) => Ok(Reference { oid: self.oid(*o, at)?, kind: RefKind::Weak { database: None }, class: None }),
            ("w", [o, d]) => {
                Ok(Reference { oid: self.oid(*o, at)?, kind: RefKind::Weak { database: Some(db(*d)?) }, class: None })
            }
            ("m", [d, o, c]) => Ok(Reference {
                oid: self.oid(*o, at)?,
                kind: RefKind::CrossDatabase { database: db(*d)? },
                class: self.class_name(*c),
            }),
            ("n", [d, o]) => Ok(Reference {
                oid: self.oid(*o, at)?,
                kind: RefKind::CrossDatabase { database: db(*d)? },
                class: None,
            }),
            ("w" | "m" | "n", a) => err(at, format!("a '{kind}' reference with {} arguments", a.len())),
            _ => err(at, format!("unknown extended persistent reference type {kind:?} (ZODB defines 'w', 'm', 'n')")),
        }
    }

    fn pop(&mut self, at: usize) -> R<V> {
        let floor = self.r.marks.last().copied().unwrap_or(0);
        if self.r.stack.len() <= floor {
            return err(at, "pickle stack underflow");
        }
        Ok(self.r.stack.pop().unwrap())
    }

    /// The items above the newest mark, removed with the mark.
    fn pop_mark(&mut self, at: usize) -> R<Vec<V>> {
        let Some(m) = self.r.marks.pop() else { return err(at, "no mark on the pickle stack") };
        Ok(self.r.stack.split_off(m))
    }

    fn take(&self, pos: usize, n: usize, at: usize) -> R<&[u8]> {
        match pos.checked_add(n) {
            Some(e) if e <= self.d.len() => Ok(&self.d[pos..e]),
            _ => err(at, "truncated pickle"),
        }
    }

    /// A newline-terminated argument; returns (line without the newline, next position).
    fn line(&self, pos: usize, at: usize) -> R<(usize, usize)> {
        match self.d[pos.min(self.d.len())..].iter().position(|&b| b == b'\n') {
            Some(n) => Ok((n, pos + n + 1)),
            None => err(at, "truncated pickle (missing newline)"),
        }
    }

    fn span(&self, start: usize, len: usize) -> V {
        V::Str(Span { owned: false, start: start as u32, len: len as u32 })
    }

    fn owned(&mut self, b: &[u8]) -> V {
        let start = self.r.owned.len();
        self.r.owned.extend_from_slice(b);
        V::Str(Span { owned: true, start: start as u32, len: b.len() as u32 })
    }

    /// Run one pickle from `pos` to its STOP: (its value, the position after STOP).
    fn pickle(&mut self, mut pos: usize) -> R<(V, usize)> {
        self.r.stack.clear();
        self.r.marks.clear();
        loop {
            let at = pos;
            let Some(&op) = self.d.get(pos) else { return err(at, "truncated pickle (no STOP)") };
            pos += 1;
            // Fixed-size argument: `n` bytes at `pos`.
            macro_rules! arg {
                ($n:expr) => {{
                    let b = self.take(pos, $n, at)?;
                    pos += $n;
                    b
                }};
            }
            match op {
                b'.' => {
                    // STOP: exactly one value, no open mark (what a pickler writes).
                    if self.r.stack.len() != 1 || !self.r.marks.is_empty() {
                        return err(at, "STOP with a malformed pickle stack");
                    }
                    return Ok((self.r.stack.pop().unwrap(), pos));
                }
                0x80 => {
                    let p = arg!(1)[0];
                    if p > 5 {
                        return err(at, format!("unknown pickle protocol {p}"));
                    }
                }
                0x95 => {
                    arg!(8); // FRAME: a length hint only
                }
                b'(' => self.r.marks.push(self.r.stack.len()),
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let v = self.pop(at)?;
                    self.r.stack.extend([v, v]);
                }
                // Scalars.
                b'N' | 0x88 | 0x89 => self.r.stack.push(V::Other),
                b'J' => {
                    arg!(4);
                    self.r.stack.push(V::Other)
                }
                b'K' => {
                    arg!(1);
                    self.r.stack.push(V::Other)
                }
                b'M' => {
                    arg!(2);
                    self.r.stack.push(V::Other)
                }
                b'G' => {
                    arg!(8);
                    self.r.stack.push(V::Other)
                }
                b'F' | b'I' | b'L' => {
                    let (_, next) = self.line(pos, at)?;
                    pos = next;
                    self.r.stack.push(V::Other)
                }
                0x8a => {
                    let n = arg!(1)[0] as usize;
                    arg!(n);
                    self.r.stack.push(V::Other)
                }
                0x8b => {
                    let n = le(arg!(4)) as usize;
                    arg!(n);
                    self.r.stack.push(V::Other)
                }
                // Strings and bytes (str and bytes alike; zodbpickle's binary forms too).
                b'U' | b'C' | 0x8c => {
                    let n = arg!(1)[0] as usize;
                    arg!(n);
                    self.r.stack.push(self.span(pos - n, n))
                }
                b'T' | b'X' | b'B' => {
                    let n = le(arg!(4)) as usize;
                    arg!(n);
                    self.r.stack.push(self.span(pos - n, n))
                }
                0x8d | 0x8e | 0x96 => {
                    let n = le(arg!(8));
                    let n =
                        usize::try_from(n).map_err(|_| NotZodb { offset: at as u64, reason: "huge length".into() })?;
                    arg!(n);
                    let v = if op == 0x96 { V::Other } else { self.span(pos - n, n) };
                    self.r.stack.push(v)
                }
                b'S' => {
                    let (n, next) = self.line(pos, at)?;
                    let v = self.quoted(pos, n, at)?;
                    pos = next;
                    self.r.stack.push(v)
                }
                b'V' => {
                    let (n, next) = self.line(pos, at)?;
                    let v = self.raw_unicode(pos, n, at)?;
                    pos = next;
                    self.r.stack.push(v)
                }
                // Containers.
                b')' => {
                    let v = self.node(Node::Tuple(Vec::new()));
                    self.r.stack.push(v)
                }
                b't' => {
                    let items = self.pop_mark(at)?;
                    let v = self.node(Node::Tuple(items));
                    self.r.stack.push(v)
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = vec![V::Other; n];
                    for i in (0..n).rev() {
                        items[i] = self.pop(at)?;
                    }
                    let v = self.node(Node::Tuple(items));
                    self.r.stack.push(v)
                }
                b']' => {
                    let v = self.node(Node::List(Vec::new()));
                    self.r.stack.push(v)
                }
                b'l' => {
                    let items = self.pop_mark(at)?;
                    let v = self.node(Node::List(items));
                    self.r.stack.push(v)
                }
                b'a' => {
                    let x = self.pop(at)?;
                    let l = self.pop(at)?;
                    self.append(l, vec![x]);
                    self.r.stack.push(l)
                }
                b'e' => {
                    let items = self.pop_mark(at)?;
                    let l = self.pop(at)?;
                    self.append(l, items);
                    self.r.stack.push(l)
                }
                b'}' | 0x8f => self.r.stack.push(V::Other),
                b'd' | 0x91 => {
                    self.pop_mark(at)?;
                    self.r.stack.push(V::Other)
                }
                b's' => {
                    self.pop(at)?;
                    self.pop(at)?;
                    let d = self.pop(at)?;
                    self.r.stack.push(d)
                }
                b'u' | 0x90 => {
                    let items = self.pop_mark(at)?;
                    if op == b'u' && items.len() % 2 != 0 {
                        return err(at, "SETITEMS with an odd number of items");
                    }
                    let d = self.pop(at)?;
                    self.r.stack.push(d)
                }
                // Classes and objects.
                b'c' => {
                    let (m, next) = self.line(pos, at)?;
                    let module = self.span(pos, m);
                    let (n, next2) = self.line(next, at)?;
                    let name = self.span(next, n);
                    pos = next2;
                    let v = self.node(Node::Global { module, name });
                    self.r.stack.push(v)
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    if !matches!((module, name), (V::Str(_), V::Str(_))) {
                        return err(at, "STACK_GLOBAL of non-strings");
                    }
                    let v = self.node(Node::Global { module, name });
                    self.r.stack.push(v)
                }
                b'R' | 0x81 => {
                    self.pop(at)?; // args
                    self.pop(at)?; // callable or class
                    self.r.stack.push(V::Other)
                }
                0x92 => {
                    self.pop(at)?; // kwargs
                    self.pop(at)?; // args
                    self.pop(at)?; // class
                    self.r.stack.push(V::Other)
                }
                b'b' => {
                    self.pop(at)?; // state; the object stays
                    let o = self.pop(at)?;
                    self.r.stack.push(o)
                }
                b'i' => {
                    let (_, next) = self.line(pos, at)?;
                    let (_, next) = self.line(next, at)?;
                    pos = next;
                    self.pop_mark(at)?;
                    self.r.stack.push(V::Other)
                }
                b'o' => {
                    let items = self.pop_mark(at)?;
                    if items.is_empty() {
                        return err(at, "OBJ without a class");
                    }
                    self.r.stack.push(V::Other)
                }
                0x82 => {
                    arg!(1);
                    self.r.stack.push(V::Other)
                }
                0x83 => {
                    arg!(2);
                    self.r.stack.push(V::Other)
                }
                0x84 => {
                    arg!(4);
                    self.r.stack.push(V::Other)
                }
                // Persistent references.
                b'Q' => {
                    let pid = self.pop(at)?;
                    self.persistent(pid, at)?
                }
                b'P' => {
                    let (n, next) = self.line(pos, at)?;
                    let pid = self.span(pos, n);
                    pos = next;
                    self.persistent(pid, at)?
                }
                // The memo.
                b'p' => {
                    let (n, next) = self.line(pos, at)?;
                    let k = self.decimal(pos, n, at)?;
                    pos = next;
                    self.put(k, at)?
                }
                b'q' => {
                    let k = arg!(1)[0] as u32;
                    self.put(k, at)?
                }
                b'r' => {
                    let k = le(arg!(4)) as u32;
                    self.put(k, at)?
                }
                0x94 => {
                    let k = self.r.memo.len() as u32;
                    self.put(k, at)?
                }
                b'g' => {
                    let (n, next) = self.line(pos, at)?;
                    let k = self.decimal(pos, n, at)?;
                    pos = next;
                    self.get(k, at)?
                }
                b'h' => {
                    let k = arg!(1)[0] as u32;
                    self.get(k, at)?
                }
                b'j' => {
                    let k = le(arg!(4)) as u32;
                    self.get(k, at)?
                }
                _ => return err(at, format!("opcode 0x{op:02x} is not a pickle opcode ZODB records use")),
            }
        }
    }

    fn append(&mut self, l: V, items: Vec<V>) {
        // Appends to anything but a list (an object with its own append) are dropped.
        if let V::Node(i) = l {
            if let Node::List(v) = &mut self.r.nodes[i as usize] {
                v.extend(items);
            }
        }
    }

    fn persistent(&mut self, pid: V, at: usize) -> R<()> {
        let r = self.reference(pid, at)?;
        self.r.refs.push(r);
        self.r.stack.push(V::Ref((self.r.refs.len() - 1) as u32));
        Ok(())
    }

    fn put(&mut self, k: u32, at: usize) -> R<()> {
        let Some(&v) = self.r.stack.last() else { return err(at, "memo put with an empty stack") };
        self.r.memo.insert(k, v);
        Ok(())
    }

    fn get(&mut self, k: u32, at: usize) -> R<()> {
        match self.r.memo.get(&k) {
            Some(&v) => {
                self.r.stack.push(v);
                Ok(())
            }
            None => err(at, format!("memo key {k} was never set")),
        }
    }

    fn decimal(&self, pos: usize, n: usize, at: usize) -> R<u32> {
        std::str::from_utf8(&self.d[pos..pos + n])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| NotZodb { offset: at as u64, reason: "bad memo key".into() })
    }

    /// Protocol 0 STRING: a Python 2 repr, quoted with ' or ", with \\, \', \", \n, \r,
    /// \t and \xHH escapes.
    fn quoted(&mut self, pos: usize, n: usize, at: usize) -> R<V> {
        let s = &self.d[pos..pos + n];
        let bad = || NotZodb { offset: at as u64, reason: "bad quoted string".into() };
        let q = *s.first().ok_or_else(bad)?;
        if n < 2 || (q != b'\'' && q != b'"') || s[n - 1] != q {
            return Err(bad());
        }
        let mut out = Vec::with_capacity(n);
        let mut i = 1;
        while i < n - 1 {
            let c = s[i];
            i += 1;
            if c != b'\\' {
                out.push(c);
                continue;
            }
            let e = *s.get(i).filter(|_| i < n - 1).ok_or_else(bad)?;
            i += 1;
            out.push(match e {
                b'\\' | b'\'' | b'"' => e,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'x' if i + 2 < n => {
                    let h = std::str::from_utf8(&s[i..i + 2]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                    i += 2;
                    h.ok_or_else(bad)?
                }
                _ => return Err(bad()),
            });
        }
        Ok(self.owned(&out))
    }

    /// Protocol 0 UNICODE (raw-unicode-escape): \uXXXX and \UXXXXXXXX escapes, the rest
    /// latin-1; kept as UTF-8.
    fn raw_unicode(&mut self, pos: usize, n: usize, at: usize) -> R<V> {
        let s = &self.d[pos..pos + n];
        let mut out = String::with_capacity(n);
        let mut i = 0;
        while i < n {
            let w = if s[i] == b'\\' && i + 1 < n && s[i + 1] == b'u' {
                6
            } else if s[i] == b'\\' && i + 1 < n && s[i + 1] == b'U' {
                10
            } else {
                0
            };
            if w > 0 {
                let c = s
                    .get(i + 2..i + w)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
                    .ok_or_else(|| NotZodb { offset: at as u64, reason: "bad unicode escape".into() })?;
                out.push(c);
                i += w;
            } else {
                out.push(s[i] as char);
                i += 1;
            }
        }
        Ok(self.owned(out.as_bytes()))
    }
}
