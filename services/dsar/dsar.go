// Package dsar is Lethe's dsar service. It handles data-subject requests under GDPR Articles 15 to 22: every right as a request with a lifecycle, identity verification and deadlines, whose directives complete only when every system has answered.
//
// The service owns one bbolt file, dsar.db, in the data folder. Until its API
// is built it reports DsarService in health and serves no method.
package dsar

import (
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/store"
)

// ServiceName is the gRPC service's full name, under which it reports
// health.
const ServiceName = "lethe.dsar.v1.DsarService"

// DefaultAddr is the gRPC address the dsar deployable listens on by default.
const DefaultAddr = "127.0.0.1:7402"

// schema is the layout of dsar.db.
var schema = store.Schema{Service: "dsar", Version: 1}

// Factory builds the dsar service for a host.
var Factory = service.Factory{
	Name: "dsar",
	New: func(deps service.Deps) (service.Service, error) {
		return service.NewHealthOnly(deps, schema, ServiceName)
	},
}
