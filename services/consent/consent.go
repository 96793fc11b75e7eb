// Package consent is Lethe's consent service. It records consent, objections and restrictions per tenant, answers Check (may subject X's data be processed for purpose P, and why), and is the single owner of the limit events (consent withdrawn, objection recorded, restriction applied and lifted).
//
// The service owns one bbolt file, consent.db, in the data folder. Until its API
// is built it reports ConsentService in health and serves no method.
package consent

import (
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/store"
)

// ServiceName is the gRPC service's full name, under which it reports
// health.
const ServiceName = "lethe.consent.v1.ConsentService"

// DefaultAddr is the gRPC address the consent deployable listens on by default.
const DefaultAddr = "127.0.0.1:7401"

// schema is the layout of consent.db.
var schema = store.Schema{Service: "consent", Version: 1}

// Factory builds the consent service for a host.
var Factory = service.Factory{
	Name: "consent",
	New: func(deps service.Deps) (service.Service, error) {
		return service.NewHealthOnly(deps, schema, ServiceName)
	},
}
