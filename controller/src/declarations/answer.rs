//! Reading a model's answer into documents, accepting what models really send: JSON per the
//! answer schema (`{"documents": [...]}`), a bare document or an array of them, or YAML with one
//! or several `---` documents; inside a ```json/```yaml fence or not, after a line of chatter
//! or not. Pure; says nothing about whether the documents are valid (that is `validate`'s job).

use serde_json::Value;

/// Why an answer holds no documents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// Neither JSON nor YAML could be read.
    #[error("the answer is neither JSON nor YAML documents: {0}")]
    Unreadable(String),
    /// It parsed but holds no document.
    #[error("the answer holds no document")]
    Empty,
    /// An entry is not a mapping (a string, a number...).
    #[error("document {index} of the answer is not a mapping but {found}")]
    NotAMapping {
        /// 1-based position.
        index: usize,
        /// What it is.
        found: &'static str,
    },
}

/// The documents of an answer, in order. Tried in turn: the text (or its fenced blocks) as
/// JSON, as YAML, and the JSON between the first bracket and the last when chatter surrounds it.
pub fn parse_answer(text: &str) -> Result<Vec<Value>, AnswerError> {
    let body = fenced(text).unwrap_or_else(|| text.trim().to_owned());
    if let Some(value) = strict_json(&body) {
        return documents(vec![value]);
    }
    let from_yaml = yaml_values(&body).and_then(documents);
    match from_yaml {
        Ok(docs) => Ok(docs),
        Err(e) => match lenient_json(&body) {
            Some(value) => documents(vec![value]),
            None => Err(e),
        },
    }
}

fn documents(values: Vec<Value>) -> Result<Vec<Value>, AnswerError> {
    let mut documents = Vec::new();
    for value in values {
        flatten(value, &mut documents);
    }
    if documents.is_empty() {
        return Err(AnswerError::Empty);
    }
    for (i, d) in documents.iter().enumerate() {
        if !d.is_object() {
            return Err(AnswerError::NotAMapping {
                index: i + 1,
                found: type_name(d),
            });
        }
    }
    Ok(documents)
}

/// The contents of the fenced code blocks of `text`, joined as YAML documents; `None` without
/// a fence.
fn fenced(text: &str) -> Option<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match current.as_mut() {
            None if trimmed.starts_with("```") => current = Some(Vec::new()),
            None => {}
            Some(lines) if trimmed.starts_with("```") => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            Some(lines) => lines.push(line),
        }
    }
    // An unclosed fence (the answer was cut or the model forgot) still counts.
    if let Some(lines) = current {
        blocks.push(lines.join("\n"));
    }
    let blocks: Vec<String> = blocks
        .into_iter()
        .filter(|b| !b.trim().is_empty())
        .collect();
    if blocks.is_empty() {
        return None;
    }
    Some(blocks.join("\n---\n"))
}

/// The whole text as a JSON object or array.
fn strict_json(text: &str) -> Option<Value> {
    serde_json::from_str::<Value>(text.trim())
        .ok()
        .filter(|v| v.is_object() || v.is_array())
}

/// The JSON from the first `{`/`[` to the last `}`/`]`, for answers with chatter around it.
fn lenient_json(text: &str) -> Option<Value> {
    let start = text.find(['{', '['])?;
    let end = text.rfind(['}', ']'])?;
    if end <= start {
        return None;
    }
    strict_json(&text[start..=end])
}

/// The text as YAML documents, after dropping chatter before the first line that starts a
/// document (`---` or `apiVersion:`).
fn yaml_values(body: &str) -> Result<Vec<Value>, AnswerError> {
    let lines: Vec<&str> = body.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("---") || l.starts_with("apiVersion:"))
        .unwrap_or(0);
    let yaml = lines[start..].join("\n");
    let values: Vec<Value> = serde_saphyr::from_multiple(&yaml)
        .map_err(|e| AnswerError::Unreadable(first_line(&e.to_string())))?;
    Ok(values)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// Spreads `{"documents": [...]}` and arrays into single documents; drops empty documents.
fn flatten(value: Value, out: &mut Vec<Value>) {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                flatten(item, out);
            }
        }
        Value::Object(mut map) if !map.contains_key("kind") && map.contains_key("documents") => {
            if let Some(docs) = map.remove("documents") {
                flatten(docs, out);
            }
        }
        other => out.push(other),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn kinds(text: &str) -> Vec<String> {
        parse_answer(text)
            .unwrap()
            .iter()
            .map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]).replace('"', ""))
            .collect()
    }

    #[test]
    fn json_per_the_schema_should_give_its_documents() {
        let text = r#"{"documents": [{"kind": "Guest", "metadata": {"name": "a"}}, {"kind": "AlertRule", "metadata": {"name": "b"}}]}"#;
        assert_eq!(kinds(text), ["Guest/a", "AlertRule/b"]);
    }

    #[test]
    fn a_bare_json_document_or_array_should_be_accepted() {
        assert_eq!(
            kinds(r#"{"kind": "Guest", "metadata": {"name": "a"}}"#),
            ["Guest/a"]
        );
        assert_eq!(
            kinds(
                r#"[{"kind": "Guest", "metadata": {"name": "a"}}, {"kind": "Guest", "metadata": {"name": "b"}}]"#
            ),
            ["Guest/a", "Guest/b"]
        );
    }

    #[test]
    fn json_after_chatter_or_in_a_fence_should_be_found() {
        let text = "Sure! Here is the declaration:\n{\"documents\": [{\"kind\": \"Guest\", \"metadata\": {\"name\": \"a\"}}]}\nLet me know.";
        assert_eq!(kinds(text), ["Guest/a"]);
        let text =
            "Here you go:\n```json\n{\"kind\": \"Guest\", \"metadata\": {\"name\": \"a\"}}\n```\n";
        assert_eq!(kinds(text), ["Guest/a"]);
    }

    #[test]
    fn fenced_yaml_with_several_documents_should_give_each() {
        let text = "Here is the YAML:\n\n```yaml\napiVersion: mycopod/v1\nkind: Guest\nmetadata:\n  name: a\n---\napiVersion: mycopod/v1\nkind: AlertRule\nmetadata: {name: b}\n```\nThat's all.";
        assert_eq!(kinds(text), ["Guest/a", "AlertRule/b"]);
    }

    #[test]
    fn bare_yaml_after_a_line_of_chatter_should_be_read() {
        let text = "Of course. The declaration is below.\napiVersion: mycopod/v1\nkind: Guest\nmetadata:\n  name: a\nspec:\n  memory: 512MiB\n  cores: 1\n";
        let docs = parse_answer(text).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["spec"], json!({"memory": "512MiB", "cores": 1}));
    }

    #[test]
    fn yaml_with_a_documents_key_and_empty_documents_should_be_flattened() {
        let text = "---\ndocuments:\n  - kind: Guest\n    metadata: {name: a}\n---\n";
        assert_eq!(kinds(text), ["Guest/a"]);
    }

    #[test]
    fn an_unclosed_fence_should_still_be_read() {
        assert_eq!(
            kinds("```yaml\nkind: Guest\nmetadata: {name: a}\n"),
            ["Guest/a"]
        );
    }

    #[test]
    fn garbage_should_be_refused_with_a_reason() {
        assert!(matches!(
            parse_answer("I cannot help with that: [unclosed"),
            Err(AnswerError::Unreadable(_)) | Err(AnswerError::NotAMapping { .. })
        ));
        assert_eq!(parse_answer("   "), Err(AnswerError::Empty));
        assert_eq!(
            parse_answer("[1, 2]"),
            Err(AnswerError::NotAMapping {
                index: 1,
                found: "a number"
            })
        );
        assert_eq!(
            parse_answer("just some words"),
            Err(AnswerError::NotAMapping {
                index: 1,
                found: "a string"
            })
        );
    }
}
