//! Merging lists: replace, merge by key, merge as a set, list-element
//! directives, and element order (`$setElementOrder`).
//!
//! Order follows upstream's algorithm rather than its design document, because
//! kubectl users see the algorithm:
//! * Without `$setElementOrder`, the elements the patch mentions keep the
//!   patch's relative order, the others keep the live order, and the two runs
//!   are interleaved by [`interleave`]: a live-only element goes first only if
//!   it precedes the patch element in the live list; a patch element absent
//!   from the live list goes before whatever is left. So `[a, b, c]` patched
//!   with `[d]` gives `[d, a, b, c]`, and patched with `[c, a]` gives `[b, c, a]`.
//! * With `$setElementOrder/<field>`, the same interleave runs again with the
//!   order list taking the patch's place.

use serde_json::{Map, Value};

use crate::smp::PATCH_DIRECTIVE;
use crate::smp::error::SmpError;
use crate::smp::merge::Merger;
use crate::smp::meta::{FieldMeta, Strategy};
use crate::smp::value::{JsonType, Positions, canon, ident, json_eq, json_type};

impl<'m, 'p> Merger<'m, 'p> {
    /// Merges a patch list into the live list (`None` when the field is absent
    /// or not a list) according to the field's metadata, then applies the
    /// field's `$setElementOrder` if the patch has one.
    pub(crate) fn merge_list_field(
        &mut self,
        live: Option<Vec<Value>>,
        patch: &'p [Value],
        meta: &FieldMeta<'m>,
        order: Option<&'p Value>,
    ) -> Result<Vec<Value>, SmpError> {
        self.descend()?;
        let key = order_key(meta);
        let (merged, server_order) = if meta.strategy == Strategy::Merge {
            self.merge_list(live.unwrap_or_default(), patch, key)?
        } else {
            // Lists without a merge strategy are replaced wholesale.
            (self.clean_list(patch)?, live.unwrap_or_default())
        };
        let out = match order {
            Some(order) => self.apply_order(merged, order, patch, &server_order, key)?,
            None => merged,
        };
        self.ascend();
        Ok(out)
    }

    /// `$setElementOrder/<field>` alone: reorders the live list.
    pub(crate) fn reorder_only(
        &mut self,
        live: Vec<Value>,
        meta: &FieldMeta<'m>,
        order: &'p Value,
    ) -> Result<Vec<Value>, SmpError> {
        let key = order_key(meta);
        let server_order = self.idents(&live, key)?;
        self.apply_order(live, order, &[], &server_order, key)
    }

    /// Turns a patch list into a plain list where there is nothing to merge
    /// with: nested directives are processed, elements that say
    /// `$patch: delete` are dropped.
    fn clean_list(&mut self, patch: &'p [Value]) -> Result<Vec<Value>, SmpError> {
        self.descend()?;
        let mut out = Vec::with_capacity(patch.len());
        for item in patch {
            match item {
                Value::Object(m) => {
                    if let Some(clean) = self.merge_map(Map::new(), m)? {
                        out.push(Value::Object(clean));
                    }
                }
                Value::Array(inner) => out.push(Value::Array(self.clean_list(inner)?)),
                other => out.push(other.clone()),
            }
        }
        self.ascend();
        Ok(out)
    }

    /// Merges a list with `patchStrategy: merge`. Returns the merged list and the
    /// "server order" its `$setElementOrder` step compares against.
    fn merge_list(
        &mut self,
        live: Vec<Value>,
        patch: &'p [Value],
        key: Option<&'m str>,
    ) -> Result<(Vec<Value>, Vec<Value>), SmpError> {
        if live.is_empty() && patch.is_empty() {
            return Ok((live, Vec::new()));
        }
        // Like upstream, every element (live and patch) must have one JSON type,
        // and lists of lists are refused.
        let mut elem_type = None;
        for item in live.iter().chain(patch) {
            let t = json_type(item);
            if t == JsonType::Array {
                return Err(SmpError::ListOfLists { path: self.path_string() });
            }
            match elem_type {
                None => elem_type = Some(t),
                Some(prev) if prev != t => {
                    return Err(SmpError::MixedElementTypes { path: self.path_string() });
                }
                Some(_) => {}
            }
        }
        match (elem_type, key) {
            (Some(JsonType::Object), Some(key)) => self.merge_keyed(live, patch, key),
            (Some(JsonType::Object), None) => Err(SmpError::ObjectsInPrimitiveList { path: self.path_string() }),
            (_, Some(key)) => Err(SmpError::ElementNotObject { path: self.path_string(), key: key.to_string() }),
            (_, None) => Ok(merge_set(live, patch)),
        }
    }

    /// Merges a list of objects element-wise by `key`.
    fn merge_keyed(
        &mut self,
        live: Vec<Value>,
        patch: &'p [Value],
        key: &'m str,
    ) -> Result<(Vec<Value>, Vec<Value>), SmpError> {
        let live_len = live.len();
        let mut list = live;
        let mut replace = false;
        // Plain elements with their merge key's value.
        let mut plain: Vec<(&'p Map<String, Value>, &'p Value)> = Vec::with_capacity(patch.len());
        let mut deleted = std::collections::HashSet::new();

        // First the special elements. Deletions remove every live element with
        // the key (duplicates included); `$patch: replace` anywhere in the list
        // makes the list exactly its plain elements.
        for item in patch {
            let Value::Object(m) = item else {
                return Err(SmpError::ElementNotObject { path: self.path_string(), key: key.to_string() });
            };
            match m.get(PATCH_DIRECTIVE) {
                None => {
                    let Some(id) = ident(item, Some(key)) else { return Err(self.missing_key(key)) };
                    plain.push((m, id));
                }
                Some(d) => match d.as_str() {
                    Some("delete") => {
                        let Some(id) = ident(item, Some(key)) else { return Err(self.missing_key(key)) };
                        deleted.insert(canon(id));
                    }
                    Some("replace") => replace = true,
                    Some("merge") => {
                        return Err(SmpError::MergeDirectiveInList { path: self.path_string() });
                    }
                    _ => {
                        return Err(SmpError::UnknownPatchType { path: self.path_string(), value: d.to_string() });
                    }
                },
            }
        }

        if !deleted.is_empty() {
            list.retain(|e| !ident(e, Some(key)).is_some_and(|x| deleted.contains(&canon(x))));
        }

        // Ordering needs the key on live elements too; upstream also fails here.
        let mut server_order = self.idents(&list, Some(key))?;

        if replace {
            let mut out = Vec::with_capacity(plain.len());
            for (m, _) in plain {
                if let Some(clean) = self.merge_map(Map::new(), m)? {
                    out.push(Value::Object(clean));
                }
            }
            return Ok((out, server_order));
        }

        let mut appended = Vec::new();
        let mut by_key = Positions::new(list.iter().map(|e| ident(e, Some(key))));
        for &(m, id) in &plain {
            // Search the growing list, so a key repeated in the patch merges
            // into the element its first occurrence added.
            let found = by_key.get(Some(id));
            match found {
                Some(i) => {
                    let base = match &mut list[i] {
                        Value::Object(o) => std::mem::take(o),
                        _ => Map::new(),
                    };
                    list[i] = Value::Object(self.merge_map(base, m)?.unwrap_or_default());
                }
                None => {
                    let clean = self.merge_map(Map::new(), m)?.unwrap_or_default();
                    appended.push(id.clone());
                    by_key.insert(id, list.len());
                    list.push(Value::Object(clean));
                }
            }
        }

        // Elements the patch names follow the patch's order; the rest keep the
        // live order; interleave by the live order.
        let patch_ids = Positions::new(plain.iter().map(|(_, id)| Some(*id)));
        let (mut named, rest): (Vec<Value>, Vec<Value>) =
            list.into_iter().partition(|e| patch_ids.get(ident(e, Some(key))).is_some());
        // (sort_by_cached_key is stable and computes each position once.)
        named.sort_by_cached_key(|e| patch_ids.get(ident(e, Some(key))));
        let out = interleave(rest, named, &server_order, Some(key));

        // Upstream's `$setElementOrder` step compares with the live list *as its
        // merge mutated it in place*: deletions shift elements left and new
        // elements are written into the freed tail, within the original length.
        // kubectl's expected results (and upstream's tests) depend on it, e.g.
        // live [1, 2, 4], patch [3, {1: delete}], order [2, 3] gives [2, 4, 3].
        server_order.extend(appended);
        server_order.truncate(live_len);
        Ok((out, server_order))
    }

    /// Applies `$setElementOrder`: elements it names take its order, the others
    /// keep the server order, and the two runs interleave by the server order.
    fn apply_order(
        &self,
        merged: Vec<Value>,
        order: &'p Value,
        patch: &[Value],
        server_order: &[Value],
        key: Option<&str>,
    ) -> Result<Vec<Value>, SmpError> {
        let Some(order) = order.as_array() else { return Err(self.bad_order("must be a list")) };
        let order_ids: Vec<Value> = match key {
            None => order.clone(),
            Some(k) => order
                .iter()
                .map(|e| {
                    ident(e, Some(k))
                        .cloned()
                        .ok_or_else(|| self.bad_order("elements must be objects holding the merge key"))
                })
                .collect::<Result<_, _>>()?,
        };
        self.check_order(patch, &order_ids, key)?;
        let order_positions = Positions::new(order_ids.iter().map(Some));

        let (mut named, mut rest): (Vec<Value>, Vec<Value>) =
            merged.into_iter().partition(|e| order_positions.get(ident(e, key)).is_some());
        named.sort_by_cached_key(|e| order_positions.get(ident(e, key)));
        let server_positions = Positions::new(server_order.iter().map(Some));
        rest.sort_by_cached_key(|e| server_positions.get(ident(e, key)).unwrap_or(usize::MAX));
        Ok(interleave(rest, named, server_order, key))
    }

    /// The patch list's plain elements must appear in `$setElementOrder` in the
    /// same relative order (upstream: "doesn't match $setElementOrder list").
    fn check_order(&self, patch: &[Value], order_ids: &[Value], key: Option<&str>) -> Result<(), SmpError> {
        let items: Vec<&Value> = patch.iter().filter(|v| !has_patch_directive(v)).collect();
        let (mut p, mut o) = (0, 0);
        while p < items.len() && o < order_ids.len() {
            if ident(items[p], key).is_some_and(|id| json_eq(id, &order_ids[o])) {
                p += 1;
            }
            o += 1;
        }
        if p < items.len() && !order_ids.is_empty() {
            return Err(SmpError::SetElementOrderMismatch { path: self.path_string() });
        }
        Ok(())
    }

    /// Identities of live elements; each must carry the merge key.
    fn idents(&self, list: &[Value], key: Option<&str>) -> Result<Vec<Value>, SmpError> {
        list.iter().map(|e| ident(e, key).cloned().ok_or_else(|| self.missing_key(key.unwrap_or_default()))).collect()
    }

    fn missing_key(&self, key: &str) -> SmpError {
        SmpError::MissingMergeKey { path: self.path_string(), key: key.to_string() }
    }
}

/// The key identifying elements for merging and ordering: the merge key of a
/// merging list; whole values otherwise.
fn order_key<'m>(meta: &FieldMeta<'m>) -> Option<&'m str> {
    if meta.strategy == Strategy::Merge { meta.merge_key } else { None }
}

/// Set merge of primitives: union without duplicates, ordered as described in
/// the module docs. The server order is the live list.
fn merge_set(live: Vec<Value>, patch: &[Value]) -> (Vec<Value>, Vec<Value>) {
    let named = dedup(patch.iter());
    let named_set: std::collections::HashSet<String> = named.iter().map(canon).collect();
    let rest: Vec<Value> = dedup(live.iter()).into_iter().filter(|v| !named_set.contains(&canon(v))).collect();
    let out = interleave(rest, named, &live, None);
    (out, live)
}

fn dedup<'a>(items: impl Iterator<Item = &'a Value>) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    items.filter(|v| seen.insert(canon(v))).cloned().collect()
}

fn has_patch_directive(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.contains_key(PATCH_DIRECTIVE))
}

/// Merges two runs, each already in its own order (upstream `mergeSortedSlice`):
/// take from `rest` (server-only elements) while its head comes before the head
/// of `named` in `order`; otherwise, including when either head is missing from
/// `order`, take from `named`.
fn interleave(rest: Vec<Value>, named: Vec<Value>, order: &[Value], key: Option<&str>) -> Vec<Value> {
    let positions = Positions::new(order.iter().map(Some));
    let rest_pos: Vec<Option<usize>> = rest.iter().map(|v| positions.get(ident(v, key))).collect();
    let named_pos: Vec<Option<usize>> = named.iter().map(|v| positions.get(ident(v, key))).collect();
    let mut out = Vec::with_capacity(rest.len() + named.len());
    let mut r = rest.into_iter().zip(rest_pos).peekable();
    let mut n = named.into_iter().zip(named_pos).peekable();
    loop {
        let take_rest = match (r.peek(), n.peek()) {
            (Some((_, Some(a))), Some((_, Some(b)))) => a < b,
            (Some(_), Some(_)) => false,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_rest { r.next() } else { n.next() };
        if let Some((v, _)) = next {
            out.push(v);
        }
    }
    out
}
