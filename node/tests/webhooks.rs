//! Webhooks end to end: three real nodes with identity enforced, a real HTTP receiver started
//! by the test, skopeo pushing and pulling.
//!
//! - A tenancy administrator's endpoint (push, pull, delete, tag) receives a skopeo push as a
//!   `push` and a `tag` event and a pull as a `pull` event, in CNCF distribution's envelope
//!   (`application/vnd.docker.distribution.events.v1+json`), each delivery signed with the
//!   secret the registry made (HMAC-SHA256 over the body, checked here).
//! - The receiver goes down; a push and a tag deletion happen; the endpoint's delivery log shows
//!   the failed attempts and the events stay queued. The leader is killed, so another node
//!   delivers; the receiver comes back, the clocks move past the back-off, and the events
//!   produced while it was down arrive.
//! - No event arrives twice; the queue ends empty; a ping reaches the endpoint; an endpoint for
//!   another repository receives nothing; hostile endpoint settings are refused with 400.
//!
//! Polled with deadlines, never slept for.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use support::cluster::Cluster;
use support::free_port;
use support::oci::{skopeo, umoci_image};
use support::tools::{need, wait_until};

const THREE: [(u64, &str); 3] = [(1, "fd1"), (2, "fd2"), (3, "fd3")];
const ADMIN: &str = "webhooks-admin-token-0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(120);

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A real HTTP/1.1 server on a fixed port that records every POST and answers 200; it can be
/// stopped (connections are then refused) and started again on the same port.
struct Receiver {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16, got: Arc<Mutex<Vec<Delivery>>>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, got2) = (stop.clone(), got.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    if let Some(d) = read_request(stream) {
                        got2.lock().unwrap().push(d);
                    }
                }
            }
        });
        Receiver {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Reads one request (head and Content-Length body), answers 200 and closes.
fn read_request(stream: TcpStream) -> Option<Delivery> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST ") {
        return None;
    }
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Some(Delivery { headers, body })
}

fn curl(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string);
    let basic = format!("keelson/admin:{ADMIN}");
    support::tools::curl_json(method, url, body.as_deref(), "application/json", Some(&basic))
}

fn api(method: &str, host: &str, path: &str, body: Option<Value>) -> Value {
    let (status, value) = curl(method, &format!("http://{host}{path}"), body.as_ref());
    assert!((200..300).contains(&status), "{method} {path}: {status} {value}");
    value
}

/// Every event of every delivery, after checking each delivery's signature with `secret`.
fn events(got: &Mutex<Vec<Delivery>>, secret: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for d in got.lock().unwrap().iter() {
        assert_eq!(
            d.headers.get("content-type").map(String::as_str),
            Some("application/vnd.docker.distribution.events.v1+json")
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&d.body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(
            d.headers.get("x-keelson-signature-256"),
            Some(&want),
            "a delivery signed with the endpoint's secret"
        );
        let envelope: Value = serde_json::from_slice(&d.body).expect("a JSON envelope");
        out.extend(envelope["events"].as_array().expect("events").iter().cloned());
    }
    out
}

fn has(events: &[Value], action: &str, tag: Option<&str>, digest: Option<&str>) -> bool {
    events.iter().any(|e| {
        e["action"] == action
            && e["target"]["repository"] == "acme/app"
            && tag.is_none_or(|t| e["target"]["tag"] == t)
            && digest.is_none_or(|d| e["target"]["digest"] == d)
    })
}

/// The leader the live nodes `ids` agree on (the cluster keeps its dead members as voters).
fn leader_among(cluster: &Cluster, ids: &[u64]) -> u64 {
    cluster.wait("a leader among the live nodes", LIMIT, || {
        let leaders: BTreeSet<u64> = ids
            .iter()
            .map(|id| cluster.status(*id).map(|s| s["leader"].as_u64().unwrap_or(0)))
            .collect::<Result<_, _>>()?;
        match leaders.iter().collect::<Vec<_>>()[..] {
            [leader] if ids.contains(leader) => Ok(*leader),
            _ => Err(format!("leaders seen: {leaders:?}")),
        }
    })
}

#[test]
fn webhooks_deliver_signed_events_through_outages_and_leader_changes() {
    need("skopeo");
    need("umoci");
    need("curl");
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::form(tmp.path(), &THREE, |_| {
        vec![
            ("KEELSON_AUTH".to_string(), "enforce".to_string()),
            ("KEELSON_BOOTSTRAP_TOKEN".to_string(), ADMIN.to_string()),
            ("KEELSON_TEST_CLOCK".to_string(), "true".to_string()),
            ("KEELSON_WEBHOOK_POLL_MS".to_string(), "100".to_string()),
            ("KEELSON_PULL_FLUSH_MS".to_string(), "200".to_string()),
        ]
    });
    let host = cluster.node(1).host();
    api("POST", &host, "/api/v1/tenancies", Some(json!({ "namespace": "acme" })));

    // --- Hostile settings are refused --------------------------------------------------------------
    for bad in [
        json!({ "url": "ftp://x.test/", "events": ["push"] }),
        json!({ "url": "http://x.test/", "events": ["everything"] }),
        json!({ "url": "http://x.test/", "events": [] }),
        json!({ "url": "http://x.test/", "events": ["push"], "repositories": ["other/app"] }),
        json!({ "url": "http://x.test/", "events": ["push"], "secret": "" }),
        json!({ "url": format!("http://x.test/{}", "a".repeat(5000)), "events": ["push"] }),
    ] {
        let (status, answer) = curl(
            "PUT",
            &format!("http://{host}/api/v1/tenancies/acme/webhooks/bad"),
            Some(&bad),
        );
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(answer["errors"][0]["message"].is_string(), "an OCI error: {answer}");
    }
    let (status, _) = curl(
        "PUT",
        &format!("http://{host}/api/v1/tenancies/acme/webhooks/Bad%20Name"),
        Some(&json!({ "url": "http://x.test/", "events": ["push"] })),
    );
    assert_eq!(status, 400);

    // --- Endpoints ----------------------------------------------------------------------------------
    let port = free_port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(port, got.clone());
    let created = api(
        "PUT",
        &host,
        "/api/v1/tenancies/acme/webhooks/ci",
        Some(json!({
            "url": format!("http://127.0.0.1:{port}/hook"),
            "events": ["push", "pull", "delete", "tag"],
        })),
    );
    let secret = created["secret"]
        .as_str()
        .expect("a secret made and answered once")
        .to_string();
    assert_eq!(secret.len(), 64);
    assert_eq!(created["queued"], 0);
    let other_port = free_port();
    let other_got = Arc::new(Mutex::new(Vec::new()));
    let other = Receiver::start(other_port, other_got.clone());
    api(
        "PUT",
        &host,
        "/api/v1/tenancies/acme/webhooks/other",
        Some(json!({
            "url": format!("http://127.0.0.1:{other_port}/"),
            "events": ["push"],
            "repositories": ["acme/elsewhere"],
            "secret": "other-secret",
        })),
    );
    let listed = api("GET", &host, "/api/v1/tenancies/acme/webhooks", None);
    let names: Vec<&str> = listed["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci", "other"]);
    assert!(listed.to_string().find(&secret).is_none(), "secrets are never listed");

    // --- A push and a pull ----------------------------------------------------------------------------
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let layout = work.join("layout");
    umoci_image(&work, &layout, "v1", "amd64", 64 << 10, 2, LIMIT);
    umoci_image(&work, &layout, "v2", "amd64", 64 << 10, 2, LIMIT);
    let creds = format!("keelson/admin:{ADMIN}");
    let push = |tag: &str| {
        cluster.run(
            skopeo(&work)
                .args(["copy", "--dest-tls-verify=false", "--dest-creds", &creds])
                .arg(format!("oci:{}:{tag}", layout.display()))
                .arg(format!("docker://{host}/acme/app:{tag}")),
            LIMIT,
        );
    };
    push("v1");
    let digest_of = |tag: &str| -> String {
        let answer = api("GET", &host, "/api/v1/repos/acme/app/images", None);
        answer["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["tags"].as_array().is_some_and(|t| t.iter().any(|x| x == tag)))
            .and_then(|i| i["digest"].as_str())
            .unwrap_or_else(|| panic!("an image tagged {tag}: {answer}"))
            .to_string()
    };
    let v1 = digest_of("v1");
    cluster.run(
        skopeo(&work)
            .args(["inspect", "--raw", "--tls-verify=false", "--creds", &creds])
            .arg(format!("docker://{host}/acme/app:v1")),
        LIMIT,
    );
    wait_until("push, tag and pull events of v1", LIMIT, || {
        let all = events(&got, &secret);
        if has(&all, "push", Some("v1"), Some(&v1))
            && has(&all, "tag", Some("v1"), Some(&v1))
            && has(&all, "pull", Some("v1"), Some(&v1))
        {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    });
    let all = events(&got, &secret);
    let pushed = all.iter().find(|e| e["action"] == "push").unwrap();
    assert_eq!(pushed["actor"]["name"], "keelson/admin");
    assert_eq!(pushed["request"]["method"], "PUT");
    assert!(
        pushed["request"]["useragent"].as_str().unwrap().contains("skopeo"),
        "{pushed}"
    );
    assert_eq!(
        pushed["target"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(pushed["target"]["size"].as_u64().unwrap() > 0);
    assert_eq!(
        pushed["target"]["url"],
        format!("http://{host}/v2/acme/app/manifests/{v1}")
    );

    // --- The receiver goes down: a push and a tag deletion wait in the queue ------------------------
    receiver.stop();
    let before = got.lock().unwrap().len();
    push("v2");
    let v2 = digest_of("v2");
    api("DELETE", &host, "/api/v1/repos/acme/app/tags/v1", None);
    let hook = cluster.wait("a failed delivery in the log", LIMIT, || {
        let hook = api("GET", &host, "/api/v1/tenancies/acme/webhooks/ci", None);
        let failed = hook["attempts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["error"].is_string() && x["status"].is_null()));
        if failed && hook["failures"].as_u64() >= Some(1) && hook["queued"].as_u64() >= Some(2) {
            Ok(hook)
        } else {
            Err(hook.to_string())
        }
    });
    assert!(hook["next_attempt_ms"].as_u64().unwrap() > 0, "backing off: {hook}");
    assert_eq!(got.lock().unwrap().len(), before, "nothing reached a stopped receiver");

    // --- The leader dies; another node delivers once the receiver is back ---------------------------
    let leader = cluster.wait_converged("one leader", &[1, 2, 3], LIMIT);
    cluster.node_mut(leader).kill();
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    leader_among(&cluster, &rest);
    let live = cluster.node(rest[0]).host();
    let receiver = Receiver::start(port, got.clone());
    for id in &rest {
        api(
            "PUT",
            &cluster.node(*id).host(),
            "/api/v1/cluster/clock",
            Some(json!({ "offset_ms": 600_000 })),
        );
    }
    wait_until("the events produced while the receiver was down", LIMIT, || {
        let all = events(&got, &secret);
        if has(&all, "push", Some("v2"), Some(&v2)) && has(&all, "delete", Some("v1"), Some(&v1)) {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    });
    api("POST", &live, "/api/v1/tenancies/acme/webhooks/ci/ping", None);
    wait_until("a ping", LIMIT, || {
        let all = events(&got, &secret);
        if all.iter().any(|e| e["action"] == "ping") {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    });

    // --- Exactly once here, nothing left, nothing elsewhere ------------------------------------------
    let all = events(&got, &secret);
    let ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "no event twice: {ids:?}");
    let hook = cluster.wait("the queue emptied", LIMIT, || {
        let hook = api("GET", &live, "/api/v1/tenancies/acme/webhooks/ci", None);
        if hook["queued"] == 0 && hook["failures"] == 0 {
            Ok(hook)
        } else {
            Err(hook.to_string())
        }
    });
    assert_eq!(hook["delivered"].as_u64(), Some(all.len() as u64), "{hook}");
    assert_eq!(hook["attempts"][0]["status"], 200, "the newest attempt first: {hook}");
    assert!(
        other_got.lock().unwrap().is_empty(),
        "the other endpoint wants another repository"
    );

    // An endpoint removed takes its queue with it.
    api("DELETE", &live, "/api/v1/tenancies/acme/webhooks/other", None);
    let (status, _) = curl(
        "GET",
        &format!("http://{live}/api/v1/tenancies/acme/webhooks/other"),
        None,
    );
    assert_eq!(status, 404);
    receiver.stop();
    other.stop();
}
