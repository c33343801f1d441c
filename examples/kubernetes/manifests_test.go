// Package kubernetes checks the Kubernetes manifests beside it: every object
// decodes strictly (unknown or duplicate fields fail) into the k8s.io/api
// types, and the objects say what PRIMS needs (probes, grace, token, the
// autoscaling metric). It is its own module so that the PRIMS module carries
// no Kubernetes dependency: cd examples/kubernetes && go test ./...
package kubernetes

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// decoder is the API machinery's own deserializer in strict mode: it
// rejects unknown fields and duplicate keys, as kubectl apply
// --validate=strict does.
var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, autoscalingv2.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// documents splits a multi-document YAML file.
func documents(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

func stripComments(doc []byte) []byte {
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAll(doc, nil)
}

// decodeFile decodes every object of a manifest file strictly.
func decodeFile(t *testing.T, path string) []runtime.Object {
	t.Helper()
	var objs []runtime.Object
	for i, doc := range documents(t, path) {
		obj, gvk, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s, document %d: %v", path, i+1, err)
		}
		t.Logf("%s: %s %s", path, gvk.Kind, obj.(interface{ GetName() string }).GetName())
		objs = append(objs, obj)
	}
	return objs
}

// The decoder must refuse what a typo makes: a test that cannot fail
// proves nothing.
func TestStrictDecoderRefusesUnknownAndDuplicateFields(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicaz: 2}\n",
		"misplaced":     "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 1, tragetPort: 2}]}\n",
		"duplicate key": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  type: ClusterIP\n  type: NodePort\n",
		"unknown kind":  "apiVersion: v1\nkind: Servcie\nmetadata: {name: x}\n",
	} {
		if _, _, err := decoder.Decode([]byte(doc), nil, nil); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if _, _, err := decoder.Decode([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {type: ClusterIP}\n"), nil, nil); err != nil {
		t.Errorf("control: a valid Service: %v", err)
	}
}

func TestManifests(t *testing.T) {
	var objs []runtime.Object
	for _, f := range []string{"prims.yaml", "secret.example.yaml"} {
		objs = append(objs, decodeFile(t, f)...)
	}
	var (
		dep    *appsv1.Deployment
		svc    *corev1.Service
		pdb    *policyv1.PodDisruptionBudget
		hpa    *autoscalingv2.HorizontalPodAutoscaler
		secret *corev1.Secret
	)
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			dep = o
		case *corev1.Service:
			svc = o
		case *policyv1.PodDisruptionBudget:
			pdb = o
		case *autoscalingv2.HorizontalPodAutoscaler:
			hpa = o
		case *corev1.Secret:
			secret = o
		}
	}
	if dep == nil || svc == nil || pdb == nil || hpa == nil || secret == nil {
		t.Fatalf("missing objects: deployment %v, service %v, pdb %v, hpa %v, secret %v", dep != nil, svc != nil, pdb != nil, hpa != nil, secret != nil)
	}

	pod := dep.Spec.Template.Spec
	labels := dep.Spec.Template.Labels
	for what, sel := range map[string]map[string]string{"deployment": dep.Spec.Selector.MatchLabels, "service": svc.Spec.Selector, "pdb": pdb.Spec.Selector.MatchLabels} {
		if len(sel) == 0 || !subset(sel, labels) {
			t.Errorf("%s selector %v does not select the pod labels %v", what, sel, labels)
		}
	}
	if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != dep.Name {
		t.Errorf("HPA scales %v, not the deployment %s", hpa.Spec.ScaleTargetRef, dep.Name)
	}
	checkPod(t, pod, true)

	c := pod.Containers[0]
	// The token comes from the Secret, as a file PRIMS reads.
	tokenFile := flag(c.Args, "--auth-token-file")
	var mounted bool
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == secret.Name && strings.HasPrefix(tokenFile, m.MountPath+"/") {
				_, mounted = secret.StringData[strings.TrimPrefix(tokenFile, m.MountPath+"/")]
			}
		}
	}
	if !mounted {
		t.Errorf("--auth-token-file %q is not a key of the Secret %s mounted in the pod", tokenFile, secret.Name)
	}

	// The service reaches the container's port; sessions stay on their pod.
	if p := svc.Spec.Ports[0].TargetPort.String(); p != c.Ports[0].Name {
		t.Errorf("service targets port %q, the container names %q", p, c.Ports[0].Name)
	}
	if svc.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
		t.Errorf("service session affinity %q, want ClientIP", svc.Spec.SessionAffinity)
	}
	if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
		t.Error("PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
	}

	// The autoscaler reads a metric PRIMS really exports.
	if len(hpa.Spec.Metrics) == 0 || hpa.Spec.Metrics[0].Pods == nil {
		t.Fatal("HPA has no Pods metric")
	}
	name := hpa.Spec.Metrics[0].Pods.Metric.Name
	if !exported(t, name) {
		t.Errorf("HPA metric %q is not a metric PRIMS exports (mcp/*.go)", name)
	}
}

func TestAgentSandbox(t *testing.T) {
	var (
		tmpl  sandboxTemplate
		pool  sandboxWarmPool
		claim sandboxClaim
	)
	for path, v := range map[string]any{"agent-sandbox/template.yaml": &tmpl, "agent-sandbox/warmpool.yaml": &pool, "agent-sandbox/claim.yaml": &claim} {
		if err := strictYAML(path, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, tm := range []typeMeta{tmpl.typeMeta, pool.typeMeta, claim.typeMeta} {
		if tm.APIVersion != "extensions.agents.x-k8s.io/v1beta1" {
			t.Errorf("%s: apiVersion %q", tm.Kind, tm.APIVersion)
		}
	}
	if tmpl.Kind != "SandboxTemplate" || pool.Kind != "SandboxWarmPool" || claim.Kind != "SandboxClaim" {
		t.Errorf("kinds %s, %s, %s", tmpl.Kind, pool.Kind, claim.Kind)
	}
	if pool.Spec.SandboxTemplateRef.Name != tmpl.Metadata.Name || claim.Spec.WarmPoolRef.Name != pool.Metadata.Name {
		t.Errorf("the claim does not lead to the template: claim -> %q, pool %q -> %q, template %q",
			claim.Spec.WarmPoolRef.Name, pool.Metadata.Name, pool.Spec.SandboxTemplateRef.Name, tmpl.Metadata.Name)
	}
	checkPod(t, tmpl.Spec.PodTemplate.Spec, false)
}

// checkPod checks what every PRIMS pod needs: non-root and locked down,
// probes on /healthz and /readyz, and a grace period longer than
// --shutdown-grace so a drain is never cut short.
func checkPod(t *testing.T, pod corev1.PodSpec, wantAuth bool) {
	t.Helper()
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	psc, csc := pod.SecurityContext, c.SecurityContext
	if psc == nil || csc == nil {
		t.Fatal("no security context")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod may run as root: runAsNonRoot %v, runAsUser %v", psc.RunAsNonRoot, psc.RunAsUser)
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccomp profile %v, want RuntimeDefault", psc.SeccompProfile)
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation || csc.Capabilities == nil ||
		len(csc.Capabilities.Drop) != 1 || csc.Capabilities.Drop[0] != "ALL" || len(csc.Capabilities.Add) != 0 {
		t.Errorf("container security context %+v: want no privilege escalation and every capability dropped", csc)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness probe %+v, want GET /healthz", c.LivenessProbe)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe %+v, want GET /readyz", c.ReadinessProbe)
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args %v, want prims serve", c.Args)
	}
	grace, err := time.ParseDuration(flag(c.Args, "--shutdown-grace"))
	if err != nil {
		t.Fatalf("--shutdown-grace: %v", err)
	}
	var period time.Duration // the default 30s when unset
	if p := pod.TerminationGracePeriodSeconds; p != nil {
		period = time.Duration(*p) * time.Second
	} else {
		period = corev1.DefaultTerminationGracePeriodSeconds * time.Second
	}
	if period <= grace {
		t.Errorf("terminationGracePeriodSeconds %v is not longer than --shutdown-grace %v", period, grace)
	}
	if hasAuth := flag(c.Args, "--auth-token-file") != "" || flag(c.Args, "--oauth-issuer") != ""; hasAuth != wantAuth {
		t.Errorf("args %v: authentication %v, want %v", c.Args, hasAuth, wantAuth)
	}
}

// flag returns the value of --name=value in args.
func flag(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// exported reports whether PRIMS's own code (not its tests, not the
// examples) names the metric.
func exported(t *testing.T, name string) bool {
	t.Helper()
	quoted := []byte(fmt.Sprintf("%q", name))
	found := false
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (d.Name() == "examples" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		found = found || bytes.Contains(b, quoted)
		return nil
	})
	if err != nil {
		t.Fatalf("read PRIMS's sources: %v", err)
	}
	return found
}
