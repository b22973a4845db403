//! LINE's own schemas, and a validator that understands them: the fake LINE platform checks
//! every request body against `messaging-api.yml`, and the tests check webhook fixtures against
//! `webhook.yml`.
//!
//! LINE publishes its webhook and Messaging API as OpenAPI 3.0 files (`line-openapi/`, next to
//! this file, embedded in the binary). Their polymorphic objects (events, message contents,
//! sources, outgoing messages, actions, ...) use `discriminator` + `allOf`, which JSON Schema
//! validators ignore: validated as-is, a `message` event would only be checked against the base
//! `Event`, and a text message without `text` would pass. [`OpenApi::from_yaml`] therefore
//! rewrites the document before handing it to `jsonschema`:
//!
//! - for every schema `S` with a discriminator, it adds `S__dispatch`:
//!   `allOf: [{$ref: S}, {if: {properties: {<prop>: {const: K}}, required: [<prop>]}, then: {$ref: <mapped>}}, ..]`,
//!   so a known discriminator value is checked against its subtype and an unknown one against
//!   the base only (LINE adds types over time);
//! - every `$ref` to `S` becomes a `$ref` to `S__dispatch`, except the `allOf` entries by which
//!   the mapped subtypes inherit from `S`: those must keep pointing at the base, or checking a
//!   subtype would dispatch to itself forever;
//! - OpenAPI 3.0's `nullable: true` becomes a `null` type, and boolean
//!   `exclusiveMinimum`/`exclusiveMaximum` become the numeric form of JSON Schema 2020-12.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use serde_json::{json, Map, Value};

/// Where OpenAPI keeps named schemas; every `$ref` in LINE's files points here.
const SCHEMAS: &str = "#/components/schemas/";

/// `line-openapi/webhook.yml`: what LINE POSTs to a webhook (`CallbackRequest`, every event).
pub const WEBHOOK_YML: &str = include_str!("line-openapi/webhook.yml");
/// `line-openapi/messaging-api.yml`: the Messaging API (requests, responses, message objects).
pub const MESSAGING_API_YML: &str = include_str!("line-openapi/messaging-api.yml");

/// Why an OpenAPI document could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("the OpenAPI document is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("the OpenAPI document has no `components`")]
    NoComponents,
}

/// One way an instance breaks a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer of the offending value; empty for the root.
    pub pointer: String,
    /// The offending property as LINE names it in error details (`messages[0].text`); for a
    /// missing property, the property that is missing.
    pub property: String,
    /// What the validator says, e.g. `"text" is a required property`.
    pub message: String,
    /// The same in the words LINE uses in `details[].message`, e.g. `must be specified`.
    pub line_message: String,
}

/// A loaded OpenAPI document, ready to validate instances against its named schemas.
pub struct OpenApi {
    /// `components` of the document, after the rewrite described in the module docs.
    components: Value,
    /// Compiled validators by schema name: compiling walks much of the document, so do it once.
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl OpenApi {
    /// Parses an OpenAPI 3.0 YAML document and prepares it for validation.
    pub fn from_yaml(text: &str) -> Result<OpenApi, SchemaError> {
        let document: Value = serde_yaml_ng::from_str(text)?;
        let mut components = document
            .get("components")
            .cloned()
            .ok_or(SchemaError::NoComponents)?;
        if let Some(schemas) = components.get_mut("schemas").and_then(Value::as_object_mut) {
            add_discriminator_dispatch(schemas);
        }
        rewrite_openapi_keywords(&mut components);
        Ok(OpenApi {
            components,
            validators: Mutex::new(HashMap::new()),
        })
    }

    /// The embedded `webhook.yml`, parsed on first use.
    pub fn webhook() -> &'static OpenApi {
        static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
        // expect: the embedded file is LINE's, unmodified; a test loads it.
        DOCUMENT.get_or_init(|| OpenApi::from_yaml(WEBHOOK_YML).expect("webhook.yml loads"))
    }

    /// The embedded `messaging-api.yml`, parsed on first use.
    pub fn messaging_api() -> &'static OpenApi {
        static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
        // expect: the embedded file is LINE's, unmodified; a test loads it.
        DOCUMENT
            .get_or_init(|| OpenApi::from_yaml(MESSAGING_API_YML).expect("messaging-api.yml loads"))
    }

    /// Whether the document has a schema of that name.
    pub fn has_schema(&self, schema_name: &str) -> bool {
        self.components["schemas"].get(schema_name).is_some()
    }

    /// Checks `instance` against `components.schemas.<schema_name>`. On failure, returns one
    /// readable line per violation, starting with the JSON pointer of the offending value.
    ///
    /// # Panics
    /// If the document has no such schema: a typo in the caller, not a validation failure.
    pub fn validate(&self, schema_name: &str, instance: &Value) -> Result<(), Vec<String>> {
        let violations = self.violations(schema_name, instance);
        if violations.is_empty() {
            return Ok(());
        }
        Err(violations
            .into_iter()
            .map(|v| {
                let path = if v.pointer.is_empty() {
                    "(root)"
                } else {
                    &v.pointer
                };
                format!("{path}: {}", v.message)
            })
            .collect())
    }

    /// As [`OpenApi::validate`], with each violation taken apart (empty when `instance` is
    /// valid).
    ///
    /// # Panics
    /// If the document has no such schema.
    pub fn violations(&self, schema_name: &str, instance: &Value) -> Vec<Violation> {
        let validator = self.validator(schema_name);
        let mut violations: Vec<Violation> = Vec::new();
        for error in validator.iter_errors(instance) {
            let mut segments: Vec<String> = error
                .instance_path()
                .segments()
                .map(|segment| match segment {
                    LocationSegment::Property(name) => name.into_owned(),
                    LocationSegment::Index(index) => format!("[{index}]"),
                })
                .collect();
            if let ValidationErrorKind::Required { property } = error.kind() {
                segments.push(
                    property
                        .as_str()
                        .map_or_else(|| property.to_string(), str::to_owned),
                );
            }
            let violation = Violation {
                pointer: error.instance_path().as_str().to_owned(),
                property: line_property(&segments),
                message: error.to_string(),
                line_message: line_message(error.kind()).unwrap_or_else(|| error.to_string()),
            };
            // A subtype's `allOf` re-checks its base, so base violations can surface twice.
            if !violations
                .iter()
                .any(|v| v.pointer == violation.pointer && v.message == violation.message)
            {
                violations.push(violation);
            }
        }
        violations
    }

    /// The discriminator values `schema_name` maps to subtypes (`"message"`, `"follow"`, ... for
    /// `Event`; `"text"`, `"sticker"`, ... for `Message`).
    pub fn discriminator_values(&self, schema_name: &str) -> Vec<String> {
        self.components["schemas"][schema_name]["discriminator"]["mapping"]
            .as_object()
            .map(|mapping| mapping.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn validator(&self, schema_name: &str) -> Arc<jsonschema::Validator> {
        // A poisoned lock only means another thread panicked mid-compile; the map is still sound.
        let mut validators = self
            .validators
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(validator) = validators.get(schema_name) {
            return Arc::clone(validator);
        }
        assert!(
            self.has_schema(schema_name),
            "the OpenAPI document has no schema named {schema_name:?}"
        );
        // Refs to a discriminated schema go through its dispatcher, as everywhere else.
        let target = if self.has_schema(&dispatch_name(schema_name)) {
            dispatch_name(schema_name)
        } else {
            schema_name.to_owned()
        };
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("{SCHEMAS}{target}"),
            "components": self.components,
        });
        // expect: the rewritten documents compile (the tests compile every schema used).
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema {schema_name:?} does not compile: {e}"));
        let validator = Arc::new(validator);
        validators.insert(schema_name.to_owned(), Arc::clone(&validator));
        validator
    }
}

/// `["messages", "[0]", "text"]` → `messages[0].text`, as LINE writes `details[].property`.
fn line_property(segments: &[String]) -> String {
    let mut property = String::new();
    for segment in segments {
        if !segment.starts_with('[') && !property.is_empty() {
            property.push('.');
        }
        property.push_str(segment);
    }
    property
}

/// LINE's wording for the common violations; `None` where the validator's own is as good.
fn line_message(kind: &ValidationErrorKind) -> Option<String> {
    Some(match kind {
        ValidationErrorKind::Required { .. } => "must be specified".to_owned(),
        ValidationErrorKind::MinItems { limit } => format!("Size must be at least {limit}"),
        ValidationErrorKind::MaxItems { limit } => format!("Size must be at most {limit}"),
        ValidationErrorKind::MinLength { limit } => format!("Length must be at least {limit}"),
        ValidationErrorKind::MaxLength { limit } => format!("Length must be at most {limit}"),
        ValidationErrorKind::Enum { options } => {
            format!("Must be one of the following values: {options}")
        }
        ValidationErrorKind::Type { .. } => "Invalid type".to_owned(),
        ValidationErrorKind::Pattern { pattern } => format!("Must match {pattern}"),
        _ => return None,
    })
}

fn dispatch_name(schema_name: &str) -> String {
    format!("{schema_name}__dispatch")
}

/// A schema with a `discriminator`, and the subtypes its values map to.
struct Discriminated {
    property: String,
    /// Discriminator value → subtype schema name, sorted for a stable document.
    mapping: BTreeMap<String, String>,
}

/// Adds an `S__dispatch` schema for every discriminated `S` and points refs to `S` at it.
fn add_discriminator_dispatch(schemas: &mut Map<String, Value>) {
    let discriminated = find_discriminated(schemas);
    if discriminated.is_empty() {
        return;
    }

    // Which bases each schema inherits from through its own `allOf`: those refs stay as they are.
    let mut parents: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (base, d) in &discriminated {
        for subtype in d.mapping.values() {
            parents
                .entry(subtype.as_str())
                .or_default()
                .insert(base.as_str());
        }
    }

    let bases: HashSet<&str> = discriminated.keys().map(String::as_str).collect();
    for (name, schema) in schemas.iter_mut() {
        let inherited = parents.get(name.as_str());
        if let (Some(inherited), Some(all_of)) = (
            inherited,
            schema.get_mut("allOf").and_then(Value::as_array_mut),
        ) {
            for part in all_of {
                let is_inheritance = part
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix(SCHEMAS))
                    .is_some_and(|parent| inherited.contains(parent));
                if !is_inheritance {
                    redirect_refs(part, &bases);
                }
            }
            for (key, value) in schema.as_object_mut().into_iter().flatten() {
                if key != "allOf" {
                    redirect_refs(value, &bases);
                }
            }
        } else {
            redirect_refs(schema, &bases);
        }
    }

    for (base, d) in &discriminated {
        let mut all_of = vec![json!({ "$ref": format!("{SCHEMAS}{base}") })];
        for (value, subtype) in &d.mapping {
            let target = if bases.contains(subtype.as_str()) {
                dispatch_name(subtype)
            } else {
                subtype.clone()
            };
            all_of.push(json!({
                "if": {
                    "properties": { d.property.as_str(): { "const": value } },
                    "required": [d.property.as_str()],
                },
                "then": { "$ref": format!("{SCHEMAS}{target}") },
            }));
        }
        schemas.insert(dispatch_name(base), json!({ "allOf": all_of }));
    }
}

/// Every schema with a `discriminator`. Without an explicit `mapping`, OpenAPI maps each schema
/// that inherits from the base through `allOf` by its own name.
fn find_discriminated(schemas: &Map<String, Value>) -> BTreeMap<String, Discriminated> {
    let mut found = BTreeMap::new();
    for (name, schema) in schemas {
        let Some(discriminator) = schema.get("discriminator") else {
            continue;
        };
        let Some(property) = discriminator.get("propertyName").and_then(Value::as_str) else {
            continue;
        };
        let mapping: BTreeMap<String, String> =
            match discriminator.get("mapping").and_then(Value::as_object) {
                Some(mapping) => mapping
                    .iter()
                    .filter_map(|(value, target)| {
                        let target = target.as_str()?;
                        let subtype = target.strip_prefix(SCHEMAS).unwrap_or(target);
                        Some((value.clone(), subtype.to_owned()))
                    })
                    .collect(),
                None => schemas
                    .iter()
                    .filter(|(_, candidate)| inherits_from(candidate, name))
                    .map(|(subtype, _)| (subtype.clone(), subtype.clone()))
                    .collect(),
            };
        found.insert(
            name.clone(),
            Discriminated {
                property: property.to_owned(),
                mapping,
            },
        );
    }
    found
}

fn inherits_from(schema: &Value, base: &str) -> bool {
    let wanted = format!("{SCHEMAS}{base}");
    schema
        .get("allOf")
        .and_then(Value::as_array)
        .is_some_and(|parts| {
            parts
                .iter()
                .any(|part| part.get("$ref").and_then(Value::as_str) == Some(wanted.as_str()))
        })
}

/// Points every `$ref` to a discriminated schema inside `value` at its dispatcher.
fn redirect_refs(value: &mut Value, bases: &HashSet<&str>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                match (key.as_str(), child) {
                    // Examples are data, not schemas.
                    ("example" | "examples", _) => {}
                    ("$ref", Value::String(reference)) => {
                        if let Some(target) = reference.strip_prefix(SCHEMAS) {
                            if bases.contains(target) {
                                *reference = format!("{SCHEMAS}{}", dispatch_name(target));
                            }
                        }
                    }
                    (_, child) => redirect_refs(child, bases),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| redirect_refs(item, bases)),
        _ => {}
    }
}

/// Translates the OpenAPI 3.0 keywords that JSON Schema 2020-12 spells differently.
fn rewrite_openapi_keywords(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                if key != "example" && key != "examples" {
                    rewrite_openapi_keywords(child);
                }
            }
            rewrite_exclusive_bound(object, "exclusiveMinimum", "minimum");
            rewrite_exclusive_bound(object, "exclusiveMaximum", "maximum");
            // Only the keyword: a property *named* `nullable` has a schema, not a boolean.
            if let Some(nullable) = object.get("nullable").and_then(Value::as_bool) {
                object.remove("nullable");
                if nullable {
                    allow_null(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_openapi_keywords),
        _ => {}
    }
}

/// OpenAPI 3.0 (like draft 4) has `exclusiveMinimum: true` next to `minimum: n`;
/// 2020-12 has `exclusiveMinimum: n`.
fn rewrite_exclusive_bound(object: &mut Map<String, Value>, exclusive: &str, inclusive: &str) {
    match object.get(exclusive) {
        Some(Value::Bool(true)) => {
            if let Some(bound) = object.remove(inclusive) {
                object.insert(exclusive.to_owned(), bound);
            } else {
                object.remove(exclusive);
            }
        }
        Some(Value::Bool(false)) => {
            object.remove(exclusive);
        }
        _ => {}
    }
}

/// Makes a schema also accept `null`, as OpenAPI 3.0's `nullable: true` means.
fn allow_null(schema: &mut Value) {
    let Value::Object(object) = schema else {
        return;
    };
    if let Some(Value::Array(values)) = object.get_mut("enum") {
        if !values.contains(&Value::Null) {
            values.push(Value::Null);
        }
    }
    match object.get_mut("type") {
        Some(Value::String(kind)) => {
            let kind = std::mem::take(kind);
            object.insert("type".to_owned(), json!([kind, "null"]));
        }
        Some(Value::Array(kinds)) => {
            if !kinds.contains(&json!("null")) {
                kinds.push(json!("null"));
            }
        }
        // No `type` to widen (a `$ref` or composition): accept null next to the schema.
        _ => {
            let original = std::mem::take(object);
            object.insert(
                "anyOf".to_owned(),
                json!([{ "type": "null" }, Value::Object(original)]),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_documents_load_and_know_their_discriminators() {
        let events = OpenApi::webhook().discriminator_values("Event");
        assert!(events.iter().any(|e| e == "message"), "{events:?}");
        let messages = OpenApi::messaging_api().discriminator_values("Message");
        assert!(messages.iter().any(|m| m == "text"), "{messages:?}");
        assert!(OpenApi::messaging_api().has_schema("PushMessageRequest"));
        assert!(!OpenApi::messaging_api().has_schema("NoSuchSchema"));
    }

    #[test]
    fn a_violation_names_the_property_as_line_does() {
        let push = json!({ "to": "U1", "messages": [{ "type": "text", "text": "a" }, { "type": "text" }] });
        let violations = OpenApi::messaging_api().violations("PushMessageRequest", &push);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].pointer, "/messages/1");
        assert_eq!(violations[0].property, "messages[1].text");
        assert_eq!(violations[0].line_message, "must be specified");
        assert_eq!(
            OpenApi::messaging_api().validate("PushMessageRequest", &push),
            Err(vec![format!("/messages/1: {}", violations[0].message)])
        );
    }

    #[test]
    fn a_document_without_components_is_refused() {
        assert!(matches!(
            OpenApi::from_yaml("openapi: 3.0.0\n"),
            Err(SchemaError::NoComponents)
        ));
        assert!(matches!(
            OpenApi::from_yaml("{ not yaml"),
            Err(SchemaError::Yaml(_))
        ));
    }
}
