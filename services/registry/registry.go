// Package registry is Lethe's registry service. It keeps the register of tenants, the data-category taxonomy, systems and processors with their history and transfer mechanisms, records of processing (Art. 30), and the routing that says which systems must answer an event.
//
// The service owns one bbolt file, registry.db, in the data folder. Until its API
// is built it reports RegistryService in health and serves no method.
package registry

import (
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/store"
)

// ServiceName is the gRPC service's full name, under which it reports
// health.
const ServiceName = "lethe.registry.v1.RegistryService"

// DefaultAddr is the gRPC address the registry deployable listens on by default.
const DefaultAddr = "127.0.0.1:7404"

// schema is the layout of registry.db.
var schema = store.Schema{Service: "registry", Version: 1}

// Factory builds the registry service for a host.
var Factory = service.Factory{
	Name: "registry",
	New: func(deps service.Deps) (service.Service, error) {
		return service.NewHealthOnly(deps, schema, ServiceName)
	},
}
