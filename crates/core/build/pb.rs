//! Line-oriented parser for k8s-pb's prost-generated `mod.rs` files.
//!
//! prost-build output is extremely regular: every message is a top-level
//! `pub struct Name {` … `}` (column 0), every field is a
//! `#[prost(...)]` attribute line followed by `pub ident: Type,` (the type may
//! wrap over several lines), and k8s-pb appends
//! `impl crate::Resource for Name { const API_VERSION … const KIND … }`.
//! Anything unexpected panics, so a k8s-pb upgrade that changes the shape is
//! caught at build time instead of silently producing a wrong schema.

use std::fs;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    Message,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Card {
    Single,
    Repeated,
    /// `map<string, V>`; `Field::scalar` is the value type.
    Map,
}

#[derive(Debug)]
pub struct Field {
    /// Rust identifier with any `r#` removed (prost's lossy `snake_case`).
    pub ident: String,
    pub tag: u32,
    pub scalar: Scalar,
    pub card: Card,
    /// For message-typed fields (and map values): `(module, name)`.
    pub type_ref: Option<(String, String)>,
}

#[derive(Debug)]
pub struct Message {
    /// Module path relative to k8s-pb's `src`, e.g. `api/core/v1`.
    pub module: String,
    pub name: String,
    pub fields: Vec<Field>,
}

/// `(module, struct name, API_VERSION, KIND)` from `impl crate::Resource`.
pub type ResourceImpl = (String, String, String, String);

pub fn parse_tree(src: &Path) -> (Vec<Message>, Vec<ResourceImpl>) {
    let mut msgs = Vec::new();
    let mut resources = Vec::new();
    walk(src, src, &mut msgs, &mut resources);
    (msgs, resources)
}

fn walk(root: &Path, dir: &Path, msgs: &mut Vec<Message>, res: &mut Vec<ResourceImpl>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(root, &path, msgs, res);
        } else if path.file_name().is_some_and(|n| n == "mod.rs") {
            let module = dir.strip_prefix(root).expect("under root");
            let module: Vec<_> = module.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            let text = fs::read_to_string(&path).expect("read mod.rs");
            parse_file(&module.join("/"), &text, msgs, res);
        }
    }
}

/// A field whose `pub ident: Type` text may continue on following lines.
struct Pending {
    attr: String,
    ident: String,
    ty: String,
}

fn parse_file(module: &str, text: &str, msgs: &mut Vec<Message>, res: &mut Vec<ResourceImpl>) {
    let mut cur: Option<Message> = None;
    let mut attr: Option<String> = None;
    let mut pending: Option<Pending> = None;
    // Inside `impl crate::Resource for X`: (X, API_VERSION, KIND).
    let mut imp: Option<(String, Option<String>, Option<String>)> = None;

    for line in text.lines() {
        let t = line.trim();
        if let Some(p) = pending.as_mut() {
            p.ty.push_str(t);
            if type_complete(&p.ty) {
                let p = pending.take().expect("pending");
                let m = cur.as_mut().expect("field outside struct");
                m.fields.push(make_field(module, &m.name, p));
            }
            continue;
        }
        if let Some(m) = cur.as_mut() {
            if line == "}" {
                assert!(attr.is_none(), "dangling #[prost] in {module}::{}", m.name);
                msgs.push(cur.take().expect("cur"));
            } else if let Some(a) = t.strip_prefix("#[prost(") {
                let a = a.strip_suffix(")]").unwrap_or_else(|| panic!("multi-line attr: {t}"));
                attr = Some(a.to_string());
            } else if let Some(rest) = t.strip_prefix("pub ") {
                let a = attr.take().unwrap_or_else(|| panic!("field without #[prost]: {t}"));
                let (ident, ty) = rest.split_once(':').expect("pub ident: Type");
                let ident = ident.trim().trim_start_matches("r#").to_string();
                let p = Pending { attr: a, ident, ty: ty.trim().to_string() };
                if type_complete(&p.ty) {
                    m.fields.push(make_field(module, &m.name, p));
                } else {
                    pending = Some(p);
                }
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("pub struct ") {
            let name = rest.split([' ', '{']).next().expect("struct name").to_string();
            let m = Message { module: module.to_string(), name, fields: Vec::new() };
            if t.ends_with("{}") {
                msgs.push(m);
            } else {
                assert!(t.ends_with('{'), "unexpected struct line: {t}");
                cur = Some(m);
            }
        } else if let Some(rest) = line.strip_prefix("impl crate::Resource for ") {
            imp = Some((rest.trim_end_matches(['{', ' ']).to_string(), None, None));
        } else if let Some((name, av, kind)) = imp.as_mut() {
            if line == "}" {
                let (av, kind) = (av.take().expect("API_VERSION"), kind.take().expect("KIND"));
                res.push((module.to_string(), std::mem::take(name), av, kind));
                imp = None;
            } else if let Some(v) = t.strip_prefix("const API_VERSION: &'static str = ") {
                *av = Some(unquote(v));
            } else if let Some(v) = t.strip_prefix("const KIND: &'static str = ") {
                *kind = Some(unquote(v));
            }
        }
    }
    assert!(cur.is_none() && imp.is_none(), "unterminated item in {module}");
}

fn unquote(v: &str) -> String {
    v.trim_end_matches(';').trim_matches('"').to_string()
}

/// The field's type text is complete once it ends with `,` and its generic
/// brackets balance (`Option<Vec<…>>,` may span lines).
fn type_complete(ty: &str) -> bool {
    ty.ends_with(',') && ty.matches('<').count() == ty.matches('>').count()
}

fn make_field(module: &str, msg: &str, p: Pending) -> Field {
    let ctx = || format!("{module}::{msg}.{}", p.ident);
    let (mut scalar, mut card, mut tag) = (None, Card::Single, None);
    for item in split_unquoted(&p.attr) {
        let item = item.trim();
        let (key, val) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (item, None),
        };
        match key {
            "optional" | "boxed" | "packed" => {}
            "repeated" => card = Card::Repeated,
            "tag" => tag = val.and_then(|v| v.parse().ok()),
            "btree_map" | "map" | "hash_map" => {
                card = Card::Map;
                let (k, v) = val.and_then(|v| v.split_once(',')).expect("map = \"K, V\"");
                assert_eq!(k.trim(), "string", "non-string map key in {}", ctx());
                scalar = Some(scalar_of(v.trim()).unwrap_or_else(|| panic!("map value {v} in {}", ctx())));
            }
            other => {
                let s = scalar_of(other).unwrap_or_else(|| panic!("unsupported prost item `{item}` in {}", ctx()));
                scalar = Some(s);
            }
        }
    }
    let scalar = scalar.unwrap_or_else(|| panic!("no type in #[prost] of {}", ctx()));
    let type_ref = (scalar == Scalar::Message).then(|| resolve_path(module, innermost(&p.ty)));
    Field { tag: tag.unwrap_or_else(|| panic!("no tag for {}", ctx())), scalar, card, type_ref, ident: p.ident }
}

fn scalar_of(s: &str) -> Option<Scalar> {
    Some(match s {
        "string" => Scalar::String,
        "bytes" => Scalar::Bytes,
        "bool" => Scalar::Bool,
        "int32" => Scalar::Int32,
        "int64" => Scalar::Int64,
        "double" => Scalar::Double,
        "message" => Scalar::Message,
        _ => return None,
    })
}

/// Splits a `#[prost(...)]` body on commas outside string literals
/// (`btree_map = "string, string"` contains one).
fn split_unquoted(s: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Strips `Option<…>`, `Vec<…>`, `Box<…>` and `BTreeMap<K, …>` wrappers,
/// returning the element/value type path.
fn innermost(ty: &str) -> &str {
    let mut t = ty.trim().trim_end_matches(',').trim();
    while let (Some(open), Some(close)) = (t.find('<'), t.rfind('>')) {
        // rustfmt may leave a trailing comma: `Option<\n    path::T,\n>`.
        let inner = t[open + 1..close].trim().trim_end_matches(',');
        // Last top-level generic argument: the map value, or the only one.
        let mut depth = 0;
        let mut split = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => depth -= 1,
                ',' if depth == 0 => split = i + 1,
                _ => {}
            }
        }
        t = inner[split..].trim();
    }
    t
}

/// Resolves a Rust path (`super::super::meta::v1::Time`, `crate::…`, or a
/// bare name) relative to `module` into `(module, name)`.
fn resolve_path(module: &str, path: &str) -> (String, String) {
    let mut segs: Vec<&str> = path.split("::").map(str::trim).filter(|s| !s.is_empty()).collect();
    let name = segs.pop().expect("type name").to_string();
    let mut base: Vec<&str> = module.split('/').filter(|s| !s.is_empty()).collect();
    let mut it = segs.into_iter().peekable();
    if it.peek() == Some(&"crate") {
        it.next();
        base.clear();
    }
    for s in it {
        if s == "super" {
            base.pop().unwrap_or_else(|| panic!("super:: above crate root in {path}"));
        } else {
            base.push(s);
        }
    }
    (base.join("/"), name)
}
