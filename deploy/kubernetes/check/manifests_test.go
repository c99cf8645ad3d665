// Package check decodes every Kubernetes manifest of deploy/kubernetes strictly into
// the API types the cluster will read it as, and checks what the deployment promises:
// the collector's host access is read-only, its permissions are the few it needs, every
// container has requests and limits, and every certificate names a goroscope identity.
package check

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const (
	dir       = ".."
	namespace = "goroscope"
	// The trust domain and roles of proto/src/identity.rs.
	trustDomain = "goroscope"
)

// A manifest document, decoded.
type object struct {
	file string
	kind string
	name string
	obj  any
}

// newObject returns an empty typed object for an apiVersion and kind, or nil when the
// pair is not one this deployment uses (which fails the test: a typo in either would
// be refused by the cluster, or worse, go to another API).
func newObject(apiVersion, kind string) any {
	switch apiVersion + " " + kind {
	case "v1 Namespace":
		return &corev1.Namespace{}
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}
	case "v1 Service":
		return &corev1.Service{}
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}
	case "apps/v1 DaemonSet":
		return &appsv1.DaemonSet{}
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}
	case "rbac.authorization.k8s.io/v1 ClusterRole":
		return &rbacv1.ClusterRole{}
	case "rbac.authorization.k8s.io/v1 ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}
	case "cert-manager.io/v1 Certificate":
		return &cmv1.Certificate{}
	case "cert-manager.io/v1 Issuer":
		return &cmv1.Issuer{}
	case "cert-manager.io/v1 ClusterIssuer":
		return &cmv1.ClusterIssuer{}
	}
	return nil
}

// decodeStrict reads one YAML document into obj: duplicate keys, unknown fields and
// fields spelt with the wrong case are errors, as the API server's strict field
// validation makes them.
func decodeStrict(doc []byte, obj any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(js, obj)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// documents splits a YAML stream at its "---" lines and drops documents that hold only
// comments.
func documents(data []byte) [][]byte {
	var docs [][]byte
	for _, part := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		meaningful := false
		for _, line := range strings.Split(part, "\n") {
			t := strings.TrimSpace(line)
			if t != "" && !strings.HasPrefix(t, "#") {
				meaningful = true
				break
			}
		}
		if meaningful {
			docs = append(docs, []byte(part))
		}
	}
	return docs
}

// The parts of kustomization.yaml this deployment uses; anything else is an error.
type kustomization struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Namespace          string   `json:"namespace"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images"`
}

func readKustomization(t *testing.T) kustomization {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := decodeStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	return k
}

// load decodes every resource kustomization.yaml lists, and fails on any document it
// cannot decode strictly or whose kind is not known here.
func load(t *testing.T) []object {
	t.Helper()
	k := readKustomization(t)
	var objs []object
	for _, file := range k.Resources {
		data, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range documents(data) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Errorf("%s document %d: %v", file, i+1, err)
				continue
			}
			obj := newObject(head.APIVersion, head.Kind)
			if obj == nil {
				t.Errorf("%s document %d: unknown kind %q of %q", file, i+1, head.Kind, head.APIVersion)
				continue
			}
			if err := decodeStrict(doc, obj); err != nil {
				t.Errorf("%s document %d (%s %s): %v", file, i+1, head.Kind, head.Metadata.Name, err)
				continue
			}
			objs = append(objs, object{file: file, kind: head.Kind, name: head.Metadata.Name, obj: obj})
		}
	}
	if len(objs) == 0 {
		t.Fatal("no manifests decoded")
	}
	return objs
}

func only[T any](t *testing.T, objs []object) []*T {
	t.Helper()
	var out []*T
	for _, o := range objs {
		if v, ok := o.obj.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

func one[T any](t *testing.T, objs []object) *T {
	t.Helper()
	all := only[T](t, objs)
	if len(all) != 1 {
		var zero T
		t.Fatalf("want exactly one %T, found %d", zero, len(all))
	}
	return all[0]
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	k := readKustomization(t)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml is %s %s", k.APIVersion, k.Kind)
	}
	if k.Namespace != namespace {
		t.Errorf("kustomization namespace %q, want %q", k.Namespace, namespace)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			want = append(want, base)
		}
	}
	got := slices.Clone(k.Resources)
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("resources %v, want every manifest of the folder %v", got, want)
	}
	for _, g := range k.ConfigMapGenerator {
		for _, f := range g.Files {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("configMapGenerator %s: %v", g.Name, err)
			}
		}
	}
}

func TestEveryManifestDecodesStrictly(t *testing.T) {
	objs := load(t)
	for _, o := range objs {
		t.Logf("%s: %s %s", o.file, o.kind, o.name)
	}
}

// The strict decoding is what makes the other tests mean something: a misspelt field
// must fail, not vanish.
func TestStrictDecodingRefusesWhatTheClusterWouldRefuse(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      hostPid: true\n",
		"wrong case":    "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      hostpid: true\n",
		"duplicate key": "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\nmetadata: {name: y}\n",
		"cert-manager":  "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: x}\nspec:\n  uriSans: [spiffe://goroscope/collector/a]\n",
	} {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		_ = yaml.Unmarshal([]byte(doc), &head)
		if err := decodeStrict([]byte(doc), newObject(head.APIVersion, head.Kind)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if newObject("apps/v1", "Daemonset") != nil || newObject("apps/v1beta2", "DaemonSet") != nil {
		t.Error("a misspelt kind or an old apiVersion is accepted")
	}
	if got := len(documents([]byte("# only a comment\n---\napiVersion: v1\n---\n\n"))); got != 1 {
		t.Errorf("documents: %d, want 1", got)
	}
}

func TestNamespacedObjectsLiveInTheNamespace(t *testing.T) {
	for _, o := range load(t) {
		var ns string
		switch v := o.obj.(type) {
		case *corev1.Namespace, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, *cmv1.ClusterIssuer:
			continue
		case *corev1.ServiceAccount:
			ns = v.Namespace
		case *corev1.Service:
			ns = v.Namespace
		case *appsv1.DaemonSet:
			ns = v.Namespace
		case *appsv1.StatefulSet:
			ns = v.Namespace
		case *cmv1.Certificate:
			ns = v.Namespace
		case *cmv1.Issuer:
			ns = v.Namespace
		}
		if ns != namespace {
			t.Errorf("%s %s is in namespace %q, want %q", o.kind, o.name, ns, namespace)
		}
	}
	if ns := one[corev1.Namespace](t, load(t)); ns.Name != namespace {
		t.Errorf("Namespace %q, want %q", ns.Name, namespace)
	}
}

func mountOf(c corev1.Container, volume string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == volume {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func volumeOf(spec corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

func envOf(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func checkResources(t *testing.T, what string, c corev1.Container) {
	t.Helper()
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[r]
		lim, okLim := c.Resources.Limits[r]
		if !okReq || !okLim {
			t.Errorf("%s container %s: %s request and limit must both be set", what, c.Name, r)
			continue
		}
		if req.Cmp(lim) > 0 {
			t.Errorf("%s container %s: %s request %s above its limit %s", what, c.Name, r, req.String(), lim.String())
		}
	}
}

func TestCollectorDaemonSet(t *testing.T) {
	objs := load(t)
	ds := one[appsv1.DaemonSet](t, objs)
	spec := ds.Spec.Template.Spec
	if !spec.HostPID {
		t.Error("hostPID must be true: the collector reads every process of the node")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, found %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	checkResources(t, "DaemonSet", c)

	// What it reads of the host, read-only.
	for volume, host := range map[string]string{"proc": "/proc", "cgroup": "/sys/fs/cgroup"} {
		v := volumeOf(spec, volume)
		if v == nil || v.HostPath == nil || v.HostPath.Path != host {
			t.Errorf("volume %s must be the host's %s", volume, host)
			continue
		}
		m := mountOf(c, volume)
		if m == nil || !m.ReadOnly {
			t.Errorf("the host's %s must be mounted read-only", host)
		}
	}
	if m := mountOf(c, "proc"); m == nil || m.MountPath != "/host/proc" {
		t.Error("the host's /proc must be at /host/proc, where collector.toml's proc_root points")
	}
	if cfg := readFile(t, "collector.toml"); !strings.Contains(cfg, `proc_root = "/host/proc"`) {
		t.Error(`collector.toml must set proc_root = "/host/proc"`)
	}
	// Every hostPath is one of the three it needs.
	for _, v := range spec.Volumes {
		if v.HostPath != nil && !slices.Contains([]string{"/proc", "/sys/fs/cgroup", "/var/lib/goroscope/spool"}, v.HostPath.Path) {
			t.Errorf("unexpected hostPath %s", v.HostPath.Path)
		}
	}

	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("the collector container needs a securityContext")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("the collector must not be privileged")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Error("capabilities must drop ALL")
	} else {
		added := slices.Clone(sc.Capabilities.Add)
		slices.Sort(added)
		if !slices.Equal(added, []corev1.Capability{"DAC_READ_SEARCH", "SYS_PTRACE"}) {
			t.Errorf("capabilities added %v, want exactly SYS_PTRACE and DAC_READ_SEARCH", added)
		}
	}

	// The node name, from the downward API.
	if e := envOf(c, "NODE_NAME"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Error("NODE_NAME must come from the downward API's spec.nodeName")
	}

	// Its certificate names the host it reports.
	host := envOf(c, "GOROSCOPE_COLLECTOR_HOST")
	if host == nil || host.ValueFrom == nil || host.ValueFrom.FieldRef == nil || host.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Fatal("GOROSCOPE_COLLECTOR_HOST must be the pod's name, the name its certificate holds")
	}
	tls := volumeOf(spec, "tls")
	if tls == nil || tls.CSI == nil || tls.CSI.Driver != "csi.cert-manager.io" {
		t.Fatal("the collector's certificate must come from cert-manager's csi-driver (csi.cert-manager.io)")
	}
	attrs := tls.CSI.VolumeAttributes
	if got, want := attrs["csi.cert-manager.io/uri-sans"], "spiffe://"+trustDomain+"/collector/${POD_NAME}"; got != want {
		t.Errorf("collector URI SAN %q, want %q", got, want)
	}
	checkIssuerRef(t, objs, attrs["csi.cert-manager.io/issuer-name"], attrs["csi.cert-manager.io/issuer-kind"], attrs["csi.cert-manager.io/issuer-group"])
	if m := mountOf(c, "tls"); m == nil || !m.ReadOnly {
		t.Error("the certificate volume must be mounted read-only")
	}

	// It runs as the ServiceAccount the ClusterRoleBinding binds.
	binding := one[rbacv1.ClusterRoleBinding](t, objs)
	bound := false
	for _, s := range binding.Subjects {
		if s.Kind == "ServiceAccount" && s.Name == spec.ServiceAccountName && s.Namespace == ds.Namespace {
			bound = true
		}
	}
	if !bound {
		t.Errorf("ServiceAccount %q is not bound by ClusterRoleBinding %s", spec.ServiceAccountName, binding.Name)
	}
	found := false
	for _, sa := range only[corev1.ServiceAccount](t, objs) {
		found = found || sa.Name == spec.ServiceAccountName
	}
	if !found {
		t.Errorf("ServiceAccount %q is not in the manifests", spec.ServiceAccountName)
	}
	checkConfigMap(t, spec, "goroscope-collector")
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// checkConfigMap: the pod mounts the ConfigMap kustomization.yaml generates.
func checkConfigMap(t *testing.T, spec corev1.PodSpec, name string) {
	t.Helper()
	v := volumeOf(spec, "config")
	if v == nil || v.ConfigMap == nil || v.ConfigMap.Name != name {
		t.Errorf("volume config must be the ConfigMap %s", name)
		return
	}
	for _, g := range readKustomization(t).ConfigMapGenerator {
		if g.Name == name {
			return
		}
	}
	t.Errorf("kustomization.yaml generates no ConfigMap %s", name)
}

func checkIssuerRef(t *testing.T, objs []object, name, kind, group string) {
	t.Helper()
	if group != "cert-manager.io" {
		t.Errorf("issuer group %q, want cert-manager.io", group)
	}
	switch kind {
	case "Issuer":
		for _, i := range only[cmv1.Issuer](t, objs) {
			if i.Name == name {
				return
			}
		}
	case "ClusterIssuer":
		for _, i := range only[cmv1.ClusterIssuer](t, objs) {
			if i.Name == name {
				return
			}
		}
	}
	t.Errorf("issuer %s %q is not in the manifests", kind, name)
}

func TestCollectorMayOnlyReadPods(t *testing.T) {
	objs := load(t)
	roles := only[rbacv1.ClusterRole](t, objs)
	if len(roles) != 1 {
		t.Fatalf("want one ClusterRole, found %d", len(roles))
	}
	role := roles[0]
	if len(role.Rules) != 1 {
		t.Fatalf("ClusterRole %s has %d rules, want one", role.Name, len(role.Rules))
	}
	r := role.Rules[0]
	verbs := slices.Clone(r.Verbs)
	slices.Sort(verbs)
	if !slices.Equal(r.APIGroups, []string{""}) || !slices.Equal(r.Resources, []string{"pods"}) ||
		!slices.Equal(verbs, []string{"get", "list", "watch"}) || len(r.ResourceNames) != 0 || len(r.NonResourceURLs) != 0 {
		t.Errorf("ClusterRole %s rule %+v, want get, list and watch on core pods only", role.Name, r)
	}
	binding := one[rbacv1.ClusterRoleBinding](t, objs)
	if binding.RoleRef.Kind != "ClusterRole" || binding.RoleRef.Name != role.Name {
		t.Errorf("ClusterRoleBinding binds %s %s, want ClusterRole %s", binding.RoleRef.Kind, binding.RoleRef.Name, role.Name)
	}
	if len(binding.Subjects) != 1 {
		t.Errorf("ClusterRoleBinding binds %d subjects, want the collector's ServiceAccount only", len(binding.Subjects))
	}
	if len(only[rbacv1.ClusterRole](t, objs)) != 1 {
		t.Error("no other role may be granted")
	}
}

func TestAggregatorStatefulSet(t *testing.T) {
	objs := load(t)
	ss := one[appsv1.StatefulSet](t, objs)
	spec := ss.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, found %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	checkResources(t, "StatefulSet", c)
	if len(ss.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("want one volumeClaimTemplate, found %d", len(ss.Spec.VolumeClaimTemplates))
	}
	claim := ss.Spec.VolumeClaimTemplates[0]
	if m := mountOf(c, claim.Name); m == nil || m.ReadOnly {
		t.Errorf("the volume claim %s must be mounted writable", claim.Name)
	} else if cfg := readFile(t, "aggregator.toml"); !strings.Contains(cfg, `data_dir = "`+m.MountPath+"/") {
		t.Errorf("aggregator.toml's data_dir must be under the volume at %s", m.MountPath)
	}
	if _, ok := claim.Spec.Resources.Requests[corev1.ResourceStorage]; !ok {
		t.Error("the volume claim must request storage")
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("the aggregator must run as non-root")
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("the aggregator needs readOnlyRootFilesystem and no privilege escalation")
	}
	checkConfigMap(t, spec, "goroscope-aggregator")

	// The Service reaches the StatefulSet's ports by name.
	svc := one[corev1.Service](t, objs)
	if ss.Spec.ServiceName != svc.Name {
		t.Errorf("serviceName %q, want the Service %q", ss.Spec.ServiceName, svc.Name)
	}
	for _, port := range []string{"grpc", "metrics"} {
		ok := false
		for _, p := range svc.Spec.Ports {
			if p.Name == port && p.TargetPort.StrVal == port {
				for _, cp := range c.Ports {
					ok = ok || cp.Name == port
				}
			}
		}
		if !ok {
			t.Errorf("the Service has no %s port targeting the container's", port)
		}
	}
	for k, v := range svc.Spec.Selector {
		if ss.Spec.Template.Labels[k] != v {
			t.Errorf("the Service selects %s=%s, which the aggregator's pods do not carry", k, v)
		}
	}

	// It serves the certificate cert-manager keeps for it.
	tls := volumeOf(spec, "tls")
	if tls == nil || tls.Secret == nil {
		t.Fatal("the aggregator's certificate must be the Secret of its Certificate")
	}
	var cert *cmv1.Certificate
	for _, crt := range only[cmv1.Certificate](t, objs) {
		if crt.Spec.SecretName == tls.Secret.SecretName {
			cert = crt
		}
	}
	if cert == nil {
		t.Fatalf("no Certificate writes the Secret %s", tls.Secret.SecretName)
	}
	if len(cert.Spec.URIs) != 1 || !strings.HasPrefix(cert.Spec.URIs[0], "spiffe://"+trustDomain+"/aggregator/") {
		t.Errorf("the aggregator's certificate URIs %v, want one spiffe://%s/aggregator/<name>", cert.Spec.URIs, trustDomain)
	}
	// Collectors dial a name the certificate holds.
	m := regexp.MustCompile(`(?m)^server_name = "([^"]+)"`).FindStringSubmatch(readFile(t, "collector.toml"))
	if m == nil || !slices.Contains(cert.Spec.DNSNames, m[1]) {
		t.Errorf("collector.toml's server_name must be one of the aggregator's DNS names %v", cert.Spec.DNSNames)
	}
	if !strings.Contains(readFile(t, "collector.toml"), `aggregator = "https://`+m[1]+":7443\"") {
		t.Error("collector.toml must dial the aggregator's Service on its gRPC port")
	}
}

// identityName is validate_name of proto/src/identity.rs.
var identityName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,253}$`)

// spiffeOK says whether uri is spiffe://goroscope/<role>/<name> as proto/src/identity.rs
// parses it; a csi-driver variable such as ${POD_NAME} stands for a valid name.
func spiffeOK(uri string) error {
	rest, ok := strings.CutPrefix(uri, "spiffe://"+trustDomain+"/")
	if !ok {
		return fmt.Errorf("%q is not in the spiffe://%s/ trust domain", uri, trustDomain)
	}
	role, name, ok := strings.Cut(rest, "/")
	if !ok || !slices.Contains([]string{"collector", "operator", "aggregator"}, role) {
		return fmt.Errorf("%q: want spiffe://%s/<collector|operator|aggregator>/<name>", uri, trustDomain)
	}
	name = strings.NewReplacer("${POD_NAME}", "pod", "${POD_NAMESPACE}", "ns").Replace(name)
	if !identityName.MatchString(name) {
		return fmt.Errorf("%q: the name may hold only letters, digits, '.', '-' and '_'", uri)
	}
	return nil
}

func TestCertificatesNameGoroscopeIdentities(t *testing.T) {
	objs := load(t)
	for _, crt := range only[cmv1.Certificate](t, objs) {
		checkIssuerRef(t, objs, crt.Spec.IssuerRef.Name, crt.Spec.IssuerRef.Kind, crt.Spec.IssuerRef.Group)
		if crt.Spec.IsCA {
			if len(crt.Spec.URIs) != 0 {
				t.Errorf("the CA certificate %s holds URIs %v", crt.Name, crt.Spec.URIs)
			}
			continue
		}
		if len(crt.Spec.URIs) != 1 {
			t.Errorf("Certificate %s has URIs %v, want exactly one goroscope identity", crt.Name, crt.Spec.URIs)
		}
		for _, uri := range crt.Spec.URIs {
			if err := spiffeOK(uri); err != nil {
				t.Errorf("Certificate %s: %v", crt.Name, err)
			}
		}
	}
	ds := one[appsv1.DaemonSet](t, objs)
	if v := volumeOf(ds.Spec.Template.Spec, "tls"); v != nil && v.CSI != nil {
		if err := spiffeOK(v.CSI.VolumeAttributes["csi.cert-manager.io/uri-sans"]); err != nil {
			t.Errorf("collector csi volume: %v", err)
		}
	}
	for _, bad := range []string{
		"spiffe://goroscope/collector",
		"spiffe://goroscope/janitor/a",
		"spiffe://other/collector/a",
		"spiffe://goroscope/collector/a b",
		"spiffe://goroscope/collector/a/b",
	} {
		if spiffeOK(bad) == nil {
			t.Errorf("%q passes as an identity", bad)
		}
	}
}

// Guards the splitter against a document separator inside a block scalar being taken
// for the end of a document: none of the manifests has one, and this says so.
func TestNoSeparatorInsideValues(t *testing.T) {
	for _, f := range readKustomization(t).Resources {
		data := readFile(t, f)
		if bytes.Contains([]byte(data), []byte("\n--- ")) {
			t.Errorf("%s: a line starting with \"--- \"", f)
		}
	}
}

// The attributes cert-manager's csi-driver reads (its pkg/apis/v1alpha1); it ignores any
// other, so a misspelt one would silently issue a different certificate.
var csiAttributes = []string{
	"csi.cert-manager.io/issuer-name", "csi.cert-manager.io/issuer-kind", "csi.cert-manager.io/issuer-group",
	"csi.cert-manager.io/literal-subject", "csi.cert-manager.io/common-name",
	"csi.cert-manager.io/organizations", "csi.cert-manager.io/organizationalunits",
	"csi.cert-manager.io/countries", "csi.cert-manager.io/provinces", "csi.cert-manager.io/localities",
	"csi.cert-manager.io/streetaddresses", "csi.cert-manager.io/postalcodes", "csi.cert-manager.io/serialnumber",
	"csi.cert-manager.io/dns-names", "csi.cert-manager.io/ip-sans", "csi.cert-manager.io/uri-sans",
	"csi.cert-manager.io/duration", "csi.cert-manager.io/is-ca", "csi.cert-manager.io/key-usages",
	"csi.cert-manager.io/key-algorithm", "csi.cert-manager.io/key-encoding", "csi.cert-manager.io/key-size",
	"csi.cert-manager.io/ca-file", "csi.cert-manager.io/certificate-file", "csi.cert-manager.io/privatekey-file",
	"csi.cert-manager.io/fs-group", "csi.cert-manager.io/renew-before", "csi.cert-manager.io/reuse-private-key",
	"csi.cert-manager.io/pkcs12-enable", "csi.cert-manager.io/pkcs12-filename", "csi.cert-manager.io/pkcs12-password",
}

// The key usages cert-manager knows.
var keyUsages = []cmv1.KeyUsage{
	cmv1.UsageSigning, cmv1.UsageDigitalSignature, cmv1.UsageContentCommitment, cmv1.UsageKeyEncipherment,
	cmv1.UsageKeyAgreement, cmv1.UsageDataEncipherment, cmv1.UsageCertSign, cmv1.UsageCRLSign,
	cmv1.UsageEncipherOnly, cmv1.UsageDecipherOnly, cmv1.UsageAny, cmv1.UsageServerAuth, cmv1.UsageClientAuth,
	cmv1.UsageCodeSigning, cmv1.UsageEmailProtection, cmv1.UsageSMIME, cmv1.UsageIPsecEndSystem,
	cmv1.UsageIPsecTunnel, cmv1.UsageIPsecUser, cmv1.UsageTimestamping, cmv1.UsageOCSPSigning,
	cmv1.UsageMicrosoftSGC, cmv1.UsageNetscapeSGC,
}

func TestCollectorCSIVolumeAttributesAreTheDriversAndConsistent(t *testing.T) {
	ds := one[appsv1.DaemonSet](t, load(t))
	v := volumeOf(ds.Spec.Template.Spec, "tls")
	if v == nil || v.CSI == nil {
		t.Fatal("no csi volume tls")
	}
	if v.CSI.ReadOnly == nil || !*v.CSI.ReadOnly {
		t.Error("the csi-driver mounts read-only volumes only: readOnly must be true")
	}
	attrs := v.CSI.VolumeAttributes
	for k := range attrs {
		if !slices.Contains(csiAttributes, k) {
			t.Errorf("csi volume attribute %q is not one the csi-driver reads", k)
		}
	}
	for _, u := range strings.Split(attrs["csi.cert-manager.io/key-usages"], ",") {
		if !slices.Contains(keyUsages, cmv1.KeyUsage(strings.TrimSpace(u))) {
			t.Errorf("key usage %q is not one cert-manager knows", u)
		}
	}
	if !strings.Contains(attrs["csi.cert-manager.io/key-usages"], string(cmv1.UsageClientAuth)) {
		t.Error("the collector's certificate must allow client auth")
	}
	dur, err1 := time.ParseDuration(attrs["csi.cert-manager.io/duration"])
	renew, err2 := time.ParseDuration(attrs["csi.cert-manager.io/renew-before"])
	if err1 != nil || err2 != nil || renew <= 0 || renew >= dur {
		t.Errorf("duration %q and renew-before %q: want both durations, renewal before expiry",
			attrs["csi.cert-manager.io/duration"], attrs["csi.cert-manager.io/renew-before"])
	}
	// The settings name the files the driver writes (ca.crt, tls.crt, tls.key by default).
	m := mountOf(ds.Spec.Template.Spec.Containers[0], "tls")
	cfg := readFile(t, "collector.toml")
	for key, file := range map[string]string{"ca": "ca.crt", "cert": "tls.crt", "key": "tls.key"} {
		if m == nil || !strings.Contains(cfg, key+` = "`+m.MountPath+"/"+file+`"`) {
			t.Errorf("collector.toml's tls.%s must be the driver's %s in the tls volume", key, file)
		}
	}
}

func TestCertificateUsagesAndNetworkSettingsAgree(t *testing.T) {
	objs := load(t)
	for _, crt := range only[cmv1.Certificate](t, objs) {
		for _, u := range crt.Spec.Usages {
			if !slices.Contains(keyUsages, u) {
				t.Errorf("Certificate %s: key usage %q is not one cert-manager knows", crt.Name, u)
			}
		}
		if crt.Spec.Duration != nil && crt.Spec.RenewBefore != nil && crt.Spec.RenewBefore.Duration >= crt.Spec.Duration.Duration {
			t.Errorf("Certificate %s renews before it is issued", crt.Name)
		}
	}

	// hostNetwork: cluster names resolve only with ClusterFirstWithHostNet.
	ds := one[appsv1.DaemonSet](t, objs)
	spec := ds.Spec.Template.Spec
	if spec.HostNetwork && spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork with dnsPolicy %q: the aggregator's Service name would not resolve", spec.DNSPolicy)
	}
	// The ports the settings listen on are the ones the pods declare and probe.
	for _, c := range []struct {
		file, key, port string
		container       corev1.Container
	}{
		{"collector.toml", "metrics_listen", "metrics", spec.Containers[0]},
		{"aggregator.toml", "metrics_listen", "metrics", one[appsv1.StatefulSet](t, objs).Spec.Template.Spec.Containers[0]},
		{"aggregator.toml", "listen", "grpc", one[appsv1.StatefulSet](t, objs).Spec.Template.Spec.Containers[0]},
		{"aggregator.toml", "http_listen", "api", one[appsv1.StatefulSet](t, objs).Spec.Template.Spec.Containers[0]},
	} {
		m := regexp.MustCompile(`(?m)^` + c.key + ` = "[^"]*:(\d+)"`).FindStringSubmatch(readFile(t, c.file))
		ok := false
		for _, p := range c.container.Ports {
			ok = ok || (m != nil && p.Name == c.port && fmt.Sprint(p.ContainerPort) == m[1])
		}
		if !ok {
			t.Errorf("%s's %s must listen on the container's %s port", c.file, c.key, c.port)
		}
	}
}
