//! Pod metadata from the Kubernetes API server. A background task watches this node's
//! pods (`fieldSelector=spec.nodeName=<node>`) and keeps a [`PodIndex`] from pod UID
//! and container id to the pod's name, namespace and the labels operators gave it; the
//! sampler labels each target from it with [`apply_pod_labels`], one lookup per target.
//!
//! The watch re-lists after any error, with backoff (kube's watcher: a `410 Gone`
//! re-lists at once), and never holds the index while it waits: lookups take a read
//! lock for a hash lookup only, so sampling never waits on the API server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

/// The labels [`apply_pod_labels`] sets. `service` and `version` replace the ones from
/// the build info; `pod`, `namespace` and `container` are Kubernetes' own.
pub const POD_LABELS: [&str; 5] = ["service", "version", "pod", "namespace", "container"];

/// Pod label naming the service, as the Kubernetes recommended labels spell it.
pub const SERVICE_LABEL: &str = "app.kubernetes.io/name";
/// Pod label naming the service where `app.kubernetes.io/name` is not set.
pub const APP_LABEL: &str = "app";
/// Pod label naming the version.
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";

/// Pods kept at most. A node runs at most a few hundred (the kubelet's `maxPods`, 110 by
/// default); more than this means something is wrong, and the rest are skipped.
pub const MAX_PODS: usize = 4096;

/// What the collector keeps of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// `app.kubernetes.io/name`, else `app`.
    pub service: Option<String>,
    /// `app.kubernetes.io/version`.
    pub version: Option<String>,
    /// (container id without the runtime prefix, container name), of every container
    /// the kubelet reported a status for: init, regular and ephemeral.
    pub containers: Vec<(String, String)>,
}

impl PodMeta {
    /// The metadata of a pod object; `None` without a UID (the API server always sets
    /// one; a bookmark's object has none).
    pub fn from_pod(pod: &Pod) -> Option<PodMeta> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
        let label = |key: &str| {
            meta.labels
                .as_ref()
                .and_then(|l| l.get(key))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let mut containers = Vec::new();
        if let Some(status) = &pod.status {
            for list in [
                &status.init_container_statuses,
                &status.container_statuses,
                &status.ephemeral_container_statuses,
            ]
            .into_iter()
            .flatten()
            {
                for c in list {
                    if let Some(id) = c.container_id.as_deref().map(bare_container_id)
                        && !id.is_empty()
                    {
                        containers.push((id.to_owned(), c.name.clone()));
                    }
                }
            }
        }
        Some(PodMeta {
            uid: normalize_uid(&uid),
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            service: label(SERVICE_LABEL).or_else(|| label(APP_LABEL)),
            version: label(VERSION_LABEL),
            containers,
        })
    }

    /// The name of the container with this id (with or without a `containerd://`-style
    /// prefix).
    pub fn container_name(&self, container_id: &str) -> Option<&str> {
        let id = bare_container_id(container_id);
        self.containers
            .iter()
            .find(|(c, _)| c == id)
            .map(|(_, name)| name.as_str())
    }
}

/// `containerd://0123...` → `0123...`: the kubelet reports ids with the runtime's name,
/// cgroup paths carry them bare.
fn bare_container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, bare)| bare)
}

/// Pod UIDs as the API server writes them: the systemd cgroup driver writes them with
/// `_` for `-` (`kubepods-besteffort-pod1b2c3d4e_....slice`).
fn normalize_uid(uid: &str) -> String {
    uid.replace('_', "-").to_ascii_lowercase()
}

/// Sets a target's Kubernetes labels from its pod: `pod`, `namespace`, `container`
/// (when `container_id` names one of the pod's containers), and `service` and
/// `version` where the pod has them. Pod labels replace `service` and `version` from
/// the build info: they are what the operators chose to call the workload, and they
/// match what every other tool of the cluster shows. A label the pod does not have
/// leaves the build info's value in place.
pub fn apply_pod_labels(
    labels: &mut Vec<(String, String)>,
    pod: &PodMeta,
    container_id: Option<&str>,
) {
    let container = container_id.and_then(|id| pod.container_name(id));
    for (name, value) in [
        ("pod", Some(pod.name.as_str())),
        ("namespace", Some(pod.namespace.as_str())),
        ("container", container),
        ("service", pod.service.as_deref()),
        ("version", pod.version.as_deref()),
    ] {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        // Kubernetes caps names and label values far below a label value's limit; the
        // cut is for a misbehaving API server only.
        let value = goroscope_proto::rules::trim_label_value(value).into_owned();
        match labels.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => labels.push((name.to_owned(), value)),
        }
    }
}

#[derive(Default)]
struct Maps {
    by_uid: HashMap<String, Arc<PodMeta>>,
    by_container: HashMap<String, Arc<PodMeta>>,
}

impl Maps {
    fn insert(&mut self, pod: PodMeta) -> bool {
        if self.by_uid.len() >= MAX_PODS && !self.by_uid.contains_key(&pod.uid) {
            return false;
        }
        self.remove(&pod.uid);
        let pod = Arc::new(pod);
        for (id, _) in &pod.containers {
            self.by_container.insert(id.clone(), pod.clone());
        }
        self.by_uid.insert(pod.uid.clone(), pod);
        true
    }

    fn remove(&mut self, uid: &str) {
        if let Some(old) = self.by_uid.remove(uid) {
            for (id, _) in &old.containers {
                if self
                    .by_container
                    .get(id)
                    .is_some_and(|p| Arc::ptr_eq(p, &old))
                {
                    self.by_container.remove(id);
                }
            }
        }
    }
}

/// Pod UID (and container id) → pod metadata, for this node's pods. Cheap to clone; every
/// clone sees the same index.
#[derive(Clone, Default)]
pub struct PodIndex {
    inner: Arc<IndexInner>,
}

#[derive(Default)]
struct IndexInner {
    maps: RwLock<Maps>,
    /// The pods of a re-list, until it is complete; then they replace the index.
    relist: std::sync::Mutex<Option<Maps>>,
    synced: AtomicBool,
    skipped: AtomicU64,
    errors: AtomicU64,
}

impl PodIndex {
    pub fn new() -> PodIndex {
        PodIndex::default()
    }

    /// The pod with this UID (as the API server writes it, or with `_` for `-` as a
    /// systemd cgroup path does).
    pub fn lookup(&self, pod_uid: &str) -> Option<Arc<PodMeta>> {
        let maps = self.inner.maps.read().unwrap_or_else(|e| e.into_inner());
        if let Some(pod) = maps.by_uid.get(pod_uid) {
            return Some(pod.clone());
        }
        maps.by_uid.get(&normalize_uid(pod_uid)).cloned()
    }

    /// The pod running the container with this id (bare, or `containerd://...`).
    pub fn lookup_container(&self, container_id: &str) -> Option<Arc<PodMeta>> {
        let maps = self.inner.maps.read().unwrap_or_else(|e| e.into_inner());
        maps.by_container
            .get(bare_container_id(container_id))
            .cloned()
    }

    /// Pods known.
    pub fn len(&self) -> usize {
        let maps = self.inner.maps.read().unwrap_or_else(|e| e.into_inner());
        maps.by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a complete list of the node's pods has been read (since start).
    pub fn is_synced(&self) -> bool {
        self.inner.synced.load(Ordering::Relaxed)
    }

    /// Pods not kept because the index was full, since start.
    pub fn skipped(&self) -> u64 {
        self.inner.skipped.load(Ordering::Relaxed)
    }

    /// Failed list or watch requests, since start.
    pub fn watch_errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Applies one event of the watch. A re-list (`Init`, `InitApply`..., `InitDone`)
    /// is gathered aside and replaces the index whole when complete, so that pods
    /// deleted while the watch was down disappear, and lookups meanwhile see the last
    /// complete view.
    pub fn apply(&self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Init => {
                *self.relist() = Some(Maps::default());
            }
            watcher::Event::InitApply(pod) => {
                let Some(meta) = PodMeta::from_pod(&pod) else {
                    return;
                };
                let mut relist = self.relist();
                let maps = relist.get_or_insert_with(Maps::default);
                if !maps.insert(meta) {
                    self.inner.skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
            watcher::Event::InitDone => {
                let fresh = self.relist().take().unwrap_or_default();
                let pods = fresh.by_uid.len();
                *self.inner.maps.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                self.inner.synced.store(true, Ordering::Relaxed);
                tracing::debug!(pods, "pods of this node listed");
            }
            watcher::Event::Apply(pod) => {
                let Some(meta) = PodMeta::from_pod(&pod) else {
                    return;
                };
                let uid = meta.uid.clone();
                let kept = self
                    .inner
                    .maps
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(meta);
                if !kept {
                    self.inner.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(uid, max = MAX_PODS, "pod index full; pod skipped");
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    self.inner
                        .maps
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&normalize_uid(uid));
                }
            }
        }
    }

    fn relist(&self) -> std::sync::MutexGuard<'_, Option<Maps>> {
        self.inner.relist.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubernetes client configuration: {0}")]
    Config(String),
    #[error("kubernetes client: {0}")]
    Client(#[source] ::kube::Error),
}

/// A client for the API server this process runs under: the in-cluster service account
/// when `KUBERNETES_SERVICE_HOST` is set, else the kubeconfig.
pub async fn client() -> Result<::kube::Client, KubeError> {
    let config = ::kube::Config::infer()
        .await
        .map_err(|e| KubeError::Config(e.to_string()))?;
    ::kube::Client::try_from(config).map_err(KubeError::Client)
}

/// The watch's settings: this node's pods only, bookmarks on (kube's default), the
/// initial list served from the API server's cache.
pub fn watch_config(node: &str) -> watcher::Config {
    watcher::Config::default()
        .fields(&format!("spec.nodeName={node}"))
        .any_semantic()
}

/// Watches `node`'s pods into a new index until `shutdown`; returns the index at once
/// (empty until the first list arrives).
pub fn spawn(client: ::kube::Client, node: &str, shutdown: CancellationToken) -> PodIndex {
    let index = PodIndex::new();
    tokio::spawn(watch(client, node.to_owned(), index.clone(), shutdown));
    index
}

/// Keeps `index` up to date with `node`'s pods until `shutdown`. Errors (the API server
/// unreachable, a refused request, an expired resource version) are counted and logged,
/// and the watch starts again after a backoff; it never ends on its own.
pub async fn watch(
    client: ::kube::Client,
    node: String,
    index: PodIndex,
    shutdown: CancellationToken,
) {
    let api: ::kube::Api<Pod> = ::kube::Api::all(client);
    let events = watcher::watcher(api, watch_config(&node)).default_backoff();
    let mut events = std::pin::pin!(events);
    tracing::info!(node, "watching this node's pods");
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            Some(Ok(event)) => index.apply(event),
            Some(Err(e)) => {
                let errors = index.inner.errors.fetch_add(1, Ordering::Relaxed) + 1;
                // The first failures say why; afterwards, one line in a hundred.
                if errors <= 5 || errors.is_multiple_of(100) {
                    tracing::warn!(node, error = %e, errors, "pod watch failed; retrying with backoff");
                }
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests;
