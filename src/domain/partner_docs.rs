//! The two tables of the partner documentation (`docs/segment-source/`),
//! rendered from the catalog. `produktly-segment docs` writes them into the
//! document between their markers; a test fails when the document and the
//! catalog disagree.

use crate::domain::catalog::{self, PropertyType};

/// The partner documentation, relative to the project root.
pub const DOCUMENT: &str = "docs/segment-source/index.md";

const EVENTS: (&str, &str) = (
    "<!-- events table: generated from the catalog by `produktly-segment docs`; do not edit -->",
    "<!-- end of events table -->",
);
const PROPERTIES: (&str, &str) = (
    "<!-- properties table: generated from the catalog by `produktly-segment docs`; do not edit -->",
    "<!-- end of properties table -->",
);

#[derive(Debug, thiserror::Error)]
#[error("the document lacks the marker {0:?}")]
pub struct MissingMarker(&'static str);

/// The document with both tables as the catalog has them.
pub fn with_tables(document: &str) -> Result<String, MissingMarker> {
    let document = replace_between(document, EVENTS, &events_table())?;
    replace_between(&document, PROPERTIES, &properties_table())
}

pub fn events_table() -> String {
    let rows: Vec<[String; 2]> =
        catalog::EVENTS.iter().map(|e| [e.name.to_owned(), e.description.to_owned()]).collect();
    table(["Event Name", "Description"], &rows)
}

pub fn properties_table() -> String {
    let rows: Vec<[String; 2]> = catalog::PROPERTIES
        .iter()
        .map(|p| [format!("`{}`", p.name), format!("{} ({})", p.description, column_type(p.kind))])
        .collect();
    table(["Property Name", "Description"], &rows)
}

/// The type as it appears in a warehouse.
fn column_type(kind: PropertyType) -> &'static str {
    match kind {
        PropertyType::Id | PropertyType::Text => "string",
        PropertyType::Count => "integer",
        PropertyType::Score => "integer from 0 to 10",
        PropertyType::Url => "string: a URL",
    }
}

/// A Markdown table with its columns padded to line up.
fn table(header: [&str; 2], rows: &[[String; 2]]) -> String {
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0);
    let (first, second) = (width(0), width(1));
    let mut text = format!("| {:first$} | {:second$} |\n", header[0], header[1]);
    text.push_str(&format!("| {} | {} |\n", "-".repeat(first), "-".repeat(second)));
    for [a, b] in rows {
        text.push_str(&format!("| {a:first$} | {b:second$} |\n"));
    }
    text
}

fn replace_between(
    document: &str,
    (start, end): (&'static str, &'static str),
    content: &str,
) -> Result<String, MissingMarker> {
    let from = document.find(start).ok_or(MissingMarker(start))? + start.len();
    let to = document[from..].find(end).ok_or(MissingMarker(end))? + from;
    Ok(format!("{}\n{content}{}", &document[..from], &document[to..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partner_documentation_matches_the_catalog() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DOCUMENT);
        let document = std::fs::read_to_string(&path).unwrap();
        assert!(
            with_tables(&document).unwrap() == document,
            "{DOCUMENT} is not in step with the catalog: run `cargo run -- docs`"
        );
        for event in catalog::EVENTS {
            assert!(document.contains(&format!("| {} ", event.name)), "{} is missing", event.name);
        }
    }

    #[test]
    fn tables_are_replaced_between_their_markers_only() {
        let document =
            format!("intro\n{}\nstale\n{}\nmiddle\n{}\n{}\nend\n", EVENTS.0, EVENTS.1, PROPERTIES.0, PROPERTIES.1);
        let rendered = with_tables(&document).unwrap();
        assert!(!rendered.contains("stale"));
        assert!(rendered.starts_with("intro\n") && rendered.ends_with("end\n") && rendered.contains("\nmiddle\n"));
        assert_eq!(with_tables(&rendered).unwrap(), rendered, "rendering twice changes nothing");
        assert!(with_tables("no markers").is_err());
    }
}
