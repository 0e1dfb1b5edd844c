//! One trace per hit: a hit sent through the web tier (wasmtime or Spin) with a
//! known `traceparent` is found, in the spans a small OTLP/HTTP receiver got,
//! under that trace id: the hit's wait in the gateway, its group commit and the
//! store's write, each the child of the one before, back to the caller's span
//! (through the gateway's request span under wasmtime); under Spin, Spin's own
//! request span in the same trace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use e2e::{
    Artifacts, Backend, Gateway, Runtime, Setup, Web, http_client, on_every_backend,
    on_every_runtime_and_backend,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message;

on_every_runtime_and_backend!(a_hits_trace_holds_the_gateways_spans);
on_every_backend!(hits_of_one_call_keep_their_own_traces);

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
    /// `trace_id-span_id` of each linked span.
    links: Vec<String>,
}

/// An OTLP/HTTP receiver (protobuf, as the gateway and Spin send it) that keeps
/// every span it is sent.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            // Spin also sends metrics and logs to the same endpoint.
            .fallback(|| async { StatusCode::OK })
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the receiver");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the receiver runs");
        });
        Receiver { url, spans, server }
    }

    fn trace(&self, trace_id: &str) -> Vec<Span> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the spans received so far.
    async fn wait_until(&self, what: &str, done: impl Fn(&[Span]) -> bool) {
        let started = Instant::now();
        while !done(&self.all()) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {what} within 30 s; the receiver got:\n{}",
                show(&self.all())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(spans): State<Arc<Mutex<Vec<Span>>>>,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| attributes(&r.attributes).remove("service.name"))
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(Span {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes: attributes(&span.attributes),
                links: span
                    .links
                    .iter()
                    .map(|l| format!("{}-{}", hex(&l.trace_id), hex(&l.span_id)))
                    .collect(),
            });
        }
    }
    spans.lock().unwrap().extend(received);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans as a tree, children under their parents, for the test's output.
fn show(spans: &[Span]) -> String {
    fn walk(spans: &[Span], parent: &str, depth: usize, out: &mut String) {
        for span in spans.iter().filter(|s| s.parent_span_id == parent) {
            let mut attributes: Vec<_> = span
                .attributes
                .iter()
                .filter(|(k, _)| {
                    [
                        "batch.",
                        "hits.",
                        "counter.",
                        "db.",
                        "http.route",
                        "http.response",
                    ]
                    .iter()
                    .any(|p| k.starts_with(p))
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            attributes.sort();
            out.push_str(&format!(
                "{:indent$}{} [{}] span {} {}{}\n",
                "",
                span.name,
                span.service,
                span.span_id,
                attributes.join(" "),
                if span.links.is_empty() {
                    String::new()
                } else {
                    format!(" links {:?}", span.links)
                },
                indent = 2 * depth
            ));
            walk(spans, &span.span_id, depth + 1, out);
        }
    }
    let mut out = String::new();
    let ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut roots: Vec<&str> = spans
        .iter()
        .map(|s| s.parent_span_id.as_str())
        .filter(|p| !ids.contains(p))
        .collect();
    roots.sort_unstable();
    roots.dedup();
    for root in roots {
        out.push_str(&format!("(parent {root:?}, not exported here)\n"));
        walk(spans, root, 1, &mut out);
    }
    out
}

fn random_hex(len: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..len].to_owned()
}

/// The spans from `span` up to the caller's, by parent ids; panics if the chain
/// breaks before reaching `root`.
fn ancestry<'a>(trace: &'a [Span], span: &'a Span, root: &str) -> Vec<&'a Span> {
    let mut chain = vec![span];
    let mut parent = span.parent_span_id.as_str();
    while parent != root {
        let next = trace
            .iter()
            .find(|s| s.span_id == parent)
            .unwrap_or_else(|| {
                panic!(
                    "span {parent} is not in the trace; the trace:\n{}",
                    show(trace)
                )
            });
        chain.push(next);
        parent = &next.parent_span_id;
    }
    chain
}

/// What sends spans to `receiver`, every 100 ms instead of every 5 s.
fn export_to(receiver: &Receiver) -> [(&'static str, &str); 2] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]
}

async fn a_hits_trace_holds_the_gateways_spans(setup: Setup) {
    let receiver = Receiver::start().await;
    let otel = export_to(&receiver);
    let dir = tempfile::tempdir().expect("a temp dir");
    let _turn = setup.backend.exclusive().await;
    let gateway =
        Gateway::start_with(setup.backend, &dir.path().join("data"), dir.path(), &otel).await;
    let web = Web::serve_with(
        setup.runtime,
        &Artifacts::get().component,
        &gateway.url,
        &format!("e2e-traced-{}", random_hex(8)),
        dir.path(),
        &[],
        &otel,
    )
    .await;

    let (trace_id, caller_span) = (random_hex(32), random_hex(16));
    let client = http_client();
    let response = client
        .get(format!("{}/", web.url))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .header("tracestate", "e2e=caller")
        .send()
        .await
        .expect("GET /");
    assert_eq!(response.status(), 200);
    e2e::seen_by(&response.text().await.unwrap());
    // And one hit with no trace of its own: the gateway starts one for it.
    let untraced = client.get(format!("{}/", web.url)).send().await.unwrap();
    assert_eq!(untraced.status(), 200);

    let store_write = |s: &Span| s.service == "aerospike-gateway" && s.name == "store record_hits";
    receiver
        .wait_until("store spans for both hits", |spans| {
            spans.iter().filter(|s| store_write(s)).count() >= 2
                && (setup.runtime == Runtime::Wasmtime
                    || spans.iter().any(|s| {
                        s.trace_id == trace_id
                            && s.service != "aerospike-gateway"
                            && s.parent_span_id == caller_span
                    }))
        })
        .await;
    let trace = receiver.trace(&trace_id);
    eprintln!(
        "the receiver's spans of trace {trace_id} ({:?}):\n{}",
        setup.runtime,
        show(&trace)
    );

    // The gateway's part of the hit's trace: one store write, in one group
    // commit, of one hit, continued from the caller.
    let all = receiver.all();
    let writes: Vec<&Span> = trace.iter().filter(|s| store_write(s)).collect();
    assert_eq!(
        writes.len(),
        1,
        "one write in the trace:\n{}\nall spans:\n{}",
        show(&trace),
        show(&all)
    );
    let chain = ancestry(&trace, writes[0], &caller_span);
    let names: Vec<&str> = chain.iter().map(|s| s.name.as_str()).collect();
    let [write, commit, hit] = chain[..3] else {
        panic!("{names:?}");
    };
    assert_eq!(
        names[..3],
        ["store record_hits", "group commit", "record hit"],
        "{}",
        show(&trace)
    );
    assert!(chain.iter().all(|s| s.service == "aerospike-gateway"));
    assert_eq!(write.attributes["db.operation.name"], "record_hits");
    assert_eq!(commit.attributes["batch.size"], "1");
    assert_eq!(commit.attributes["hits.counted"], "1");
    assert_eq!(commit.attributes["hits.duplicate"], "0");
    assert_eq!(commit.attributes["counter.kind"], "tutorial");
    assert_eq!(hit.attributes["counter.kind"], "tutorial");

    let request_of = |s: &Span| {
        s.service == "aerospike-gateway"
            && s.name == "POST /v1/hits/batch"
            && s.attributes["http.response.status_code"] == "200"
    };
    match setup.runtime {
        // The call's traceparent header, as the component forwarded it, makes the
        // gateway's request span the hit's parent, the caller's child.
        Runtime::Wasmtime => {
            assert_eq!(names.len(), 4, "{}", show(&trace));
            assert!(request_of(chain[3]), "{}", show(&trace));
            assert!(trace.iter().all(|s| s.service == "aerospike-gateway"));
        }
        // Spin's server span is the caller's child in the same trace. Spin's own
        // outgoing call, and so the gateway's request span, are in a trace of
        // their own (see src/trace_context.rs): the batch body's traceparent puts
        // the hit in the caller's trace, linked to that request.
        Runtime::Spin => {
            assert_eq!(names.len(), 3, "{}", show(&trace));
            assert!(
                trace
                    .iter()
                    .any(|s| s.service != "aerospike-gateway" && s.parent_span_id == caller_span),
                "Spin's server span is in the hit's trace:\n{}",
                show(&trace)
            );
            let [link] = &hit.links[..] else {
                panic!("one link, to the request: {hit:?}");
            };
            let request = all
                .iter()
                .find(|s| format!("{}-{}", s.trace_id, s.span_id) == *link)
                .unwrap_or_else(|| panic!("the linked request was exported:\n{}", show(&all)));
            assert!(request_of(request), "{request:?}");
            let spin_call = all.iter().find(|s| s.span_id == request.parent_span_id);
            assert!(
                spin_call.is_some_and(|s| s.service != "aerospike-gateway"),
                "Spin's outgoing call is the request's parent:\n{}",
                show(&all)
            );
        }
    }
    // The untraced hit's spans are in a trace of their own.
    let elsewhere = receiver
        .all()
        .into_iter()
        .filter(|s| store_write(s) && s.trace_id != trace_id)
        .count();
    assert_eq!(elsewhere, 1, "{}", show(&receiver.all()));
    web.stop().await;
}

/// A web replica sends the hits that met in one instance in one call: each hit's
/// span is in its own caller's trace (as the batch's `traceparents` name it),
/// linked to the call's request, and every group commit that wrote them is a
/// child of one hit's span and linked both ways with the others'.
async fn hits_of_one_call_keep_their_own_traces(backend: Backend) {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let _turn = backend.exclusive().await;
    let gateway = Gateway::start_with(
        backend,
        &dir.path().join("data"),
        dir.path(),
        &export_to(&receiver),
    )
    .await;
    let server = format!("e2e-traced-{}", random_hex(8));
    let hit = || {
        serde_json::json!({
            "id": uuid::Uuid::now_v7().to_string(),
            "server": server,
            "ts": 1_767_225_600_000u64,
        })
    };
    let traceparent = |trace: &str, span: &str| format!("00-{trace}-{span}-01");
    let call = random_hex(32);
    let callers = [
        (random_hex(32), random_hex(16)),
        (random_hex(32), random_hex(16)),
    ];
    let url = format!("{}{}", gateway.url, counter_api::paths::HIT_BATCHES);
    let client = http_client();
    let before = gateway.summary().await;

    // One traceparent too few: refused, nothing counted.
    let refused = client
        .post(&url)
        .json(&serde_json::json!({
            "hits": [hit(), hit()],
            "traceparents": [traceparent(&callers[0].0, &callers[0].1)],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let error: counter_api::ApiError = refused.json().await.unwrap();
    assert_eq!(error.error, "invalid_hit_batch");
    assert!(error.message.contains("traceparents"), "{}", error.message);
    assert_eq!(gateway.summary().await, before);

    let response = client
        .post(&url)
        .header("traceparent", traceparent(&call, &random_hex(16)))
        .json(&serde_json::json!({
            "hits": [hit(), hit()],
            "traceparents": callers.iter().map(|(t, s)| traceparent(t, s)).collect::<Vec<_>>(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let outcomes: counter_api::BatchOutcomes<counter_api::Recorded> =
        response.json().await.unwrap();
    assert!(
        outcomes
            .outcomes
            .iter()
            .all(|o| matches!(o, counter_api::Outcome::Recorded(r) if !r.duplicate)),
        "{outcomes:?}"
    );

    let commits = |spans: &[Span]| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| s.name == "group commit" && s.attributes["counter.kind"] == "tutorial")
            .cloned()
            .collect()
    };
    receiver
        .wait_until("group commits of both hits, and the request", |spans| {
            let sizes: u64 = commits(spans)
                .iter()
                .map(|c| c.attributes["batch.size"].parse::<u64>().unwrap())
                .sum();
            sizes >= 2 && spans.iter().any(|s| s.trace_id == call)
        })
        .await;
    let all = receiver.all();
    let request = all
        .iter()
        .find(|s| s.trace_id == call && s.name == "POST /v1/hits/batch")
        .unwrap_or_else(|| panic!("the call's request span:\n{}", show(&all)));
    let id = |s: &Span| format!("{}-{}", s.trace_id, s.span_id);
    let commits = commits(&all);
    for (trace, caller) in &callers {
        let in_trace = receiver.trace(trace);
        eprintln!(
            "the receiver's spans of trace {trace}:\n{}",
            show(&in_trace)
        );
        let hit = in_trace
            .iter()
            .find(|s| s.name == "record hit")
            .unwrap_or_else(|| panic!("the hit's span in its trace:\n{}", show(&all)));
        assert_eq!(&hit.parent_span_id, caller);
        assert!(hit.links.contains(&id(request)), "{hit:?}");
        let written_by: Vec<&Span> = commits
            .iter()
            .filter(|c| {
                (c.trace_id == hit.trace_id && c.parent_span_id == hit.span_id)
                    || (hit.links.contains(&id(c)) && c.links.contains(&id(hit)))
            })
            .collect();
        assert_eq!(written_by.len(), 1, "{hit:?}\n{}", show(&all));
    }
    eprintln!("the call's trace {call}:\n{}", show(&receiver.trace(&call)));
}
