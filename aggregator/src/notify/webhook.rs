//! The webhook sink: every change is POSTed as `{"version":"1","change":...,
//! "incident":{...}}`, in order, retried with a doubling backoff on errors worth
//! retrying, then dropped with a warning.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use goroscope_proto::v1::{
    Anomaly, AttributeEvidence, CaptureInfo, Incident, IncidentCapture, Label, TargetId,
};
use hyper::Uri;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::{Event, Queue};
use crate::metrics::Metrics;

pub(crate) const SINK: &str = "webhook";

/// How a change is retried: `attempts` in all, waiting `first_backoff`, then twice as
/// long each time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub attempts: u32,
    pub first_backoff: Duration,
}

impl Default for Retry {
    /// Five attempts over about a minute: waits of 4, 8, 16 and 32 s.
    fn default() -> Self {
        Retry {
            attempts: 5,
            first_backoff: Duration::from_secs(4),
        }
    }
}

pub(crate) struct Webhook {
    pub client: Client,
    pub url: Uri,
    pub retry: Retry,
    pub metrics: Arc<Metrics>,
}

/// Sends the queue's changes one at a time, so the receiver sees them in order.
pub(crate) async fn run(hook: Webhook, queue: Arc<Queue>, cancel: CancellationToken) {
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            event = queue.next() => event,
        };
        let body = Bytes::from(payload(&event).to_string());
        let mut backoff = hook.retry.first_backoff;
        let mut attempt = 1;
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                result = hook.client.post_json(&hook.url, body.clone()) => result,
            };
            match result {
                Ok(()) => {
                    hook.metrics.notification(SINK, "sent");
                    break;
                }
                Err(e) if e.retryable() && attempt < hook.retry.attempts => {
                    tracing::debug!(
                        incident = %event.incident.id,
                        attempt,
                        error = %e,
                        "webhook notification failed, trying again"
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                }
                Err(e) => {
                    hook.metrics.notification(SINK, "failed");
                    tracing::warn!(
                        incident = %event.incident.id,
                        change = event.change.as_str(),
                        attempts = attempt,
                        error = %e,
                        "webhook notification dropped"
                    );
                    break;
                }
            }
        }
    }
}

/// The webhook body of one change.
pub fn payload(event: &Event) -> Value {
    json!({
        "version": "1",
        "change": event.change.as_str(),
        "incident": incident(&event.incident),
    })
}

/// The incident as JSON: the message's fields under their proto names, with each
/// anomaly's `evidence_json` parsed into `evidence`.
pub fn incident(i: &Incident) -> Value {
    json!({
        "id": i.id,
        "diagnosis": i.diagnosis,
        "services": i.services,
        "signature": i.signature,
        "opened_ms": i.opened_ms,
        "updated_ms": i.updated_ms,
        "resolved_ms": i.resolved_ms,
        "severity": i.severity,
        "summary": i.summary,
        "anomalies": i.anomalies.iter().map(anomaly).collect::<Vec<_>>(),
        "service_targets": i.service_targets,
        "causes": i.causes.iter().map(cause).collect::<Vec<_>>(),
        "captures": i.captures.iter().map(capture).collect::<Vec<_>>(),
        "oom_at_ms": i.oom_at_ms,
    })
}

fn anomaly(a: &Anomaly) -> Value {
    // Evidence that is not JSON (it always is, from our detectors) is kept as text.
    let evidence = match a.evidence_json.trim() {
        "" => Value::Null,
        text => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
    };
    json!({
        "id": a.id,
        "diagnosis": a.diagnosis,
        "target": a.target.as_ref().map(target),
        "labels": labels(&a.labels),
        "opened_ms": a.opened_ms,
        "resolved_ms": a.resolved_ms,
        "updated_ms": a.updated_ms,
        "evidence": evidence,
        "advice": a.advice,
        "sources": a.sources,
        "signature": a.signature,
        "incident_id": a.incident_id,
        "oom_at_ms": a.oom_at_ms,
    })
}

fn cause(c: &AttributeEvidence) -> Value {
    json!({
        "attribute": c.attribute,
        "value": c.value,
        "affected_with": c.affected_with,
        "total_with": c.total_with,
        "affected_without": c.affected_without,
        "total_without": c.total_without,
        "p_value": c.p_value,
        "text": c.text,
    })
}

fn capture(c: &IncidentCapture) -> Value {
    json!({
        "capture": c.capture.as_ref().map(capture_info),
        "control": c.control,
        "refused": c.refused,
        "kind": c.kind().as_str_name().to_ascii_lowercase(),
        "target": c.target.as_ref().map(target),
    })
}

fn capture_info(c: &CaptureInfo) -> Value {
    json!({
        "id": c.id,
        "target": c.target.as_ref().map(target),
        "labels": labels(&c.labels),
        "kind": c.kind().as_str_name().to_ascii_lowercase(),
        "seconds": c.seconds,
        "requested_ms": c.requested_ms,
        "completed_ms": c.completed_ms,
        "requested_by": c.requested_by,
        "size_bytes": c.size_bytes,
        "sha256": c.sha256,
    })
}

fn target(t: &TargetId) -> Value {
    json!({ "host": t.host, "pid": t.pid, "start_ticks": t.start_ticks })
}

fn labels(labels: &[Label]) -> Value {
    labels
        .iter()
        .map(|l| json!({ "name": l.name, "value": l.value }))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::NotifyConfig;
    use crate::notify::{Change, Notifier, sample_incident};

    #[test]
    fn payload_has_the_change_and_the_incident_with_parsed_evidence() {
        let body = payload(&Event {
            change: Change::Updated,
            incident: sample_incident(),
        });
        assert_eq!(body["version"], "1");
        assert_eq!(body["change"], "updated");
        let i = &body["incident"];
        assert_eq!(i["id"], "00000000000000a1");
        assert_eq!(i["services"], json!(["checkout"]));
        assert_eq!(i["service_targets"], 10);
        assert_eq!(i["resolved_ms"], 0);
        assert_eq!(i["anomalies"][0]["evidence"]["slope"], 1.5);
        assert_eq!(i["anomalies"][0]["target"]["pid"], 42);
        assert!(i["anomalies"][0].get("evidence_json").is_none());
        assert_eq!(i["causes"][0]["value"], "v2.4.0");
    }

    /// What the receiver saw of one request.
    struct Seen {
        authorization: Option<String>,
        org: Option<String>,
        body: Value,
    }

    /// A receiver answering the n-th request with `statuses[n]` (the last one for the
    /// requests after), keeping what it saw.
    async fn receiver(statuses: Vec<StatusCode>) -> (String, Arc<Mutex<Vec<Seen>>>) {
        receiver_with(statuses, None).await
    }

    /// [`receiver`], over TLS when given an acceptor.
    async fn receiver_with(
        statuses: Vec<StatusCode>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/hook", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        let statuses = Arc::new(statuses);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                let statuses = statuses.clone();
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    let statuses = statuses.clone();
                    async move {
                        let header = |name: &str| {
                            request
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        let (authorization, org) =
                            (header("authorization"), header("x-scope-orgid"));
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let mut seen = seen.lock().unwrap();
                        seen.push(Seen {
                            authorization,
                            org,
                            body: serde_json::from_slice(&body).unwrap(),
                        });
                        let status = statuses[(seen.len() - 1).min(statuses.len() - 1)];
                        let mut response = Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let tls = tls.clone();
                tokio::spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            http.serve_connection(TokioIo::new(stream), service).await
                        }
                    };
                });
            }
        });
        (url, kept)
    }

    /// Waits until the metrics show `line`; returns them.
    async fn metrics_show(metrics: &Metrics, line: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = goroscope_daemon::http::Exposition::metrics(metrics);
            if text.contains(line) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {line} in\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn start(
        url: String,
        metrics: &Arc<Metrics>,
        cancel: &CancellationToken,
        config: NotifyConfig,
    ) -> Notifier {
        Notifier::start_with(
            NotifyConfig {
                webhook_url: Some(url),
                ..config
            },
            metrics.clone(),
            cancel.clone(),
            Retry {
                attempts: 3,
                first_backoff: Duration::from_millis(20),
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn webhook_retries_a_failed_post_and_counts_it_sent() {
        let (url, seen) = receiver(vec![
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::NO_CONTENT,
        ])
        .await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let metrics = Arc::new(Metrics::new());
        let cancel = CancellationToken::new();
        let _stop = cancel.clone().drop_guard();
        let config = NotifyConfig {
            bearer_token_file: Some(token),
            headers: [("X-Scope-OrgID".to_owned(), "fleet".to_owned())].into(),
            ..Default::default()
        };
        let notifier = start(url, &metrics, &cancel, config);
        notifier.send(Event {
            change: Change::Opened,
            incident: sample_incident(),
        });
        let exposition = metrics_show(
            &metrics,
            r#"goroscope_aggregator_notifications_total{sink="webhook",result="sent"} 1"#,
        )
        .await;
        assert!(!exposition.contains(r#"result="failed""#), "{exposition}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "one failed attempt, then the retry");
        assert_eq!(seen[0].body, seen[1].body);
        assert_eq!(seen[1].body["change"], "opened");
        assert_eq!(seen[1].body["incident"]["id"], "00000000000000a1");
        for s in seen.iter() {
            assert_eq!(s.authorization.as_deref(), Some("Bearer s3cret"));
            assert_eq!(s.org.as_deref(), Some("fleet"));
        }
    }

    #[tokio::test]
    async fn webhook_does_not_retry_a_refused_post() {
        let (url, seen) = receiver(vec![StatusCode::BAD_REQUEST]).await;
        let metrics = Arc::new(Metrics::new());
        let cancel = CancellationToken::new();
        let _stop = cancel.clone().drop_guard();
        let notifier = start(url, &metrics, &cancel, NotifyConfig::default());
        let mut incident = sample_incident();
        notifier.send(Event {
            change: Change::Opened,
            incident: incident.clone(),
        });
        incident.resolved_ms = incident.updated_ms;
        notifier.send(Event {
            change: Change::Resolved,
            incident,
        });
        metrics_show(
            &metrics,
            r#"goroscope_aggregator_notifications_total{sink="webhook",result="failed"} 2"#,
        )
        .await;
        let seen = seen.lock().unwrap();
        let changes: Vec<_> = seen.iter().map(|s| s.body["change"].clone()).collect();
        assert_eq!(changes, ["opened", "resolved"], "each sent once, in order");
    }

    #[tokio::test]
    async fn webhook_over_https_trusts_the_ca_file() {
        use tokio_rustls::rustls;
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let (url, seen) = receiver_with(
            vec![StatusCode::OK],
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let cancel = CancellationToken::new();
        let _stop = cancel.clone().drop_guard();

        // Without the CA the receiver is not trusted.
        let metrics = Arc::new(Metrics::new());
        let notifier = start(url.clone(), &metrics, &cancel, NotifyConfig::default());
        notifier.send(Event {
            change: Change::Opened,
            incident: sample_incident(),
        });
        metrics_show(
            &metrics,
            r#"goroscope_aggregator_notifications_total{sink="webhook",result="failed"} 1"#,
        )
        .await;
        assert!(seen.lock().unwrap().is_empty());

        let metrics = Arc::new(Metrics::new());
        let config = NotifyConfig {
            ca_file: Some(ca_file),
            ..Default::default()
        };
        let notifier = start(url, &metrics, &cancel, config);
        notifier.send(Event {
            change: Change::Opened,
            incident: sample_incident(),
        });
        metrics_show(
            &metrics,
            r#"goroscope_aggregator_notifications_total{sink="webhook",result="sent"} 1"#,
        )
        .await;
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
