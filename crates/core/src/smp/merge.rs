//! Merging objects: the recursive walk, `null` deletion, `$patch` on objects,
//! `$retainKeys`, and the parallel-list directives' dispatch. Lists live in
//! `list.rs`.

use serde_json::{Map, Value};

use crate::smp::error::SmpError;
use crate::smp::meta::{FieldMeta, PatchMeta, Strategy};
use crate::smp::{
    DELETE_FROM_PRIMITIVE_LIST_PREFIX, MAX_DEPTH, PATCH_DIRECTIVE, RETAIN_KEYS_DIRECTIVE, SET_ELEMENT_ORDER_PREFIX,
};

/// State of one patch application: the metadata source, the field path the walk
/// is at (for lookups and error messages) and the recursion depth.
pub(crate) struct Merger<'m, 'p> {
    meta: &'m dyn PatchMeta,
    path: Vec<&'p str>,
    depth: usize,
}

/// What a patch's `$patch` key asks of the object it sits in.
enum ObjectDirective {
    None,
    Replace,
    Delete,
}

impl<'m, 'p> Merger<'m, 'p> {
    pub(crate) fn new(meta: &'m dyn PatchMeta) -> Self {
        Merger { meta, path: Vec::new(), depth: 0 }
    }

    /// The current field path for error messages.
    pub(crate) fn path_string(&self) -> String {
        if self.path.is_empty() { "<root>".to_string() } else { self.path.join(".") }
    }

    /// Metadata of the field the walk is at.
    pub(crate) fn current_meta(&self) -> FieldMeta<'m> {
        // Copy the reference out so the answer borrows the metadata, not `self`.
        let meta: &'m dyn PatchMeta = self.meta;
        meta.lookup(&self.path)
    }

    /// Enters one level of nesting; every recursive step goes through here so a
    /// hostile patch cannot exhaust the stack.
    pub(crate) fn descend(&mut self) -> Result<(), SmpError> {
        if self.depth >= MAX_DEPTH {
            return Err(SmpError::TooDeep { path: self.path_string(), max: MAX_DEPTH });
        }
        self.depth += 1;
        Ok(())
    }

    pub(crate) fn ascend(&mut self) {
        self.depth -= 1;
    }

    /// Merges `patch` into `original`. `Ok(None)` means the patch deletes the
    /// object (`$patch: delete`).
    ///
    /// Passing an empty `original` turns the patch into a plain value: this is
    /// how values are added where nothing is there to merge with, so directives
    /// and `null`s inside them are processed, never copied into the result.
    pub(crate) fn merge_map(
        &mut self,
        original: Map<String, Value>,
        patch: &'p Map<String, Value>,
    ) -> Result<Option<Map<String, Value>>, SmpError> {
        self.descend()?;
        let out = self.merge_map_inner(original, patch);
        self.ascend();
        out
    }

    fn merge_map_inner(
        &mut self,
        mut original: Map<String, Value>,
        patch: &'p Map<String, Value>,
    ) -> Result<Option<Map<String, Value>>, SmpError> {
        match self.object_directive(patch)? {
            ObjectDirective::Delete => return Ok(None),
            // The rest of the patch map is the new object; merging it into an
            // empty map still cleans nested directives and nulls out of it.
            ObjectDirective::Replace => original = Map::new(),
            ObjectDirective::None => {}
        }

        if let Some(retain) = patch.get(RETAIN_KEYS_DIRECTIVE) {
            self.apply_retain_keys(&mut original, patch, retain)?;
        }

        // Sort the patch's keys: parallel lists are applied together with, or
        // after, the fields they refer to.
        let mut orders: Vec<(&'p str, &'p Value)> = Vec::new();
        let mut deletions: Vec<(&'p str, &'p Value)> = Vec::new();
        for (key, value) in patch {
            if let Some(field) = self.directive_target(key, SET_ELEMENT_ORDER_PREFIX)? {
                orders.push((field, value));
            } else if let Some(field) = self.directive_target(key, DELETE_FROM_PRIMITIVE_LIST_PREFIX)? {
                deletions.push((field, value));
            }
        }

        for (key, value) in patch {
            if is_directive_key(key) {
                continue;
            }
            let order = orders.iter().find(|(field, _)| *field == key).map(|(_, o)| *o);
            self.merge_field(&mut original, key, value, order)?;
        }

        // `$setElementOrder` without a patch list reorders what is there.
        for (field, order) in &orders {
            if !patch.contains_key(*field) {
                self.reorder_field(&mut original, field, order)?;
            }
        }

        // Deletions run last. Upstream's order between a list and its deletion
        // list is Go's random map order, except that `$setElementOrder` (which
        // kubectl always sends alongside) is processed first; "after" keeps both
        // the result deterministic and equal to upstream for kubectl's patches.
        for (field, values) in &deletions {
            self.delete_from_primitive_list(&mut original, field, values)?;
        }
        Ok(Some(original))
    }

    /// Reads the object's `$patch`. Only `replace` and `delete` exist for objects
    /// (upstream rejects `merge` here too).
    fn object_directive(&self, patch: &Map<String, Value>) -> Result<ObjectDirective, SmpError> {
        match patch.get(PATCH_DIRECTIVE) {
            None => Ok(ObjectDirective::None),
            Some(v) => match v.as_str() {
                Some("replace") => Ok(ObjectDirective::Replace),
                Some("delete") => Ok(ObjectDirective::Delete),
                _ => Err(SmpError::UnknownPatchType { path: self.path_string(), value: v.to_string() }),
            },
        }
    }

    /// For `<prefix>/<field>` returns `field`; `None` for keys without the
    /// prefix; an error for keys that start with the prefix but are not of that
    /// form (upstream: "invalid patch format of ... list").
    fn directive_target(&self, key: &'p str, prefix: &str) -> Result<Option<&'p str>, SmpError> {
        let Some(rest) = key.strip_prefix(prefix) else { return Ok(None) };
        match rest.strip_prefix('/') {
            Some(field) if !field.is_empty() => Ok(Some(field)),
            _ => Err(SmpError::MalformedDirectiveKey { path: self.path_string(), key: key.to_string() }),
        }
    }

    /// `$retainKeys: [k...]`: every key the patch sets must be listed, and every
    /// key of the original not listed is cleared before merging.
    fn apply_retain_keys(
        &self,
        original: &mut Map<String, Value>,
        patch: &Map<String, Value>,
        retain: &Value,
    ) -> Result<(), SmpError> {
        let bad = |reason| SmpError::InvalidDirectiveValue {
            path: self.path_string(),
            directive: RETAIN_KEYS_DIRECTIVE.to_string(),
            reason,
        };
        let list = retain.as_array().ok_or_else(|| bad("must be a list"))?;
        let keys: Vec<&str> = list
            .iter()
            .map(|k| k.as_str().ok_or_else(|| bad("must be a list of strings")))
            .collect::<Result<_, _>>()?;
        for (key, value) in patch {
            // Nulls delete anyway, and directives are not fields.
            if value.is_null() || is_directive_key(key) {
                continue;
            }
            if !keys.contains(&key.as_str()) {
                return Err(SmpError::RetainKeysMismatch { path: self.path_string(), key: key.clone() });
            }
        }
        original.retain(|k, _| keys.contains(&k.as_str()));
        Ok(())
    }

    /// Merges one patch entry into `original[key]`.
    fn merge_field(
        &mut self,
        original: &mut Map<String, Value>,
        key: &'p str,
        value: &'p Value,
        order: Option<&'p Value>,
    ) -> Result<(), SmpError> {
        self.path.push(key);
        let meta = self.current_meta();
        match value {
            Value::Null => {
                // A `$setElementOrder` for a list the patch deletes is moot.
                // (Upstream fails the patch because `null` is not a list; the
                // intent is plain, so we delete.)
                original.remove(key);
            }
            Value::Object(p) => {
                if order.is_some() {
                    return Err(self.bad_order("the field it orders must be a list in the patch"));
                }
                // Merge with what is there only if it is an object and the field
                // is not `patchStrategy: replace`; otherwise the patch's object,
                // cleaned of directives, takes the place of whatever was there
                // (upstream: a change of type replaces).
                let base = match original.get_mut(key) {
                    Some(Value::Object(o)) if meta.strategy != Strategy::Replace => std::mem::take(o),
                    _ => Map::new(),
                };
                match self.merge_map(base, p)? {
                    Some(m) => {
                        original.insert(key.to_string(), Value::Object(m));
                    }
                    None => {
                        original.remove(key);
                    }
                }
            }
            Value::Array(p) => {
                let live = match original.get_mut(key) {
                    Some(Value::Array(l)) => Some(std::mem::take(l)),
                    _ => None,
                };
                let merged = self.merge_list_field(live, p, &meta, order)?;
                original.insert(key.to_string(), Value::Array(merged));
            }
            scalar => {
                if order.is_some() {
                    return Err(self.bad_order("the field it orders must be a list in the patch"));
                }
                original.insert(key.to_string(), scalar.clone());
            }
        }
        self.path.pop();
        Ok(())
    }

    /// `$setElementOrder/<field>` with no `<field>` in the patch: reorder the
    /// live list if there is one.
    fn reorder_field(
        &mut self,
        original: &mut Map<String, Value>,
        field: &'p str,
        order: &'p Value,
    ) -> Result<(), SmpError> {
        self.path.push(field);
        let meta = self.current_meta();
        if !order.is_array() {
            return Err(self.bad_order("must be a list"));
        }
        if let Some(Value::Array(live)) = original.get_mut(field) {
            let live = std::mem::take(live);
            let reordered = self.reorder_only(live, &meta, order)?;
            original.insert(field.to_string(), Value::Array(reordered));
        }
        self.path.pop();
        Ok(())
    }

    /// `$deleteFromPrimitiveList/<field>: [v...]` removes every occurrence of
    /// each value from the live list. It works whatever the field's strategy
    /// (upstream too), and does nothing when the field is absent or not a list.
    fn delete_from_primitive_list(
        &mut self,
        original: &mut Map<String, Value>,
        field: &'p str,
        values: &'p Value,
    ) -> Result<(), SmpError> {
        self.path.push(field);
        let bad = |this: &Self, reason| SmpError::InvalidDirectiveValue {
            path: this.path_string(),
            directive: format!("{DELETE_FROM_PRIMITIVE_LIST_PREFIX}/{field}"),
            reason,
        };
        let Some(values) = values.as_array() else { return Err(bad(self, "must be a list")) };
        if values.iter().any(|v| v.is_array() || v.is_object()) {
            return Err(bad(self, "must be a list of primitive values"));
        }
        if let Some(Value::Array(live)) = original.get_mut(field) {
            let gone: std::collections::HashSet<String> = values.iter().map(crate::smp::value::canon).collect();
            live.retain(|item| !gone.contains(&crate::smp::value::canon(item)));
        }
        self.path.pop();
        Ok(())
    }

    pub(crate) fn bad_order(&self, reason: &'static str) -> SmpError {
        let field = self.path.last().copied().unwrap_or_default();
        SmpError::InvalidDirectiveValue {
            path: self.path_string(),
            directive: format!("{SET_ELEMENT_ORDER_PREFIX}/{field}"),
            reason,
        }
    }
}

/// Keys that are directives rather than fields.
///
/// Only the four documented directives count: other keys starting with `$` are
/// real data in some objects (`$ref` and `$schema` in a CRD's OpenAPI schema)
/// and must merge like any key.
pub(crate) fn is_directive_key(key: &str) -> bool {
    key == PATCH_DIRECTIVE
        || key == RETAIN_KEYS_DIRECTIVE
        || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
}
