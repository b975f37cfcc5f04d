//! Patch metadata: which fields merge instead of being replaced.
//!
//! Upstream reads it from Go struct tags (`patchStrategy:"merge"
//! patchMergeKey:"name"`) or from the OpenAPI extensions generated from them
//! (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`). We have
//! neither, so the merge asks a [`PatchMeta`] about each field by its path.

/// How a field's value combines with the patch's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    /// No tag: objects merge key by key, lists are replaced wholesale.
    #[default]
    Default,
    /// `patchStrategy:"merge"`: lists merge, by [`FieldMeta::merge_key`] for
    /// lists of objects, as sets for lists of primitives.
    Merge,
    /// `patchStrategy:"replace"`: the patch's value replaces the field, even an
    /// object (e.g. `PodDisruptionBudget.spec.selector`).
    Replace,
}

/// Patch metadata of one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FieldMeta<'a> {
    pub strategy: Strategy,
    /// Key identifying elements of a merging list of objects (`name`, `containerPort`...).
    pub merge_key: Option<&'a str>,
    /// The `retainKeys` strategy. Only diff generation (kubectl) uses it to emit
    /// `$retainKeys`; applying honours a `$retainKeys` directive wherever it
    /// appears, exactly like upstream, so the merge never reads this flag. It is
    /// kept so the table mirrors the upstream tags completely.
    pub retain_keys: bool,
}

impl FieldMeta<'static> {
    /// No strategy: objects merge, lists are replaced.
    pub const DEFAULT: FieldMeta<'static> =
        FieldMeta { strategy: Strategy::Default, merge_key: None, retain_keys: false };

    /// A list of objects merged by `key`.
    pub const fn merge_by(key: &'static str) -> Self {
        FieldMeta { strategy: Strategy::Merge, merge_key: Some(key), retain_keys: false }
    }

    /// A list of primitives merged as a set.
    pub const fn merge_set() -> Self {
        FieldMeta { strategy: Strategy::Merge, merge_key: None, retain_keys: false }
    }

    /// A field replaced wholesale, objects included.
    pub const fn replace() -> Self {
        FieldMeta { strategy: Strategy::Replace, merge_key: None, retain_keys: false }
    }

    /// The same metadata with the `retainKeys` strategy added.
    pub const fn with_retain_keys(self) -> Self {
        FieldMeta { retain_keys: true, ..self }
    }
}

/// Source of patch metadata.
///
/// `path` holds the field names from the kind root down to the field asked
/// about, inclusive. List elements add no segment, so for a Deployment the
/// containers' env is `["spec", "template", "spec", "containers", "env"]`.
/// Keys of free-form maps (labels, annotations, data) do appear as segments;
/// an implementation simply finds no rule for them.
///
/// Unknown paths should answer [`FieldMeta::DEFAULT`]. (Upstream fails the patch
/// when a typed struct has no such field, but only where both sides are objects
/// or lists; we leave unknown fields to the decoder that runs after the merge.)
pub trait PatchMeta {
    fn lookup(&self, path: &[&str]) -> FieldMeta<'_>;
}

/// No metadata at all: objects merge and every list is replaced, which is what
/// upstream does for fields without tags.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMeta;

impl PatchMeta for NoMeta {
    fn lookup(&self, _path: &[&str]) -> FieldMeta<'_> {
        FieldMeta::DEFAULT
    }
}

/// Any `Fn(&[&str]) -> FieldMeta<'static>` is a [`PatchMeta`]; handy for tests
/// and for schemas computed elsewhere.
impl<F> PatchMeta for F
where
    F: Fn(&[&str]) -> FieldMeta<'static>,
{
    fn lookup(&self, path: &[&str]) -> FieldMeta<'_> {
        self(path)
    }
}
