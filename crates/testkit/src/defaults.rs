//! A service's defaults file: every config key with its default, written from
//! `Config::default()` and checked by a test, so a default is written once (in code) and
//! the file shows them all.

use std::{collections::BTreeMap, path::Path};

use serde::Serialize;

/// Asserts that the service crate at `crate_dir` (its `CARGO_MANIFEST_DIR`) has a
/// `config.defaults.toml` holding `defaults` (see [`assert_defaults_file`]), and that
/// the workspace README's configuration table agrees with it (see
/// [`assert_readme_defaults_agree`]). `package` is the crate's name.
///
/// # Panics
/// When either differs.
pub fn assert_defaults_documented<T: Serialize>(defaults: &T, crate_dir: &str, package: &str) {
    let crate_dir = Path::new(crate_dir);
    let file = crate_dir.join("config.defaults.toml");
    assert_defaults_file(defaults, &file, package);
    assert_readme_defaults_agree(&crate_dir.join("../../README.md"), &file);
}

/// Asserts that the file at `path` holds `defaults` as TOML, under a header saying it
/// is generated; with `UPDATE_DEFAULTS=1` in the environment it writes the file instead.
/// `package` names the crate whose test regenerates it (for the header).
///
/// # Panics
/// When the file differs from `defaults` (or cannot be read or written), or `defaults`
/// does not serialize as TOML.
fn assert_defaults_file<T: Serialize>(defaults: &T, path: &Path, package: &str) {
    let body = toml::to_string(defaults).expect("a config serializes as TOML");
    let expected = format!(
        "# Every config key with its default, written from `Config::default()`: do not edit.\n\
         # A test fails when this file and the code differ; `UPDATE_DEFAULTS=1 cargo test -p {package} defaults`\n\
         # writes it again. Keys without a default (secrets, optional paths) are not listed.\n\n{body}"
    );
    if std::env::var_os("UPDATE_DEFAULTS").is_some_and(|value| value == "1") {
        std::fs::write(path, &expected).expect("the defaults file is writable");
        return;
    }
    let actual = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        actual == expected,
        "{} is not what Config::default() says; run `UPDATE_DEFAULTS=1 cargo test -p {package} defaults` and commit it.\n\
         expected:\n{expected}",
        path.display()
    );
}

/// Asserts that the README's configuration table (rows `| keys | defaults | meaning |`)
/// gives, for every key of the defaults file at `defaults` it lists with one plain
/// default each (`` `a`, `b` `` for `` `x.a`, `x.b` ``), that file's value. Rows whose
/// defaults are prose (`none`, `users 50051, orders 50052`) are not compared.
///
/// # Panics
/// When a listed default differs, naming the key, or a file cannot be read.
fn assert_readme_defaults_agree(readme: &Path, defaults: &Path) {
    let text = std::fs::read_to_string(defaults).expect("the defaults file is readable");
    let table: toml::Table = text.parse().expect("the defaults file is TOML");
    let mut values = BTreeMap::new();
    flatten("", &toml::Value::Table(table), &mut values);
    let readme = std::fs::read_to_string(readme).expect("the README is readable");
    let mut compared = 0;
    for row in readme.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let [keys, given, ..] = cells[..] else { continue };
        let keys: Vec<String> = backticked(keys.trim_start_matches("| "));
        let given: Vec<&str> = given.split(", ").collect();
        if keys.len() != given.len() {
            continue;
        }
        let section = keys[0].split('.').next().unwrap_or_default().to_owned();
        for (key, value) in keys.iter().zip(given) {
            let key = if key.starts_with('.') { format!("{section}{key}") } else { key.clone() };
            let Some(value) = value.strip_prefix('`').and_then(|value| value.strip_suffix('`')) else { continue };
            // Another key's name (`server.host`) says the default follows that key.
            if value.contains('`') || values.contains_key(value) {
                continue;
            }
            if let Some(expected) = values.get(&key) {
                assert_eq!(value, expected, "README's default of `{key}` differs from {}", defaults.display());
                compared += 1;
            }
        }
    }
    assert!(compared > 10, "only {compared} README defaults compared: has the table's shape changed?");
}

/// The keys (each in backticks) of a README key cell, env var names left out.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter(|key| !key.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(str::to_owned)
        .collect()
}

/// `value`'s leaves as `a.b.c` -> the value as the README writes it (strings bare).
fn flatten(prefix: &str, value: &toml::Value, into: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&key, value, into);
            }
        }
        toml::Value::String(text) => {
            into.insert(prefix.to_owned(), text.clone());
        }
        toml::Value::Array(items) => {
            let items: Vec<String> =
                items.iter().map(|item| item.as_str().map_or(item.to_string(), str::to_owned)).collect();
            into.insert(prefix.to_owned(), format!("[{}]", items.join(", ")));
        }
        other => {
            into.insert(prefix.to_owned(), other.to_string());
        }
    }
}
