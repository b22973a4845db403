//! Validates JSON against the schemas of an OpenAPI 3.0 document, for contract tests.
//!
//! LINE publishes its webhook and Messaging API as OpenAPI 3.0 files (`tests/line-openapi/`).
//! Their polymorphic objects (events, message contents, sources, outgoing messages, actions, ...)
//! use `discriminator` + `allOf`, which JSON Schema validators ignore: validated as-is, a `message`
//! event would only be checked against the base `Event`, and a text message without `text` would
//! pass. [`OpenApi::load`] therefore rewrites the document before handing it to `jsonschema`:
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
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

/// Where OpenAPI keeps named schemas; every `$ref` in LINE's files points here.
const SCHEMAS: &str = "#/components/schemas/";

/// A loaded OpenAPI document, ready to validate instances against its named schemas.
pub struct OpenApi {
    /// `components` of the document, after the rewrite described in the module docs.
    components: Value,
    /// Compiled validators by schema name: compiling walks much of the document, so do it once.
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl OpenApi {
    /// Reads an OpenAPI 3.0 YAML file and prepares it for validation. Panics on an unreadable or
    /// malformed file: this is test support, and a broken fixture should stop the test.
    pub fn load(path: &Path) -> OpenApi {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let document: Value = serde_yaml_ng::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
        let mut components = document
            .get("components")
            .cloned()
            .unwrap_or_else(|| panic!("{} has no `components`", path.display()));
        if let Some(schemas) = components.get_mut("schemas").and_then(Value::as_object_mut) {
            add_discriminator_dispatch(schemas);
        }
        rewrite_openapi_keywords(&mut components);
        OpenApi {
            components,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `instance` against `components.schemas.<schema_name>`. On failure, returns one
    /// readable line per violation, starting with the JSON pointer of the offending value.
    /// Panics if the document has no such schema (a typo in the test, not a validation failure).
    pub fn validate(&self, schema_name: &str, instance: &Value) -> Result<(), Vec<String>> {
        let validator = self.validator(schema_name);
        let mut errors: Vec<String> = Vec::new();
        for error in validator.iter_errors(instance) {
            let path = error.instance_path().as_str();
            let path = if path.is_empty() { "(root)" } else { path };
            let line = format!("{path}: {error}");
            // A subtype's `allOf` re-checks its base, so base violations can surface twice.
            if !errors.contains(&line) {
                errors.push(line);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The discriminator values `schema_name` maps to subtypes (`"message"`, `"follow"`, ... for
    /// `Event`), so tests can check they cover every type the document knows.
    pub fn discriminator_values(&self, schema_name: &str) -> Vec<String> {
        self.components["schemas"][schema_name]["discriminator"]["mapping"]
            .as_object()
            .map(|mapping| mapping.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn validator(&self, schema_name: &str) -> Arc<jsonschema::Validator> {
        // A poisoned lock only means another test panicked mid-compile; the map is still sound.
        let mut validators = self
            .validators
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(validator) = validators.get(schema_name) {
            return Arc::clone(validator);
        }
        assert!(
            self.components["schemas"].get(schema_name).is_some(),
            "the OpenAPI document has no schema named {schema_name:?}"
        );
        // Refs to a discriminated schema go through its dispatcher, as everywhere else.
        let target = if self.components["schemas"]
            .get(dispatch_name(schema_name))
            .is_some()
        {
            dispatch_name(schema_name)
        } else {
            schema_name.to_owned()
        };
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("{SCHEMAS}{target}"),
            "components": self.components,
        });
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
