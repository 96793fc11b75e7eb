// Package deploy renders Lethe's Kubernetes manifests: the kustomize base
// at the root of this folder and its overlays under overlays/. Its tests
// render every overlay without a cluster, decode each object strictly into
// the Kubernetes API types, and check the properties Lethe relies on (one
// writer per bbolt file, probes, limits, non-root containers, network
// policies, TLS in production). Package natsauth holds the NATS
// permissions the shipped server configuration (nats/) grants.
package deploy

import (
	"fmt"
	"path/filepath"
	"runtime"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Overlays are the kustomizations meant to be applied, relative to Dir.
var Overlays = []string{"overlays/dev", "overlays/production", "overlays/production-cert-manager"}

// Dir returns the folder of this package, the kustomize base.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// Object is one rendered Kubernetes object.
type Object struct {
	Kind, Name string
	// JSON is the object as the API server would receive it.
	JSON []byte
}

// Render builds the kustomization in dir (a path, or relative to Dir) as
// `kustomize build` v5 does, with the default load restrictions (files
// only from inside each kustomization's folder), and returns its objects
// in order.
func Render(dir string) ([]Object, error) {
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(Dir(), dir)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", dir, err)
	}
	var objects []Object
	for _, r := range resources.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("render %s: %s %s: %w", dir, r.GetKind(), r.GetName(), err)
		}
		objects = append(objects, Object{Kind: r.GetKind(), Name: r.GetName(), JSON: data})
	}
	return objects, nil
}
