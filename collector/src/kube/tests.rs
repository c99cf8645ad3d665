//! The pod index against API server responses in `testdata/`: a PodList of three pods
//! of node-a, a watch stream (ADDED, MODIFIED, DELETED, BOOKMARK, then ERROR 410 Gone),
//! and the list that follows the 410. Once applied event by event, once through kube's
//! client and watcher talking to a local HTTP server that serves them; and a list over
//! TLS (rustls on ring) from a server whose certificate the client must verify.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::kube::core::WatchEvent;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use k8s_openapi::List;

use super::*;

const LIST: &str = include_str!("testdata/pods-list.json");
const WATCH: &str = include_str!("testdata/pods-watch.jsonl");
const RELIST: &str = include_str!("testdata/pods-relist.json");

const BILLING: &str = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d";
const LEGACY: &str = "7f8e9d0c-1b2a-4394-a5b6-c7d8e9f0a1b2";
const DEBUG: &str = "c0ffee00-1234-4abc-9def-00000000beef";
const CHECKOUT: &str = "2a3b4c5d-6e7f-4081-92a3-b4c5d6e7f809";

fn list(json: &str) -> Vec<Pod> {
    serde_json::from_str::<List<Pod>>(json)
        .expect("a PodList")
        .items
}

fn apply_list(index: &PodIndex, json: &str) {
    index.apply(watcher::Event::Init);
    for pod in list(json) {
        index.apply(watcher::Event::InitApply(pod));
    }
    index.apply(watcher::Event::InitDone);
}

fn watch_events() -> Vec<WatchEvent<Pod>> {
    WATCH
        .lines()
        .map(|l| serde_json::from_str(l).expect("a watch event"))
        .collect()
}

#[test]
fn a_list_fills_the_index_with_names_namespaces_and_the_chosen_labels() {
    let index = PodIndex::new();
    assert!(!index.is_synced());
    apply_list(&index, LIST);
    assert!(index.is_synced());
    assert_eq!(index.len(), 3);

    let billing = index.lookup(BILLING).unwrap();
    assert_eq!(billing.name, "billing-7d9f8c6b5-x2k4q");
    assert_eq!(billing.namespace, "payments");
    // app.kubernetes.io/name wins over app.
    assert_eq!(billing.service.as_deref(), Some("billing"));
    assert_eq!(billing.version.as_deref(), Some("v2.8.0"));
    // Init, regular and sidecar containers, ids without the runtime prefix.
    assert_eq!(billing.containers.len(), 3);
    assert_eq!(billing.container_name(&"a1".repeat(32)), Some("billing"));
    assert_eq!(billing.container_name(&"e5".repeat(32)), Some("migrate"));
    assert_eq!(
        billing.container_name(&format!("containerd://{}", "f6".repeat(32))),
        Some("envoy")
    );

    let legacy = index.lookup(LEGACY).unwrap();
    assert_eq!(
        legacy.service.as_deref(),
        Some("legacy-worker"),
        "app, where app.kubernetes.io/name is not set"
    );
    assert_eq!(legacy.version, None);

    let debug = index.lookup(DEBUG).unwrap();
    assert_eq!(
        (debug.service.as_deref(), debug.version.as_deref()),
        (None, None)
    );

    // The systemd cgroup driver's spelling of a UID, and a container id.
    assert_eq!(
        index.lookup(&BILLING.replace('-', "_")).unwrap().name,
        "billing-7d9f8c6b5-x2k4q"
    );
    assert_eq!(
        index.lookup_container(&"c3".repeat(32)).unwrap().name,
        "legacy-worker-0"
    );
    assert!(
        index
            .lookup("00000000-0000-0000-0000-000000000000")
            .is_none()
    );
}

#[test]
fn watch_events_add_modify_and_delete_and_a_relist_after_410_forgets_what_went_meanwhile() {
    let index = PodIndex::new();
    apply_list(&index, LIST);
    let mut gone = None;
    for event in watch_events() {
        // What kube's watcher makes of each event of the wire.
        match event {
            WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                index.apply(watcher::Event::Apply(pod))
            }
            WatchEvent::Deleted(pod) => index.apply(watcher::Event::Delete(pod)),
            WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, "1005"),
            WatchEvent::Error(e) => gone = Some(e),
        }
    }
    let gone = gone.expect("the stream ends with an error");
    assert_eq!((gone.code, gone.reason.as_str()), (410, "Expired"));

    // ADDED while Pending (no container yet), then MODIFIED once running.
    let checkout = index.lookup(CHECKOUT).unwrap();
    assert_eq!(checkout.service.as_deref(), Some("checkout"));
    assert_eq!(checkout.container_name(&"d4".repeat(32)), Some("checkout"));
    // MODIFIED: a new version label and a restarted container.
    let billing = index.lookup(BILLING).unwrap();
    assert_eq!(billing.version.as_deref(), Some("v2.8.1"));
    assert!(index.lookup_container(&"b2".repeat(32)).is_some());
    assert!(
        index.lookup_container(&"a1".repeat(32)).is_none(),
        "the old container's id is forgotten"
    );
    // DELETED.
    assert!(index.lookup(LEGACY).is_none());
    assert!(index.lookup_container(&"c3".repeat(32)).is_none());
    assert!(index.lookup(DEBUG).is_some());

    // 410 Gone: the watcher lists again. The list replaces the index only once complete.
    index.apply(watcher::Event::Init);
    let relisted = list(RELIST);
    index.apply(watcher::Event::InitApply(relisted[0].clone()));
    assert!(
        index.lookup(DEBUG).is_some(),
        "a partial re-list is not the index yet"
    );
    for pod in relisted.into_iter().skip(1) {
        index.apply(watcher::Event::InitApply(pod));
    }
    index.apply(watcher::Event::InitDone);
    assert_eq!(index.len(), 2);
    assert!(
        index.lookup(DEBUG).is_none(),
        "deleted while the watch was down"
    );
    assert!(index.lookup(BILLING).is_some() && index.lookup(CHECKOUT).is_some());
}

#[test]
fn the_index_is_capped() {
    let index = PodIndex::new();
    let template = list(LIST).remove(2);
    index.apply(watcher::Event::Init);
    for i in 0..MAX_PODS + 3 {
        let mut pod = template.clone();
        pod.metadata.uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
        pod.status = None;
        index.apply(watcher::Event::InitApply(pod));
    }
    index.apply(watcher::Event::InitDone);
    assert_eq!(index.len(), MAX_PODS);
    assert_eq!(index.skipped(), 3);
}

#[test]
fn pod_labels_replace_the_build_info_service_and_version_and_add_pod_namespace_container() {
    let index = PodIndex::new();
    apply_list(&index, LIST);
    let build_info = vec![
        ("zone".to_owned(), "eu-west-1a".to_owned()),
        (
            "service".to_owned(),
            "example.com/billing/cmd/server".to_owned(),
        ),
        ("version".to_owned(), "(devel)".to_owned()),
        ("go_version".to_owned(), "go1.26.8".to_owned()),
    ];
    let mut labels = build_info.clone();
    let billing = index.lookup(BILLING).unwrap();
    apply_pod_labels(&mut labels, &billing, Some(&"a1".repeat(32)));
    let get = |labels: &[(String, String)], k: &str| {
        labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    };
    assert_eq!(get(&labels, "service").as_deref(), Some("billing"));
    assert_eq!(get(&labels, "version").as_deref(), Some("v2.8.0"));
    assert_eq!(
        get(&labels, "pod").as_deref(),
        Some("billing-7d9f8c6b5-x2k4q")
    );
    assert_eq!(get(&labels, "namespace").as_deref(), Some("payments"));
    assert_eq!(get(&labels, "container").as_deref(), Some("billing"));
    assert_eq!(get(&labels, "go_version").as_deref(), Some("go1.26.8"));
    assert_eq!(get(&labels, "zone").as_deref(), Some("eu-west-1a"));
    assert_eq!(labels.len(), 7, "{labels:?}");

    // A pod without those labels keeps the build info's; an unknown container adds none.
    let mut labels = build_info.clone();
    apply_pod_labels(&mut labels, &index.lookup(DEBUG).unwrap(), Some("feed"));
    assert_eq!(
        get(&labels, "service").as_deref(),
        Some("example.com/billing/cmd/server")
    );
    assert_eq!(get(&labels, "version").as_deref(), Some("(devel)"));
    assert_eq!(get(&labels, "pod").as_deref(), Some("debug-shell"));
    assert_eq!(get(&labels, "container"), None);

    // Applying twice changes nothing.
    let mut twice = labels.clone();
    apply_pod_labels(&mut twice, &index.lookup(DEBUG).unwrap(), Some("feed"));
    assert_eq!(twice, labels);
    for name in POD_LABELS {
        goroscope_proto::rules::check_label_name(name).unwrap();
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// What the local API server was asked, and what it answers next.
#[derive(Default)]
struct FakeApiServer {
    requests: Mutex<Vec<String>>,
    lists: Mutex<VecDeque<&'static str>>,
}

impl FakeApiServer {
    fn answer(&self, uri: &hyper::Uri) -> hyper::Response<Body> {
        let target = uri.to_string();
        self.requests.lock().unwrap().push(target.clone());
        let query = uri.query().unwrap_or("");
        let json = |s: &'static str| {
            hyper::Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(s.as_bytes())).boxed())
                .unwrap()
        };
        if uri.path() != "/api/v1/pods" {
            return hyper::Response::builder()
                .status(404)
                .body(Full::new(Bytes::from_static(b"{}")).boxed())
                .unwrap();
        }
        if !query.contains("watch=true") {
            let mut lists = self.lists.lock().unwrap();
            let next = if lists.len() > 1 {
                lists.pop_front()
            } else {
                lists.front().copied()
            };
            return json(next.unwrap_or(RELIST));
        }
        if query.contains("resourceVersion=1000") {
            // The recorded stream, line by line, then the server closes it.
            let frames = WATCH
                .lines()
                .map(|l| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{l}\n")))))
                .collect::<Vec<_>>();
            return hyper::Response::builder()
                .header("content-type", "application/json")
                .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                    frames,
                ))))
                .unwrap();
        }
        // After the re-list: a watch with nothing to say, open until the test ends.
        hyper::Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(
                futures_util::stream::pending::<Result<Frame<Bytes>, Infallible>>(),
            )))
            .unwrap()
    }
}

async fn serve(server: Arc<FakeApiServer>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let server = server.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let resp = server.answer(req.uri());
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn kube_watcher_against_recorded_responses_relists_after_410_and_keeps_to_the_node() {
    let server = Arc::new(FakeApiServer::default());
    server.lists.lock().unwrap().extend([LIST, RELIST]);
    let addr = serve(server.clone()).await;
    let config = ::kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = ::kube::Client::try_from(config).unwrap();

    let shutdown = CancellationToken::new();
    let index = spawn(client, "node-a", shutdown.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let relisted = server
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("resourceVersion=2000"));
        if relisted && index.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the index never reached the re-listed pods: {} pods, requests {:?}",
            index.len(),
            server.requests.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();

    assert!(index.is_synced());
    assert!(index.lookup(DEBUG).is_none() && index.lookup(LEGACY).is_none());
    assert_eq!(
        index.lookup(BILLING).unwrap().version.as_deref(),
        Some("v2.8.1")
    );
    assert!(index.lookup(CHECKOUT).is_some());
    assert!(index.watch_errors() >= 1, "the 410 is counted");

    let requests = server.requests.lock().unwrap().clone();
    // list, watch from the list's version, list again after the 410, watch from there.
    let kinds: Vec<&str> = requests
        .iter()
        .map(|r| {
            if r.contains("watch=true") {
                "watch"
            } else {
                "list"
            }
        })
        .collect();
    assert_eq!(
        kinds[..4],
        ["list", "watch", "list", "watch"],
        "{requests:?}"
    );
    assert!(requests[1].contains("resourceVersion=1000"), "{requests:?}");
    assert!(
        requests[1].contains("allowWatchBookmarks=true"),
        "{requests:?}"
    );
    for r in &requests {
        assert!(
            r.contains("fieldSelector=spec.nodeName%3Dnode-a"),
            "every request is for this node's pods: {r}"
        );
    }
}

#[tokio::test]
async fn lists_pods_over_tls_with_rustls_on_ring() {
    // The API server as in a cluster: HTTPS with a certificate of the cluster's CA, which
    // the client trusts (kube's in-cluster config reads the same from the service
    // account's ca.crt). rustls with ring, the only provider built in.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["kubernetes.default.svc".to_owned()])
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
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let server = Arc::new(FakeApiServer::default());
    server.lists.lock().unwrap().push_back(LIST);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    {
        let server = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Ok(stream) = acceptor.accept(stream).await else {
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let resp = server.answer(req.uri());
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }

    let mut config = ::kube::Config::new(format!("https://{addr}").parse().unwrap());
    config.tls_server_name = Some("kubernetes.default.svc".to_owned());
    // Without the cluster's CA the server is not trusted: the certificate is checked.
    let untrusting: ::kube::Api<Pod> =
        ::kube::Api::all(::kube::Client::try_from(config.clone()).unwrap());
    assert!(
        untrusting
            .list(&::kube::api::ListParams::default())
            .await
            .is_err()
    );
    config.root_cert = Some(vec![ca_cert.der().to_vec()]);
    let client = ::kube::Client::try_from(config).unwrap();
    let pods: ::kube::Api<Pod> = ::kube::Api::all(client);
    let listed = pods
        .list(&::kube::api::ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .expect("a list over TLS");
    assert_eq!(listed.items.len(), 3);
    assert!(server.requests.lock().unwrap()[0].contains("fieldSelector=spec.nodeName%3Dnode-a"));
}
