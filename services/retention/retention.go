// Package retention is Lethe's retention service. It enforces retention rules per tenant and data category: triggers, periods, legal holds, and a durable scheduler that issues erasure directives when data is due.
//
// The service owns one bbolt file, retention.db, in the data folder. Until its API
// is built it reports RetentionService in health and serves no method.
package retention

import (
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/store"
)

// ServiceName is the gRPC service's full name, under which it reports
// health.
const ServiceName = "lethe.retention.v1.RetentionService"

// DefaultAddr is the gRPC address the retention deployable listens on by default.
const DefaultAddr = "127.0.0.1:7403"

// schema is the layout of retention.db.
var schema = store.Schema{Service: "retention", Version: 1}

// Factory builds the retention service for a host.
var Factory = service.Factory{
	Name: "retention",
	New: func(deps service.Deps) (service.Service, error) {
		return service.NewHealthOnly(deps, schema, ServiceName)
	},
}
