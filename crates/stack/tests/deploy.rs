//! The deployment files speak our config: every `USERS_*` / `ORDERS_*` variable that
//! docker-compose.yml, deploy/Dockerfile and deploy/k8s set is a config key the services'
//! own loader accepts with that value, and the stop timeouts outlast drain plus grace.
//!
//! The files are scanned line by line, not parsed as YAML: a variable is `NAME: value`
//! (compose maps), `NAME=value` (Dockerfile `ENV`) or `name: NAME` with `value:` after it
//! on the same or the next line (Kubernetes `env`); one set from a Secret or the downward
//! API (`valueFrom`) gets a plausible stand-in value. Comments are skipped.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use platform::config::ServerConfig;
use serde::Serialize;

/// The workspace root: this crate lives in `crates/<name>`.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The two services and their config prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Users,
    Orders,
}

impl Service {
    const ALL: [Service; 2] = [Service::Users, Service::Orders];

    fn prefix(self) -> &'static str {
        match self {
            Service::Users => "USERS_",
            Service::Orders => "ORDERS_",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Service::Users => "users",
            Service::Orders => "orders",
        }
    }

    /// Loads this service's config from `file` and the current environment.
    fn load(self, file: Option<&Path>) -> Result<Loaded, String> {
        match self {
            Service::Users => users::Config::load(file).map_err(|e| e.to_string()).map(|c| Loaded::of(&c, &c.server)),
            Service::Orders => orders::Config::load(file).map_err(|e| e.to_string()).map(|c| Loaded::of(&c, &c.server)),
        }
    }
}

/// What the checks need from a loaded config.
#[derive(Debug)]
struct Loaded {
    /// The top-level sections the config has (`server`, `database`, …).
    sections: BTreeSet<String>,
    /// `server.drain_period + server.shutdown_grace`: how long a stop may take.
    drain_and_grace: Duration,
    /// The whole config as it would be written back (secrets redacted by the config).
    config: serde_json::Value,
}

impl Loaded {
    fn of<T: Serialize>(config: &T, server: &ServerConfig) -> Self {
        let value = serde_json::to_value(config).expect("a loaded config serialises");
        let sections = value.as_object().expect("a config is a table").keys().cloned().collect();
        Loaded { sections, drain_and_grace: server.drain_period + server.shutdown_grace, config: value }
    }
}

/// One variable set in a deployment file.
#[derive(Debug, Clone)]
struct Setting {
    name: String,
    /// `None` when the value comes from elsewhere (`valueFrom`).
    value: Option<String>,
    /// `file:line`, for messages.
    at: String,
}

/// The line without its comment (`#` starting the line or after a space).
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    line.find(" #").map_or(line, |i| &line[..i])
}

/// A YAML scalar at the start of `text`: quoted, or plain up to the end of the line (in a
/// flow map `{ … }`, up to the next `,` or `}`).
fn scalar(text: &str, flow: bool) -> String {
    let text = text.trim_start();
    for quote in ['"', '\''] {
        if let Some(rest) = text.strip_prefix(quote) {
            return rest.split(quote).next().unwrap_or_default().to_owned();
        }
    }
    let end = if flow { text.find([',', '}']).unwrap_or(text.len()) } else { text.len() };
    text[..end].trim().to_owned()
}

/// Every `USERS_*` / `ORDERS_*` name in `line`, with its byte offset.
fn names_in(line: &str) -> Vec<(usize, &str)> {
    let is_name_char = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
    let mut names = Vec::new();
    for prefix in Service::ALL.map(Service::prefix) {
        for (start, _) in line.match_indices(prefix) {
            let boundary = line[..start].chars().next_back().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            let end = line[start..].find(|c: char| !is_name_char(c)).map_or(line.len(), |n| start + n);
            if boundary && end > start + prefix.len() {
                names.push((start, &line[start..end]));
            }
        }
    }
    names
}

/// The variables set in `text` (the contents of `file`, named in messages).
fn settings_in(file: &str, text: &str) -> Vec<Setting> {
    let lines: Vec<&str> = text.lines().map(strip_comment).collect();
    let mut settings = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        for (start, name) in names_in(line) {
            let before = &line[..start];
            let after = &line[start + name.len()..];
            let flow = before.contains('{');
            let value = if let Some(value) = after.strip_prefix(':') {
                Some(scalar(value, flow))
            } else if let Some(value) = after.strip_prefix('=') {
                Some(value.split_whitespace().next().unwrap_or_default().to_owned())
            } else if before.trim_end().ends_with("name:") {
                match after.split_once("value:") {
                    Some((_, value)) => Some(scalar(value, flow)),
                    None => lines
                        .get(index + 1)
                        .and_then(|next| next.trim_start().strip_prefix("value:"))
                        .map(|value| scalar(value, false)),
                }
            } else {
                None
            };
            settings.push(Setting { name: name.to_owned(), value, at: format!("{file}:{}", index + 1) });
        }
    }
    settings
}

/// The variables set in the files at these paths (relative to the workspace root).
fn settings_in_files(paths: &[PathBuf]) -> Vec<Setting> {
    paths
        .iter()
        .flat_map(|path| {
            let text = fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            settings_in(&path.display().to_string(), &text)
        })
        .collect()
}

/// Every file under `dir` (relative to the root) whose name ends with `extension`.
fn files_under(dir: &str, extension: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::from(dir)];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(root().join(&dir)).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let entry = entry.expect("a directory entry");
            let path = dir.join(entry.file_name());
            if entry.file_type().expect("a file type").is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().ends_with(extension) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A stand-in for a value set from a Secret or the downward API, shaped like the real one.
fn stand_in(name: &str) -> String {
    if name.ends_with("__URL") {
        "postgres://service:password@database.invalid:5432/service".to_owned()
    } else if name.ends_with("__ADDRESS") {
        "10.0.0.1".to_owned()
    } else {
        "a-stand-in-secret-of-thirty-two-bytes".to_owned()
    }
}

/// Loads `service`'s config from `file` plus the `settings` for its prefix, once per
/// distinct value a variable takes (round `k` uses each variable's `k`-th value, or its
/// last), so every value written in the files is loaded at least once. First checks that
/// each variable names a top-level section the config has. Returns every load, or what
/// failed and where it is set.
fn load_with(service: Service, file: Option<&Path>, settings: &[Setting]) -> Result<Vec<Loaded>, String> {
    let mut values: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for setting in settings.iter().filter(|s| s.name.starts_with(service.prefix())) {
        let value = setting.value.clone().unwrap_or_else(|| stand_in(&setting.name));
        let seen = values.entry(&setting.name).or_default();
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    let where_set =
        |name: &str| settings.iter().filter(|s| s.name == name).map(|s| s.at.as_str()).collect::<Vec<_>>().join(", ");
    // First the sections, from a load without variables: an unknown section might be
    // skipped by the loader rather than refused, and this names the variable precisely.
    let sections = load_in_jail(service, file, &BTreeMap::new())?.sections;
    for name in values.keys() {
        let section = name[service.prefix().len()..].split("__").next().unwrap_or_default().to_lowercase();
        if !sections.contains(&section) {
            return Err(format!(
                "{name} (set at {}): `{section}` is not a config section of {} (it has {sections:?})",
                where_set(name),
                service.name()
            ));
        }
    }
    let rounds = values.values().map(Vec::len).max().unwrap_or(1);
    let mut loads = Vec::new();
    for round in 0..rounds {
        let env: BTreeMap<&str, &str> =
            values.iter().map(|(name, values)| (*name, values[round.min(values.len() - 1)].as_str())).collect();
        let loaded = load_in_jail(service, file, &env).map_err(|error| {
            // The variables the error names; when it names none (an unknown key is reported
            // at its parent), every variable of this round.
            let named: Vec<&&str> = env.keys().filter(|name| error.contains(**name)).collect();
            let culprits = if named.is_empty() { env.keys().collect() } else { named };
            let culprits: Vec<String> =
                culprits.iter().map(|name| format!("{name} (set at {})", where_set(name))).collect();
            format!("{} refused {culprits:?}: {error}", service.name())
        })?;
        loads.push(loaded);
    }
    Ok(loads)
}

/// Loads `service`'s config from `file` and exactly the variables `env`.
// figment::Jail's closures return figment::Error, which is large; that is its API.
#[allow(clippy::result_large_err)]
fn load_in_jail(service: Service, file: Option<&Path>, env: &BTreeMap<&str, &str>) -> Result<Loaded, String> {
    let mut result = None;
    figment::Jail::expect_with(|jail| {
        // Only the variables under test: none from the environment running the test.
        jail.clear_env();
        for (name, value) in env {
            jail.set_env(name, value);
        }
        result = Some(service.load(file));
        Ok(())
    });
    result.expect("the jail ran")
}

/// The compose stack's variables: docker-compose.yml and the image's own `ENV`.
fn compose_settings() -> Vec<Setting> {
    settings_in_files(&["docker-compose.yml".into(), "deploy/Dockerfile".into()])
}

/// Kubernetes' variables: every manifest, patch and component, and the image's own `ENV`.
fn kubernetes_settings() -> Vec<Setting> {
    let mut files = files_under("deploy/k8s", ".yaml");
    files.push("deploy/Dockerfile".into());
    settings_in_files(&files)
}

/// The TOML config file the Kubernetes ConfigMap holds for `service`.
fn kubernetes_config_file(service: Service) -> PathBuf {
    root().join(format!("deploy/k8s/base/config/{}.toml", service.name()))
}

/// Every `key: N` value (a whole number, or a duration in seconds like `20s`) in the files.
fn seconds_set(files: &[PathBuf], key: &str) -> Vec<(u64, String)> {
    let mut found = Vec::new();
    for path in files {
        let text = fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (index, line) in text.lines().map(strip_comment).enumerate() {
            if let Some(value) = line.trim_start().strip_prefix(key).and_then(|rest| rest.strip_prefix(':')) {
                let value = scalar(value, false);
                let seconds = value.strip_suffix('s').unwrap_or(&value).parse().unwrap_or_else(|_| {
                    panic!("{}:{}: {key} `{value}` is not whole seconds", path.display(), index + 1)
                });
                found.push((seconds, format!("{}:{}", path.display(), index + 1)));
            }
        }
    }
    found
}

#[test]
fn every_env_var_in_the_compose_stack_is_a_config_key_the_services_accept() {
    let settings = compose_settings();
    for service in Service::ALL {
        let found = settings.iter().filter(|s| s.name.starts_with(service.prefix())).count();
        assert!(found >= 8, "the scan found only {found} {} variables in the compose stack", service.name());
        if let Err(error) = load_with(service, None, &settings) {
            panic!("{error}");
        }
    }
}

#[test]
fn every_env_var_in_the_kubernetes_manifests_is_a_config_key_the_services_accept() {
    let settings = kubernetes_settings();
    for service in Service::ALL {
        let file = kubernetes_config_file(service);
        if let Err(error) = load_with(service, Some(&file), &settings) {
            panic!("with {}: {error}", file.display());
        }
    }
    let names: BTreeSet<&str> = settings.iter().map(|s| s.name.as_str()).collect();
    for expected in ["USERS_DATABASE__URL", "ORDERS_PAGING__TOKEN_SECRET", "ORDERS_USERS__RESOLVER"] {
        assert!(names.contains(expected), "the scan missed {expected}: found {names:?}");
    }
}

/// Secure by default: a service without `auth` settings answers every business RPC
/// UNAUTHENTICATED, so manifests that set none make a deployment that serves nothing (as
/// deploy/k8s did before issue 26). The base sets them for every overlay: JWT auth with a
/// JWKS file, an issuer and an audience, and orders' token towards users as a file.
#[test]
fn the_kubernetes_manifests_turn_auth_on_and_give_orders_its_token_towards_users() {
    let settings = kubernetes_settings();
    for service in Service::ALL {
        let file = kubernetes_config_file(service);
        let loads = load_with(service, Some(&file), &settings).unwrap_or_else(|error| panic!("{error}"));
        for loaded in loads {
            let auth = &loaded.config["auth"];
            assert_eq!(auth["mode"], "jwt", "{}: auth.mode in {auth}", service.name());
            for key in ["jwks_file", "issuer", "audience"] {
                assert!(auth[key].is_string(), "{}: auth.{key} is not set by the manifests: {auth}", service.name());
            }
            assert_eq!(auth["audience"], service.name(), "{}: tokens for another audience", service.name());
            if service == Service::Orders {
                let users = &loaded.config["users"];
                assert!(users["token_file"].is_string(), "orders has no users.token_file: {users}");
            }
        }
    }
}

#[test]
fn a_misspelt_section_or_key_or_a_bad_value_is_refused_naming_the_variable_and_where_it_is_set() {
    let cases = [
        ("  USERS_SERVR__HOST: 0.0.0.0\n", "USERS_SERVR__HOST (set at case.yml:1): `servr` is not a config section"),
        ("        - { name: USERS_SERVER__HOSTNAME, value: \"0.0.0.0\" }\n", "USERS_SERVER__HOSTNAME"),
        ("ENV USERS_SERVER__DRAIN_PERIOD=soon\n", "USERS_SERVER__DRAIN_PERIOD"),
    ];
    for (text, expected) in cases {
        let settings = settings_in("case.yml", text);
        let error = load_with(Service::Users, None, &settings).expect_err(text);
        assert!(error.contains(expected), "{text:?} gave {error}");
    }
}

#[test]
fn the_scan_reads_compose_dockerfile_and_kubernetes_env_syntax() {
    let text = "x: &env\n  ORDERS_USERS__RESOLVER: consul\n  e: { <<: *env, ORDERS_REGISTRATION__ADDRESS: orders-1 }\n\
                ENV ORDERS_SERVER__HOST=0.0.0.0 ORDERS_ADMIN__HOST=0.0.0.0\n\
                - name: ORDERS_DATABASE__URL\n  valueFrom:\n\
                - name: ORDERS_LOG__LEVEL\n  value: \"debug,h2=info\"\n\
                - { name: ORDERS_USERS__CONSUL_SERVICE, value: users }\n\
                # ORDERS_IN_A_COMMENT: ignored\n";
    let found: Vec<(String, Option<String>)> =
        settings_in("case", text).into_iter().map(|s| (s.name, s.value)).collect();
    let expected = [
        ("ORDERS_USERS__RESOLVER", Some("consul")),
        ("ORDERS_REGISTRATION__ADDRESS", Some("orders-1")),
        ("ORDERS_SERVER__HOST", Some("0.0.0.0")),
        ("ORDERS_ADMIN__HOST", Some("0.0.0.0")),
        ("ORDERS_DATABASE__URL", None),
        ("ORDERS_LOG__LEVEL", Some("debug,h2=info")),
        ("ORDERS_USERS__CONSUL_SERVICE", Some("users")),
    ]
    .map(|(name, value)| (name.to_owned(), value.map(str::to_owned)));
    assert_eq!(found, expected);
}

/// Asserts that a stop of `service`, `drain_period + shutdown_grace`, is shorter than
/// `limit` in each of its loads by [`load_with`]; `limit_is` names where `limit` is set.
fn assert_stops_within(service: Service, file: Option<&Path>, settings: &[Setting], limit: Duration, limit_is: &str) {
    let loads = load_with(service, file, settings).expect("loads");
    let longest = loads.iter().map(|l| l.drain_and_grace).max().expect("at least one load");
    assert!(longest < limit, "{}: drain_period + shutdown_grace = {longest:?}, not below {limit_is}", service.name());
}

#[test]
fn the_kubernetes_grace_period_outlasts_drain_period_plus_shutdown_grace() {
    let settings = kubernetes_settings();
    // Set in the base Deployments only, so the check below sees every value there is.
    let all = seconds_set(&files_under("deploy/k8s", ".yaml"), "terminationGracePeriodSeconds");
    assert_eq!(all.len(), 2, "only deploy/k8s/base/{{users,orders}}.yaml set terminationGracePeriodSeconds: {all:?}");
    for service in Service::ALL {
        let deployment = PathBuf::from(format!("deploy/k8s/base/{}.yaml", service.name()));
        let [(grace_period, at)] = &seconds_set(&[deployment], "terminationGracePeriodSeconds")[..] else {
            panic!("the {} Deployment sets terminationGracePeriodSeconds once", service.name());
        };
        // The kubelet sends SIGKILL after the grace period: a stop must finish before it.
        let limit_is = format!("terminationGracePeriodSeconds {grace_period} ({at})");
        let file = kubernetes_config_file(service);
        assert_stops_within(service, Some(&file), &settings, Duration::from_secs(*grace_period), &limit_is);
    }
}

#[test]
fn the_compose_stop_grace_period_outlasts_drain_period_plus_shutdown_grace() {
    let settings = compose_settings();
    let grace_periods = seconds_set(&["docker-compose.yml".into()], "stop_grace_period");
    let (shortest, at) = grace_periods.iter().min().expect("docker-compose.yml sets stop_grace_period");
    for service in Service::ALL {
        // Docker sends SIGKILL after stop_grace_period (10s when unset).
        let limit_is = format!("stop_grace_period {shortest}s ({at})");
        assert_stops_within(service, None, &settings, Duration::from_secs(*shortest), &limit_is);
    }
}

#[test]
fn compose_initialises_its_database_with_the_kubernetes_dev_overlay_s_script() {
    let script = "deploy/k8s/overlays/dev/init-databases.sql";
    assert!(root().join(script).is_file(), "{script} exists");
    let compose = fs::read_to_string(root().join("docker-compose.yml")).expect("docker-compose.yml");
    assert!(
        compose.contains(&format!("./{script}:/docker-entrypoint-initdb.d/")),
        "compose's postgres mounts {script}, the one init script both stacks share"
    );
}

/// The repository paths a document names (`crates/...`, `scripts/...`, `deploy/...`,
/// `docs/...`, `proto/...`, `bench/...`), without globs or placeholders, a trailing `:line`
/// or punctuation.
fn paths_named_in(text: &str) -> Vec<String> {
    let roots = ["crates/", "scripts/", "deploy/", "docs/", "proto/", "bench/"];
    text.split(|c: char| c.is_whitespace() || "`()[]\"'|,;".contains(c))
        .map(|word| word.trim_start_matches("./").trim_end_matches(['.', ':']))
        .map(|word| word.split(':').next().unwrap_or(word))
        .filter(|word| roots.iter().any(|root| word.starts_with(root)))
        .filter(|word| !word.contains(['*', '{', '<', '$', '=', '#', '%']))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_repository_path_the_readme_docs_and_deploy_files_name_exists() {
    let mut documents: Vec<PathBuf> =
        ["README.md", "docker-compose.yml", "Makefile", "deploy/Dockerfile"].iter().map(PathBuf::from).collect();
    documents.extend(files_under("docs", "md"));
    // What a build or a test makes where git ignores it (`/bench/go/gen`, ...) is not looked for.
    let gitignore = fs::read_to_string(root().join(".gitignore")).expect(".gitignore");
    let generated: Vec<&str> = gitignore.lines().filter_map(|line| line.strip_prefix('/')).collect();
    // A path may name files by their common stem (`bench/results/2026-12-06T1252Z` for its .md, .json, .svg).
    let exists = |path: &str| {
        let path = root().join(path);
        let stem = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        path.exists()
            || fs::read_dir(path.parent().expect("a parent")).is_ok_and(|mut entries| {
                entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(&stem)))
            })
    };
    let mut named = 0;
    let mut missing = Vec::new();
    for document in &documents {
        let text = fs::read_to_string(root().join(document)).expect("a document");
        for path in paths_named_in(&text) {
            named += 1;
            if !generated.iter().any(|dir| path.starts_with(dir)) && !exists(&path) {
                missing.push(format!("{}: {path}", document.display()));
            }
        }
    }
    assert!(named >= 50, "the scan found only {named} paths");
    assert!(missing.is_empty(), "named but not in the repository:\n{}", missing.join("\n"));
}
