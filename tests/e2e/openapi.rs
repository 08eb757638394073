//! The OpenAPI description (issue 17), from a real server: served at
//! `/v1/openapi.json` behind the token; valid OpenAPI 3.1 for
//! `openapi-spec-validator`; true to the server: what it says needs the
//! token does, and real answers (successes and errors, each kind of
//! request) have described statuses and bodies valid against their
//! described schemas, error codes included (`tests/openapi/check_answers.py`).
//!
//! That every route of the router is described, and every described
//! method routed, is a unit test of quorum-server (`api::tests`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::util::*;

const TOKEN: &str = "openapi-e2e-token-51c9";
/// The validator and the checker of answers may take this long.
const TOOL_DEADLINE: Duration = Duration::from_secs(60);
/// The paths open without a token.
const OPEN: [&str; 2] = ["/healthz", "/readyz"];

/// The served description, with the token.
fn description(server: &Server) -> Value {
    let resp = server.get("/v1/openapi.json");
    resp.expect_status(200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    resp.json()
}

/// Runs `openapi-spec-validator --schema 3.1` on `doc`, saved as `name`.
fn validate(server: &Server, doc: &Value, name: &str) -> Run {
    let validator = venv_bin().join("openapi-spec-validator");
    require_file(&validator, "openapi-spec-validator");
    let path = server.file(name);
    fs::write(&path, doc.to_string()).expect("save the description");
    run_bounded(
        Command::new(&validator)
            .args(["--schema", "3.1"])
            .arg(&path),
        None,
        &server.file(&format!("logs/{name}.validator.log")),
        TOOL_DEADLINE,
    )
}

/// Every operation of the description: path, method, the operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item");
            item.iter()
                .map(|(method, op)| (path.clone(), method.clone(), op.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The description is served behind the token, passes a real OpenAPI 3.1
/// validator (which refuses a broken copy of it), and says which
/// operations need the token as the server has it: each of those answers
/// 401 without one, the probes do not.
#[test]
fn the_description_is_valid_openapi_3_1_and_its_auth_is_the_servers() {
    let config = format!("[auth]\ntoken = \"{TOKEN}\"\n{}", abc_volume("1MiB", ""));
    let mut server = Sandbox::new().serve(&config);
    server
        .get("/v1/openapi.json")
        .expect_error(401, "unauthorized");
    server.set_token(Some(TOKEN));
    let doc = description(&server);
    assert_eq!(doc["openapi"], "3.1.0", "{}", doc["openapi"]);

    validate(&server, &doc, "openapi.json").expect_success("openapi-spec-validator");
    let mut broken = doc.clone();
    broken["paths"]["/v1/volumes"]["get"]["responses"] = json!("none");
    let refused = validate(&server, &broken, "broken-openapi.json");
    assert!(
        !refused.success(),
        "the validator passed a broken description: {}",
        refused.output
    );

    server.set_token(None);
    let ops = operations(&doc);
    assert!(ops.len() >= 25, "only {} operations described", ops.len());
    let mut open = vec![];
    for (path, method, op) in &ops {
        let is_open = op["security"] == json!([{}]);
        if is_open {
            open.push(path.as_str());
        }
        assert_eq!(
            op["responses"].get("401").is_some(),
            !is_open,
            "{method} {path}: a 401 is described iff the token is needed"
        );
        let uri = path
            .replace("{vol}", "vm")
            .replace("{name}", "a")
            .replace("{id}", "1");
        let method =
            Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("an HTTP method");
        let status = if uri == "/v1/events/stream" {
            // The stream never ends: its status is all there is to read.
            server
                .request(method.clone(), &uri)
                .send()
                .expect("open the event stream")
                .status()
                .as_u16()
        } else {
            server.send(server.request(method.clone(), &uri)).status
        };
        if is_open {
            assert_ne!(status, 401, "{method} {uri} is described as open");
        } else {
            assert_eq!(
                status, 401,
                "{method} {uri} is described as needing the token"
            );
        }
    }
    assert_eq!(open, OPEN, "the operations open without a token");
}

/// The answers seen, as `check_answers.py` reads them.
struct Answers {
    list: Vec<Value>,
}

impl Answers {
    /// Records the answer to `method uri`, described at `path`.
    fn record(&mut self, path: &str, resp: &Resp) -> &mut Self {
        let method = resp
            .request
            .split(' ')
            .next()
            .expect("a method")
            .to_ascii_lowercase();
        let content_type = resp.header("content-type").unwrap_or("").to_owned();
        let mut answer = json!({
            "path": path,
            "method": method,
            "status": resp.status,
            "content_type": content_type,
        });
        if content_type == "application/json" {
            answer["body"] = resp.json();
        }
        self.list.push(answer);
        self
    }

    /// Records a status seen without its body.
    fn record_status(&mut self, path: &str, method: &str, status: u16) {
        self.list
            .push(json!({ "path": path, "method": method, "status": status }));
    }
}

/// The error code of an answer, for messages.
fn code(resp: &Resp) -> String {
    error_code(&resp.body)
}

/// Sends one request of each kind, successes and errors (a quorum failure
/// with its failed children, a scrub, a child added and removed, limits
/// set and refused), and checks every answer against the description.
#[test]
fn real_answers_have_described_statuses_and_schemas() {
    let sandbox = Sandbox::new();
    let faulty = fault(
        "read",
        &[
            "offset = \"512KiB\"",
            "length = \"4KiB\"",
            "error = \"EIO\"",
        ],
    );
    let config = format!(
        "child_roots = [\".\"]\n[auth]\ntoken = \"{TOKEN}\"\n{}",
        volume(
            "vm",
            "1MiB",
            2,
            "",
            &[
                child_with("a", &faulty),
                child_with("b", &faulty),
                child("c")
            ]
        )
    );
    let mut server = sandbox.serve(&config);
    server.set_token(Some(TOKEN));
    let doc = description(&server);
    let mut a = Answers { list: vec![] };
    let vol = "/v1/volumes/{vol}";
    let data = "/v1/volumes/{vol}/data";

    a.record("/healthz", &server.get("/healthz"));
    a.record("/readyz", &server.get("/readyz"));
    a.record("/metrics", &server.get("/metrics"));
    a.record("/v1/openapi.json", &server.get("/v1/openapi.json"));
    a.record("/v1/volumes", &server.get("/v1/volumes"));
    a.record(vol, &server.get("/v1/volumes/vm"));
    a.record(vol, &server.get("/v1/volumes/nope"));
    a.record("/v1/child-states", &server.get("/v1/child-states"));
    a.record("/v1/event-kinds", &server.get("/v1/event-kinds"));

    a.record(
        data,
        &server.put("/v1/volumes/vm/data?offset=0", pattern(1, 8192)),
    );
    a.record(data, &server.put("/v1/volumes/vm/data", pattern(1, 10)));
    a.record(
        data,
        &server.put("/v1/volumes/vm/data?offset=1048570", pattern(1, 10)),
    );
    a.record(
        data,
        &server.get_range("/v1/volumes/vm/data", "bytes=0-4095"),
    );
    a.record(data, &server.get("/v1/volumes/vm/data"));
    a.record(data, &server.head("/v1/volumes/vm/data"));
    let failed = server.get_range("/v1/volumes/vm/data", "bytes=524288-528383");
    assert_eq!(
        failed.status,
        503,
        "a read over two failing children: {}",
        code(&failed)
    );
    a.record(data, &failed);
    let range = "?offset=8192&length=4096";
    a.record(
        "/v1/volumes/{vol}/write-zeroes",
        &server.post(&format!("/v1/volumes/vm/write-zeroes{range}")),
    );
    a.record(
        "/v1/volumes/{vol}/discard",
        &server.post(&format!("/v1/volumes/vm/discard{range}")),
    );
    a.record(
        "/v1/volumes/{vol}/flush",
        &server.post("/v1/volumes/vm/flush"),
    );
    let bs = "/v1/volumes/{vol}/block-status";
    a.record(
        bs,
        &server.get("/v1/volumes/vm/block-status?offset=0&length=1048576"),
    );
    a.record(
        bs,
        &server.get("/v1/volumes/vm/block-status?offset=0&length=2097152"),
    );
    a.record(bs, &server.get("/v1/volumes/vm/block-status?offset=0"));

    let limits = "/v1/volumes/{vol}/limits";
    a.record(limits, &server.get("/v1/volumes/vm/limits"));
    let put_json = |path: &str, body: Value| {
        server.send(
            server
                .request(Method::PUT, path)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
    };
    a.record(
        limits,
        &put_json("/v1/volumes/vm/limits", json!({ "iops_total": 100_000 })),
    );
    a.record(
        limits,
        &put_json("/v1/volumes/vm/limits", json!({ "bogus": 1 })),
    );
    a.record(limits, &put_json("/v1/volumes/vm/limits", json!({})));
    a.record(
        "/v1/volumes/{vol}/stats",
        &server.get("/v1/volumes/vm/stats"),
    );
    let history = "/v1/volumes/{vol}/history";
    a.record(history, &server.get("/v1/volumes/vm/history"));
    a.record(history, &server.get("/v1/volumes/vm/history?since=x"));
    a.record(
        "/v1/volumes/{vol}/resume",
        &server.post("/v1/volumes/vm/resume"),
    );

    let damage = "/v1/volumes/{vol}/children/{name}/damage";
    a.record(damage, &server.get("/v1/volumes/vm/children/a/damage"));
    a.record(damage, &server.get("/v1/volumes/vm/children/zz/damage"));

    let post_json = |path: &str, body: Value| {
        server.send(
            server
                .request(Method::POST, path)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
    };
    let scrub = post_json("/v1/volumes/vm/scrub", json!({ "repair": false }));
    assert_eq!(scrub.status, 202, "start a scrub: {}", code(&scrub));
    a.record("/v1/volumes/{vol}/scrub", &scrub);
    a.record(
        "/v1/volumes/{vol}/scrub",
        &post_json("/v1/volumes/vm/scrub", json!({ "repair": "yes" })),
    );
    let job = "/v1/volumes/{vol}/jobs/{id}";
    wait_until("the scrub ends", || {
        server.get("/v1/volumes/vm/jobs/1").json()["state"] != "running"
    });
    a.record("/v1/volumes/{vol}/jobs", &server.get("/v1/volumes/vm/jobs"));
    a.record(job, &server.get("/v1/volumes/vm/jobs/1"));
    a.record(job, &server.get("/v1/volumes/vm/jobs/x"));
    a.record(
        job,
        &server.send(server.request(Method::DELETE, "/v1/volumes/vm/jobs/1")),
    );
    a.record(
        job,
        &server.send(server.request(Method::DELETE, "/v1/volumes/vm/jobs/99")),
    );

    let children = "/v1/volumes/{vol}/children";
    let added = post_json(
        "/v1/volumes/vm/children",
        json!({ "name": "d", "uri": "d.img" }),
    );
    assert_eq!(added.status, 201, "add a child: {}", added.preview());
    a.record(children, &added);
    a.record(
        children,
        &post_json("/v1/volumes/vm/children", json!({ "name": "e" })),
    );
    let child = "/v1/volumes/{vol}/children/{name}";
    a.record(
        child,
        &server.send(server.request(Method::DELETE, "/v1/volumes/vm/children/d")),
    );
    a.record(
        child,
        &server.send(server.request(Method::DELETE, "/v1/volumes/vm/children/zz")),
    );

    a.record("/v1/events", &server.get("/v1/events"));
    a.record("/v1/events", &server.get("/v1/events?limit=x"));
    let stream = server
        .request(Method::GET, "/v1/events/stream")
        .send()
        .expect("open the event stream");
    a.record_status("/v1/events/stream", "get", stream.status().as_u16());
    drop(stream);
    a.record(
        "/v1/events/stream",
        &server.get("/v1/events/stream?since=x"),
    );

    server.set_token(None);
    a.record("/v1/volumes", &server.get("/v1/volumes"));

    let answers = server.file("answers.json");
    fs::write(&answers, Value::Array(a.list.clone()).to_string()).expect("save the answers");
    let described = server.file("openapi.json");
    fs::write(&described, doc.to_string()).expect("save the description");
    let run = check_answers(&described, &answers, &server.file("logs/check_answers.log"));
    run.expect_success("check_answers.py");
    let checked = format!("{} answers checked, 0 problems", a.list.len());
    assert!(run.output.contains(&checked), "{}", run.output);
    // Every operation was exercised.
    for (path, method, _) in operations(&doc) {
        assert!(
            a.list
                .iter()
                .any(|x| x["path"] == path.as_str() && x["method"] == method.as_str()),
            "no answer to {method} {path} was checked"
        );
    }
}

/// Runs `tests/openapi/check_answers.py` with the venv's Python (its
/// jsonschema comes with openapi-spec-validator).
fn check_answers(doc: &Path, answers: &Path, log: &Path) -> Run {
    let python: PathBuf = venv_bin().join("python3");
    require_file(
        &venv_bin().join("openapi-spec-validator"),
        "openapi-spec-validator",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/check_answers.py");
    run_bounded(
        Command::new(&python).arg(&script).arg(doc).arg(answers),
        None,
        log,
        TOOL_DEADLINE,
    )
}

/// The checker is no rubber stamp: an undescribed status, a body that
/// breaks its schema and an error code the operation does not list are
/// each a problem.
#[test]
fn the_answer_checker_refuses_what_the_description_does_not_say() {
    let config = format!("[auth]\ntoken = \"{TOKEN}\"\n{}", abc_volume("1MiB", ""));
    let mut server = Sandbox::new().serve(&config);
    server.set_token(Some(TOKEN));
    let doc = description(&server);
    let described = server.file("openapi.json");
    fs::write(&described, doc.to_string()).expect("save the description");
    let wrong = [
        json!({ "path": "/v1/volumes", "method": "get", "status": 418,
                "content_type": "application/json", "body": [] }),
        json!({ "path": "/v1/volumes/{vol}/jobs", "method": "get", "status": 200,
                "content_type": "application/json", "body": [{ "id": "one" }] }),
        json!({ "path": "/v1/volumes/{vol}/flush", "method": "post", "status": 404,
                "content_type": "application/json",
                "body": { "error": { "code": "no_such_child", "message": "m" } } }),
    ];
    for (i, answer) in wrong.iter().enumerate() {
        let answers = server.file(&format!("wrong-{i}.json"));
        fs::write(&answers, json!([answer]).to_string()).expect("save an answer");
        let run = check_answers(
            &described,
            &answers,
            &server.file(&format!("logs/wrong-{i}.log")),
        );
        assert!(
            !run.success() && run.output.contains("1 answers checked, 1 problems"),
            "the checker passed {answer}: {}",
            run.output
        );
    }
}
