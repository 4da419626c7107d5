//! OpenTelemetry traces over OTLP/HTTP (protobuf) when `otel.endpoint` is
//! set: the spans the studios name — `config.create`,
//! `config.version.upload`, `config.validate`, `config.deploy` (from a
//! deployment's creation to its end, in the caller's W3C trace when it sent
//! one), `config.distribute` (each pass that sends frames),
//! `config.deploy.instance` (a server's push to its ack, the first
//! [`INSTANCE_SPANS`] of each deployment), `metrics.collect` (a
//! deployment's judgement of its metrics, at most one per
//! [`COLLECT_EVERY_MS`]) and `rollback.execute` (decision to every server
//! back). Finished spans go into a bounded queue (full: dropped and
//! counted); one task posts them in batches to `{endpoint}/v1/traces`.
//! Without an endpoint nothing is recorded. The protobuf is written here
//! (a few messages of `opentelemetry-proto`), so the hub needs no gRPC or
//! second HTTP stack.

use crate::domain::trace_context::TraceContext;
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::sync::mpsc;

/// `config.deploy.instance` spans per deployment, at most.
pub const INSTANCE_SPANS: usize = 20;
/// One `metrics.collect` span per deployment per this long, at most.
pub const COLLECT_EVERY_MS: i64 = 10_000;
/// Finished spans waiting for the exporter, at most.
const QUEUE: usize = 4096;
/// Spans per export request, at most.
const BATCH: usize = 512;

/// A value of a span attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Text(String),
    Int(i64),
    Bool(bool),
}

/// Where a span hangs: its trace and parent span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Whether the trace is recorded: a caller that sent `traceparent`
    /// with the sampled flag off gets no span of its request's work.
    pub sampled: bool,
}

impl From<&TraceContext> for SpanParent {
    fn from(context: &TraceContext) -> Self {
        SpanParent {
            trace_id: context.trace_id,
            span_id: context.span_id,
            sampled: context.sampled,
        }
    }
}

/// A finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_id: Option<[u8; 8]>,
    pub name: &'static str,
    /// 1 internal, 2 server.
    pub kind: u8,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(&'static str, AttrValue)>,
    pub error: Option<String>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn random_id<const N: usize>() -> [u8; N] {
    let mut id = [0u8; N];
    let _ = getrandom::fill(&mut id);
    if id.iter().all(|b| *b == 0) {
        id[N - 1] = 1;
    }
    id
}

/// A span being timed; recorded when [`Span::end`] is called (or dropped).
#[derive(Debug)]
pub struct Span {
    tracer: Option<Arc<Tracer>>,
    record: SpanRecord,
    ended: bool,
}

impl Span {
    /// Where children of this span hang.
    pub fn parent(&self) -> SpanParent {
        SpanParent {
            trace_id: self.record.trace_id,
            span_id: self.record.span_id,
            sampled: self.tracer.is_some(),
        }
    }

    pub fn set(&mut self, key: &'static str, value: AttrValue) {
        self.record.attributes.push((key, value));
    }

    pub fn fail(&mut self, why: impl Into<String>) {
        self.record.error = Some(why.into());
    }

    pub fn end(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.record.end_ns = now_ns().max(self.record.start_ns);
        if let Some(tracer) = &self.tracer {
            tracer.record(self.record.clone());
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Records spans and exports them (one per hub).
#[derive(Debug)]
pub struct Tracer {
    queue: Option<mpsc::Sender<SpanRecord>>,
    pub dropped: AtomicU64,
    /// Spans recorded, sent or not.
    pub recorded: AtomicU64,
    /// Per deployment: instance spans made so far and the last
    /// `metrics.collect`.
    sampling: Mutex<std::collections::HashMap<String, (usize, i64)>>,
}

impl Tracer {
    /// A tracer that records nothing.
    pub fn disabled() -> Arc<Tracer> {
        Arc::new(Tracer {
            queue: None,
            dropped: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            sampling: Mutex::new(Default::default()),
        })
    }

    /// Exports to `{endpoint}/v1/traces` as `service` (starts the
    /// exporter on the current runtime).
    pub fn exporting(endpoint: &str, service: &str) -> anyhow::Result<Arc<Tracer>> {
        let (queue, spans) = mpsc::channel(QUEUE);
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let builder = awc::Client::builder().timeout(Duration::from_secs(10));
        let client = if url.starts_with("https://") {
            // The system's CA bundle (SSL_CERT_FILE to choose another).
            let tls = crate::ctl::tls_config(None).map_err(|e| anyhow::anyhow!("{e}"))?;
            builder
                .connector(awc::Connector::new().rustls_0_23(Arc::new(tls)))
                .finish()
        } else if url.starts_with("http://") {
            builder.finish()
        } else {
            anyhow::bail!("otel.endpoint {endpoint:?}: an http:// or https:// address");
        };
        actix_web::rt::spawn(export_loop(client, url, service.to_owned(), spans));
        Ok(Arc::new(Tracer {
            queue: Some(queue),
            dropped: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            sampling: Mutex::new(Default::default()),
        }))
    }

    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Starts a span under `parent` (a new trace without one).
    pub fn start(self: &Arc<Self>, name: &'static str, parent: Option<SpanParent>) -> Span {
        self.start_at(name, parent, now_ns())
    }

    /// Starts a span that began at `start_ns` (Unix ns).
    pub fn start_at(
        self: &Arc<Self>,
        name: &'static str,
        parent: Option<SpanParent>,
        start_ns: u64,
    ) -> Span {
        let sampled = parent.is_none_or(|p| p.sampled);
        Span {
            tracer: (self.enabled() && sampled).then(|| self.clone()),
            record: SpanRecord {
                trace_id: parent.map_or_else(random_id::<16>, |p| p.trace_id),
                span_id: random_id::<8>(),
                parent_id: parent.map(|p| p.span_id),
                name,
                kind: 1,
                start_ns,
                end_ns: start_ns,
                attributes: Vec::new(),
                error: None,
            },
            ended: false,
        }
    }

    /// The server span of an HTTP request, with the ids its
    /// `traceparent` names (so the caller's trace links to it).
    pub fn start_request(self: &Arc<Self>, context: &TraceContext) -> Span {
        let mut span = self.start("http.request", None);
        if !context.sampled {
            span.tracer = None;
        }
        span.record.trace_id = context.trace_id;
        span.record.span_id = context.span_id;
        span.record.parent_id = context.parent_id;
        span.record.kind = 2;
        span
    }

    /// Whether another instance span may be made for `deployment`.
    pub fn sample_instance(&self, deployment: &str) -> bool {
        if !self.enabled() {
            return false;
        }
        let mut sampling = hotswap_client::sync::lock(&self.sampling);
        let entry = sampling.entry(deployment.to_owned()).or_insert((0, 0));
        entry.0 += 1;
        entry.0 <= INSTANCE_SPANS
    }

    /// Whether a `metrics.collect` span is due for `deployment` at `now_ms`.
    pub fn sample_collect(&self, deployment: &str, now_ms: i64) -> bool {
        if !self.enabled() {
            return false;
        }
        let mut sampling = hotswap_client::sync::lock(&self.sampling);
        let entry = sampling.entry(deployment.to_owned()).or_insert((0, 0));
        if now_ms - entry.1 < COLLECT_EVERY_MS {
            return false;
        }
        entry.1 = now_ms;
        true
    }

    /// Forgets a finished deployment's sampling.
    pub fn forget(&self, deployment: &str) {
        hotswap_client::sync::lock(&self.sampling).remove(deployment);
    }

    fn record(&self, span: SpanRecord) {
        let Some(queue) = &self.queue else {
            return;
        };
        self.recorded.fetch_add(1, Ordering::Relaxed);
        if queue.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn export_loop(
    client: awc::Client,
    url: String,
    service: String,
    mut spans: mpsc::Receiver<SpanRecord>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = match actix_web::rt::time::timeout(Duration::from_secs(1), spans.recv()).await {
            Ok(Some(span)) => Some(span),
            Ok(None) => return,
            Err(_) => None,
        };
        batch.extend(first);
        while batch.len() < BATCH {
            match spans.try_recv() {
                Ok(span) => batch.push(span),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let body = encode_request(&service, &batch);
        batch.clear();
        let sent = client
            .post(&url)
            .insert_header(("Content-Type", "application/x-protobuf"))
            .send_body(body)
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::warn!(status = response.status().as_u16(), %url, "the OTLP endpoint refused spans; dropped")
            }
            Err(error) => tracing::warn!(%error, %url, "spans not exported; dropped"),
        }
    }
}

// ---- OTLP protobuf (opentelemetry-proto, trace v1) --------------------

fn varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn message(out: &mut Vec<u8>, field: u32, build: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    build(&mut inner);
    bytes_field(out, field, &inner);
}

fn key_value(out: &mut Vec<u8>, field: u32, name: &str, value: &AttrValue) {
    message(out, field, |kv| {
        bytes_field(kv, 1, name.as_bytes());
        message(kv, 2, |any| match value {
            AttrValue::Text(text) => bytes_field(any, 1, text.as_bytes()),
            AttrValue::Bool(flag) => {
                key(any, 2, 0);
                varint(any, u64::from(*flag));
            }
            AttrValue::Int(number) => {
                key(any, 3, 0);
                varint(any, *number as u64);
            }
        });
    });
}

/// An `ExportTraceServiceRequest` of `spans`, as `service`.
pub fn encode_request(service: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * spans.len() + 128);
    message(&mut out, 1, |resource_spans| {
        message(resource_spans, 1, |resource| {
            key_value(
                resource,
                1,
                "service.name",
                &AttrValue::Text(service.to_owned()),
            );
        });
        message(resource_spans, 2, |scope_spans| {
            message(scope_spans, 1, |scope| {
                bytes_field(scope, 1, b"hotswap");
                bytes_field(scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
            });
            for span in spans {
                message(scope_spans, 2, |s| {
                    bytes_field(s, 1, &span.trace_id);
                    bytes_field(s, 2, &span.span_id);
                    if let Some(parent) = &span.parent_id {
                        bytes_field(s, 4, parent);
                    }
                    bytes_field(s, 5, span.name.as_bytes());
                    key(s, 6, 0);
                    varint(s, u64::from(span.kind));
                    key(s, 7, 1);
                    s.extend_from_slice(&span.start_ns.to_le_bytes());
                    key(s, 8, 1);
                    s.extend_from_slice(&span.end_ns.to_le_bytes());
                    for (name, value) in &span.attributes {
                        key_value(s, 9, name, value);
                    }
                    // Status left unset on success, as instrumentation
                    // should; ERROR (2) with its message otherwise.
                    if let Some(why) = &span.error {
                        message(s, 15, |status| {
                            bytes_field(status, 2, why.as_bytes());
                            key(status, 3, 0);
                            varint(status, 2);
                        });
                    }
                });
            }
        });
    });
    out
}

tokio::task_local! {
    /// The span HTTP work hangs under (the request's), for code the
    /// handler calls (`config.validate` inside an upload).
    pub static CURRENT: SpanParent;
}

/// The current task's span parent, if any.
pub fn current() -> Option<SpanParent> {
    CURRENT.try_with(|parent| *parent).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_a_span_encode_as_protobuf() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let span = SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_id: None,
            name: "config.create",
            kind: 1,
            start_ns: 5,
            end_ns: 9,
            attributes: vec![("config", AttrValue::Text("loot".into()))],
            error: None,
        };
        let encoded = encode_request("hub", &[span]);
        // The name, the attribute and the service are in it, framed.
        let text = String::from_utf8_lossy(&encoded);
        assert!(text.contains("config.create") && text.contains("loot") && text.contains("hub"));
        assert_eq!(encoded[0], 0x0a);
    }

    #[test]
    fn instance_and_collect_spans_are_sampled_per_deployment() {
        let tracer = Arc::new(Tracer {
            queue: Some(mpsc::channel(1).0),
            dropped: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            sampling: Mutex::new(Default::default()),
        });
        let made = (0..30).filter(|_| tracer.sample_instance("d-1")).count();
        assert_eq!(made, INSTANCE_SPANS);
        assert!(tracer.sample_collect("d-1", 20_000));
        assert!(!tracer.sample_collect("d-1", 25_000));
        assert!(tracer.sample_collect("d-1", 30_000));
        assert!(!Tracer::disabled().sample_instance("d-1"));
    }

    #[test]
    fn an_unsampled_trace_records_nothing_of_its_work() {
        let (queue, mut spans) = mpsc::channel(8);
        let tracer = Arc::new(Tracer {
            queue: Some(queue),
            dropped: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            sampling: Mutex::new(Default::default()),
        });
        let unsampled = SpanParent {
            trace_id: [1; 16],
            span_id: [2; 8],
            sampled: false,
        };
        let parent = tracer.start("config.deploy", Some(unsampled));
        assert!(!parent.parent().sampled);
        tracer
            .start("config.distribute", Some(parent.parent()))
            .end();
        parent.end();
        let sampled = tracer.start(
            "config.create",
            Some(SpanParent {
                sampled: true,
                ..unsampled
            }),
        );
        sampled.end();
        let got: Vec<&str> = std::iter::from_fn(|| spans.try_recv().ok())
            .map(|s| s.name)
            .collect();
        assert_eq!(got, ["config.create"]);
    }
}
