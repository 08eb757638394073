//! The dashboard: `dashboard/` at the repository root, embedded in the
//! binary at build time and served at `/` and `/dashboard/...`, so it works
//! offline and needs no build step. Its script is ES modules (`main.js`
//! importing `api.js`, `model.js`, ...) served as they are. The page holds
//! no data, so it needs no token; it asks for one when the API answers 401.
//!
//! [`FILES`] is the one list of what is embedded: the routes and
//! [`is_asset`] (which opens them without a token) both read it, and a test
//! checks it against the directory and the modules' imports.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// `("/dashboard/NAME", content type, the file's text)`.
macro_rules! dashboard_file {
    ($name:literal, $content_type:expr) => {
        (
            concat!("/dashboard/", $name),
            $content_type,
            include_str!(concat!("../../../dashboard/", $name)),
        )
    };
}

/// Every file the dashboard serves: URL path, content type, contents.
pub const FILES: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("../../../dashboard/index.html")),
    dashboard_file!("style.css", CSS),
    dashboard_file!("main.js", JS),
    dashboard_file!("api.js", JS),
    dashboard_file!("sse.js", JS),
    dashboard_file!("model.js", JS),
    dashboard_file!("events.js", JS),
    dashboard_file!("format.js", JS),
    dashboard_file!("dom.js", JS),
    dashboard_file!("volumes.js", JS),
    dashboard_file!("damage.js", JS),
    dashboard_file!("jobs.js", JS),
    dashboard_file!("replicas.js", JS),
    dashboard_file!("history.js", JS),
    dashboard_file!("chart.js", JS),
    dashboard_file!("feed.js", JS),
];

/// Whether `path` is one of the dashboard's own files (served without a token).
pub fn is_asset(path: &str) -> bool {
    FILES.iter().any(|&(p, _, _)| p == path)
}

/// The dashboard's routes: one per file of [`FILES`].
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || asset(content_type, body)))
        })
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    fn dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboard")
    }

    /// Every file of `dashboard/` but the tests and node's package.json is
    /// embedded, and nothing else.
    #[test]
    fn files_lists_the_directory() {
        let on_disk: BTreeSet<String> = std::fs::read_dir(dir())
            .expect("read dashboard/")
            .map(|e| {
                e.expect("a dashboard/ entry")
                    .file_name()
                    .into_string()
                    .expect("a UTF-8 name")
            })
            .filter(|n| !n.ends_with(".test.js") && n != "package.json")
            .collect();
        let listed: BTreeSet<String> = FILES
            .iter()
            .map(|&(p, _, _)| match p {
                "/" => "index.html".to_owned(),
                p => p.trim_start_matches("/dashboard/").to_owned(),
            })
            .collect();
        assert_eq!(listed, on_disk, "FILES against dashboard/");
    }

    /// A module is JavaScript to the browser, and every module it imports is served.
    #[test]
    fn modules_are_javascript_and_their_imports_are_served() {
        for &(path, content_type, body) in FILES {
            if !path.ends_with(".js") {
                continue;
            }
            assert!(
                content_type.starts_with("text/javascript"),
                "{path}: {content_type}"
            );
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let from = line
                    .rsplit_once(" from '")
                    .and_then(|(_, rest)| rest.strip_suffix("';"))
                    .unwrap_or_else(|| panic!("{path}: an import not on one line: {line}"));
                let target = format!("/dashboard/{}", from.trim_start_matches("./"));
                assert!(
                    is_asset(&target),
                    "{path} imports {from}, which is not in FILES"
                );
            }
        }
        let index = FILES[0].2;
        assert!(index.contains(r#"<script type="module" src="/dashboard/main.js">"#));
    }
}
