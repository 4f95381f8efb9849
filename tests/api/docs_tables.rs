//! The operator's guide (docs/operations.md) keeps up with the code: every
//! setting of config/default.toml with its default, and every metric the
//! service exports.

use figment::Figment;
use figment::providers::{Format, Toml};
use produktly_segment::metrics::Metrics;
use produktly_segment::queue::depth::QueueDepth;
use produktly_segment::store::db::ConnectionCounts;
use serde_json::Value;

const GUIDE: &str = include_str!("../../docs/operations.md");
const DEFAULTS: &str = include_str!("../../config/default.toml");

/// `(dotted key, default)` of every setting.
fn settings() -> Vec<(String, Value)> {
    let defaults: Value = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
    let mut settings = Vec::new();
    for (key, value) in defaults.as_object().unwrap() {
        match value.as_object() {
            Some(section) => settings.extend(section.iter().map(|(k, v)| (format!("{key}.{k}"), v.clone()))),
            None => settings.push((key.clone(), value.clone())),
        }
    }
    settings
}

fn guide_row(key: &str) -> Option<&'static str> {
    GUIDE.lines().find(|line| line.starts_with(&format!("| `{key}` |")))
}

#[test]
fn every_setting_is_in_the_configuration_table_with_its_default() {
    let settings = settings();
    assert!(settings.len() > 30);
    for (key, default) in settings {
        let row = guide_row(&key).unwrap_or_else(|| panic!("docs/operations.md: no row for `{key}`"));
        let environment = format!("`PRODUKTLY_{}`", key.replace('.', "_").to_uppercase());
        assert!(row.contains(&environment), "docs/operations.md: the row of `{key}` lacks {environment}");
        let default = match default {
            Value::String(text) => text,
            other => other.to_string(),
        };
        if !default.is_empty() {
            let cell = row.split(" | ").nth(2).unwrap();
            assert!(
                cell.contains(&format!("`{default}`")),
                "docs/operations.md: `{key}` defaults to `{default}`, not {cell}"
            );
        }
    }
}

#[test]
fn every_metric_is_described() {
    let exported = Metrics::new([QueueDepth::default().collector(), ConnectionCounts::default().collector()]).encode();
    let names: Vec<&str> =
        exported.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    assert!(names.len() >= 10, "{exported}");
    for name in names {
        assert!(GUIDE.contains(&format!("`{name}")), "docs/operations.md: metric {name} is not described");
    }
}
