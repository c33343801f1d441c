package kubernetes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

// The agent-sandbox types, extensions.agents.x-k8s.io/v1beta1, as far as
// the examples use them. Their Go module is not on the module proxy, so
// these mirror its structs (extensions/api/v1beta1/*_types.go and
// api/v1beta1/sandbox_types.go at kubernetes-sigs/agent-sandbox 2fd412d);
// the pod inside is the real corev1.PodSpec.
type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

type objectMeta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

type sandboxTemplate struct {
	typeMeta `json:",inline"`
	Metadata objectMeta `json:"metadata"`
	Spec     struct {
		PodTemplate struct {
			Metadata struct {
				Labels      map[string]string `json:"labels,omitempty"`
				Annotations map[string]string `json:"annotations,omitempty"`
			} `json:"metadata"`
			Spec corev1.PodSpec `json:"spec"`
		} `json:"podTemplate"`
		Service                 *bool  `json:"service,omitempty"`
		NetworkPolicyManagement string `json:"networkPolicyManagement,omitempty"`
		NetworkPolicy           *struct {
			Ingress []networkingv1.NetworkPolicyIngressRule `json:"ingress,omitempty"`
			Egress  []networkingv1.NetworkPolicyEgressRule  `json:"egress,omitempty"`
		} `json:"networkPolicy,omitempty"`
		EnvVarsInjectionPolicy string `json:"envVarsInjectionPolicy,omitempty"`
	} `json:"spec"`
}

type sandboxWarmPool struct {
	typeMeta `json:",inline"`
	Metadata objectMeta `json:"metadata"`
	Spec     struct {
		Replicas           *int32 `json:"replicas,omitempty"`
		SandboxTemplateRef struct {
			Name string `json:"name"`
		} `json:"sandboxTemplateRef"`
	} `json:"spec"`
}

type sandboxClaim struct {
	typeMeta `json:",inline"`
	Metadata objectMeta `json:"metadata"`
	Spec     struct {
		WarmPoolRef struct {
			Name string `json:"name"`
		} `json:"warmPoolRef"`
	} `json:"spec"`
}

// strictYAML decodes a one-document YAML file into v, refusing duplicate
// keys and fields v does not have.
func strictYAML(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	d := json.NewDecoder(bytes.NewReader(j))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func TestStrictYAMLRefusesUnknownFields(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, doc string
		into      any
	}{
		{"unknown field", "apiVersion: x/v1\nkind: SandboxWarmPool\nmetadata: {name: p}\nspec: {replicas: 1, sandboxTemplateRef: {name: t}, replica: 2}\n", new(sandboxWarmPool)},
		{"unknown pod field", "apiVersion: x/v1\nkind: SandboxTemplate\nmetadata: {name: t}\nspec: {podTemplate: {metadata: {}, spec: {containers: [{name: c, imagee: x}]}}}\n", new(sandboxTemplate)},
		{"duplicate key", "apiVersion: x/v1\nkind: SandboxClaim\nmetadata: {name: c}\nspec: {warmPoolRef: {name: a}}\nspec: {warmPoolRef: {name: b}}\n", new(sandboxClaim)},
	} {
		path := filepath.Join(dir, "doc.yaml")
		if err := os.WriteFile(path, []byte(tc.doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := strictYAML(path, tc.into); err == nil {
			t.Errorf("%s: decoded without error", tc.name)
		}
	}
	if err := strictYAML("agent-sandbox/claim.yaml", new(sandboxClaim)); err != nil {
		t.Errorf("control: %v", err)
	}
}
