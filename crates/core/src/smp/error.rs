//! Errors for malformed patches. Every message is lowercase and names the field
//! (as a dotted path of field names from the object root, list elements adding
//! no segment) so the API server can return it to the user as is.

/// Why a strategic merge patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SmpError {
    /// The original or the patch is not a JSON object.
    #[error("{what} must be a json object")]
    NotAnObject { what: &'static str },

    /// `$patch` holds something other than `"replace"` or `"delete"`
    /// (in an object) or `"replace"`, `"delete"` (in a list element).
    #[error("unknown patch type {value} at {path}: expected \"replace\" or \"delete\"")]
    UnknownPatchType { path: String, value: String },

    /// `{"$patch": "merge"}` inside a list: upstream has never supported it.
    #[error("$patch: merge is not supported in list {path}")]
    MergeDirectiveInList { path: String },

    /// An element of a list merged by key lacks the key (or has it `null`).
    #[error("list element in {path} does not contain merge key \"{key}\"")]
    MissingMergeKey { path: String, key: String },

    /// A list merged by key holds something other than objects.
    #[error("elements of {path} must be objects: the list is merged by key \"{key}\"")]
    ElementNotObject { path: String, key: String },

    /// A list with merge strategy but no merge key (a set of primitives) holds objects.
    #[error("cannot merge list {path}: it holds objects but has no merge key")]
    ObjectsInPrimitiveList { path: String },

    /// Elements of a merging list are of different JSON types.
    #[error("list element types in {path} are not identical")]
    MixedElementTypes { path: String },

    /// A merging list holds lists.
    #[error("lists of lists are not supported in {path}")]
    ListOfLists { path: String },

    /// A key starting with a directive prefix is not `<prefix>/<field>`.
    #[error("invalid directive key {key:?} at {path}")]
    MalformedDirectiveKey { path: String, key: String },

    /// A directive's value has the wrong shape (`$retainKeys` not a list of
    /// strings, `$setElementOrder/x` not a list, ...).
    #[error("invalid {directive} at {path}: {reason}")]
    InvalidDirectiveValue { path: String, directive: String, reason: &'static str },

    /// The patch list's elements are not in the order `$setElementOrder` gives.
    #[error("the order of {path} in the patch doesn't match its $setElementOrder list")]
    SetElementOrderMismatch { path: String },

    /// The patch sets a key that its own `$retainKeys` list would clear.
    #[error("field {key:?} at {path} is not listed in $retainKeys")]
    RetainKeysMismatch { path: String, key: String },

    /// The patch nests deeper than [`crate::smp::MAX_DEPTH`].
    #[error("patch is nested deeper than {max} levels at {path}")]
    TooDeep { path: String, max: usize },
}

impl SmpError {
    /// The HTTP status an API server should answer with.
    ///
    /// Upstream answers 400 for malformed directive formats, 422 for lists of
    /// lists and `$retainKeys` mismatches, and lets the rest (missing merge keys,
    /// unknown `$patch` values...) surface as 500. Since every one of these is
    /// the client's fault, we map the rest to 400 rather than claim a server error.
    pub fn http_status(&self) -> u16 {
        match self {
            SmpError::ListOfLists { .. } | SmpError::RetainKeysMismatch { .. } => 422,
            _ => 400,
        }
    }
}
