package events

import (
	"encoding/json"
	"fmt"
)

// BundleAPIVersion and BundleKind head every bundle.
const (
	BundleAPIVersion = "troupe.dev/v1alpha1"
	BundleKind       = "Bundle"
)

// Bundle is the canonical form of a rendered revision: what the renderer stores in the bundles
// object store (JSON, keys sorted, so equal inputs give equal bytes and digests) and the applier
// applies. Objects are in apply order: CustomResourceDefinitions first (they come first in the
// bundle too: a chart's crds/ and any other CRD), then Helm's install order by kind, then
// namespace and name; namespaced objects carry their namespace. Hooks are kept out of Objects:
// troupe applies a chart's regular objects and records its hooks (pre/post
// install/upgrade/delete/rollback) here for what runs them; test hooks are dropped.
type Bundle struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Release    string           `json:"release"`
	Objects    []map[string]any `json:"objects"`
	// CRDs is how many of the first Objects are CustomResourceDefinitions.
	CRDs  int          `json:"crds"`
	Hooks []BundleHook `json:"hooks,omitempty"`
	Notes string       `json:"notes,omitempty"`
}

// BundleHook is a chart hook: the object, the events it runs on (pre-install, post-upgrade, …),
// its weight and delete policies, as Helm reads them from its annotations.
type BundleHook struct {
	Events         []string       `json:"events"`
	Weight         int            `json:"weight"`
	DeletePolicies []string       `json:"deletePolicies,omitempty"`
	Object         map[string]any `json:"object"`
}

// ValuesRecord is a revision's chart values as `helm get values` shows them, kept beside its
// bundle in the bundles object store (Rendered.Values).
type ValuesRecord struct {
	Release string `json:"release"`
	// User is what the request set — its values files, values and set, merged as Helm merges
	// them (and the earlier revision's, when it reused them): Helm's "user-supplied values".
	// Values read from the cluster (valuesFrom) are left out: they are often secret.
	User Values `json:"user"`
	// Computed is User coalesced with the chart's defaults (`helm get values --all`).
	Computed Values `json:"computed"`
	// FromHelm says the values came from a Helm release's Secret (an adoption, or a revision
	// reusing them): history shows them only to an identity that may read Secrets.
	FromHelm bool `json:"fromHelm,omitempty"`
}

// ReadBundle decodes a bundle, checking its header.
func ReadBundle(data []byte) (*Bundle, error) {
	var b Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	if b.APIVersion != BundleAPIVersion || b.Kind != BundleKind {
		return nil, fmt.Errorf("read bundle: not a %s %s", BundleAPIVersion, BundleKind)
	}
	return &b, nil
}
